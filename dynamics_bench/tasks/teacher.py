"""Student-teacher regression with a two-layer teacher under Gaussian input.

Zhou, Ge, Jin (COLT 2021), Definition 2: x ~ N(0, I_d), f*(x) = Σ_{i=1}^r σ(w_i*ᵀx) with unit top weights;
the paper's σ is |·|, with ReLU as the common variant (docs/theory.md §6). Teacher neurons have prescribed norms
‖w_i*‖ and uniformly random directions. normalize_inputs scales every x to unit norm (the sphere of Du et al.
2019) before y = f*(x) is computed; population marks a run on the closed-form loss over x ~ N(0, I_d).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynamics_bench.config import choice, positive, require
from dynamics_bench.models.base import ACTIVATIONS, gaussian
from dynamics_bench.tasks.base import Task, Teacher, check_draw, data_state


@dataclass
class TeacherConfig:
    name: str = "teacher"
    seed: int = 0
    input_dim: int = 5
    teacher_width: int = 2
    teacher_activation: str = "relu"
    teacher_norms: float | list[float] = 1.0
    n: int = 200
    online: bool = False
    noise: float = 0.0
    population: bool = False
    normalize_inputs: bool = False

    def __post_init__(self) -> None:
        for key in ("input_dim", "teacher_width", "n"):
            positive(f"task.{key}", getattr(self, key))
        choice("task.teacher_activation", self.teacher_activation, ACTIVATIONS)
        norms = self.teacher_norms
        if isinstance(norms, list):
            require(len(norms) == self.teacher_width, "task.teacher_norms", norms,
                    f"must be a number or a list of teacher_width={self.teacher_width} numbers")
        require(all(v > 0 for v in (norms if isinstance(norms, list) else [norms])), "task.teacher_norms", norms,
                "must be > 0")
        require(0 <= self.noise < math.inf, "task.noise", self.noise, "must be finite and >= 0")
        if self.population:
            self._check_population()

    def _check_population(self) -> None:
        """The closed form is the noiseless expectation over x ~ N(0, I_d): nothing drawn, nothing rescaled."""
        require(self.noise == 0, "task.noise", self.noise,
                "must be 0 with task.population=true (the closed form is the noiseless expectation)")
        require(not self.online, "task.online", self.online,
                "must be false with task.population=true (the expectation replaces sampling)")
        require(not self.normalize_inputs, "task.normalize_inputs", self.normalize_inputs,
                "must be false with task.population=true (the closed form is over x ~ N(0, I_d), not the sphere)")


class TeacherTask(Task):
    """Data (x (n, d), y = f*(x) + noise·ε (n, 1)); fresh samples from sample() when online.

    With population=true the run trains on the closed-form loss; the n samples are still drawn, for the metrics
    that evaluate on data. state(): "teacher_weights" (r, d), "teacher_norms" (r,), and "x", "y" when n·d ≤ 10⁶.
    """

    name = "teacher"

    def __init__(self, *, seed: int, input_dim: int, teacher_width: int, teacher_activation: str,
                 teacher_norms: float | list[float], n: int, online: bool, noise: float, population: bool,
                 normalize_inputs: bool, dtype: torch.dtype, device: torch.device):
        # x (twice when normalized), its teacher pre-activations and activations, y and its noise
        check_draw(n, 2 * input_dim + 2 * teacher_width + 2, input_dim + 1, dtype=dtype, device=device)
        gen = torch.Generator().manual_seed(seed)
        self.input_dim, self.output_dim, self.online, self.noise = input_dim, 1, online, noise
        self.population, self.normalize_inputs = population, normalize_inputs
        self.dtype, self.device = dtype, device
        norms = torch.tensor(teacher_norms, dtype=torch.float64).expand(teacher_width)  # (r,)
        w = gaussian(gen, (teacher_width, input_dim), 1.0)  # (r, d), drawn before the data
        self._w = w / w.norm(dim=1, keepdim=True) * norms[:, None]
        self._act = ACTIVATIONS[teacher_activation].fn
        self.teacher = Teacher(weights=self._w.to(device=device, dtype=dtype), activation=teacher_activation)
        self._x, self._y = self._draw(gen, n)

    def _draw(self, gen: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
        x = gaussian(gen, (n, self.input_dim), 1.0)  # (n, d), float64 on CPU
        if self.normalize_inputs:  # a rescaling, not a draw: the generator advances as without it
            x = x / x.norm(dim=1, keepdim=True)
        y = self._act(x @ self._w.T).sum(-1, keepdim=True) + gaussian(gen, (n, 1), self.noise)  # (n, 1)
        return x.to(device=self.device, dtype=self.dtype), y.to(device=self.device, dtype=self.dtype)

    def data(self) -> tuple[Tensor, Tensor]:
        return self._x, self._y

    def state(self) -> dict[str, Tensor]:
        return {"teacher_weights": self.teacher.weights.cpu(), "teacher_norms": self.teacher.norms.cpu(),
                **data_state(self._x, self._y)}

    def sample(self, generators: list[torch.Generator], n: int) -> tuple[Tensor, Tensor]:
        """x (E, n, d), y (E, n, 1); member e from generators[e] (CPU generators) alone."""
        xs, ys = zip(*(self._draw(g, n) for g in generators))
        return torch.stack(xs), torch.stack(ys)
