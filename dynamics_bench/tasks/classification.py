"""Synthetic classification: random labels or two Gaussian clusters.

Random labels on Gaussian points are the memorization test of Allen-Zhu, Li, Song (ICML 2019): an
over-parameterized net still reaches 100% training accuracy (docs/theory.md §8, P3.5). With normalize_inputs every
x is projected to the unit sphere, as NTK theory assumes (‖x_i‖ = 1, Du et al. 2019).

clusters: balanced classes (n//2 or n - n//2 points each, in random order), x = ±(separation/2)·u + ξ with a
random unit u (+ for class 1) and ξ ~ N(0, I_d). The class means are `separation` apart in units of the noise
std, and the Bayes-optimal (linear) rule errs with probability Φ(−separation/2) (6.7% at the default 3.0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dynamics_bench.config import positive, require
from dynamics_bench.models.base import gaussian
from dynamics_bench.tasks.base import Task, check_draw, data_state


@dataclass
class ClassificationConfig:
    name: str = "classification"
    seed: int = 0
    labels: Literal["random", "clusters"] = "clusters"
    num_classes: int = 2
    input_dim: int = 10
    n: int = 64
    separation: float = 3.0
    normalize_inputs: bool = False

    def __post_init__(self) -> None:
        for key in ("input_dim", "n"):
            positive(f"task.{key}", getattr(self, key))
        require(self.num_classes >= 2, "task.num_classes", self.num_classes, "must be >= 2")
        require(self.labels != "clusters" or self.num_classes == 2, "task.num_classes", self.num_classes,
                "task.labels=clusters needs num_classes=2")
        require(self.separation >= 0, "task.separation", self.separation, "must be >= 0")


class Classification(Task):
    """x (n, d) float, y (n,) int64 class indices in 0..num_classes-1; state(): "x", "y" when n·d ≤ 10⁶."""

    name = "classification"

    def __init__(self, *, seed: int, labels: str, num_classes: int, input_dim: int, n: int, separation: float,
                 normalize_inputs: bool, dtype: torch.dtype, device: torch.device):
        check_draw(n, 3 * input_dim + 2, input_dim + 1, dtype=dtype, device=device)  # x, the noise, the shift; y
        gen = torch.Generator().manual_seed(seed)
        self.input_dim, self.output_dim, self.num_classes = input_dim, num_classes, num_classes
        if labels == "random":
            x = gaussian(gen, (n, input_dim), 1.0)  # (n, d)
            y = torch.randint(0, num_classes, (n,), generator=gen)
        else:
            u = gaussian(gen, (input_dim,), 1.0)
            u = u / u.norm()  # (d,)
            y = (torch.arange(n) % 2)[torch.randperm(n, generator=gen)]  # balanced, shuffled
            sign = 2 * y.to(torch.float64)[:, None] - 1  # (n, 1), ±1
            x = sign * (separation / 2) * u + gaussian(gen, (n, input_dim), 1.0)  # (n, d)
        if normalize_inputs:
            x = x / x.norm(dim=1, keepdim=True)
        self._x, self._y = x.to(device=device, dtype=dtype), y.to(device=device)

    def data(self) -> tuple[Tensor, Tensor]:
        return self._x, self._y

    def state(self) -> dict[str, Tensor]:
        return data_state(self._x, self._y)
