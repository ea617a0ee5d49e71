"""From snapshots to outputs: evaluates the metrics at each logged row and writes the rows to every sink.

Keeps what the summary needs from the rows: each member's last written row and its largest invariant drift.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dynamics_bench.metrics import Evaluator, Metric, Snapshot
from dynamics_bench.outputs import CSVSink, LoggerConfig, ParamsSink, TensorBoardSink, member_runs
from dynamics_bench.vary import Sweep


class Recorder:
    """The trainer's on_log: metrics of a snapshot -> metrics.csv, TensorBoard and params/."""

    def __init__(self, out_dir: Path, metrics: dict[str, Metric], *, heavy_every: int, sweep: Sweep,
                 logger: LoggerConfig, save_params: bool, resume: tuple[dict[str, Any], int] | None = None):
        """`resume`: (a checkpoint's recorder state, its iteration): go on writing after the rows it had written
        (metrics.csv is cut back there already)."""
        state = resume[0] if resume is not None else None
        self.evaluator = Evaluator(metrics, heavy_every)
        self.csv = CSVSink(out_dir / "metrics.csv", sweep.member_values(),  # the varied values after the metrics
                           state["csv"]["columns"] if state is not None else None)
        self.tb_runs = tensorboard_runs(sweep, logger.tb_runs(bool(sweep.keys)))
        self.tb = TensorBoardSink(out_dir / "tb", self.tb_runs, None if resume is None else resume[1] + 1) \
            if logger.tensorboard else None
        self.params = ParamsSink(out_dir / "params") if save_params else None
        self.last_rows: list[dict[str, float] | None] = [None] * sweep.size  # each member's last written row
        self.written: dict[int, tuple[int, float]] = {}  # member -> (step, t) of its last metrics.csv row
        self.drift_max: list[float | None] = [None] * sweep.size  # each member's largest imbalance_drift_rel logged
        if state is not None:
            self._load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """What the rows so far leave behind: the metrics' memory and seconds, each member's last row and largest
        drift, and where metrics.csv is."""
        return {"evaluator": self.evaluator.state_dict(), "seconds": dict(self.evaluator.seconds),
                "last_rows": list(self.last_rows), "written": dict(self.written), "drift_max": list(self.drift_max),
                "csv": self.csv.state_dict()}

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluator.load_state_dict(state["evaluator"])
        self.evaluator.seconds.update(state["seconds"])
        self.last_rows, self.written = list(state["last_rows"]), dict(state["written"])
        self.drift_max = list(state["drift_max"])

    def __call__(self, snapshot: Snapshot, members: list[bool], grid: bool = True,
                 ending: list[bool] | None = None) -> None:
        """Evaluate the metrics; write the rows of `members` to metrics.csv (skipping a member whose step and t
        have not changed since its last row: its memory stays too), the ensemble to TensorBoard and params/.
        grid: a row of the metrics grid; ending: the members whose last row this is (heavy metrics are computed).
        An ending member's row is its final one in summary.json even when metrics.csv has it already (a member
        that stops after rejected steps only: same step and t, same θ)."""
        ending = ending or [False] * len(members)
        marks = list(zip(snapshot.steps, snapshot.t))
        write = [m and marks[e] != self.written.get(e) for e, m in enumerate(members)]
        values = self.evaluator(snapshot, write, grid, any(ending))
        table = torch.stack([v.to(torch.float64) for v in values.values()], 1).cpu().tolist()  # (E, metrics)
        rows = [dict(zip(values, r)) for r in table]
        self.csv.write(snapshot.steps, snapshot.t, rows, write)
        self.written.update({e: marks[e] for e in range(len(marks)) if write[e]})
        self.last_rows = [row if w or end else last for row, w, end, last in zip(rows, write, ending, self.last_rows)]
        if self.tb is not None:  # a row only some members stop at: theirs (the others may be past it)
            self.tb.write(snapshot.iteration, snapshot.t, rows, None if grid else write)
        if self.params is not None:
            self.params.save(snapshot.iteration, snapshot.steps, snapshot.t, snapshot.params)
        for e in (e for e, row in enumerate(rows) if write[e]):  # rows written: the states metrics.csv holds
            drift = rows[e].get("imbalance_drift_rel", math.nan)
            if not math.isnan(drift):
                self.drift_max[e] = max(drift, self.drift_max[e] or 0.0)

    def close(self) -> None:
        self.csv.close()
        if self.tb is not None:
            self.tb.close()


def tensorboard_runs(sweep: Sweep, shown: int) -> dict[str, list[int]]:
    """TensorBoard's runs besides the root, name -> members: with ensemble.vary the first `shown` combinations
    (named by their values: trainer.lr=0.01,model.init_scale=0.1), else the first `shown` members."""
    if not sweep.keys:
        return member_runs(sweep.size, shown)
    return {sweep.name(c): list(sweep.members(c)) for c in range(min(shown, len(sweep.combinations)))}
