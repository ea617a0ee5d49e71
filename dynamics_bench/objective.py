"""The training objective: a model, its task's data and a loss, evaluated for every ensemble member at once."""
from __future__ import annotations

import torch
from torch import Tensor

from dynamics_bench.losses import Loss
from dynamics_bench.models.base import Model, Params


class Objective:
    """Per-member loss L_e(θ_e) and its gradient; members never mix, so one backward serves all of them."""

    def __init__(self, *, model: Model, loss: Loss, sum_over_samples: bool):
        self.model, self.loss_fn, self.sum_over_samples = model, loss, sum_over_samples

    def loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """x (E, n, d), y (E, n, ...) -> loss (E,)."""
        return self.loss_fn(self.model.forward(params, x), y, self.sum_over_samples)

    def loss_and_grad(self, params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Params]:
        """Loss (E,) and its gradient, one tensor per parameter with the parameter's shape.

        A single member is evaluated unbatched (its (n, d) data and leaves without the E axis): the same
        arithmetic without the autograd nodes of the ensemble axis, which cost ~10% of a small step."""
        single = x.shape[0] == 1
        with torch.enable_grad():
            leaves = {k: (v[0] if single else v).detach().requires_grad_(True) for k, v in params.items()}
            loss = self.loss(leaves, x[0], y[0]) if single else self.loss(leaves, x, y)
            grads = torch.autograd.grad(loss, list(leaves.values()), torch.ones_like(loss))  # = of loss.sum()
        if single:
            loss, grads = loss.reshape(1), [g.unsqueeze(0) for g in grads]
        return loss.detach(), dict(zip(leaves, grads))
