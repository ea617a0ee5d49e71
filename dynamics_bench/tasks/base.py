"""The task interface: where the data (or the cost) comes from.

A task is built from ``task.seed`` alone, so every ensemble member sees the same teacher and data set.
Targets ``y`` are float (n, output_dim) for regression and int64 class indices (n,) for classification.
``state()`` is what a run stores in task.pt: what the task drew (or read), so an analysis needs no rebuild.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from dynamics_bench.memory import Factor, Need, count, require_memory

STATE_DATA_MAX = 10**6  # state() holds x and y when x has at most this many entries (n·d)


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
    population: bool = False  # the loss is the closed-form expectation over x ~ N(0, I_d) (teacher task)
    whitened: bool = False  # XᵀX/n = I exactly (linear_regression with whiten=true)

    @abstractmethod
    def data(self) -> tuple[Tensor, Tensor]:
        """The fixed data set (x (n, d), y) on the task's device and dtype: the training set of full-batch
        trainers, the pool SGD draws minibatches from, and what metrics evaluate on."""

    def modes(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """U (out, r), S (r,), V (in, r): the r nonzero singular modes of Σ₃₁ = YᵀX/n (of the target matrix
        for matrix_cost), singular values descending; None where the task has no such matrix."""
        return None

    def state(self) -> dict[str, Tensor]:
        """What the task drew, for task.pt (CPU tensors; documented keys, see README)."""
        return {}

    def sample(self, generators: list[torch.Generator], n: int) -> tuple[Tensor, Tensor]:
        """Fresh samples per member: x (E, n, d), y (E, n, ...), member e drawn from generators[e] alone."""
        raise NotImplementedError(f"{type(self).__name__} has no online sampling")


def check_draw(n: int, drawn: int, kept: int, *, dtype: torch.dtype, device: torch.device) -> None:
    """ConfigError naming task.n, before a data set too large for memory is drawn: while drawing, `drawn` float64
    numbers per sample on the CPU (the data and the draw's temporaries); then the `kept` numbers per sample (x and
    y) in `dtype` on `device` (on the CPU a second copy unless they are float64 already)."""
    samples, itemsize = count(n, "samples", "task.n"), torch.finfo(dtype).bits // 8
    draw = Need("drawing the data", (samples, Factor(drawn, f"{drawn} numbers"), Factor(8, "8 bytes")))
    data = Need("the data set", (samples, Factor(kept, f"{kept} numbers"), Factor(itemsize, f"{itemsize} bytes")))
    cpu = torch.device("cpu")
    if device.type != "cpu":
        require_memory("task.n", n, [data], device)
    require_memory("task.n", n, [draw, data] if device.type == "cpu" and dtype != torch.float64 else [draw], cpu)


def data_state(x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """{"x", "y"} on the CPU when n·d ≤ STATE_DATA_MAX, else {}: a large data set would bloat task.pt, and it is
    redrawn from task.seed (or reread from task.path) anyway."""
    return {"x": x.cpu(), "y": y.cpu()} if x.numel() <= STATE_DATA_MAX else {}


def target_state(target: Tensor, modes: tuple[Tensor, Tensor, Tensor], x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """task.pt of a task with a target matrix: "target" (out, in), its modes "U", "S", "V", and data_state."""
    u, s, v = modes
    return {"target": target.cpu(), "U": u, "S": s, "V": v, **data_state(x, y)}


def nonzero_modes(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """U (out, r), S (r,), V (in, r): the nonzero singular modes of a float64 (out, in) matrix, S descending.

    Nonzero means s > max(out, in)·eps·s_max, eps of float64 (numpy's matrix_rank tolerance): the round-off
    singular values of a rank-deficient product are not modes. Signs are fixed so that the largest-|entry| of each
    V column (the first, on a tie) is positive, U's column flipped with it: for distinct singular values the modes
    then depend on the matrix alone, not on the SVD routine.
    """
    assert matrix.dtype == torch.float64, "modes are computed in float64, before the task casts its data"
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)  # (out, k), (k,), (k, in)
    r = int((s > max(matrix.shape) * torch.finfo(torch.float64).eps * s[0]).sum())
    u, s, v = u[:, :r], s[:r], vh[:r].T  # (out, r), (r,), (in, r)
    sign = torch.sign(v.gather(0, v.abs().argmax(dim=0, keepdim=True)))  # (1, r), ±1
    return (u * sign).contiguous(), s.contiguous(), (v * sign).contiguous()
