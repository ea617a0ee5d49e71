"""Extreme eigenvalues of the loss Hessian ∇²L over the trainable parameters (theory.md §1.6.6, §2.3).

λ_max is the sharpness: a fixed-step method is stable on the quadratic model only while λ_max·h stays inside its
stability interval (GD: λ_max·h < 2). λ_min < 0 marks a saddle, and with the dense spectrum the number of
negative eigenvalues is its index (the vector case's origin: ±|f′(0)| each k times, index k).
Hessian-vector products come from double backward, batched over members (members never mix, so one product
serves all). Up to metrics.hessian_dense_max parameters the whole Hessian is formed and
diagonalized; above, Lanczos with full reorthogonalization gives the extremes.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.config import ConfigError
from dynamics_bench.metrics.base import Metric, Snapshot, Values, free_memory
from dynamics_bench.models.base import Params

NEGATIVE = 1e-8  # hessian_negative counts the eigenvalues below −NEGATIVE·max|λ|
BREAKDOWN = 1e-10  # a Lanczos residual below this × ‖T‖ has exhausted its Krylov space: restart there
DENSE_CHUNK = 64  # Hessian columns formed at once (batched products), bounding their memory
START_SEED = 0  # Lanczos starts from one fixed random vector, shared by every member: reproducible, and a
# member alone and in an ensemble get the same Krylov space

MatVec = Callable[[Tensor], Tensor]  # (E, P) -> (E, P)


def flatten(params: Params) -> Tensor:
    """{name: (E, ...)} -> (E, P)."""
    return torch.cat([v.flatten(1) for v in params.values()], 1)


def unflatten(vector: Tensor, like: Params) -> Params:
    """(E, P) -> {name: (E, ...)} shaped like `like`."""
    out, start = {}, 0
    for key, value in like.items():
        size = value[0].numel()
        out[key] = vector[:, start:start + size].reshape(value.shape)
        start += size
    return out


def hessian_product(s: Snapshot) -> MatVec:
    """v ↦ ∇²L(θ)·v for every member, on the metrics' data set: v (E, P), or a batch (B, E, P).

    Double backward: the gradient's graph is built once, and each product is one backward through it (an
    order of magnitude cheaper than rebuilding it per product with forward-over-reverse)."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in s.params.items()}
    with torch.enable_grad():
        loss = s.objective.loss(leaves, s.x, s.y).sum()
        gradient = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
        gradient = flatten(dict(zip(leaves, gradient)))

    def product(v: Tensor) -> Tensor:
        if not gradient.requires_grad:  # ∇L does not depend on θ at all: H = 0
            return torch.zeros_like(v)
        parts = torch.autograd.grad(gradient, list(leaves.values()), grad_outputs=v, retain_graph=True,
                                    allow_unused=True, is_grads_batched=v.dim() == 3)
        batch = v.shape[:-1]  # (E,) or (B, E)
        return torch.cat([v.new_zeros(*batch, p[0].numel()) if d is None else d.reshape(*batch, -1)
                          for d, p in zip(parts, leaves.values())], -1)
    return product


def dense_spectrum(product: MatVec, size: int, dim: int, like: Tensor) -> Tensor:
    """Every eigenvalue of the (E, P, P) Hessian, ascending, (E, P)."""
    basis = torch.eye(dim, dtype=like.dtype, device=like.device)[:, None].expand(dim, size, dim)
    columns = torch.cat([product(chunk) for chunk in basis.split(DENSE_CHUNK)])  # (P, E, P): column k at [k, e]
    h = columns.permute(1, 2, 0)
    return torch.linalg.eigvalsh((h + h.mT) / 2)


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """w (E, P) minus its projection on the orthonormal rows of basis (E, j, P), twice ("twice is enough",
    Parlett): the second pass removes what round-off left of the first."""
    for _ in range(2):
        w = w - (basis.mT @ (basis @ w.unsqueeze(2))).squeeze(2)  # (E, P)
    return w


def lanczos_extremes(product: MatVec, start: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Smallest and largest Ritz values (E,) after min(steps, P) Lanczos steps from start (E, P).

    Full reorthogonalization keeps the basis orthonormal to round-off, so the tridiagonal T's extreme eigenvalues
    converge to the Hessian's from inside. A member whose residual vanishes has found an invariant subspace (all
    of H's eigenvalues its start vector sees); it restarts from a fresh random direction orthogonal to its basis,
    with a zero coupling in T, which leaves its Ritz values inside the spectrum."""
    size, dim = start.shape
    steps = min(steps, dim)
    generator = torch.Generator().manual_seed(START_SEED + 1)
    basis = start.new_zeros(size, steps, dim)
    alpha, beta = start.new_zeros(size, steps), start.new_zeros(size, steps)
    scale = start.new_zeros(size)  # ≈ ‖T‖ so far: what a residual is small against
    q = start / torch.linalg.vector_norm(start, dim=1, keepdim=True)
    for j in range(steps):
        basis[:, j] = q
        w = product(q)
        alpha[:, j] = (w * q).sum(1)
        if j + 1 == steps:
            break
        w = _orthogonalize(w, basis[:, :j + 1])  # also removes the α_j q_j and β_{j−1} q_{j−1} terms
        residual = torch.linalg.vector_norm(w, dim=1)
        scale = torch.maximum(scale, alpha[:, j].abs() + residual)
        exhausted = residual <= BREAKDOWN * scale
        if bool(exhausted.any()):
            fresh = torch.randn(dim, generator=generator, dtype=torch.float64).to(start).expand(size, dim)
            w = torch.where(exhausted[:, None], _orthogonalize(fresh, basis[:, :j + 1]), w)
            residual = torch.where(exhausted, 0.0, residual)
        beta[:, j] = residual
        q = w / torch.linalg.vector_norm(w, dim=1, keepdim=True)
    off = beta[:, :steps - 1]
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    ritz = torch.linalg.eigvalsh(tridiagonal)
    return ritz[:, 0], ritz[:, -1]


def _check_basis_fits(asked: int, size: int, steps: int, dim: int, like: Tensor) -> None:
    """The Lanczos basis (E × steps × P) must fit in half the free memory, or the run would be killed."""
    need, free = size * steps * dim * like.element_size(), free_memory(like.device)
    if free is not None and need > free // 2:
        raise ConfigError("metrics.lanczos_steps", asked,
                          f"the Lanczos basis of {steps} vectors of P = {dim} parameters for {size} member(s) needs "
                          f"{need / 2**30:.3g} GiB, more than half the {free / 2**30:.3g} GiB free on {like.device}: "
                          "lower metrics.lanczos_steps or ensemble.size")


def hessian(s: Snapshot) -> Values:
    """hessian_max, hessian_min, hessian_negative (dense only; empty under Lanczos) and, for fixed-step trainers,
    sharpness_lr = λ_max·h."""
    product, like = hessian_product(s), next(iter(s.params.values()))
    size, dim = like.shape[0], sum(v[0].numel() for v in s.params.values())
    if dim <= s.settings.hessian_dense_max:
        eigenvalues = dense_spectrum(product, size, dim, like)
        low, high = eigenvalues[:, 0], eigenvalues[:, -1]
        cut = -NEGATIVE * eigenvalues.abs().amax(1, keepdim=True)
        negative = (eigenvalues < cut).sum(1).to(like.dtype)
    else:
        steps = min(s.settings.lanczos_steps, dim)
        _check_basis_fits(s.settings.lanczos_steps, size, steps, dim, like)
        start = torch.randn(dim, generator=torch.Generator().manual_seed(START_SEED), dtype=torch.float64)
        low, high = lanczos_extremes(product, start.to(like).expand(size, dim), steps)
        negative = torch.full_like(low, math.nan)
    values = {"hessian_max": high, "hessian_min": low, "hessian_negative": negative}
    if s.settings.step_size is not None:
        values["sharpness_lr"] = high * s.settings.step_size
    return values


HESSIAN = {"hessian": Metric(hessian, heavy=True)}
