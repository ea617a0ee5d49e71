"""The training objective: a model, its task's data and a loss, evaluated for every ensemble member at once.

What is trained can differ from the plain network (docs/theory.md §1.4 "What is trained", §5.5):
``model.train_layers`` trains some parameters and holds the others at θ_0; ``model.lazy_alpha`` = α trains the
centred, scaled model α·(f(x; θ) − f(x; θ_0)) with the loss divided by α² (Chizat–Oyallon–Bach 2019);
``model.linearize`` trains the first-order Taylor model f(x; θ_0) + J(θ − θ_0), formed by Jacobian-vector
products (forward mode), never a stored Jacobian. ``task.population`` replaces the sample loss by its closed-form
expectation (:class:`PopulationObjective`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp

from dynamics_bench.config import require
from dynamics_bench.losses import Loss
from dynamics_bench.models.base import Model, Params
from dynamics_bench.tasks.base import Task
from dynamics_bench.theory import population_loss


LossAndGrad = Callable[[Params, Tensor, Tensor], tuple[Tensor, Params]]  # θ, x, y -> (L (E,), {trainable: ∇L})


@dataclass
class ObjectiveConfig:
    """The model-group keys that change what is trained rather than the network."""

    train_layers: list[str] | None = None  # names of the parameters to train; null: all
    lazy_alpha: float | None = None  # train α·(f(θ) − f(θ_0)) with the loss divided by α²
    linearize: bool = False  # train f(θ_0) + J(θ − θ_0)

    def __post_init__(self) -> None:
        if self.lazy_alpha is not None:
            require(0 < self.lazy_alpha < math.inf, "model.lazy_alpha", self.lazy_alpha,
                    "must be null or a finite number > 0")
        if self.train_layers is not None:
            require(len(self.train_layers) > 0 and len(set(self.train_layers)) == len(self.train_layers),
                    "model.train_layers", self.train_layers, "must be null (all) or a non-empty list of distinct names")

    @property
    def anchored(self) -> bool:
        """Whether the objective needs θ_0 (lazy or linearized models)."""
        return self.lazy_alpha is not None or self.linearize


def check_train_layers(names: list[str] | None, model: Model) -> list[str]:
    """The trainable parameter names in the model's order; ConfigError naming model.train_layers otherwise."""
    every = list(model.param_shapes)
    if names is None:
        return every
    for i, name in enumerate(names):
        require(name in every, f"model.train_layers[{i}]", name, "must be one of this model's parameters: "
                + ", ".join(every) + " (the names in final_params.pt)")
    return [k for k in every if k in names]


class Objective:
    """Per-member loss L_e(θ_e) and its gradient over the trainable parameters; members never mix, so one
    backward serves all of them. Parameter dicts always hold every parameter; frozen ones are read, never
    differentiated."""

    def __init__(self, *, model: Model, loss: Loss, sum_over_samples: bool, trainable: list[str] | None = None,
                 config: ObjectiveConfig | None = None):
        self.model, self.loss_fn, self.sum_over_samples = model, loss, sum_over_samples
        self.trainable = list(model.param_shapes) if trainable is None else trainable
        self.config = config or ObjectiveConfig()
        self.alpha = self.config.lazy_alpha or 1.0
        self.frozen = [k for k in model.param_shapes if k not in self.trainable]
        self._anchor: Params | None = None  # θ_0, detached, for lazy and linearized models
        self._leaves: tuple[bool, Params, Params, Params] | None = None  # see leaves()
        self._data: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # see _member_data()

    @property
    def num_params(self) -> int:
        """Trainable parameters per member (P)."""
        return sum(math.prod(self.model.param_shapes[k]) for k in self.trainable)

    def anchor(self, params0: Params) -> None:
        """Remember θ_0 (E, ...), which lazy and linearized models are expanded around."""
        self._anchor = {k: v.detach() for k, v in params0.items()}

    def _theta0(self, params: Params) -> Params:
        """θ_0, batched or (for one member's unbatched evaluation) member 0's, matching `params`."""
        if self._anchor is None:
            raise RuntimeError("a lazy or linearized objective needs anchor(θ_0) before it is evaluated")
        key = next(iter(params))
        batched = self._anchor[key].dim() == params[key].dim()
        return self._anchor if batched else {k: v[0] for k, v in self._anchor.items()}

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """The trained model's outputs, x (E, n, d) -> (E, n, out) (also one member's unbatched params, x (n, d))."""
        cfg = self.config
        if not cfg.anchored:
            return self.model.forward(params, x)
        theta0 = self._theta0(params)
        if cfg.linearize:
            tangent = {k: params[k] - theta0[k] if k in self.trainable else torch.zeros_like(theta0[k])
                       for k in theta0}
            f0, change = jvp(lambda p: self.model.forward(p, x), (theta0,), (tangent,))
            return self.alpha * change if cfg.lazy_alpha is not None else f0 + change
        with torch.no_grad():
            f0 = self.model.forward(theta0, x)
        return self.alpha * (self.model.forward(params, x) - f0)

    def loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """x (E, n, d), y (E, n, ...) -> loss (E,)."""
        loss = self.loss_fn(self.forward(params, x), y, self.sum_over_samples)
        return loss if self.config.lazy_alpha is None else loss / self.alpha**2

    def leaves(self, params: Params, single: bool = False) -> tuple[Params, Params]:
        """(every parameter with the trainable ones as autograd leaves, just those leaves); `single`: member 0's
        unbatched tensors. The leaves are views of params' storage, kept while the same tensors come back: the
        training loop updates its parameters in place, so it pays for making leaves once, not every step."""
        cached = self._leaves
        if cached is not None and cached[0] == single and all(params[k] is cached[1][k] for k in params):
            return cached[2], cached[3]
        pick = (lambda v: v[0]) if single else (lambda v: v)
        leaves = {k: pick(params[k]).detach().requires_grad_(True) for k in self.trainable}
        full = {k: leaves[k] if k in leaves else pick(v).detach() for k, v in params.items()}
        self._leaves = (single, dict(params), full, leaves)
        return full, leaves

    def _member_data(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x[0], y[0], kept while the same x, y come back (every step of a full-batch run)."""
        if self._data is None or self._data[0] is not x or self._data[1] is not y:
            self._data = (x, y, x[0], y[0])
        return self._data[2], self._data[3]

    def loss_and_grad(self, params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Params]:
        """Loss (E,) and its gradient: one tensor per trainable parameter, with the parameter's shape.

        A single member is evaluated unbatched (its (n, d) data and leaves without the E axis): the same
        arithmetic without the autograd nodes of the ensemble axis, which cost ~10% of a small step."""
        single = x.shape[0] == 1
        with torch.enable_grad():
            full, leaves = self.leaves(params, single)
            if single:  # a scalar loss: its gradient needs no grad_outputs
                loss = self.loss(full, *self._member_data(x, y))
                grads = [g.unsqueeze(0) for g in torch.autograd.grad(loss, list(leaves.values()))]
                return loss.detach().unsqueeze(0), dict(zip(leaves, grads))
            loss = self.loss(full, x, y)
            grads = torch.autograd.grad(loss.sum(), list(leaves.values()))  # members never mix: each its own
        return loss.detach(), dict(zip(leaves, grads))


class PopulationObjective(Objective):
    """The closed-form population loss ½E_x[(f(x) − f*(x))²], x ~ N(0, I_d), of a bias-free two-layer student
    against the task's teacher (docs/theory.md §6.3, "Population loss"): the data passed in are
    ignored (they stay the metrics' fixed sample)."""

    def __init__(self, *, model: Model, loss: Loss, teacher_weights: Tensor, activation: str,
                 trainable: list[str] | None = None):
        super().__init__(model=model, loss=loss, sum_over_samples=False, trainable=trainable)
        self.teacher_weights, self.activation = teacher_weights, activation

    def loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        single = x.dim() == 2
        neurons = self.model.neurons({k: v.unsqueeze(0) for k, v in params.items()} if single else params)
        value = population_loss(neurons.w, neurons.a, self.teacher_weights.to(neurons.w), self.activation)
        return value[0] if single else value


POPULATION_ACTIVATIONS = ("relu", "abs", "erf")  # the activations with a closed-form Gaussian kernel
POPULATION_TRAINERS = ("gd", "gradient_flow")  # full-batch: the population gradient is exact, nothing to sample


def _check_population(model: Model, loss: Loss, task: Task, config: ObjectiveConfig, model_name: str,
                      trainer: str) -> str:
    """The teacher's activation, or ConfigError naming the key that rules the closed form out."""
    why = "task.population=true needs "
    require(hasattr(model, "neurons"), "model.name", model_name, why + "model=two_layer (a two-layer student)")
    require(not model.bias, "model.bias", model.bias, why + "model.bias=false (the closed form is bias-free)")
    activation = task.teacher.activation
    require(activation in POPULATION_ACTIVATIONS, "task.teacher_activation", activation,
            why + "one of " + ", ".join(POPULATION_ACTIVATIONS) + " (the closed-form Gaussian kernels)")
    require(model.activation_name == activation, "model.activation", model.activation_name,
            why + f"the student's activation to equal task.teacher_activation={activation}")
    require(loss.name == "mse", "loss.name", loss.name, why + "loss=mse")
    require(loss.reduction == "mean", "loss.reduction", loss.reduction,
            why + "loss.reduction=mean (the expectation is a mean over x)")
    require(trainer in POPULATION_TRAINERS, "trainer.name", trainer,
            why + "a full-batch trainer: " + ", ".join(POPULATION_TRAINERS))
    require(not config.anchored, "model.lazy_alpha" if config.lazy_alpha is not None else "model.linearize",
            config.lazy_alpha if config.lazy_alpha is not None else config.linearize,
            "must be null/false with task.population=true (the closed form is for the plain two-layer net)")
    return activation


def build_objective(model: Model, loss: Loss, task: Task, config: ObjectiveConfig, *, model_name: str,
                    trainer: str) -> Objective:
    """The objective the config asks for: the population loss or the sample loss, of what is trained."""
    trainable = check_train_layers(config.train_layers, model)
    if task.population:
        activation = _check_population(model, loss, task, config, model_name, trainer)
        return PopulationObjective(model=model, loss=loss, teacher_weights=task.teacher.weights,
                                   activation=activation, trainable=trainable)
    return Objective(model=model, loss=loss, sum_over_samples=task.sum_over_samples, trainable=trainable,
                     config=config)
