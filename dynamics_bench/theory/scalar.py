"""Closed forms for paper (1)'s two-parameter pictures and the scalar-factor net x = w1⋯wN (docs/theory.md §2.4,
§2.6–§2.8), in the harness's convention f(x) = ½(x − y)² (mse), which runs twice as fast as the paper's (x − y)²:
the vector fields of Fig. 3 (linear net and algebraic-sigmoid neuron), the sigmoid's invariant, branches and
target set, the deep plateau's leading term, and the 1-D reduction of the scalar-factor flow integrated in time."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.integrate import solve_ivp


def linear_vector_field(w1: np.ndarray, w2: np.ndarray, y: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """−∇ of ½(y − w1·w2)² (k = 1): (ẇ1, ẇ2) = ((y − w1w2)·w2, (y − w1w2)·w1); the paper's Fig. 3 field halved."""
    residual = y - w1 * w2
    return residual * w2, residual * w1


def algebraic_sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = z/√(1 + z²)."""
    return z / np.sqrt(1 + z * z)


def sigmoid_vector_field(w: np.ndarray, a: np.ndarray, y: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """−∇ of ½(y − a·σ(w))² (the paper's eq. 9 halved): (ẇ, ȧ) = ((y − aσ(w))·a·σ'(w), (y − aσ(w))·σ(w)),
    σ'(z) = (1 + z²)^{−3/2}."""
    residual = y - a * algebraic_sigmoid(w)
    return residual * a * (1 + w * w) ** -1.5, residual * algebraic_sigmoid(w)


def sigmoid_invariant(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Prop. 8's conserved C = a² − ½(1 + w²)² (−½ at the origin; the paper's text prints −1, its eq. 11 −½)."""
    return a * a - 0.5 * (1 + w * w) ** 2


def sigmoid_centre_stable(w: np.ndarray) -> np.ndarray:
    """The saddle's centre-stable branch of C = −½: a = −w·√((2 + w²)/2) (quadrants II and IV; docs §2.7)."""
    return -w * np.sqrt((2 + w * w) / 2)


def sigmoid_unstable(w: np.ndarray) -> np.ndarray:
    """The saddle's unstable branch of C = −½: a = +w·√((2 + w²)/2) (quadrants I and III)."""
    return w * np.sqrt((2 + w * w) / 2)


def sigmoid_target(w: np.ndarray, y: float = 1.0) -> np.ndarray:
    """The target set a·σ(w) = y: a = y·√(1 + w²)/w (w ≠ 0)."""
    return y * np.sqrt(1 + w * w) / w


def plateau_time(eps: float, depth: int, y: float) -> float:
    """Leading term of the time a balanced start w_i = ε (N = depth factors, f = ½(x − y)², y > 0) spends on its
    plateau (docs/theory.md §2.8): ln(1/ε)/y for N = 2, ε^{−(N−2)}/(y(N − 2)) for N ≥ 3."""
    if depth == 2:
        return math.log(1 / eps) / y
    if depth < 2:
        raise ValueError(f"depth must be >= 2, got {depth}")
    return eps ** -(depth - 2) / (y * (depth - 2))


def reduced_product_path(factors: list[float], times: np.ndarray, f_prime: Callable[[float], float],
                         rtol: float = 1e-13, atol: float = 1e-15) -> np.ndarray:
    """x(t) = w1⋯wN at `times` (ascending, from 0) by the 1-D reduction of docs/theory.md §2.8: with s the factor
    of smallest |w_i|, c_j = w_j² − s² and σ̄ = Π_j sign(w_j) over the others (all conserved),
        ds/dt = −f'(x(s))·σ̄·P(s),  x(s) = σ̄·s·P(s),  P(s) = Π_j √(s² + c_j),
    integrated by DOP853 — one scalar ODE in place of the N-dimensional flow."""
    i = min(range(len(factors)), key=lambda j: abs(factors[j]))
    s0, others = factors[i], factors[:i] + factors[i + 1:]
    c = np.array([w * w - s0 * s0 for w in others])
    sign = math.prod(math.copysign(1.0, w) for w in others)

    def rhs(_t: float, s: np.ndarray) -> list[float]:
        p = float(np.prod(np.sqrt(s[0] ** 2 + c)))
        return [-f_prime(sign * s[0] * p) * sign * p]
    times = np.asarray(times, dtype=float)
    sol = solve_ivp(rhs, (0.0, float(times[-1])), [s0], method="DOP853", t_eval=times, rtol=rtol, atol=atol)
    s = sol.y[0]
    return sign * s * np.prod(np.sqrt(s[:, None] ** 2 + c[None, :]), axis=1)
