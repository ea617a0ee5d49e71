"""Vector case of de Oliveira–Jatkar–Sontag (docs/theory.md §2.4–2.5) for the harness's three regression costs on
a scalar product x = w2·w1 with target y: mse ½(x − y)², quartic ¼(x − y)⁴, log_cosh log cosh(x − y).

`plain_flow` is gradient flow on f itself in closed form, `reduced_product` the reduced ODE
ẋ = −f′(x)·√(c + 4x²) (solved numerically, tightly), `time_between` the time-to-target quadrature
T = ∫ dx/(−f′(x)·√(c + 4x²)) (§2.5(c)). Time is gradient-flow time."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.integrate import quad, solve_ivp

COSTS = ("mse", "quartic", "log_cosh")
QUAD = dict(epsabs=0.0, epsrel=1e-13, limit=200)
ODE = dict(method="DOP853", rtol=1e-13, atol=1e-15)


def cost(loss: str, y: float) -> Callable[[float], float]:
    """f(x) for the harness's loss `loss` against target y."""
    if loss == "mse":
        return lambda x: 0.5 * (x - y) ** 2
    if loss == "quartic":
        return lambda x: 0.25 * (x - y) ** 4
    if loss == "log_cosh":
        return lambda x: abs(x - y) + math.log1p(math.exp(-2 * abs(x - y))) - math.log(2)  # log cosh, overflow-free
    raise ValueError(f"loss must be one of {COSTS}, got {loss!r}")


def cost_slope(loss: str, y: float) -> Callable[[float], float]:
    """f′(x) for the harness's loss `loss` against target y."""
    if loss == "mse":
        return lambda x: x - y
    if loss == "quartic":
        return lambda x: (x - y) ** 3
    if loss == "log_cosh":
        return lambda x: math.tanh(x - y)
    raise ValueError(f"loss must be one of {COSTS}, got {loss!r}")


def plain_flow(tau: float | np.ndarray, x0: float, y: float, loss: str) -> np.ndarray:
    """x_plain(τ): gradient flow dx/dτ = −f′(x) on f itself from x0, in closed form:
    mse y + (x0 − y)e^{−τ}; quartic y + r0/√(1 + 2r0²τ) (r0 = x0 − y); log_cosh y + asinh(sinh(x0 − y)e^{−τ})."""
    tau = np.asarray(tau, dtype=np.float64)
    r0 = x0 - y
    if loss == "mse":
        return y + r0 * np.exp(-tau)
    if loss == "quartic":
        return y + r0 / np.sqrt(1 + 2 * r0 * r0 * tau)
    if loss == "log_cosh":
        return y + np.arcsinh(math.sinh(r0) * np.exp(-tau))
    raise ValueError(f"loss must be one of {COSTS}, got {loss!r}")


def reduced_product(t: np.ndarray, x0: float, c: float, slope: Callable[[float], float]) -> np.ndarray:
    """x(t) of the reduced ODE ẋ = −f′(x)·√(c + 4x²) from x0 (Prop. 7, eq. 19) at the times t (ascending, ≥ 0),
    by DOP853 at rtol 1e-13: the product of the full 2k-dimensional flow with imbalance c."""
    t = np.asarray(t, dtype=np.float64)
    solution = solve_ivp(lambda _, x: [-slope(x[0]) * math.sqrt(c + 4 * x[0] * x[0])], (0.0, float(t[-1])), [x0],
                         t_eval=t, **ODE)
    if not solution.success:
        raise RuntimeError(f"reduced ODE failed: {solution.message}")
    return solution.y[0]


def time_between(x0: float, x1: float, c: float, slope: Callable[[float], float]) -> float:
    """Flow time for the product to go from x0 to x1 with imbalance c (docs/theory.md §2.5(c)):
    T = ∫_{x0}^{x1} dx/(−f′(x)·√(c + 4x²)), valid while f′ keeps its sign on [x0, x1]."""
    return quad(lambda x: 1 / (-slope(x) * math.sqrt(c + 4 * x * x)), x0, x1, **QUAD)[0]


def plain_time(x0: float, x1: float, loss: str, y: float) -> float:
    """Plain gradient-flow time τ from x0 to x1 (the c → ∞ limit of T·√c), the inverse of `plain_flow`."""
    r0, r1 = x0 - y, x1 - y
    if loss == "mse":
        return math.log(r0 / r1)
    if loss == "quartic":
        return (1 / (r1 * r1) - 1 / (r0 * r0)) / 2
    if loss == "log_cosh":
        return math.log(math.sinh(r0) / math.sinh(r1))
    raise ValueError(f"loss must be one of {COSTS}, got {loss!r}")
