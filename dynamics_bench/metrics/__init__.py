"""Metrics: the registry, the selection a config asks for, and the time grid they are logged on.

Adding a metric: write a function of a :class:`Snapshot` returning named (E,) tensors, register it below with
a requirement, and name it in ``conf/metrics``. ``metrics.names=auto`` takes every metric that applies.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dynamics_bench.clocks import GridSpec
from dynamics_bench.config import ConfigError, positive, require
from dynamics_bench.metrics.alignment import ALIGNMENT
from dynamics_bench.metrics.base import Metric, Snapshot
from dynamics_bench.metrics.basic import BASIC
from dynamics_bench.metrics.imbalance import IMBALANCE
from dynamics_bench.metrics.vector_case import VECTOR_CASE
from dynamics_bench.objective import Objective
from dynamics_bench.tasks.base import Task

METRICS: dict[str, Metric] = {**BASIC, **IMBALANCE, **ALIGNMENT, **VECTOR_CASE}


@dataclass
class MetricsConfig:
    names: str | list[str] = "auto"  # "auto": every metric that applies; or a list of METRICS keys
    points: int = 100  # size of the log-spaced grid in t (t = 0 and the end included)
    every: int | None = None  # log every k (accepted) steps instead (and the last step)
    times: list[float] | None = None  # or log at these flow times (and t = 0 and the end)
    save_params: bool = False  # also store the parameters at every logged step (params/<step>.pt)

    def __post_init__(self) -> None:
        require(self.names == "auto" or isinstance(self.names, list), "metrics.names", self.names,
                "must be auto or a list of: " + ", ".join(METRICS))
        if isinstance(self.names, list):
            for i, name in enumerate(self.names):
                require(name in METRICS, f"metrics.names[{i}]", name, "must be one of " + ", ".join(METRICS))
        require(self.points >= 2, "metrics.points", self.points, "must be >= 2 (first and last step)")
        positive("metrics.every", self.every, allow_none=True)
        require(self.every is None or self.times is None, "metrics.times", self.times,
                "must be null when metrics.every is set (one grid at a time)")
        for i, t in enumerate(self.times or []):
            require(t >= 0, f"metrics.times[{i}]", t, "must be >= 0")

    def grid(self) -> GridSpec:
        return GridSpec(points=self.points, every=self.every, times=self.times)


def select_metrics(names: str | list[str], objective: Objective, task: Task) -> dict[str, Metric]:
    """The metrics to compute; `loss` always. A named metric that cannot apply is an error, before step 0."""
    if names == "auto":
        return {k: m for k, m in METRICS.items() if m.requires(objective, task) is None}
    chosen = {"loss": METRICS["loss"]}
    for i, name in enumerate(names):
        reason = METRICS[name].requires(objective, task)
        if reason is not None:
            raise ConfigError(f"metrics.names[{i}]", name, reason)
        chosen[name] = METRICS[name]
    return chosen


def evaluate(metrics: dict[str, Metric], snapshot: Snapshot) -> dict[str, Tensor]:
    with torch.no_grad():
        out: dict[str, Tensor] = {}
        for metric in metrics.values():
            out.update(metric.fn(snapshot))
    return out


__all__ = ["METRICS", "MetricsConfig", "Snapshot", "evaluate", "select_metrics"]
