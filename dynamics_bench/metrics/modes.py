"""Mode strengths of a deep linear net: u_α = u_αᵀ W_N⋯W_1 v_α for the task's singular modes Σ₃₁ = U S Vᵀ
(Saxe, McClelland, Ganguli 2014; docs/theory.md §3). From model.init=decoupled on whitened data each follows
τu̇ = N u^{2−2/N}(s_α − u) on its own: sigmoidal, stronger modes first.
"""
from __future__ import annotations

from functools import lru_cache
from weakref import WeakKeyDictionary

import torch
from torch import Tensor

from dynamics_bench.metrics.base import MAX_UNIT_COLUMNS, Metric, Snapshot
from dynamics_bench.models.deep_linear import DeepLinear
from dynamics_bench.tasks.base import Task

# task -> {(device, dtype): (U (out, R), V (in, R))}, the first R = min(r, MAX_UNIT_COLUMNS) modes; per task object,
# so the SVD and the copy happen once a run
_MODES: WeakKeyDictionary[Task, dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]]] = WeakKeyDictionary()


def _modes(task: Task, like: Tensor) -> tuple[Tensor, Tensor]:
    """The task's U, V (first MAX_UNIT_COLUMNS modes) on `like`'s device and dtype, cached."""
    cache = _MODES.setdefault(task, {})
    key = (like.device, like.dtype)
    if key not in cache:
        u, _, v = task.modes()
        cache[key] = (u[:, :MAX_UNIT_COLUMNS].to(like), v[:, :MAX_UNIT_COLUMNS].to(like))
    return cache[key]


def mode_strength(s: Snapshot) -> dict[str, Tensor]:
    """mode_strength/α (α = 1…r, at most MAX_UNIT_COLUMNS, strongest first): the α-th diagonal entry of
    Uᵀ W_N⋯W_1 V, (E,) each."""
    product = s.model.end_to_end(s.params)  # (E, out, in)
    u, v = _modes(s.task, product)  # (out, R), (in, R)
    strengths = ((u.T @ product) * v.T).sum(2)  # (E, R): u_αᵀ W v_α
    return dict(zip(_columns(strengths.shape[1]), strengths.unbind(1)))


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


MODES = {"mode_strength": Metric(mode_strength, _requires)}
