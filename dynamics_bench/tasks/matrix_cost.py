"""A cost on the end-to-end matrix, with no data: f(W) = loss(W, M) summed over the entries of W.

de Oliveira, Jatkar, Sontag (arXiv 2511.09810), Sec. 2-4: g(W_1..W_N) = f(W_N⋯W_1). The model is evaluated
on the identity input, so for a linear net row j of its output is column j of F = W_N⋯W_1, and with mse
the cost is ½‖F − M‖_F² summed over entries. A scalar target gives the paper's vector case (Sec. 3) and,
with a two-layer net on one input, its a·σ(w) example (Sec. 4).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dynamics_bench.config import require
from dynamics_bench.models.base import gaussian
from dynamics_bench.tasks.base import Task, nonzero_modes, target_state

Target = float | list[list[float]] | list[float] | str


def _target_rows(target: Target) -> list[list[float]]:
    if isinstance(target, float):
        return [[target]]
    return target if target and isinstance(target[0], list) else [target]  # a flat list is one row


def _target_shape(target: Target, input_dim: int | None, output_dim: int | None) -> tuple[int, int]:
    """(out, in) of the target, or ConfigError naming the offending key."""
    if isinstance(target, str):
        require(target == "gaussian", "task.target", target, 'must be a number, an (out, in) nested list or "gaussian"')
        for key, v in (("task.input_dim", input_dim), ("task.output_dim", output_dim)):
            require(v is not None and v > 0, key, v, "must be a positive integer when task.target=gaussian")
        return output_dim, input_dim
    rows = _target_rows(target)
    out, inp = len(rows), len(rows[0]) if rows else 0
    require(inp > 0 and all(len(r) == inp for r in rows), "task.target", target,
            "must be a non-empty rectangular (out, in) nested list")
    for key, v, want in (("task.input_dim", input_dim, inp), ("task.output_dim", output_dim, out)):
        require(v is None or v == want, key, v,
                f"must be null or {want} to agree with task.target of shape {out}x{inp}")
    return out, inp


@dataclass
class MatrixCostConfig:
    name: str = "matrix_cost"
    seed: int = 0
    target: Target = 1.0
    input_dim: int | None = None
    output_dim: int | None = None

    def __post_init__(self) -> None:
        _target_shape(self.target, self.input_dim, self.output_dim)


class MatrixCost(Task):
    """x = I_in (sample j is e_j), y = Mᵀ (in, out); the objective sums the cost over entries.

    modes() are M's nonzero singular modes. state(): "target" M (out, in), "U", "S", "V" (float64), and the data
    "x", "y" when in² ≤ 10⁶.
    """

    name = "matrix_cost"
    sum_over_samples = True

    def __init__(self, *, seed: int, target: Target, input_dim: int | None, output_dim: int | None,
                 dtype: torch.dtype, device: torch.device):
        out, inp = _target_shape(target, input_dim, output_dim)
        if target == "gaussian":
            m = gaussian(torch.Generator().manual_seed(seed), (out, inp), 1.0)
        else:
            m = torch.tensor(_target_rows(target), dtype=torch.float64)
        self.input_dim, self.output_dim = inp, out
        self._modes = nonzero_modes(m)  # float64, before the cast
        self.target_matrix = m.to(device=device, dtype=dtype)  # (out, in)
        self._x = torch.eye(inp, dtype=dtype, device=device)  # (in, in)
        self._y = self.target_matrix.T.contiguous()  # (in, out)

    def data(self) -> tuple[Tensor, Tensor]:
        return self._x, self._y

    def modes(self) -> tuple[Tensor, Tensor, Tensor]:
        """U (out, r), S (r,), V (in, r) of M (base.nonzero_modes): float64 on the CPU, whatever the dtype."""
        return self._modes

    def state(self) -> dict[str, Tensor]:
        return target_state(self.target_matrix, self._modes, self._x, self._y)
