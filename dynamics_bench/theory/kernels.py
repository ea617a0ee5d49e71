"""Gaussian-input kernels k(u, v) = E_{x~N(0,I_d)}[σ(uᵀx)σ(vᵀx)] and the population loss of a two-layer student
against a two-layer teacher (docs/theory.md §6.2–6.3; Cho & Saul 2009 for relu, Zhou–Ge–Jin 2021 for abs, Williams 1997
for erf).

relu and abs depend on the angle θ = ∠(u, v) through sin θ and (π − θ)cos θ, which autograd cannot differentiate
where θ = 0 or π although k is C² there. Both are written with H(u, v) = ‖u‖‖v‖h(θ̃), h(θ) = sin θ − θ cos θ,
on the folded angle θ̃ = ∠(u, ±v) ∈ [0, π/2] (the sign making ±uᵀv ≥ 0):
    relu: k = ½·max(uᵀv, 0) + H/(2π),    abs: k = |uᵀv| + 2H/π.
Each is the exact closed form on its side of uᵀv = 0 (so the switch costs no accuracy, in k or its derivatives),
and the only singular point left is θ̃ = 0, where H = O(θ̃³) has value, gradient and Hessian 0.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# h(θ) = Σ_k (−1)^{k+1}·2k·θ^{2k+1}/(2k+1)!; below 0.5, 7 terms leave a relative error < 1e-16 (next term 3e-19 at
# θ = 0.5 against h = 0.04), where sin θ − θ cos θ would cancel (and autograd's h' = θ sin θ with it)
SERIES_BELOW = 0.5
# Pairs with 1 − |cos θ| below this take their angle from their vectors (atan2), the others from the Gram matrix
# (arccos): at 1 − |cos θ| = 1e-3 (θ̃ ≈ 0.045) arccos's relative error is ~1e-16/θ̃² ≈ 5e-14 and its slope ≤ 23.
NEAR = 1e-3
CHUNK_ENTRIES = 2**20  # near pairs × d above which their angles are computed in checkpointed chunks (8 MB each)
H_SERIES = [(-1) ** (k + 1) * 2 * k / math.factorial(2 * k + 1) for k in range(1, 8)]


def _h(theta: Tensor) -> Tensor:
    """h(θ) = sin θ − θ cos θ = θ³/3 − θ⁵/30 + …, by its series at small θ (accurate value and derivatives)."""
    t2 = theta * theta
    series = torch.full_like(theta, H_SERIES[-1])
    for c in reversed(H_SERIES[:-1]):  # Horner in θ²
        series = series * t2 + c
    return torch.where(theta < SERIES_BELOW, theta * t2 * series, torch.sin(theta) - theta * torch.cos(theta))


def _folded(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """uᵀv, H = ‖u‖‖v‖h(θ̃) with θ̃ = ∠(u, sign(uᵀv)·v) ∈ [0, π/2], and the mask of pairs with a zero vector;
    u (..., m, d), v (..., r, d) -> three (..., m, r).

    θ̃ = arccos|cos θ| from the Gram matrix for most pairs: O(m·r) memory. Within NEAR of 1 − |cos θ| = 0 arccos
    would lose half the digits (and its derivative blows up), so those pairs alone get θ̃ = 2·atan2(‖ū − ṽ‖, ‖ū + ṽ‖)
    from their unit vectors, accurate to ~eps/θ̃ relative (the rounding of ū, ṽ) rather than arccos's ~eps/θ̃²
    (:func:`_close_angles`: O(pairs) memory more for a gradient). Double where: zero vectors and exactly coincident
    folded directions are replaced by harmless values before any norm, division, arccos or atan2 sees them, so
    their backward passes (and double backward) stay finite; the caller's where then discards them."""
    lead = torch.broadcast_shapes(u.shape[:-2], v.shape[:-2])
    u, v = u.expand(*lead, *u.shape[-2:]), v.expand(*lead, *v.shape[-2:])
    u_zero = torch.linalg.vector_norm(u, dim=-1) == 0  # (..., m)
    v_zero = torch.linalg.vector_norm(v, dim=-1) == 0  # (..., r)
    zero = u_zero[..., :, None] | v_zero[..., None, :]  # (..., m, r)
    u = torch.where(u_zero[..., None], 1.0, u)
    v = torch.where(v_zero[..., None], 1.0, v)
    nu, nv = torch.linalg.vector_norm(u, dim=-1), torch.linalg.vector_norm(v, dim=-1)
    norms = nu[..., :, None] * nv[..., None, :]  # (..., m, r)
    dot = u @ v.mT  # (..., m, r)
    sign = torch.where(dot >= 0, 1.0, -1.0).to(dot.dtype)  # (..., m, r), a constant: at uᵀv = 0 |·| would kill
    cosine = (sign * dot / norms).clamp(max=1.0)  # the slope that the folded closed form keeps
    near = cosine > 1 - NEAR
    theta = torch.arccos(torch.where(near, 0.5, cosine))  # near pairs are overwritten below
    pairs = near.nonzero(as_tuple=True)  # (..., i, j) indices of the near pairs
    if pairs[0].numel():
        close = _close_angles(u / nu[..., None], v / nv[..., None], sign[pairs], pairs)
        theta = theta.index_put(pairs, close)
    return dot, norms * _h(theta), zero


def _close_angle(unit_u: Tensor, unit_v: Tensor, flip: Tensor, *pairs: Tensor) -> Tensor:
    """θ̃ = 2·atan2(‖ū − sṽ‖, ‖ū + sṽ‖) for the given (..., i, j) pairs, (K,); 0 where exactly parallel (where
    h(0) = h′(0) = h″(0) = 0, and the double where keeps atan2's singular slope out of the graph)."""
    ub = unit_u[(*pairs[:-1],)]  # (K, d)
    vb = unit_v[(*pairs[:-2], pairs[-1])]  # (K, d)
    diff, total = ub - flip[:, None] * vb, ub + flip[:, None] * vb
    parallel = (diff == 0).all(-1)  # (K,): θ̃ = 0 exactly (u = v, u = 2v, u = −v, ...)
    diff = torch.where(parallel[:, None], 1.0, diff)
    close = 2 * torch.atan2(torch.linalg.vector_norm(diff, dim=-1), torch.linalg.vector_norm(total, dim=-1))
    return torch.where(parallel, 0.0, close)


def _close_angles(unit_u: Tensor, unit_v: Tensor, flip: Tensor, pairs: tuple[Tensor, ...]) -> Tensor:
    """_close_angle over all near pairs. When they are many (late in a run every student of a group is nearly
    parallel to its teacher and its siblings: K ≈ m²/r), chunks of CHUNK_ENTRIES (K·d) entries are checkpointed:
    their (chunk, d) intermediates are recomputed in the backward instead of kept, so a loss-and-gradient holds
    O(K) beyond the inputs rather than O(K·d) (a Hessian-vector product's graph still holds them)."""
    count, dim = flip.shape[0], unit_u.shape[-1]
    if count * dim <= CHUNK_ENTRIES:
        return _close_angle(unit_u, unit_v, flip, *pairs)
    step = max(1, CHUNK_ENTRIES // dim)
    return torch.cat([checkpoint(_close_angle, unit_u, unit_v, flip[i:i + step], *(p[i:i + step] for p in pairs),
                                 use_reentrant=False) for i in range(0, count, step)])


def _relu(u: Tensor, v: Tensor) -> Tensor:
    """(‖u‖‖v‖/2π)(sin θ + (π − θ)cos θ) = ½·max(uᵀv, 0) + H/(2π); 0 with no gradient at a zero vector."""
    dot, big_h, zero = _folded(u, v)
    return torch.where(zero, 0.0, torch.where(dot >= 0, dot, 0.0) / 2 + big_h / (2 * math.pi))


def _abs(u: Tensor, v: Tensor) -> Tensor:
    """(‖u‖‖v‖/π)(2 sin θ + (π − 2θ)cos θ) = |uᵀv| + 2H/π; 0 with no gradient at a zero vector."""
    dot, big_h, zero = _folded(u, v)
    return torch.where(zero, 0.0, torch.where(dot >= 0, dot, -dot) + 2 * big_h / math.pi)


def _erf(u: Tensor, v: Tensor) -> Tensor:
    """(2/π)·arcsin(2uᵀv/√((1 + 2‖u‖²)(1 + 2‖v‖²))): smooth, and the argument is < 1 in exact arithmetic
    ((1 + 2a²)(1 + 2b²) > 4a²b²); it rounds to 1 only for norms near 1e8."""
    su, sv = torch.rsqrt(1 + 2 * u.square().sum(-1)), torch.rsqrt(1 + 2 * v.square().sum(-1))  # (..., m), (..., r)
    scale = su[..., :, None] * sv[..., None, :]  # (..., m, r)
    return (2 / math.pi) * torch.asin(2 * (u @ v.mT) * scale)


KERNELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"relu": _relu, "abs": _abs, "erf": _erf}


def gaussian_kernel(activation: str, u: Tensor, v: Tensor) -> Tensor:
    """k(u_i, v_j) = E_{x~N(0,I_d)}[σ(u_iᵀx)σ(v_jᵀx)] for every pair (docs/theory.md §6.2); u (..., m, d),
    v (..., r, d) -> (..., m, r), leading dims broadcast. With θ = ∠(u, v):
        abs:  (‖u‖‖v‖/π)(2 sin θ + (π − 2θ)cos θ)
        relu: (‖u‖‖v‖/2π)(sin θ + (π − θ)cos θ)
        erf:  (2/π)·arcsin(2uᵀv/√((1 + 2‖u‖²)(1 + 2‖v‖²)))
    Twice differentiable by autograd everywhere. At θ = 0 and θ = π (where relu's k = ½uᵀv + O(θ³) and O((π − θ)³),
    abs's k = ±uᵀv + O(θ³)) gradient and Hessian are the exact limits. At a zero vector relu and abs are not
    differentiable: k = 0 and every derivative of that pair is 0, the convention autograd gives on samples
    (relu'(0) = sign(0) = 0). relu and abs take O(m·r) memory, plus O(d) per pair of nearly parallel directions."""
    if activation not in KERNELS:
        raise ValueError(f"activation={activation!r} has no Gaussian kernel; valid: {', '.join(KERNELS)}")
    return KERNELS[activation](u, v)


def population_loss(w: Tensor, a: Tensor, teacher_weights: Tensor, activation: str) -> Tensor:
    """½·Σ_o E_{x~N(0,I_d)}[(f_o(x) − f*(x))²] per member (docs/theory.md §6.3): the mse loss with reduction=mean as
    n → ∞. Student f_o(x) = Σ_j a_oj σ(w_jᵀx), w (E, m, d), a (E, o, m) effective weights; teacher
    f*(x) = Σ_i σ(w_i*ᵀx), teacher_weights (r, d), unit top weights. Returns (E,):
        ½·Σ_o [Σ_jk a_oj a_ok k(w_j, w_k) − 2·Σ_ji a_oj k(w_j, w_i*) + Σ_ii' k(w_i*, w_i'*)].
    Computed as ½·cᵀKc over the stacked neurons [w; w*] with c = [a_o; −1]: student-student and student-teacher
    pairs go through the same kernel call, so at a student that computes the teacher their entries agree and the
    sum cancels to a few ulps of Σ|c_p c_q k_pq| (5 to 10 times closer to 0 than three separate sums; it can
    come out a few ulps below 0)."""
    e, o, _ = a.shape
    r = teacher_weights.shape[0]
    neurons = torch.cat([w, teacher_weights.expand(e, r, -1)], dim=1)  # (E, m + r, d)
    c = torch.cat([a, a.new_full((e, o, r), -1.0)], dim=2)  # (E, o, m + r)
    k = gaussian_kernel(activation, neurons, neurons)  # (E, m + r, m + r)
    return 0.5 * torch.einsum("eoi,eij,eoj->e", c, k, c)
