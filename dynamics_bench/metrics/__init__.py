"""Metrics: the registry, the selection a config asks for, and the time grid they are logged on.

Adding a metric: write a function of a :class:`Snapshot` returning named (E,) tensors (and, for a metric with
memory, taking and returning its memory), register it with a requirement in its module's registry, and add that
registry below. ``metrics.names=auto`` takes every light metric that applies.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from dynamics_bench.clocks import GridSpec
from dynamics_bench.config import ConfigError, positive, require
from dynamics_bench.metrics.alignment import ALIGNMENT
from dynamics_bench.metrics.base import (HESSIAN_DENSE_MAX, LANCZOS_STEPS, PROBE, Memory, Metric, Settings, Snapshot,
                                         Values)
from dynamics_bench.metrics.basic import BASIC
from dynamics_bench.metrics.hessian import HESSIAN
from dynamics_bench.metrics.imbalance import IMBALANCE
from dynamics_bench.metrics.lojasiewicz import LOJASIEWICZ
from dynamics_bench.metrics.modes import MODES
from dynamics_bench.metrics.movement import MOVEMENT
from dynamics_bench.metrics.ntk import NTK
from dynamics_bench.metrics.vector_case import VECTOR_CASE
from dynamics_bench.models.base import per_member
from dynamics_bench.objective import Objective
from dynamics_bench.tasks.base import Task

METRICS: dict[str, Metric] = {**BASIC, **IMBALANCE, **ALIGNMENT, **VECTOR_CASE, **LOJASIEWICZ, **MOVEMENT, **NTK,
                              **HESSIAN, **MODES}
AUTO = "auto"  # every light metric that applies; also an item of a list: [auto, hessian]


@dataclass
class MetricsConfig:
    names: str | list[str] = AUTO  # "auto": every light metric that applies; or a list of METRICS keys (and auto)
    points: int = 100  # size of the log-spaced grid in t (t = 0 and the end included)
    every: int | None = None  # log every k (accepted) steps instead (and the last step)
    times: list[float] | None = None  # or log at these flow times (and t = 0 and the end)
    save_params: bool = False  # also store the parameters at every logged step (params/<step>.pt)
    heavy_every: int = 1  # heavy metrics on every k-th grid row (the first included), the last and every stop row
    probe: int | None = None  # probe set size for ntk and activation_flips; null: min(n, 32)
    lanczos_steps: int = LANCZOS_STEPS  # hessian: Lanczos iterations at most
    hessian_dense_max: int = HESSIAN_DENSE_MAX  # hessian: the dense spectrum up to this many parameters
    loss_floor: float = 0.0  # lojasiewicz: L̃ = L − loss_floor

    def __post_init__(self) -> None:
        options = ", ".join([AUTO, *METRICS])
        require(self.names == AUTO or isinstance(self.names, list), "metrics.names", self.names,
                f"must be {AUTO}, or a list of: {options}")
        if isinstance(self.names, list):
            for i, name in enumerate(self.names):
                require(name == AUTO or name in METRICS, f"metrics.names[{i}]", name, f"must be one of {options}")
        require(self.points >= 2, "metrics.points", self.points, "must be >= 2 (first and last step)")
        positive("metrics.every", self.every, allow_none=True)
        require(self.every is None or self.times is None, "metrics.times", self.times,
                "must be null when metrics.every is set (one grid at a time)")
        for i, t in enumerate(self.times or []):
            require(t >= 0, f"metrics.times[{i}]", t, "must be >= 0")
        positive("metrics.heavy_every", self.heavy_every)
        positive("metrics.probe", self.probe, allow_none=True)
        require(self.lanczos_steps >= 2, "metrics.lanczos_steps", self.lanczos_steps,
                "must be >= 2 (one step is a single Rayleigh quotient, not a spectrum's extremes)")
        require(self.hessian_dense_max >= 0, "metrics.hessian_dense_max", self.hessian_dense_max, "must be >= 0")

    def grid(self) -> GridSpec:
        return GridSpec(points=self.points, every=self.every, times=self.times)

    def settings(self, n: int, step_size: float | None) -> Settings:
        """What metrics are told, for a data set of n samples; an explicit probe larger than n is an error."""
        require(self.probe is None or self.probe <= n, "metrics.probe", self.probe,
                f"must be <= the task's {n} samples (the probe set is its first metrics.probe inputs)")
        return Settings(probe=min(n, PROBE) if self.probe is None else self.probe, lanczos_steps=self.lanczos_steps,
                        hessian_dense_max=self.hessian_dense_max, loss_floor=self.loss_floor, step_size=step_size)


def select_metrics(names: str | list[str], objective: Objective, task: Task) -> dict[str, Metric]:
    """The metrics to compute; `loss` always. `auto` is every light metric that applies; a named metric that
    cannot apply is an error, before step 0."""
    auto = {k: m for k, m in METRICS.items() if not m.heavy and m.requires(objective, task) is None}
    if names == AUTO:
        return auto
    chosen = {"loss": METRICS["loss"]}
    for i, name in enumerate(names):
        if name == AUTO:
            chosen.update(auto)
            continue
        reason = METRICS[name].requires(objective, task)
        if reason is not None:
            raise ConfigError(f"metrics.names[{i}]", name, reason)
        chosen[name] = METRICS[name]
    return chosen


class Evaluator:
    """Evaluates the chosen metrics row after row: heavy ones on their grid (empty elsewhere), each metric's
    memory carried per member, and the seconds each metric took (`seconds`).

    `memory` ({metric: {name: (E, ...) tensor}}) is the whole state between rows, with `rows`: what a checkpoint
    saves and restores (:meth:`state_dict`, :meth:`load_state_dict`)."""

    def __init__(self, metrics: dict[str, Metric], heavy_every: int = 1):
        self.metrics, self.heavy_every = metrics, heavy_every
        self.memory: dict[str, Memory] = {}
        self.seconds = {name: 0.0 for name in metrics}
        self.rows = 0  # grid rows evaluated so far
        self._heavy_columns: dict[str, list[str]] = {}

    def __call__(self, s: Snapshot, written: list[bool] | None = None, grid: bool = True,
                 ends: bool = False) -> Values:
        """Metric values (E,) for every member. `written`: the members whose rows are kept (their memory moves
        on; None: all). Heavy metrics are computed on every heavy_every-th row of the metrics grid (`grid`; the
        first included) and on every member's last row (`ends`: a stop, or the end of the run)."""
        heavy = ends or self.rows == 0 or (grid and self.rows % self.heavy_every == 0)
        sync = s.x.device.type == "cuda"  # time each metric's kernels, not their launch
        empty = None if heavy else s.x.new_full((s.x.shape[0],), math.nan)  # the heavy columns' cells here
        out: Values = {}
        with torch.no_grad():
            for name, metric in self.metrics.items():
                if metric.heavy and not heavy:
                    out.update(dict.fromkeys(self._heavy_columns[name], empty))
                    continue
                start = time.perf_counter()
                if metric.remembers:
                    values, memory = metric.fn(s, self.memory.get(name, {}))
                    self.memory[name] = _keep(self.memory.get(name), memory, written)
                else:
                    values = metric.fn(s)
                if sync:
                    torch.cuda.synchronize(s.x.device)
                self.seconds[name] += time.perf_counter() - start
                if metric.heavy:
                    self._heavy_columns[name] = list(values)
                out.update(values)
        self.rows += grid
        return out

    def state_dict(self) -> dict:
        """The state between rows, detached from this evaluator (it goes on changing)."""
        return {"rows": self.rows, "memory": {k: dict(v) for k, v in self.memory.items()},
                "heavy_columns": dict(self._heavy_columns)}

    def load_state_dict(self, state: dict) -> None:
        self.rows = state["rows"]
        self.memory = {k: dict(v) for k, v in state["memory"].items()}
        self._heavy_columns = dict(state["heavy_columns"])


def _keep(old: Memory | None, new: Memory, written: list[bool] | None) -> Memory:
    """The new memory for the written members, the old one for the others (a member's first row is written)."""
    if old is None or written is None or all(written):
        return new
    mask = torch.tensor(written, device=next(iter(new.values())).device)
    return {k: torch.where(per_member(mask, v), v, old[k]) for k, v in new.items()}


def evaluate(metrics: dict[str, Metric], snapshot: Snapshot) -> Values:
    """The metrics on one snapshot, as at a run's first row."""
    return Evaluator(metrics)(snapshot)


__all__ = ["METRICS", "Evaluator", "MetricsConfig", "Settings", "Snapshot", "evaluate", "select_metrics"]
