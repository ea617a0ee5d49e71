"""Metrics every model has: loss, gradient and parameter norms, distance from initialization, accuracy."""
from __future__ import annotations

from torch import Tensor

from dynamics_bench.metrics.base import Metric, Snapshot, flat_norm, relative


def loss(s: Snapshot) -> dict[str, Tensor]:
    return {"loss": s.loss_and_grad()[0]}


def grad_norm(s: Snapshot) -> dict[str, Tensor]:
    return {"grad_norm": s.grad_norm()}


def param_norm(s: Snapshot) -> dict[str, Tensor]:
    return {"param_norm": flat_norm(s.trainable())}


def weight_change(s: Snapshot) -> dict[str, Tensor]:
    """‖θ_t − θ_0‖ over the trainable parameters and its ratio to ‖θ_0‖ (NaN, written empty, when ‖θ_0‖ = 0)."""
    change = flat_norm(s.changes())
    norm0 = flat_norm(s.trainable(s.params0))
    rel = relative(change, norm0)
    return {"weight_change": change, "weight_change_rel": rel}


def sample_loss(s: Snapshot) -> dict[str, Tensor]:
    """The loss on the task's fixed sample, beside the population loss the run trains on."""
    return {"sample_loss": s.cached("sample_loss", lambda: s.objective.loss_fn(
        s.model.forward(s.params, s.x), s.y, s.objective.sum_over_samples))}


def accuracy(s: Snapshot) -> dict[str, Tensor]:
    predicted = s.objective.loss_fn.predict(s.outputs())  # (E, n)
    return {"accuracy": (predicted == s.y).to(s.x.dtype).mean(1)}


def _needs_classification(objective, task) -> str | None:
    return None if task.num_classes is not None else "needs a classification task"


def _needs_population(objective, task) -> str | None:
    return None if task.population else "needs task.population=true (otherwise it is the loss column)"


BASIC: dict[str, Metric] = {
    "loss": Metric(loss),
    "grad_norm": Metric(grad_norm),
    "param_norm": Metric(param_norm),
    "weight_change": Metric(weight_change),
    "accuracy": Metric(accuracy, _needs_classification),
    "sample_loss": Metric(sample_loss, _needs_population),
}
