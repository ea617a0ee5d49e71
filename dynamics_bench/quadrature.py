"""Fixed composite Gauss–Legendre quadrature of ∫₀ᵘ f, vectorized over the upper limits u.

For quantities with no closed form that a metric evaluates on every neuron at every logged step (the erf
activation's potential). A fixed rule, rather than an adaptive one, keeps the cost and the autograd graph the
same for every entry; the integrand must be smooth on [0, u] for the rule to converge fast.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from numpy.polynomial.legendre import leggauss
from torch import Tensor


@lru_cache
def _rule(panels: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (panels, order) on [0, 1], `order` per panel of width 1/panels, and the weights (order,) they share."""
    x, w = leggauss(order)  # on [−1, 1]
    nodes = (np.arange(panels)[:, None] + (x[None] + 1) / 2) / panels
    return nodes, w / (2 * panels)


def integral_from_zero(f: Callable[[Tensor], Tensor], upper: Tensor, *, panels: int, order: int) -> Tensor:
    """∫₀ᵘ f(z) dz for every entry u of `upper` (any shape; negative u integrate backwards), differentiable in u.

    Substitutes z = u·s, s ∈ [0, 1], and sums an `order`-point Gauss–Legendre rule on each of `panels` equal
    panels. One panel at a time: memory stays at upper.numel()·order, whatever the panel count."""
    nodes, weights = _rule(panels, order)
    weights = torch.as_tensor(weights, dtype=upper.dtype, device=upper.device)
    total = torch.zeros_like(upper)
    for s in torch.as_tensor(nodes, dtype=upper.dtype, device=upper.device):
        total = total + f(upper.unsqueeze(-1) * s) @ weights
    return upper * total
