"""The empirical neural tangent kernel on a probe set (Jacot–Gabriel–Hongler 2018; Du et al. 2019; theory.md §5).

K = J Jᵀ, J the Jacobian of the model's outputs on the probe inputs with respect to every trainable parameter,
rows sample-major (row i·o + a: sample i, output a). Under gradient flow the probe outputs move by u̇ = −K ∇_u ℓ,
so K's spectrum sets the rate of lazy training (P3.1, P3.2) and ‖K_t − K_0‖_F/‖K_0‖_F how lazy it is (P3.4).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from dynamics_bench.metrics.base import Memory, Metric, Snapshot, Values, free_memory
from dynamics_bench.models.base import Model, Params

# J is formed a block of rows at a time, each block at most this large: one row of J is a copy of every
# parameter (134 MB per member for a 4096-wide m×m layer in float64), so K never needs J whole.
BLOCK_BYTES = 256 * 2**20


def ntk_gram(model: Model, params: Params, x: Tensor, block_bytes: int = BLOCK_BYTES) -> Tensor:
    """K (E, R, R), R = N·o, for every member at once (members never mix, so each gets its own J_e).

    Exact, in blocks of rows b: the pullback of the one-hot rows gives J_eᵀe_r (b of them, a block of J), and
    the forward-mode push of those gives J_e J_eᵀ e_r, b columns of K. Memory: one block of J, not J."""
    def outputs(p: Params) -> Tensor:
        return model.forward(p, x).flatten(1)  # (E, R) sample-major

    u, pullback = vjp(outputs, params)
    size, rows = u.shape
    row_bytes = size * sum(v[0].numel() for v in params.values()) * u.element_size()
    block = max(1, min(rows, block_bytes // row_bytes))
    pull = vmap(pullback)
    push = vmap(lambda v: jvp(outputs, (params,), (v,))[1])
    eye = torch.eye(rows, dtype=u.dtype, device=u.device)
    columns = []
    for start in range(0, rows, block):
        unit = eye[start:start + block, None].expand(-1, size, rows)  # (b, E, R): row r of every member
        (jt,) = pull(unit)  # {name: (b, E, ...)}: J_eᵀ e_r
        columns.append(push(jt))  # (b, E, R): J_e J_eᵀ e_r
    k = torch.cat(columns).permute(1, 2, 0)
    return (k + k.mT) / 2  # exactly symmetric for eigvalsh; the two halves differ by round-off only


def _block_bytes(device: torch.device) -> int:
    free = free_memory(device)
    return BLOCK_BYTES if free is None else max(1, min(BLOCK_BYTES, free // 4))


def ntk(s: Snapshot, memory: Memory) -> tuple[Values, Memory]:
    """ntk_lambda_min/max, ntk_trace, ntk_change_rel ‖K_t − K_0‖_F/‖K_0‖_F and, on regression tasks,
    ntk_target_alignment yᵀKy/(‖K‖_F‖y‖²)."""
    x, y = s.probe()
    k = ntk_gram(s.model, s.params, x, _block_bytes(x.device))
    if not memory:
        memory = {"k0": k}
    eigenvalues = torch.linalg.eigvalsh(k)  # ascending
    norm = torch.linalg.matrix_norm(k)
    values = {"ntk_lambda_min": eigenvalues[:, 0], "ntk_lambda_max": eigenvalues[:, -1],
              "ntk_trace": torch.diagonal(k, dim1=1, dim2=2).sum(1),
              "ntk_change_rel": torch.linalg.matrix_norm(k - memory["k0"]) / torch.linalg.matrix_norm(memory["k0"])}
    if s.task.num_classes is None:
        target = y.flatten(1).to(k.dtype)  # (E, R), sample-major like K
        values["ntk_target_alignment"] = (torch.einsum("ei,eij,ej->e", target, k, target)
                                          / (norm * target.pow(2).sum(1)))
    return values, memory


NTK = {"ntk": Metric(ntk, heavy=True, remembers=True)}
