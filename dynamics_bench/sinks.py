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

    def write(self, step: int, t: float, rows: Rows) -> None:
        if self.writer is None:
            self.columns = list(rows[0])
            self.file = open(self.path, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(["step", "t", "member", *self.columns])
        for member, row in enumerate(rows):
            self.writer.writerow([step, repr(t), member, *(_cell(row[c]) for c in self.columns)])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class TensorBoardSink:
    """tb/: the ensemble mean under each metric's own tag (min and max under ensemble/), and members up to
    tb_members as runs tb/member_<i>, so TensorBoard overlays them on the mean's chart."""

    def __init__(self, path: Path, ensemble_size: int, tb_members: int):
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and optional per run

        self.root = SummaryWriter(str(path))
        shown = min(ensemble_size, tb_members) if ensemble_size > 1 else 0
        self.members = [SummaryWriter(str(path / f"member_{i}")) for i in range(shown)]

    def write(self, step: int, t: float, rows: Rows) -> None:
        for name in rows[0]:
            values = torch.tensor([r[name] for r in rows], dtype=torch.float64)
            finite = values[torch.isfinite(values)]
            if finite.numel() == 0:
                continue
            self.root.add_scalar(name, finite.mean().item(), step)
            if len(rows) > 1:
                self.root.add_scalar(f"ensemble/{name}_min", finite.min().item(), step)
                self.root.add_scalar(f"ensemble/{name}_max", finite.max().item(), step)
            for writer, row in zip(self.members, rows):
                if math.isfinite(row[name]):
                    writer.add_scalar(name, row[name], step)
        self.root.add_scalar("t", t, step)

    def write_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        """Hyperparameters with final metrics, in the run's own folder (run_name='.')."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        finals = {f"final/{k}": v for k, v in final.items() if v is not None and math.isfinite(v)}
        self.root.add_hparams(clean, finals, run_name=".")

    def close(self) -> None:
        for writer in [self.root, *self.members]:
            writer.close()


class ParamsSink:
    """params/<step>.pt: the parameters (E, ...) and t at every logged step, for phase portraits."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(exist_ok=True)

    def save(self, step: int, t: float, params: dict[str, torch.Tensor]) -> None:
        torch.save({"step": step, "t": t, "params": {k: v.detach().cpu() for k, v in params.items()}},
                   self.path / f"{step:09d}.pt")
