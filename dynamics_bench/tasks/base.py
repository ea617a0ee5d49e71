"""The task interface: where the data (or the cost) comes from.

A task is built from ``task.seed`` alone, so every ensemble member sees the same teacher and data set.
Targets ``y`` are float (n, output_dim) for regression and int64 class indices (n,) for classification.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass(frozen=True)
class Teacher:
    """A two-layer teacher f*(x) = Σ_i σ(w_i*ᵀx) (unit top weights): weights (r, d), its activation name."""

    weights: Tensor
    activation: str

    @cached_property
    def norms(self) -> Tensor:
        """‖w_i*‖, (r,)."""
        return self.weights.norm(dim=1)

    @cached_property
    def inverse_norms(self) -> Tensor:
        """1/‖w_i*‖, (r,)."""
        return 1 / self.norms

    @cached_property
    def directions(self) -> Tensor:
        """w_i*/‖w_i*‖, (r, d)."""
        return self.weights / self.norms[:, None]


class Task(ABC):
    input_dim: int
    output_dim: int  # for classification: the number of classes
    num_classes: int | None = None  # set by classification tasks
    online: bool = False  # fresh samples per step from sample(); data() is then a fixed evaluation set
    sum_over_samples: bool = False  # the cost is a sum over entries whatever loss.reduction says (matrix_cost)
    teacher: Teacher | None = None

    @abstractmethod
    def data(self) -> tuple[Tensor, Tensor]:
        """The fixed data set (x (n, d), y) on the task's device and dtype: the training set of full-batch
        trainers, the pool SGD draws minibatches from, and what metrics evaluate on."""

    def sample(self, generators: list[torch.Generator], n: int) -> tuple[Tensor, Tensor]:
        """Fresh samples per member: x (E, n, d), y (E, n, ...), member e drawn from generators[e] alone."""
        raise NotImplementedError(f"{type(self).__name__} has no online sampling")
