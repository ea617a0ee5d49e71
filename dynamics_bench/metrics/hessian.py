"""Extreme eigenvalues of the loss Hessian ∇²L over the trainable parameters (docs/theory.md §2.5(g), §2.6).

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
from dynamics_bench.metrics.base import Metric, Settings, Snapshot, Values, finite_members_only, free_memory
from dynamics_bench.models.base import Params

NEGATIVE = 1e-8  # hessian_negative counts the eigenvalues below −NEGATIVE·max|λ| (float64)
BREAKDOWN = 1e-10  # a Lanczos residual below this × ‖T‖ has exhausted its Krylov space: restart there
DENSE_CHUNK = 64  # Hessian columns formed at once (batched products), bounding their memory
START_SEED = 0  # Lanczos starts (and restarts) from fixed random vectors, shared by every member: reproducible,
# and a member alone and in an ensemble get the same Krylov space

MatVec = Callable[[Tensor], Tensor]  # (E, P) -> (E, P)


def flatten(params: Params) -> Tensor:
    """{name: (E, ...)} -> (E, P)."""
    return torch.cat([v.flatten(1) for v in params.values()], 1)


def hessian_product(s: Snapshot) -> MatVec:
    """v ↦ ∇²L(θ)·v for every member, on the metrics' data set: v (E, P), or a batch (B, E, P).

    Double backward: the gradient's graph is built once, and each product is one backward through it (an
    order of magnitude cheaper than rebuilding it per product with forward-over-reverse)."""
    full, leaves = s.objective.leaves(s.params)  # only the trainable parameters are differentiated
    with torch.enable_grad():
        loss = s.objective.loss(full, s.x, s.y).sum()
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
    return finite_members_only(torch.linalg.eigvalsh, (h + h.mT) / 2)


def _random(dim: int, seed: int) -> Tensor:
    """A fixed N(0, 1) vector (dim,), float64 on the CPU: every device and member starts from the same one."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


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
        if bool(exhausted.any()):  # a restart at step j draws from its own seed: the same alone and in an ensemble
            fresh = _random(dim, START_SEED + 1 + j).to(start).expand(size, dim)
            w = torch.where(exhausted[:, None], _orthogonalize(fresh, basis[:, :j + 1]), w)
            residual = torch.where(exhausted, 0.0, residual)
        beta[:, j] = residual
        q = w / torch.linalg.vector_norm(w, dim=1, keepdim=True)
    off = beta[:, :steps - 1]
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    ritz = finite_members_only(torch.linalg.eigvalsh, tridiagonal)
    return ritz[:, 0], ritz[:, -1]


def check_memory(*, parameters: int, members: int, settings: Settings, device: torch.device,
                 dtype: torch.dtype) -> None:
    """Before step 0: the dense Hessian (E × P², with its symmetrized copy and the eigensolver's) or the Lanczos
    basis (E × steps × P) must fit in half the free memory, or the run would be killed at its first row."""
    size = torch.finfo(dtype).bits // 8
    if parameters <= settings.hessian_dense_max:
        key, value, need = "metrics.hessian_dense_max", settings.hessian_dense_max, 3 * members * parameters**2 * size
        what, remedy = f"the dense Hessian of P = {parameters} parameters", "lower metrics.hessian_dense_max"
    else:
        steps = min(settings.lanczos_steps, parameters)
        key, value, need = "metrics.lanczos_steps", settings.lanczos_steps, members * steps * parameters * size
        what, remedy = (f"the Lanczos basis of {steps} vectors of P = {parameters} parameters",
                        "lower metrics.lanczos_steps or ensemble.size")
    free = free_memory(device)
    if free is not None and need > free // 2:
        raise ConfigError(key, value, f"{what} for {members} member(s) needs {need / 2**30:.3g} GiB, more than half "
                                      f"the {free / 2**30:.3g} GiB free on {device}: {remedy}")


def hessian(s: Snapshot) -> Values:
    """hessian_max, hessian_min, hessian_negative (dense only; empty under Lanczos) and, for fixed-step trainers,
    sharpness_lr = λ_max·h."""
    product, like = hessian_product(s), next(iter(s.params.values()))
    size, dim = like.shape[0], s.objective.num_params
    if dim <= s.settings.hessian_dense_max:
        eigenvalues = dense_spectrum(product, size, dim, like)
        low, high = eigenvalues[:, 0], eigenvalues[:, -1]
        # below −1e-8·max|λ|, or round-off's 100·eps where the dtype is coarser (float32)
        cut = -max(NEGATIVE, 100 * torch.finfo(like.dtype).eps) * eigenvalues.abs().amax(1, keepdim=True)
        negative = torch.where(eigenvalues.isnan().any(1), math.nan, (eigenvalues < cut).sum(1).to(like.dtype))
    else:
        start = _random(dim, START_SEED).to(like).expand(size, dim)
        low, high = lanczos_extremes(product, start, s.settings.lanczos_steps)
        negative = torch.full_like(low, math.nan)
    values = {"hessian_max": high, "hessian_min": low, "hessian_negative": negative}
    if s.settings.step_size is not None:
        values["sharpness_lr"] = high * s.settings.step_size
    return values


HESSIAN = {"hessian": Metric(hessian, heavy=True, check=check_memory)}
