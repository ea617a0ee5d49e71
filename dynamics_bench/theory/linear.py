"""Gradient-flow closed forms and quadratures for linear networks: the vector case of de Oliveira–Jatkar–Sontag
(docs/theory.md §2.5), balanced modes of Saxe–McClelland–Ganguli 2014 and of depth-N nets (Arora et al. 2018; §2.8,
§3), and the scalar product x = w1⋯wN with any imbalance (§2.8). Time is gradient-flow time (τ = 1)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

QUAD = dict(epsabs=0.0, epsrel=1e-13, limit=200)  # quad's own error estimate, well inside the tests' 1e-10
ROOT = dict(xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=2000)  # relative accuracy, even for roots near 0


def vector_case_time(x0: float, x1: float, y: float, c: float) -> float:
    """Gradient-flow time for the vector case's product to go from x0 to x1 under f = ½(x − y)² with imbalance c
    (docs/theory.md §2.5(c)): T = F(x1) − F(x0), F(x) = (1/q)·ln|(q√(4x² + c) + 4yx + c)/(x − y)|, q = √(4y² + c)."""
    q = math.sqrt(4 * y * y + c)

    def big_f(x: float) -> float:
        return math.log(abs((q * math.sqrt(4 * x * x + c) + 4 * y * x + c) / (x - y))) / q
    return big_f(x1) - big_f(x0)


def saxe_mode_strength(t: float | np.ndarray, s: float, u0: float) -> np.ndarray:
    """Balanced two-layer mode u̇ = 2u(s − u) from u(0) = u0 (docs/theory.md §3):
    u(t) = s·e^{2st}/(e^{2st} − 1 + s/u0), evaluated as s/(1 + (s/u0 − 1)·e^{−2st}) so large t cannot overflow.
    t a float or numpy array (elementwise); returns numpy float64 of t's shape."""
    return s / (1 + (s / u0 - 1) * np.exp(-2 * s * np.asarray(t, dtype=np.float64)))


def saxe_time(u0: float, uf: float, s: float) -> float:
    """Time for the balanced two-layer mode to go from u0 to uf (docs/theory.md §3): (1/(2s))·ln[uf(s − u0)/(u0(s − uf))]."""
    return math.log(uf * (s - u0) / (u0 * (s - uf))) / (2 * s)


def balanced_mode_time(u0: float, u1: float, s: float, depth: int) -> float:
    """Time for a balanced depth-N mode u̇ = N·u^a·(s − u), a = 2 − 2/N, to go from u0 to u1 (docs/theory.md §2.8, §3;
    u0, u1 > 0 on the same side of s). T = (1/N)∫ du/(u^a(s − u)), split as
        (1/N)·[s^{−a}·ln((s − u0)/(s − u1)) + ∫_{ln u0}^{ln u1} (u^{1−a}/s)·ρ(ln(u/s)) d(ln u)],
    ρ(ℓ) = expm1(aℓ)/expm1(ℓ): the log singularity at u = s in closed form, and the rest in the log variable,
    smooth over the long plateau at small u (plain quad in u loses it). N = 2 gives saxe_time."""
    if not (u0 > 0 and u1 > 0 and s > 0 and (s - u0) * (s - u1) > 0 and depth >= 1):
        raise ValueError(f"need u0, u1, s > 0, u0 and u1 on the same side of s and depth >= 1; got u0={u0}, "
                         f"u1={u1}, s={s}, depth={depth}")
    from scipy.integrate import quad  # here, not at the top: scipy is slow to import, and most runs need none of it

    a = 2 - 2 / depth

    def regular(y: float) -> float:
        ell = y - math.log(s)
        rho = a if ell == 0 else math.expm1(a * ell) / math.expm1(ell)
        return math.exp((1 - a) * y) * rho / s
    rest = quad(regular, math.log(u0), math.log(u1), **QUAD)[0]
    return (s ** -a * math.log((s - u0) / (s - u1)) + rest) / depth


def balanced_mode_strength(t: float | np.ndarray, s: float, u0: float, depth: int) -> np.ndarray:
    """u(t) for the balanced depth-N mode of balanced_mode_time, its inverse by brentq (one root per t >= 0).
    Where s − u(t) is below one ulp of s, returns s. t a float or numpy array; returns numpy float64 of t's shape."""
    t = np.asarray(t, dtype=np.float64)
    return np.array([_mode_strength(float(ti), s, u0, depth) for ti in t.ravel()]).reshape(t.shape)


def _mode_strength(t: float, s: float, u0: float, depth: int) -> float:
    from scipy.optimize import brentq  # here, not at the top: scipy is slow to import, and most runs need none of it

    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    if t == 0:
        return u0
    last = float(np.nextafter(s, u0))  # the float next to s on u0's side: the far end of the bracket
    if balanced_mode_time(u0, last, s, depth) <= t:
        return s
    return brentq(lambda u: balanced_mode_time(u0, u, s, depth) - t, u0, last, **ROOT)


def scalar_product_time(factors: list[float], target: float, f_prime: Callable[[float], float]) -> float:
    """Gradient-flow time for x = w1⋯wN, g(w) = f(x), to go from the product of `factors` to `target`
    (docs/theory.md §2.8). Every wi² − wj² is conserved, so with s the factor of smallest |wi|, c_j = w_j² − s² for
    the others and σ̄ = Π_j sign(w_j):
        x(s) = σ̄·s·P(s),  P(s) = Π_j √(s² + c_j),  ds/dt = −f'(x(s))·σ̄·P(s),
        T = ∫_{s0}^{s1} ds/(−f'(x(s))·σ̄·P(s)),  x(s1) = target (brentq; s·P(s) is increasing).
    Valid while f' keeps its sign between the start and target; s may cross 0 (the product changes sign). In s the
    plateau of a small balanced init is a power law, 1/s^{N−1}, which quad resolves (unlike x's 1/x^{2−2/N})."""
    from scipy.integrate import quad  # here, not at the top: scipy is slow to import, and most runs need none of it

    i = min(range(len(factors)), key=lambda j: abs(factors[j]))
    s0, others = factors[i], factors[:i] + factors[i + 1:]
    c = [w * w - s0 * s0 for w in others]
    sign = math.prod(math.copysign(1.0, w) for w in others)  # σ̄

    def p(s: float) -> float:
        return math.prod(math.sqrt(s * s + cj) for cj in c)

    def dt_ds(s: float) -> float:
        return 1 / (-f_prime(sign * s * p(s)) * sign * p(s))

    s1 = _increasing_root(lambda s: s * p(s), sign * target, s0)
    return quad(dt_ds, s0, s1, **QUAD)[0]


def _increasing_root(fn: Callable[[float], float], value: float, start: float) -> float:
    """The s with fn(s) = value for increasing fn, bracketed by doubling steps away from start."""
    from scipy.optimize import brentq  # here, not at the top: scipy is slow to import, and most runs need none of it

    direction = 1.0 if value > fn(start) else -1.0
    step = abs(start) or 1.0
    while (fn(start + direction * step) - value) * direction < 0:
        step *= 2
    return brentq(lambda s: fn(s) - value, *sorted((start, start + direction * step)), **ROOT)
