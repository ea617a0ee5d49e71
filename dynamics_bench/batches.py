"""Data streams: what each training step sees, per ensemble member.

Minibatches and online samples are drawn from each member's own data generator, so a member sees the same
data whether it trains alone or in an ensemble.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from dynamics_bench.config import require
from dynamics_bench.tasks.base import Task


class Batches(Protocol):
    full: bool  # True when every step sees the whole fixed data set (then its L and ∇L are the metrics')

    def __call__(self) -> tuple[Tensor, Tensor]:
        """The next step's x (E, b, d), y (E, b, ...)."""

    def state(self) -> list[Tensor]:
        """Where the draws are: restore(state) replays the same batches (the loop goes back to find a stop)."""

    def restore(self, state: list[Tensor]) -> None: ...


class FullBatch:
    full = True

    def __init__(self, task: Task, ensemble_size: int):
        x, y = task.data()
        self._xy = (x.expand(ensemble_size, *x.shape), y.expand(ensemble_size, *y.shape))  # views, no copy

    def __call__(self) -> tuple[Tensor, Tensor]:
        return self._xy

    def state(self) -> list[Tensor]:
        return []

    def restore(self, state: list[Tensor]) -> None:
        """Every step sees the same data: nothing to rewind."""


class _Drawn:
    """A stream drawn from per-member generators, which can be rewound."""

    generators: list[torch.Generator]

    def state(self) -> list[Tensor]:
        return [g.get_state() for g in self.generators]

    def restore(self, state: list[Tensor]) -> None:
        for g, s in zip(self.generators, state):
            g.set_state(s)


class MiniBatch(_Drawn):
    """batch_size distinct samples of the fixed data set per step and member, drawn without replacement."""

    full = False

    def __init__(self, task: Task, batch_size: int, generators: list[torch.Generator]):
        self.x, self.y = task.data()
        self.batch_size, self.generators = batch_size, generators

    def __call__(self) -> tuple[Tensor, Tensor]:
        n = self.x.shape[0]
        idx = torch.stack([torch.randperm(n, generator=g)[: self.batch_size] for g in self.generators])  # (E, b)
        idx = idx.to(self.x.device)
        return self.x[idx], self.y[idx]


class OnlineBatch(_Drawn):
    """Fresh samples from the task's distribution at every step."""

    full = False

    def __init__(self, task: Task, batch_size: int, generators: list[torch.Generator]):
        self.task, self.batch_size, self.generators = task, batch_size, generators

    def __call__(self) -> tuple[Tensor, Tensor]:
        return self.task.sample(self.generators, self.batch_size)


def check_batch_size(task: Task, batch_size: int | None) -> None:
    """A minibatch of a fixed data set cannot exceed it (drawn without replacement); online tasks have no limit."""
    n = task.data()[0].shape[0]
    require(task.online or batch_size is None or batch_size <= n, "trainer.batch_size", batch_size,
            f"must be <= the task's {n} samples (minibatches are drawn without replacement)")


def make_batches(task: Task, batch_size: int | None, ensemble_size: int,
                 generators: list[torch.Generator]) -> Batches:
    """The stream for a trainer: online tasks sample (batch_size or task.n) per step; otherwise a minibatch
    of the fixed set when batch_size is given and smaller than it, else the full set."""
    n = task.data()[0].shape[0]
    if task.online:
        return OnlineBatch(task, batch_size or n, generators)
    if batch_size is not None and batch_size < n:
        return MiniBatch(task, batch_size, generators)
    return FullBatch(task, ensemble_size)
