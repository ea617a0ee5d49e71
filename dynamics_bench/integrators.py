"""Fixed-step integrators of gradient flow θ' = −∇L(θ). GD is the Euler step with step size = learning rate.

An integrator makes one step of size h and declares its order and its gradient evaluations per step. It
returns the step as an increment, θ_{k+1} = θ_k + alpha·direction, which the trainer applies in place once
it knows which members still run (a stopped member gets no increment). The first evaluation is always at θ_k,
so the step also returns L(θ_k) and ∇L(θ_k): the trainer uses them for the stopping rules and metrics
without paying for another evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.models.base import Params

GradFn = Callable[[Params], tuple[Tensor, Params]]  # θ -> (L(θ) (E,), ∇L(θ))
Step = tuple[Tensor, Params, list[Tensor], float]  # L(θ_k), ∇L(θ_k), direction, alpha
StepFn = Callable[[GradFn, Params, float], Step]


def _axpy(params: Params, direction: Params, alpha: float) -> Params:
    return {k: p.add(direction[k], alpha=alpha) for k, p in params.items()}


def euler_step(grad_fn: GradFn, params: Params, h: float) -> Step:
    loss, grad = grad_fn(params)
    return loss, grad, list(grad.values()), -h


def rk4_step(grad_fn: GradFn, params: Params, h: float) -> Step:
    """Classical Runge–Kutta 4 on θ' = −g(θ): global error O(h⁴) on smooth losses."""
    loss, g1 = grad_fn(params)
    _, g2 = grad_fn(_axpy(params, g1, -h / 2))
    _, g3 = grad_fn(_axpy(params, g2, -h / 2))
    _, g4 = grad_fn(_axpy(params, g3, -h))
    direction = [g1[k] + 2 * (g2[k] + g3[k]) + g4[k] for k in params]
    return loss, g1, direction, -h / 6


def advance(params: Params, direction: list[Tensor], alpha: float) -> None:
    """θ += alpha·direction, in place (one fused call for all parameters)."""
    with torch.no_grad():
        torch._foreach_add_(list(params.values()), direction, alpha=alpha)


@dataclass(frozen=True)
class Integrator:
    step: StepFn
    order: int
    grad_evals_per_step: int


INTEGRATORS: dict[str, Integrator] = {
    "euler": Integrator(euler_step, order=1, grad_evals_per_step=1),
    "rk4": Integrator(rk4_step, order=4, grad_evals_per_step=4),
}
