"""Explicit Runge–Kutta integrators of gradient flow θ' = −∇L(θ). GD is the Euler step with step size = lr.

A method is its Butcher tableau: fixed-step methods (euler, heun, rk4) and embedded pairs with an error
estimate for step-size control (bosh3, dopri5). Every method also carries a continuous extension (dense
output) of its own order, used to locate events such as the target loss between steps.

The step size h is a float (every member the same) or an (E,) tensor (per-member step sizes of an adaptive
run). A step returns its stages and the increment θ_{k+1} − θ_k = −h·direction, which the trainer applies
in place once it knows which members move (a stopped or rejected member gets none). The first stage is always
∇L(θ_k), passed in by the trainer, which also uses it for the stopping rules and the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.models.base import Params, per_member

GradFn = Callable[[Params], tuple[Tensor, Params]]  # θ -> (L(θ) (E,), ∇L(θ))
StepSize = float | Tensor  # a float, or (E,) per member
DenseWeights = Callable[[Tensor], Tensor]  # s ∈ [0, 1] (E,) -> weights (E, stages): θ(t_k + s·h) = θ_k − h Σ_i w_i g_i


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge–Kutta method: stage i is evaluated at θ − h Σ_{j<i} a[i−1][j] g_j (gradients g_j),
    θ_{k+1} = θ − h Σ b_i g_i. With b_low (an embedded method of order `order − 1`, or lower) the step also
    estimates its local error. fsal: the last stage is evaluated at θ_{k+1} ("first same as last"), so an
    accepted step hands the next one its first stage for free."""

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    dense: DenseWeights
    b_low: tuple[float, ...] | None = None
    error_order: int = 0  # order of the embedded method: the controller's exponent is 1/(error_order + 1)
    fsal: bool = False

    @property
    def adaptive(self) -> bool:
        return self.b_low is not None

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def grad_evals_per_step(self) -> int:
        """Evaluations a step costs, the first stage included (for FSAL it is the previous step's last)."""
        return self.stages - 1 if self.fsal else self.stages


def _scale(h: StepSize, t: Tensor) -> Tensor:
    """h·t with h a float or a per-member (E,) tensor."""
    return h * t if isinstance(h, float) else per_member(h, t) * t


def _combine(stages: list[Params], weights: tuple[float, ...] | Tensor, key: str) -> Tensor:
    """Σ_i weights_i g_i[key]; weights per stage (floats) or per member and stage ((E, s) tensor)."""
    if isinstance(weights, Tensor):
        return sum(_scale(weights[:, i], g[key]) for i, g in enumerate(stages))
    terms = [(w, g[key]) for w, g in zip(weights, stages) if w != 0.0]
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]  # Euler: the gradient itself, no copy
    return sum(w * g for w, g in terms)


@dataclass
class Step:
    """One attempted step from θ_k: θ_{k+1} = θ_k − h·direction (per parameter, in params order)."""

    stages: list[Params]  # g_1 = ∇L(θ_k), ..., g_s, over the trainable parameters
    h: StepSize
    direction: Params  # Σ b_i g_i, per trainable parameter
    error: Tensor | None  # (E,) RMS of the error estimate over tol = atol + rtol·max(|θ_k|, |θ_{k+1}|); ≤ 1 passes
    end: tuple[Tensor, Params] | None  # (L, ∇L) at θ_{k+1} for FSAL methods

    def increment(self, key: str) -> Tensor:
        return -_scale(self.h, self.direction[key])


def rk_step(method: Tableau, grad_fn: GradFn, params: Params, h: StepSize, first: tuple[Tensor, Params],
            rtol: float = 0.0, atol: float = 0.0) -> Step:
    """One step of `method` from θ_k = params with first stage `first` = (L(θ_k), ∇L(θ_k)). Only the parameters
    the gradient has (the trainable ones) move; the others are passed through."""
    stages = [first[1]]
    end = None
    for row in method.a:
        point = {k: p - _scale(h, _combine(stages, row, k)) if k in first[1] else p for k, p in params.items()}
        loss, grad = grad_fn(point)
        stages.append(grad)
    if method.fsal:
        end = (loss, grad)
    direction = {k: _combine(stages, method.b, k) for k in first[1]}
    error = None
    if method.b_low is not None:
        error = _error_norm(method, stages, params, direction, h, rtol, atol)
    return Step(stages, h, direction, error, end)


def _error_norm(method: Tableau, stages: list[Params], params: Params, direction: Params, h: StepSize,
                rtol: float, atol: float) -> Tensor:
    """Per-member RMS over all trainable entries of (θ̂_{k+1} − θ_{k+1}) / (atol + rtol·max(|θ_k|, |θ_{k+1}|))."""
    diff = tuple(b - bl for b, bl in zip(method.b, method.b_low))
    total, count = 0.0, 0
    for key, d in direction.items():
        p = params[key]
        new = p - _scale(h, d)
        err = _scale(h, _combine(stages, diff, key))
        tol = atol + rtol * torch.maximum(p.abs(), new.abs())
        ratio = torch.where(err == 0, 0.0, err / tol)  # an entry that is and stays 0 under atol = 0: no error
        total = total + ratio.pow(2).flatten(1).sum(1)
        count += p[0].numel()
    return (total / count).sqrt()


def dense_point(method: Tableau, step: Step, params: Params, s: Tensor) -> Params:
    """θ(t_k + s·h) from the step's stages, s (E,) in [0, 1] per member (the method's continuous extension)."""
    weights = method.dense(s)  # (E, stages)
    return {k: p - _scale(step.h, _combine(step.stages, weights, k)) if k in step.direction else p
            for k, p in params.items()}


def advance(params: Params, step: Step, moving: Tensor | None) -> None:
    """θ −= h·direction in place over the trainable parameters, for the members in `moving` ((E,) bool; None: all)."""
    with torch.no_grad():
        if moving is None and isinstance(step.h, float):
            torch._foreach_add_([params[k] for k in step.direction], list(step.direction.values()),
                                alpha=-step.h)  # one fused call
            return
        for key in step.direction:
            inc = step.increment(key)
            if moving is not None:  # where, not a product: a stopped member's increment may be NaN
                inc = torch.where(per_member(moving, inc), inc, 0.0)
            params[key].add_(inc)


# --- tableaus and their continuous extensions (Hairer–Nørsett–Wanner I, II.6) ---
def _poly(s: Tensor, rows: list[list[float]]) -> Tensor:
    """Weights w_i(s) = Σ_p rows[i][p] s^{p+1}, (E, stages)."""
    return torch.stack([sum(c * s ** (p + 1) for p, c in enumerate(row)) for row in rows], dim=1)


def _hermite(b: tuple[float, ...]) -> DenseWeights:
    """Cubic Hermite between θ_k, θ_{k+1} and their slopes (first and last stage of an FSAL method): order 3."""
    def weights(s: Tensor) -> Tensor:
        h01, h10, h11 = 3 * s**2 - 2 * s**3, s**3 - 2 * s**2 + s, s**3 - s**2
        w = torch.stack([h01 * bi for bi in b], dim=1)
        w[:, 0] += h10
        w[:, -1] += h11
        return w
    return weights


_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_D = (-12715105075 / 11282082432, 0.0, 87487479700 / 32700410799, -10690763975 / 1880347072,
             701980252875 / 199316789632, -1453857185 / 822651844, 69997945 / 29380423)


def _dopri5_dense(s: Tensor) -> Tensor:
    """Shampine's (1986) order-4 continuous extension of Dormand–Prince 5(4), as in Hairer's DOPRI5 (CONTD5):
    θ(s) − θ_k = s·Δ + s(1−s)(h f_1 − Δ) + s²(1−s)(2Δ − h f_1 − h f_7) + s²(1−s)² h Σ d_i f_i, Δ = h Σ b_i f_i."""
    unit = torch.eye(7, dtype=s.dtype, device=s.device)
    b = torch.tensor(_DOPRI5_B, dtype=s.dtype, device=s.device)
    d = torch.tensor(_DOPRI5_D, dtype=s.dtype, device=s.device)
    s = s[:, None]
    return (s * b + s * (1 - s) * (unit[0] - b) + s**2 * (1 - s) * (2 * b - unit[0] - unit[6])
            + s**2 * (1 - s) ** 2 * d)


EULER = Tableau(a=(), b=(1.0,), order=1, dense=lambda s: _poly(s, [[1.0]]))
HEUN = Tableau(a=((1.0,),), b=(0.5, 0.5), order=2, dense=lambda s: _poly(s, [[1.0, -0.5], [0.0, 0.5]]))
RK4 = Tableau(a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), order=4,
              dense=lambda s: _poly(s, [[1.0, -1.5, 2 / 3], [0.0, 1.0, -2 / 3], [0.0, 1.0, -2 / 3],
                                        [0.0, -0.5, 2 / 3]]))
BOSH3 = Tableau(a=((0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)), b=(2 / 9, 1 / 3, 4 / 9, 0.0), order=3,
                dense=_hermite((2 / 9, 1 / 3, 4 / 9, 0.0)), b_low=(7 / 24, 1 / 4, 1 / 3, 1 / 8), error_order=2,
                fsal=True)
DOPRI5 = Tableau(
    a=((1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656), _DOPRI5_B[:6]),
    b=_DOPRI5_B, order=5, dense=_dopri5_dense,
    b_low=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40), error_order=4,
    fsal=True)

INTEGRATORS: dict[str, Tableau] = {"euler": EULER, "heun": HEUN, "rk4": RK4, "bosh3": BOSH3, "dopri5": DOPRI5}
