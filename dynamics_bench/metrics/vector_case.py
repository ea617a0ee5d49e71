"""The vector case of paper (1) (de Oliveira–Jatkar–Sontag, Sec. 3; docs/theory.md §2.4–2.5) in its own coordinates.

Depth-2 linear net with scalar input and output: w1 = W_1 (k, 1), w2 = W_2 (1, k). The product w = w2·w1 is the
one number the cost sees (Prop. 7: the flow moves it along plain gradient flow on f, only faster with larger
imbalance). The distance d = ‖w1 − s·w2ᵀ‖ to the saddle's centre-stable manifold, s = sign f′(0), decides where a
start ends (Prop. 5, Cor. 6): d(0) > 0 reaches {f′ = 0}, d(0) = 0 the origin. Along the flow
d(t) = d(0)·exp(s∫f′(w)), so it grows while the run sits near the saddle and logs its escape.
"""
from __future__ import annotations

from torch import Tensor

from dynamics_bench.metrics.base import Metric, Snapshot
from dynamics_bench.models.deep_linear import DeepLinear
from dynamics_bench.objective import Objective
from dynamics_bench.tasks.base import Task


def _vectors(s: Snapshot) -> tuple[Tensor, Tensor]:
    """w1 (E, k) and w2ᵀ (E, k)."""
    w1, w2 = s.model.layer_matrices(s.params)  # (E, k, 1), (E, 1, k)
    return w1[:, :, 0], w2[:, 0, :]


def product(s: Snapshot) -> dict[str, Tensor]:
    w1, w2 = _vectors(s)
    return {"product": (w1 * w2).sum(1)}


def manifold_distance(s: Snapshot) -> dict[str, Tensor]:
    w1, w2 = _vectors(s)
    return {"manifold_distance": (w1 - s.model.saddle_sign * w2).norm(dim=1)}


def _vector_case(objective: Objective, task: Task) -> str | None:
    model = objective.model
    if not isinstance(model, DeepLinear):
        return "needs model=deep_linear (the vector case of paper (1))"
    if not model.vector_case:
        return ("needs the vector case: model.depth=2 and a scalar input and output (e.g. task=matrix_cost with a "
                "number as task.target)")
    return None


def _has_manifold(objective: Objective, task: Task) -> str | None:
    reason = _vector_case(objective, task)
    if reason is None and objective.model.saddle_sign is None:
        reason = "needs f'(0) != 0 for this loss and task: otherwise the origin has no centre-stable manifold"
    return reason


VECTOR_CASE: dict[str, Metric] = {
    "product": Metric(product, _vector_case),
    "manifold_distance": Metric(manifold_distance, _has_manifold),
}
