"""What a metric sees (a snapshot of the training state) and how it declares what it needs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.models.base import Model, Params
from dynamics_bench.objective import Objective
from dynamics_bench.tasks.base import Task


@dataclass
class Snapshot:
    """The state after `iteration` attempted steps (member e at flow time t[e] after steps[e] accepted steps)
    and what it takes to evaluate it.

    loss/grad hold L(θ) and ∇L(θ) on the metrics' data when the trainer already computed them (full-batch
    trainers), so metrics don't pay for them twice; use :meth:`loss_and_grad`.
    """

    iteration: int
    steps: list[int]
    t: list[float]
    params: Params
    params0: Params  # the initialization θ_0
    objective: Objective
    task: Task
    x: Tensor  # (E, n, d) the fixed data set
    y: Tensor
    loss: Tensor | None = None
    grad: Params | None = None
    _cache: dict = field(default_factory=dict)

    @property
    def model(self) -> Model:
        return self.objective.model

    def loss_and_grad(self) -> tuple[Tensor, Params]:
        if self.loss is None or self.grad is None:
            self.loss, self.grad = self.objective.loss_and_grad(self.params, self.x, self.y)
        return self.loss, self.grad

    def outputs(self) -> Tensor:
        """Model outputs on the data set, (E, n, out), computed once per snapshot."""
        if "outputs" not in self._cache:
            with torch.no_grad():
                self._cache["outputs"] = self.model.forward(self.params, self.x)
        return self._cache["outputs"]


Requirement = Callable[[Objective, Task], "str | None"]  # None when the metric applies, else why not


@dataclass(frozen=True)
class Metric:
    """A pure function of a snapshot returning named (E,) tensors; `requires` says when it applies."""

    fn: Callable[[Snapshot], dict[str, Tensor]]
    requires: Requirement = lambda objective, task: None


def flat_norm(tensors: Params | list[Tensor]) -> Tensor:
    """Per-member Euclidean norm over all entries of all tensors: (E,)."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in values))
