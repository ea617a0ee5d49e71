"""Losses on batched predictions: per-sample values (E, n), reduced to one number per ensemble member (E,).

Regression losses act elementwise on the residual r = ŷ − y and are summed over output entries: mse ½r²
(Saxe et al. 2014; Du et al. 2019), quartic ¼r⁴ and log_cosh log cosh r (non-quadratic proper, real-analytic
costs for de Oliveira-Jatkar-Sontag, arXiv 2511.09810; docs/theory.md §8 P1.1). Classification: logistic
softplus(−sŷ) with s = ±1 and cross_entropy logsumexp(ŷ) − ŷ_y (Allen-Zhu, Li, Song 2019).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dynamics_bench.config import choice, parse_section, require
from dynamics_bench.tasks.base import Task


@dataclass
class LossConfig:
    name: str = "mse"
    reduction: Literal["mean", "sum"] = "mean"  # mean over samples, or sum (the convention of Du et al.)


def _task_name(task: Task) -> str:
    return getattr(task, "name", type(task).__name__)


class Loss(ABC):
    """per_sample(ŷ, y) -> (E, n); reduce -> (E,). ŷ is (E, n, o); y is (E, n, o) float or (E, n) int64."""

    name: str
    classification: bool = False

    def __init__(self, *, reduction: str = "mean"):
        self.reduction = reduction

    @abstractmethod
    def per_sample(self, yhat: Tensor, y: Tensor) -> Tensor: ...

    @abstractmethod
    def output_dim(self, task: Task) -> int:
        """The model's output width for this task; ConfigError if the loss does not fit the task."""

    def reduce(self, per_sample: Tensor, sum_over_samples: bool = False) -> Tensor:
        """(E, n) -> (E,): the sum over samples if the task demands it or reduction=sum, else the mean."""
        return per_sample.sum(-1) if sum_over_samples or self.reduction == "sum" else per_sample.mean(-1)

    def __call__(self, yhat: Tensor, y: Tensor, sum_over_samples: bool = False) -> Tensor:
        return self.reduce(self.per_sample(yhat, y), sum_over_samples)

    def predict(self, yhat: Tensor) -> Tensor | None:
        """(E, n, o) -> (E, n) int64 class ids for classification losses; None for regression."""
        return None


class RegressionLoss(Loss):
    @staticmethod
    @abstractmethod
    def elementwise(r: Tensor) -> Tensor: ...

    def per_sample(self, yhat: Tensor, y: Tensor) -> Tensor:
        return self.elementwise(yhat - y).sum(-1)  # (E, n, o) -> (E, n)

    def __call__(self, yhat: Tensor, y: Tensor, sum_over_samples: bool = False) -> Tensor:
        """(E,): one reduction over samples and outputs (the training loop's hot path): the mean over samples
        of the sum over outputs is o times the mean over both."""
        e = self.elementwise(yhat - y)  # (E, n, o), or (n, o) for one unbatched member
        if sum_over_samples or self.reduction == "sum":
            return e.sum((-2, -1))
        mean = e.mean((-2, -1))
        return mean if e.shape[-1] == 1 else mean * e.shape[-1]

    def output_dim(self, task: Task) -> int:
        require(task.num_classes is None, "loss.name", self.name,
                f"is a regression loss but task.name={_task_name(task)!r} is a classification task "
                "(use logistic or cross_entropy)")
        return task.output_dim


class MSE(RegressionLoss):
    name = "mse"

    @staticmethod
    def elementwise(r: Tensor) -> Tensor:
        return 0.5 * r * r


class Quartic(RegressionLoss):
    name = "quartic"

    @staticmethod
    def elementwise(r: Tensor) -> Tensor:
        return 0.25 * r**4


class LogCosh(RegressionLoss):
    name = "log_cosh"

    @staticmethod
    def elementwise(r: Tensor) -> Tensor:
        a = r.abs()
        return a + F.softplus(-2 * a) - math.log(2)  # = log cosh r, without overflow of cosh


class ClassificationLoss(Loss):
    classification = True

    def _check(self, task: Task) -> int:
        require(task.num_classes is not None, "loss.name", self.name,
                f"is a classification loss but task.name={_task_name(task)!r} is a regression task")
        return task.num_classes


class Logistic(ClassificationLoss):
    """Binary: one output ŷ, label y ∈ {0, 1} read as s = 2y − 1, loss softplus(−sŷ)."""

    name = "logistic"

    def per_sample(self, yhat: Tensor, y: Tensor) -> Tensor:
        s = 2 * y.to(yhat.dtype) - 1  # (E, n)
        return F.softplus(-s * yhat[..., 0])

    def output_dim(self, task: Task) -> int:
        c = self._check(task)
        require(c == 2, "loss.name", self.name,
                f"needs task.num_classes=2 but task.name={_task_name(task)!r} has {c} (use cross_entropy)")
        return 1

    def predict(self, yhat: Tensor) -> Tensor:
        return (yhat[..., 0] > 0).long()


class CrossEntropy(ClassificationLoss):
    name = "cross_entropy"

    def per_sample(self, yhat: Tensor, y: Tensor) -> Tensor:
        return torch.logsumexp(yhat, -1) - yhat.gather(-1, y[..., None]).squeeze(-1)  # (E, n)

    def output_dim(self, task: Task) -> int:
        return self._check(task)

    def predict(self, yhat: Tensor) -> Tensor:
        return yhat.argmax(-1)


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (MSE, Quartic, LogCosh, Logistic, CrossEntropy)
}


def build_loss(section: dict[str, Any]) -> Loss:
    """Validate the plain ``loss`` config dict (ConfigError on any bad key or value) and build the loss."""
    choice("loss.name", section.get("name"), LOSSES)
    cfg = parse_section(LossConfig, section, "loss")
    return LOSSES[cfg.name](reduction=cfg.reduction)
