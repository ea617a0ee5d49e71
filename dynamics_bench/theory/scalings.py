"""Closed forms for the NTK scaling claims (docs/theory.md §5.2–5.3, P3.1–P3.5): the infinite-width NTK of the
harness's ReLU mlp when only some layers are trained (Allen-Zhu–Li–Song train only the m×m layers), the smallest
eigenvalue of a kernel on two unit inputs at distance δ, and Du et al.'s per-neuron movement bound R'."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from dynamics_bench.theory.ntk import relu_moments


def ntk_mlp_trained(x: Tensor, *, depth: int, trained: list[int], parameterization: str = "standard",
                    init_scale: float = 1.0) -> Tensor:
    """The infinite-width NTK of the harness's bias-free ReLU mlp with one output when only the weight matrices
    W_l, l ∈ `trained` (1-based, W_1 the input layer, W_depth the readout) are trained, x (n, d) -> (n, n).

    W_l's gradient is (backprop vector at layer l) ⊗ h_{l−1}, so its kernel term is ⟨h_{l−1}, h'_{l−1}⟩ (Σ_l/s²
    per unit; xᵀx'/d for l = 1 under ntk) times the backward product Π_{k>l} Σ̇_k. standard: returns lim K/m, where
    the input layer's term (a sum over d, not m) vanishes; ntk: lim K. With every layer trained this is
    ntk_mlp(x, depth=depth, …)."""
    if parameterization not in ("standard", "ntk"):
        raise ValueError(f"parameterization={parameterization!r} is invalid: valid options are standard, ntk")
    if depth < 2 or not trained or any(not 1 <= l <= depth for l in trained):
        raise ValueError(f"trained={trained} is invalid for depth={depth}: layers are 1..{depth}")
    gram = x @ x.T
    d, s2 = x.shape[1], init_scale ** 2
    inputs = {1: gram / d if parameterization == "ntk" else torch.zeros_like(gram)}  # ⟨h_{l−1}, h'_{l−1}⟩ per unit
    steps = {}  # Σ̇_l for l = 2..depth
    sigma = s2 * gram / d  # Σ_1: the covariance of W_1x
    for layer in range(2, depth + 1):
        both, step = relu_moments(sigma)
        inputs[layer], steps[layer] = both, s2 * step
        sigma = s2 * both
    kernel = torch.zeros_like(gram)
    for layer in trained:
        backward = math.prod((steps[k] for k in range(layer + 1, depth + 1)), start=torch.ones_like(gram))
        kernel = kernel + inputs[layer] * backward
    return kernel


def unit_pair(delta: float, dim: int) -> Tensor:
    """Two unit vectors in R^dim at Euclidean distance δ (angle 2·arcsin(δ/2)), in the plane of e_1, e_2."""
    angle = 2 * math.asin(delta / 2)
    x = torch.zeros(2, dim, dtype=torch.float64)
    x[0, 0], x[1, 0], x[1, 1] = 1.0, math.cos(angle), math.sin(angle)
    return x


def du_movement_bound(n: int, residual0: float, width: int, lambda0: float) -> float:
    """Du et al.'s per-neuron radius R' = 4·√n·‖y − u(0)‖/(√m·λ0) (docs/theory.md §5.1), in their units (w ~ N(0, I),
    f = (1/√m)Σ a_r relu(w_rᵀx), λ0 = λ_min(H∞))."""
    return 4 * math.sqrt(n) * residual0 / (math.sqrt(width) * lambda0)
