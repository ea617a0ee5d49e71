"""What a metric sees (a snapshot of the training state), what it is told about the run, what it may remember
between rows, and how it declares what it needs."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.memory import meminfo_available
from dynamics_bench.models.base import Model, Params, per_member
from dynamics_bench.objective import Objective
from dynamics_bench.tasks.base import Task

Values = dict[str, Tensor]  # column name -> (E,) values, one per member
Memory = dict[str, Tensor]  # what a metric keeps from row to row: every tensor (E, ...), member e's in [e]

# Per-unit columns (imbalance/j, teacher_mass/i) only up to this many units: one column per unit would make
# metrics.csv as wide as the net, and a wide net is read through the max columns anyway.
MAX_UNIT_COLUMNS = 16


PROBE, LANCZOS_STEPS, HESSIAN_DENSE_MAX = 32, 100, 256  # the defaults of metrics.probe (at most), lanczos_steps, ...


@dataclass(frozen=True)
class Settings:
    """What metrics are told about the run: the metrics config's knobs and the trainer's fixed step."""

    probe: int = PROBE  # the probe set is the task's first `probe` inputs (ntk, activation_flips)
    lanczos_steps: int = LANCZOS_STEPS  # hessian: Lanczos iterations at most (and at most P)
    hessian_dense_max: int = HESSIAN_DENSE_MAX  # hessian: a dense eigendecomposition up to this many parameters
    # Under ensemble.vary these two may differ between members: then an (E,) tensor on the run's device, member e's
    # at [e] (a metric multiplying an (E,) column by them needs no case of its own)
    loss_floor: float | Tensor = 0.0  # lojasiewicz: L̃ = L − loss_floor
    step_size: float | Tensor | None = None  # h of a fixed-step trainer (lr for GD and SGD); None under adaptive steps


@dataclass
class Snapshot:
    """The state after `iteration` attempted steps (member e at flow time t[e] after steps[e] accepted steps)
    and what it takes to evaluate it.

    loss/grad hold L(θ) and ∇L(θ) on the metrics' data when the trainer already computed them (full-batch
    trainers), so metrics don't pay for them twice; use :meth:`loss_and_grad`. The other helpers cache what
    several metrics share, once per snapshot.
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
    settings: Settings = field(default_factory=Settings)
    _cache: dict = field(default_factory=dict)

    @property
    def model(self) -> Model:
        return self.objective.model

    def loss_and_grad(self) -> tuple[Tensor, Params]:
        if self.loss is None or self.grad is None:
            self.loss, self.grad = self.objective.loss_and_grad(self.params, self.x, self.y)
        return self.loss, self.grad

    def cached(self, key: str, compute: Callable[[], object]):
        """compute(), once per snapshot: for what several metrics share."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def outputs(self) -> Tensor:
        """The trained model's outputs on the data set (lazy or linearized where so configured), (E, n, out)."""
        return self.cached("outputs", lambda: self.objective.forward(self.params, self.x))

    def trainable(self, params: Params | None = None) -> Params:
        """The trainable parameters of `params` (default θ_t): all but those model.train_layers leaves out."""
        params = self.params if params is None else params
        return {k: params[k] for k in self.objective.trainable}

    def grad_norm(self) -> Tensor:
        """‖∇L‖ over the trainable parameters, (E,)."""
        return self.cached("grad_norm", lambda: flat_norm(self.loss_and_grad()[1]))

    def changes(self) -> Params:
        """θ_t − θ_0 per trainable parameter."""
        return self.cached("changes", lambda: {k: self.params[k] - self.params0[k] for k in self.objective.trainable})

    def probe(self) -> tuple[Tensor, Tensor]:
        """The probe set: the first settings.probe samples of the data set, x (E, N, d) and y."""
        n = min(self.settings.probe, self.x.shape[1])
        return self.x.narrow(1, 0, n), self.y.narrow(1, 0, n)


Requirement = Callable[[Objective, Task], "str | None"]  # None when the metric applies, else why not


def always(objective: Objective, task: Task) -> str | None:
    return None


@dataclass(frozen=True)
class Metric:
    """Named (E,) tensors from a snapshot; `requires` says when the metric applies.

    A heavy metric is computed only where asked for by name, and only on the heavy rows (every
    metrics.heavy_every-th grid row, the first, the last and every member's stop row); `auto` leaves it out.
    A metric with memory is called fn(snapshot, memory) -> (values, memory'): memory is {} at the first row and
    then what the member's previous written row returned, so a member only moves its memory on when its row is
    written (a checkpoint can save and restore it: tensors (E, ...)). Without memory, fn(snapshot) -> values.
    """

    fn: Callable
    requires: Requirement = always
    heavy: bool = False
    remembers: bool = False
    # check(parameters=P, members=E, settings=, device=, dtype=): raises ConfigError before step 0 where the metric
    # would not fit the run (memory), given the number of trainable parameters per member
    check: Callable[..., None] | None = None


def flat_norm(tensors: Params | list[Tensor]) -> Tensor:
    """Per-member Euclidean norm over all entries of all tensors: (E,)."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in values))


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` now (CUDA: the driver's count; CPU: MemAvailable on Linux), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return meminfo_available()


def finite_members_only(decompose: Callable[[Tensor], Tensor], matrices: Tensor) -> Tensor:
    """decompose(matrices) (E, ...) where a member's matrix is finite, NaN for the others: a diverged member's
    θ may hold inf or NaN, which LAPACK refuses, and one such member must not stop the others' metrics."""
    finite = matrices.isfinite().flatten(1).all(1)
    if bool(finite.all()):
        return decompose(matrices)
    out = decompose(torch.where(per_member(finite, matrices), matrices, 0.0))
    return torch.where(per_member(finite, out), out, math.nan)


def relative(change: Tensor, scale: Tensor) -> Tensor:
    """change/scale, NaN (an empty cell) where scale is 0: a change relative to nothing is undefined."""
    return torch.where(scale > 0, change / scale, math.nan)
