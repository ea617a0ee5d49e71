"""Trainer configs (``trainer=gd|sgd|gradient_flow``) and what each one means for the training loop.

Every trainer integrates gradient flow on a data stream: GD is Euler with h = lr on the full data set, SGD is
Euler with h = lr on per-member minibatches, and ``gradient_flow`` integrates the flow itself, with a fixed
step h (euler, heun, rk4) or with error control (bosh3, dopri5). All of them report flow time t, so they
compare on one axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dynamics_bench.config import AllowInf, choice, positive, require
from dynamics_bench.integrators import INTEGRATORS, Tableau


@dataclass(frozen=True)
class Schedule:
    """What the loop needs. Fixed-step methods take `steps` steps of h; adaptive methods integrate to t_max
    with h as the first trial step, under rtol/atol, within `max_steps` attempted steps.
    batch_size None: the full data set (or task.n fresh samples per step on an online task).
    Under ensemble.vary a tuple holds member e's value at [e]: h and t_max (= steps·h) where trainer.lr varies
    (GD/SGD only), target_loss where trainer.target_loss does."""

    method: Tableau
    h: float | tuple[float, ...]
    t_max: float | tuple[float, ...]
    steps: int | None  # fixed-step methods only
    batch_size: int | None
    target_loss: float | None | tuple[float | None, ...]
    divergence_threshold: float
    locate_target: bool = False  # place time_to_target between steps with the method's dense output
    rtol: float = 0.0
    atol: float = 0.0
    max_steps: int | None = None  # adaptive only: attempted steps (accepted + rejected) before giving up
    compile: bool = False  # evaluate the loss and gradient with dynamics_bench.compiled.compile_loss_and_grad

    @property
    def adaptive(self) -> bool:
        return self.method.adaptive


def member_value(value: Any, e: int) -> Any:
    """Member e's value of a Schedule field (h, t_max, target_loss) that ensemble.vary may make a per-member tuple."""
    return value[e] if isinstance(value, tuple) else value


@dataclass
class _Common:
    target_loss: float | None = None  # a member stops once its loss is <= this
    divergence_threshold: AllowInf = 1e10  # a member whose loss is NaN/inf or above this is recorded as diverged
    compile: bool = False  # torch.compile the loss and gradient (eager, with a warning, where that fails)

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

    def schedule(self, eps: float) -> Schedule:
        return Schedule(INTEGRATORS["euler"], self.lr, self.steps * self.lr, self.steps, None, self.target_loss,
                        self.divergence_threshold, compile=self.compile)


@dataclass
class SGDConfig(GDConfig):
    name: str = "sgd"
    batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("trainer.batch_size", self.batch_size)

    def schedule(self, eps: float) -> Schedule:
        return Schedule(INTEGRATORS["euler"], self.lr, self.steps * self.lr, self.steps, self.batch_size,
                        self.target_loss, self.divergence_threshold, compile=self.compile)


ADAPTIVE_DEFAULTS = {"rtol": 1e-10, "atol": 1e-12, "max_steps": 20_000}  # for keys left null (float64)
RTOL_FLOOR = 100  # × the dtype's eps: below it the error estimate is round-off and every step is rejected


@dataclass
class GradientFlowConfig(_Common):
    name: str = "gradient_flow"
    method: str = "rk4"  # a name in integrators.INTEGRATORS
    h: float = 0.01  # fixed-step methods: the step; adaptive methods: the first trial step
    t_max: float = 10.0  # horizon (fixed-step: ceil(t_max / h) steps, the last one shortened to land on t_max)
    rtol: float | None = None  # adaptive methods only: relative and absolute tolerance per entry of θ
    atol: float | None = None
    max_steps: int | None = None  # adaptive methods only: attempted steps per member before it gives up

    def __post_init__(self) -> None:
        choice("trainer.method", self.method, INTEGRATORS)
        positive("trainer.h", self.h)
        require(0 <= self.t_max < math.inf, "trainer.t_max", self.t_max, "must be finite and >= 0")
        adaptive = INTEGRATORS[self.method].adaptive
        for key in ADAPTIVE_DEFAULTS:  # a silently ignored value would be a bug
            require(adaptive or getattr(self, key) is None, f"trainer.{key}", getattr(self, key),
                    f"must be null with the fixed-step trainer.method={self.method} (only the adaptive "
                    + ", ".join(k for k, m in INTEGRATORS.items() if m.adaptive) + " take it)")
        if adaptive:
            require(self.rtol is None or self.rtol >= 0, "trainer.rtol", self.rtol, "must be >= 0")
            require(self.atol is None or self.atol >= 0, "trainer.atol", self.atol, "must be >= 0")
            require(self.rtol != 0 or self.atol != 0, "trainer.rtol", self.rtol, "rtol and atol cannot both be 0")
            positive("trainer.max_steps", self.max_steps, allow_none=True)
        self._check_common()

    def schedule(self, eps: float) -> Schedule:
        """The loop's plan; `eps` is the dtype's machine epsilon, which bounds the useful rtol: a null rtol is
        1e-10 or RTOL_FLOOR·eps, whichever is larger (atol likewise scaled), and a smaller one is an error."""
        method = INTEGRATORS[self.method]
        if method.adaptive:
            floor = RTOL_FLOOR * eps
            rtol = max(ADAPTIVE_DEFAULTS["rtol"], floor) if self.rtol is None else self.rtol
            atol = ADAPTIVE_DEFAULTS["atol"] * max(1.0, floor / ADAPTIVE_DEFAULTS["rtol"]) if self.atol is None \
                else self.atol
            require(rtol == 0 or rtol >= floor, "trainer.rtol", rtol,
                    f"must be >= {RTOL_FLOOR}·eps = {floor:.1e} for this dtype (or 0, with atol only)")
            max_steps = ADAPTIVE_DEFAULTS["max_steps"] if self.max_steps is None else self.max_steps
            return Schedule(method, self.h, self.t_max, None, None, self.target_loss, self.divergence_threshold,
                            locate_target=True, rtol=rtol, atol=atol, max_steps=max_steps, compile=self.compile)
        steps = math.ceil(self.t_max / self.h - 1e-9)  # tolerate t_max/h = 999.9999999 from float input
        return Schedule(method, self.h, self.t_max, steps, None, self.target_loss, self.divergence_threshold,
                        locate_target=True, compile=self.compile)


TRAINERS: dict[str, type[GDConfig | SGDConfig | GradientFlowConfig]] = {
    "gd": GDConfig,
    "sgd": SGDConfig,
    "gradient_flow": GradientFlowConfig,
}
