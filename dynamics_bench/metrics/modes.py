"""Mode strengths of a deep linear net: u_α = u_αᵀ W_N⋯W_1 v_α for the task's singular modes Σ₃₁ = U S Vᵀ
(Saxe, McClelland, Ganguli 2014; docs/theory.md §3). From model.init=decoupled on whitened data each follows
τu̇ = N u^{2−2/N}(s_α − u) on its own: sigmoidal, stronger modes first.
"""
from __future__ import annotations

from functools import lru_cache


from dynamics_bench.metrics.base import Memory, Metric, Snapshot, Values
from dynamics_bench.models.deep_linear import DeepLinear


def mode_strength(s: Snapshot, memory: Memory) -> tuple[Values, Memory]:
    """mode_strength/α (α = 1…r, strongest first): the α-th diagonal entry of Uᵀ W_N⋯W_1 V, (E,) each. The task's
    U, V are kept in the memory, on the run's device and dtype, from the first row on."""
    product = s.model.end_to_end(s.params)  # (E, out, in)
    if not memory:
        u, _, v = s.task.modes()
        size = product.shape[0]
        memory = {"u": u.to(product).expand(size, *u.shape), "v": v.to(product).expand(size, *v.shape)}
    u, v = memory["u"], memory["v"]  # (E, out, r), (E, in, r)
    strengths = ((u.mT @ product) * v.mT).sum(2)  # (E, r): u_αᵀ W v_α
    return dict(zip(_columns(strengths.shape[1]), strengths.unbind(1))), memory


@lru_cache
def _columns(r: int) -> tuple[str, ...]:
    return tuple(f"mode_strength/{a + 1}" for a in range(r))


def _requires(objective, task) -> str | None:
    model = objective.model
    if not isinstance(model, DeepLinear) or model.depth < 2:
        return "needs model=deep_linear with model.depth >= 2"
    if task.modes() is None:
        return "needs a task with singular modes Σ₃₁ = U S Vᵀ (task=linear_regression or matrix_cost)"
    return None


MODES = {"mode_strength": Metric(mode_strength, _requires, remembers=True)}
