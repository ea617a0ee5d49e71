"""Trainer configs (``trainer=gd|sgd|gradient_flow``) and what each one means for the training loop.

Every trainer is a fixed-step integrator of gradient flow on a data stream: GD is Euler with h = lr on the
full data set, SGD is Euler with h = lr on per-member minibatches, and ``gradient_flow`` integrates the flow
itself with step h. All of them report flow time t = step·h, so they compare on one axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from dynamics_bench.config import AllowInf, choice, positive, require
from dynamics_bench.integrators import INTEGRATORS, Integrator


@dataclass(frozen=True)
class Schedule:
    """What the loop needs: the integrator, its step h, the number of steps, and the minibatch size
    (None: the full data set, or task.n fresh samples per step on an online task)."""

    integrator: Integrator
    h: float
    steps: int
    batch_size: int | None
    target_loss: float | None
    divergence_threshold: float


@dataclass
class _Common:
    target_loss: float | None = None  # a member stops once its loss is <= this
    divergence_threshold: AllowInf = 1e10  # a member whose loss is NaN/inf or above this is recorded as diverged

    def _check_common(self) -> None:
        require(self.target_loss is None or self.target_loss >= 0, "trainer.target_loss", self.target_loss,
                "must be >= 0 or null")
        positive("trainer.divergence_threshold", self.divergence_threshold, allow_inf=True)  # inf: NaN/inf only


@dataclass
class GDConfig(_Common):
    name: str = "gd"
    lr: float = 0.05
    steps: int = 1000

    def __post_init__(self) -> None:
        positive("trainer.lr", self.lr)
        require(self.steps >= 0, "trainer.steps", self.steps, "must be >= 0")
        self._check_common()

    def schedule(self) -> Schedule:
        return Schedule(INTEGRATORS["euler"], self.lr, self.steps, None, self.target_loss,
                        self.divergence_threshold)


@dataclass
class SGDConfig(GDConfig):
    name: str = "sgd"
    batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("trainer.batch_size", self.batch_size)

    def schedule(self) -> Schedule:
        return Schedule(INTEGRATORS["euler"], self.lr, self.steps, self.batch_size, self.target_loss,
                        self.divergence_threshold)


@dataclass
class GradientFlowConfig(_Common):
    name: str = "gradient_flow"
    method: str = "rk4"  # a name in integrators.INTEGRATORS
    h: float = 0.01  # step size in flow time
    t_max: float = 10.0  # horizon: ceil(t_max / h) steps

    def __post_init__(self) -> None:
        choice("trainer.method", self.method, INTEGRATORS)
        positive("trainer.h", self.h)
        require(0 <= self.t_max < math.inf, "trainer.t_max", self.t_max, "must be finite and >= 0")
        self._check_common()

    def schedule(self) -> Schedule:
        steps = math.ceil(self.t_max / self.h - 1e-9)  # tolerate t_max/h = 999.9999999 from float input
        return Schedule(INTEGRATORS[self.method], self.h, steps, None, self.target_loss,
                        self.divergence_threshold)


TRAINERS: dict[str, type[GDConfig | SGDConfig | GradientFlowConfig]] = {
    "gd": GDConfig,
    "sgd": SGDConfig,
    "gradient_flow": GradientFlowConfig,
}
