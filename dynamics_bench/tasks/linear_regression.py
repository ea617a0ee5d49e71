"""Linear regression onto a planted target matrix: the setting of deep-linear-network theory.

Saxe, McClelland, Ganguli (2014): with whitened inputs, (1/n)XᵀX = I, and no noise, the input-output
correlation Σ³¹ = (1/n)YᵀX equals the target M = U diag(s) Vᵀ exactly, and under ½‖Y − XWᵀ‖² each
singular mode s_α of M is learned independently (docs/theory.md §3). modes() gives the modes of Σ³¹ as drawn
(with noise or unwhitened inputs they differ from M's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynamics_bench.config import positive, require
from dynamics_bench.models.base import gaussian, orthogonal
from dynamics_bench.tasks.base import Task, check_draw, nonzero_modes, target_state


@dataclass
class LinearRegressionConfig:
    name: str = "linear_regression"
    seed: int = 0
    input_dim: int = 6
    output_dim: int = 5
    n: int = 100
    rank: int | None = None  # null: min(input_dim, output_dim), or len(singular_values) when those are given
    singular_values: list[float] | None = None
    whiten: bool = False
    noise: float = 0.0

    def __post_init__(self) -> None:
        for key in ("input_dim", "output_dim", "n"):
            positive(f"task.{key}", getattr(self, key))
        k = min(self.input_dim, self.output_dim)
        if self.rank is not None:
            require(1 <= self.rank <= k, "task.rank", self.rank,
                    f"must be null or in 1..min(input_dim, output_dim)={k}")
        s = self.singular_values
        if s is not None:
            require(1 <= len(s) <= k, "task.singular_values", s,
                    f"must hold 1..min(input_dim, output_dim)={k} values")
            require(all(v > 0 for v in s), "task.singular_values", s, "must all be > 0")
            require(self.rank in (None, len(s)), "task.rank", self.rank,
                    f"must be null or len(task.singular_values)={len(s)}")
        require(not self.whiten or self.n >= self.input_dim, "task.n", self.n,
                f"task.whiten=true needs n >= input_dim={self.input_dim}")
        require(0 <= self.noise < math.inf, "task.noise", self.noise, "must be finite and >= 0")


class LinearRegression(Task):
    """Y = X Mᵀ + noise·ε with X (n, in) Gaussian (optionally whitened) and M (out, in) of rank `rank`.

    M = U diag(s) Vᵀ with Haar U (out, r), V (in, r) when singular_values are given, else a product of two
    Gaussian matrices scaled to O(1) entries. M is drawn first, so it does not depend on n.
    state(): "target" M (out, in), the modes "U" (out, r), "S" (r,), "V" (in, r) of Σ³¹ (float64), and "x", "y"
    when n·d ≤ 10⁶.
    """

    name = "linear_regression"

    def __init__(self, *, seed: int, input_dim: int, output_dim: int, n: int, rank: int | None,
                 singular_values: list[float] | None, whiten: bool, noise: float,
                 dtype: torch.dtype, device: torch.device):
        # x (three times when whitened: the SVD's factor and the product), x Mᵀ, the noise and y
        check_draw(n, 3 * input_dim + 3 * output_dim, input_dim + output_dim, dtype=dtype, device=device)
        gen = torch.Generator().manual_seed(seed)
        self.input_dim, self.output_dim, self.whitened = input_dim, output_dim, whiten
        if singular_values is not None:
            s = torch.tensor(singular_values, dtype=torch.float64)  # (r,)
            u, v = orthogonal(gen, output_dim, len(s)), orthogonal(gen, input_dim, len(s))  # (out, r), (in, r)
            m, self.rank = u @ torch.diag(s) @ v.T, len(s)  # (out, in)
        else:
            self.rank = r = rank or min(input_dim, output_dim)
            # entries have mean 0 and variance 1
            m = gaussian(gen, (output_dim, r), 1.0) @ gaussian(gen, (r, input_dim), 1.0) / math.sqrt(r)
        x = gaussian(gen, (n, input_dim), 1.0)  # (n, in)
        if whiten:  # ZCA: x (xᵀx/n)^(-1/2) = sqrt(n)·U Vᵀ from the thin SVD x = U S Vᵀ, exact to round-off
            uu, _, vh = torch.linalg.svd(x, full_matrices=False)
            x = math.sqrt(n) * uu @ vh
        y = x @ m.T + gaussian(gen, (n, output_dim), noise)  # (n, out)
        self._modes = nonzero_modes(y.T @ x / n)  # of Σ³¹ (out, in), from the float64 data
        self.target_matrix = m.to(device=device, dtype=dtype)  # (out, in)
        self._x, self._y = x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)

    def data(self) -> tuple[Tensor, Tensor]:
        return self._x, self._y

    def modes(self) -> tuple[Tensor, Tensor, Tensor]:
        """U (out, r), S (r,), V (in, r) of Σ³¹ = YᵀX/n (base.nonzero_modes): float64 CPU, whatever the dtype."""
        return self._modes

    def state(self) -> dict[str, Tensor]:
        return target_state(self.target_matrix, self._modes, self._x, self._y)
