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


TB_MEMBERS, TB_COMBINATIONS = 4, 64  # tb_members' defaults: members, or ensemble.vary's combinations


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    # members (with ensemble.vary: combinations) written to TensorBoard as runs of their own (all are summarized);
    # null: TB_MEMBERS members, or TB_COMBINATIONS combinations
    tb_members: int | None = None
    progress: bool = True  # progress bar, shown only on an interactive terminal

    def __post_init__(self) -> None:
        require(self.tb_members is None or self.tb_members >= 0, "logger.tb_members", self.tb_members,
                "must be >= 0 or null")

    def tb_runs(self, varied: bool) -> int:
        """How many members (varied: combinations) get a TensorBoard run of their own."""
        if self.tb_members is not None:
            return self.tb_members
        return TB_COMBINATIONS if varied else TB_MEMBERS


Rows = list[dict[str, float]]  # one dict of metric values per member


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def _setting(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


class CSVSink:
    """metrics.csv: step, t, member, the metric columns fixed by the first row, then what each member was set
    to (`settings`, one dict per member with the same keys: ensemble.vary's values, as trainer.lr, ...)."""

    def __init__(self, path: Path, settings: list[dict[str, Any]] | None = None):
        self.path, self.file, self.writer, self.columns = path, None, None, None
        self.settings = [_fixed(s) for s in settings] if settings else None

    def write(self, steps: list[int], t: list[float], rows: Rows, members: list[bool] | None = None) -> None:
        """Member e's row at its own step count steps[e] and flow time t[e] (only where members[e], if given)."""
        if self.writer is None:
            self.columns = list(rows[0])
            self.file = open(self.path, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(["step", "t", "member", *self.columns, *(self.settings[0] if self.settings else [])])
        for member, row in enumerate(rows):
            if members is not None and not members[member]:
                continue
            fixed = self.settings[member].values() if self.settings else []
            self.writer.writerow([steps[member], repr(t[member]), member, *(_cell(row[c]) for c in self.columns),
                                  *fixed])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _fixed(values: dict[str, Any]) -> dict[str, str]:
    return {k: _setting(v) for k, v in values.items()}


def member_runs(ensemble_size: int, shown: int) -> dict[str, list[int]]:
    """TensorBoard runs of one member each, tb/member_<i>, for the first `shown` members (none for E = 1)."""
    return {f"member_{i}": [i] for i in range(min(ensemble_size, shown))} if ensemble_size > 1 else {}


class TensorBoardSink:
    """tb/: the ensemble mean under each metric's own tag (min and max under ensemble/), and `runs` (name ->
    members: tb/member_<i> each member, or with ensemble.vary each combination's seeds) as runs of their own,
    written as the root is (a run of several members: their mean, min and max), so TensorBoard overlays them on
    the mean's chart. TensorBoard's step is the loop's iteration (= the step for fixed-step trainers); flow time
    is the tag `t` (a run's furthest member's)."""

    def __init__(self, path: Path, runs: dict[str, list[int]]):
        from tensorboard.compat.proto.summary_pb2 import Summary  # imported here: optional per run
        from dynamics_bench.tb_events import EventWriter

        self._summary = Summary
        self.root = EventWriter(path)
        self.runs = {name: EventWriter(path / name) for name in runs}
        self.groups = list(runs.values())

    def _scalars(self, t: list[float], rows: Rows) -> list:
        """The mean of each metric over the rows' finite values (and min, max over several rows), and t."""
        Summary, out = self._summary, []
        for name in rows[0]:
            finite = [v for v in (r[name] for r in rows) if math.isfinite(v)]
            if not finite:
                continue
            out.append(Summary.Value(tag=name, simple_value=math.fsum(finite) / len(finite)))
            if len(rows) > 1:
                out.append(Summary.Value(tag=f"ensemble/{name}_min", simple_value=min(finite)))
                out.append(Summary.Value(tag=f"ensemble/{name}_max", simple_value=max(finite)))
        out.append(Summary.Value(tag="t", simple_value=max(t)))
        return out

    def write(self, iteration: int, t: list[float], rows: Rows, only: list[bool] | None = None) -> None:
        """The rows at `iteration`; `only`: the members to write (None: all), the others' runs get nothing."""
        # The values add_scalar writes (simple_value), but one event per writer and step holding all of them:
        # each event is a record written and flushed, most of the cost of logging a step.
        chosen = range(len(rows)) if only is None else [e for e, keep in enumerate(only) if keep]
        if chosen:
            self.root.add_summary(self._summary(value=self._scalars([t[e] for e in chosen],
                                                                    [rows[e] for e in chosen])), iteration)
        for writer, members in zip(self.runs.values(), self.groups):
            members = [e for e in members if e in chosen]
            if members:
                scalars = self._scalars([t[e] for e in members], [rows[e] for e in members])
                writer.add_summary(self._summary(value=scalars), iteration)

    def write_hparams(self, hparams: dict[str, Any], final: dict[str, float], run: str | None = None) -> None:
        """Hyperparameters with final metrics, in the root's run or `run`'s."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        finals = {f"final/{k}": v for k, v in final.items() if v is not None and math.isfinite(v)}
        (self.root if run is None else self.runs[run]).add_hparams(clean, finals)

    def close(self) -> None:
        for writer in [self.root, *self.runs.values()]:
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
