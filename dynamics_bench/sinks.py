"""Where logged metrics go: metrics.csv, TensorBoard, parameter snapshots. Each row is written as it is
logged and flushed, so a killed run keeps what it computed."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dynamics_bench.config import require


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    tb_members: int = 4  # members written to TensorBoard one by one (all are summarized)
    progress: bool = True  # progress bar, shown only on an interactive terminal

    def __post_init__(self) -> None:
        require(self.tb_members >= 0, "logger.tb_members", self.tb_members, "must be >= 0")


Rows = list[dict[str, float]]  # one dict of metric values per member


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


class CSVSink:
    """metrics.csv: step, t, member, then the metric columns fixed by the first row."""

    def __init__(self, path: Path):
        self.path, self.file, self.writer, self.columns = path, None, None, None

    def write(self, steps: list[int], t: list[float], rows: Rows, members: list[bool] | None = None) -> None:
        """Member e's row at its own step count steps[e] and flow time t[e] (only where members[e], if given)."""
        if self.writer is None:
            self.columns = list(rows[0])
            self.file = open(self.path, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(["step", "t", "member", *self.columns])
        for member, row in enumerate(rows):
            if members is not None and not members[member]:
                continue
            self.writer.writerow([steps[member], repr(t[member]), member, *(_cell(row[c]) for c in self.columns)])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class TensorBoardSink:
    """tb/: the ensemble mean under each metric's own tag (min and max under ensemble/), and members up to
    tb_members as runs tb/member_<i>, so TensorBoard overlays them on the mean's chart. TensorBoard's step is
    the loop's iteration (= the step for fixed-step trainers); flow time is the tag `t`."""

    def __init__(self, path: Path, ensemble_size: int, tb_members: int):
        from tensorboard.compat.proto.summary_pb2 import Summary  # imported here: slow, and optional per run
        from torch.utils.tensorboard import SummaryWriter

        self._summary = Summary
        self.root = SummaryWriter(str(path))
        shown = min(ensemble_size, tb_members) if ensemble_size > 1 else 0
        self.members = [SummaryWriter(str(path / f"member_{i}")) for i in range(shown)]

    def write(self, iteration: int, t: list[float], rows: Rows) -> None:
        # The values add_scalar writes (simple_value), but one event per writer and step holding all of them:
        # each event is a queue hand-off to the writer's thread, most of the cost of logging a step.
        Summary = self._summary
        root: list = []
        members: list[list] = [[] for _ in self.members]
        for name in rows[0]:
            values = [r[name] for r in rows]
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                continue
            root.append(Summary.Value(tag=name, simple_value=math.fsum(finite) / len(finite)))
            if len(rows) > 1:
                root.append(Summary.Value(tag=f"ensemble/{name}_min", simple_value=min(finite)))
                root.append(Summary.Value(tag=f"ensemble/{name}_max", simple_value=max(finite)))
            for scalars, value in zip(members, values):
                if math.isfinite(value):
                    scalars.append(Summary.Value(tag=name, simple_value=value))
        root.append(Summary.Value(tag="t", simple_value=max(t)))
        for scalars, member_t in zip(members, t):
            scalars.append(Summary.Value(tag="t", simple_value=member_t))
        for writer, scalars in zip([self.root, *self.members], [root, *members]):
            writer._get_file_writer().add_summary(Summary(value=scalars), iteration)

    def write_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        """Hyperparameters with final metrics, in the run's own folder (run_name='.')."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        finals = {f"final/{k}": v for k, v in final.items() if v is not None and math.isfinite(v)}
        self.root.add_hparams(clean, finals, run_name=".")

    def close(self) -> None:
        for writer in [self.root, *self.members]:
            writer.close()


class ParamsSink:
    """params/<iteration>.pt: the parameters (E, ...), each member's step count and t at every logged
    iteration (= step for fixed-step trainers), for phase portraits."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(exist_ok=True)

    def save(self, iteration: int, steps: list[int], t: list[float], params: dict[str, torch.Tensor]) -> None:
        torch.save({"iteration": iteration, "steps": steps, "t": t,
                    "params": {k: v.detach().cpu() for k, v in params.items()}}, self.path / f"{iteration:09d}.pt")
