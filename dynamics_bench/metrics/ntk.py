"""The empirical neural tangent kernel on a probe set (Jacot–Gabriel–Hongler 2018; Du et al. 2019; docs/theory.md §5).

K = J Jᵀ, J the Jacobian of the model's outputs on the probe inputs with respect to every trainable parameter,
rows sample-major (row i·o + a: sample i, output a). Under gradient flow the probe outputs move by u̇ = −K ∇_u ℓ,
so K's spectrum sets the rate of lazy training (P3.1, P3.2) and ‖K_t − K_0‖_F/‖K_0‖_F how lazy it is (P3.4).
"""
from __future__ import annotations

import torch
from torch import Tensor

from dynamics_bench.metrics.base import Memory, Metric, Snapshot, Values, finite_members_only, free_memory, relative
from dynamics_bench.models.base import Model, Params, parameter_count
from dynamics_bench.objective import Objective

# Rows of J are formed a block at a time, each block with its backward's intermediates at most this large (and at
# least one row: one row of J is a gradient, 134 MB per member for a 4096-wide m×m layer in float64), so K never
# needs J whole.
BLOCK_BYTES = 256 * 2**20


def ntk_gram(model: Model | Objective, params: Params, x: Tensor, block_bytes: int = BLOCK_BYTES) -> Tensor:
    """K (E, R, R), R = N·o, for every member at once (members never mix, so each gets its own J_e), J the
    Jacobian of model.forward over the trainable parameters (an Objective's: those of model.train_layers, and
    the outputs of its lazy or linearized model; a Model's: all).

    Exact, by reverse mode: a backward pass of one-hot rows gives rows of J (J_eᵀe_r). When all of J fits in
    block_bytes, K = J Jᵀ. Otherwise K is formed b columns at a time, J_e(J_eᵀe_r), the product with J taken as
    the derivative of the linear map p ↦ J_eᵀp (double backward): memory holds one block of J, never J."""
    if isinstance(model, Objective):
        full, leaves = model.leaves(params)
    else:
        full = leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    saved = [0]  # bytes the forward keeps for backward: about what each backward row allocates again

    def count(t: Tensor) -> Tensor:
        saved[0] += t.numel() * t.element_size()
        return t
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        u = model.forward(full, x).flatten(1)  # (E, R) sample-major
    size, rows = u.shape
    block = rows_per_block(size * parameter_count(leaves) * u.element_size() + saved[0], rows, block_bytes)
    eye = torch.eye(rows, dtype=u.dtype, device=u.device)

    def rows_of_j(start: int, stop: int, **kw) -> tuple[Tensor, ...]:
        unit = eye[start:stop, None].expand(-1, size, rows)  # (b, E, R): row r of every member
        return torch.autograd.grad(u, list(leaves.values()), grad_outputs=unit, is_grads_batched=True, **kw)

    if block == rows:
        flat = torch.cat([g.flatten(2) for g in rows_of_j(0, rows)], 2)  # (R, E, P): J whole
        k = torch.einsum("iep,jep->eij", flat, flat)
    else:
        p = torch.zeros_like(u, requires_grad=True)
        with torch.enable_grad():
            transposed = torch.autograd.grad(u, list(leaves.values()), grad_outputs=p, create_graph=True)  # J_eᵀp
        columns = []
        for start in range(0, rows, block):
            jt = rows_of_j(start, min(start + block, rows), retain_graph=True)  # {(b, E, ...)}: J_eᵀe_r
            (column,) = torch.autograd.grad(transposed, p, grad_outputs=jt, is_grads_batched=True,
                                            retain_graph=True)  # (b, E, R): J_e J_eᵀ e_r
            columns.append(column)
        k = torch.cat(columns).permute(1, 2, 0)
    return (k + k.mT) / 2  # exactly symmetric for eigvalsh; the two halves differ by round-off only


def rows_per_block(row_bytes: int, rows: int, block_bytes: int) -> int:
    """How many rows of J a block holds: row_bytes each (a row of J and the backward's intermediates), at least
    one, at most all."""
    return max(1, min(rows, block_bytes // row_bytes))


def _block_bytes(device: torch.device) -> int:
    free = free_memory(device)
    return BLOCK_BYTES if free is None else max(1, min(BLOCK_BYTES, free // 4))


def ntk(s: Snapshot, memory: Memory) -> tuple[Values, Memory]:
    """ntk_lambda_min/max, ntk_trace, ntk_change_rel ‖K_t − K_0‖_F/‖K_0‖_F and, on regression tasks,
    ntk_target_alignment yᵀKy/(‖K‖_F‖y‖²)."""
    x, y = s.probe()
    k = ntk_gram(s.objective, s.params, x, _block_bytes(x.device))
    if not memory:
        memory = {"k0": k}
    eigenvalues = finite_members_only(torch.linalg.eigvalsh, k)  # ascending
    norm = torch.linalg.matrix_norm(k)
    values = {"ntk_lambda_min": eigenvalues[:, 0], "ntk_lambda_max": eigenvalues[:, -1],
              "ntk_trace": torch.diagonal(k, dim1=1, dim2=2).sum(1),
              "ntk_change_rel": relative(torch.linalg.matrix_norm(k - memory["k0"]),
                                         torch.linalg.matrix_norm(memory["k0"]))}
    if s.task.num_classes is None:
        target = y.flatten(1).to(k.dtype)  # (E, R), sample-major like K
        values["ntk_target_alignment"] = (torch.einsum("ei,eij,ej->e", target, k, target)
                                          / (norm * target.pow(2).sum(1)))
    return values, memory


NTK = {"ntk": Metric(ntk, heavy=True, remembers=True)}
