"""Infinite-width neural tangent kernels of the harness's bias-free ReLU networks, in its own parameterizations and
input scaling (Jacot, Gabriel, Hongler 2018; the Arora et al. 2019 recursion with its diagonal terms, so inputs
need not be unit-norm; Du, Zhai, Póczos, Singh 2019; docs/theory.md §5.2, §5.3).

Notation (s = init_scale, d = input dim, m = width): Σ_1 = s²·xᵀx'/d is the covariance of a first-layer
pre-activation; Σ_l = s²·E[relu(a)relu(b)] and Σ̇_l = s²·E[relu'(a)relu'(b)] with (a, b) ~ N(0, Σ_{l−1}) at the
pair (x, x'). Under the standard parameterization the NTK grows like m (the gradients of the m-wide layers add m
terms of O(1)), so its functions return lim K/m; under the ntk parameterization K itself has a limit.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

PARAMETERIZATIONS = ("standard", "ntk")
OUTPUT_LAYERS = ("trainable", "fixed", "fixed_signs")


def relu_moments(sigma: Tensor) -> tuple[Tensor, Tensor]:
    """E[relu(a)relu(b)] and E[relu'(a)relu'(b)] for (a, b) ~ N(0, [[Σ_aa, Σ_ab], [Σ_ab, Σ_bb]]) at every pair of a
    covariance matrix Σ (n, n) with a positive diagonal -> two (n, n) (docs/theory.md §5.3, Cho & Saul 2009):
        (√(Σ_aa Σ_bb)/2π)(sin θ + (π − θ)cos θ)  and  (π − θ)/(2π),  θ = arccos(Σ_ab/√(Σ_aa Σ_bb))."""
    scale = torch.diagonal(sigma).sqrt()
    norms = scale[:, None] * scale[None, :]  # (n, n)
    cosine = (sigma / norms).clamp(-1.0, 1.0)  # clamp: round-off past ±1 on (near-)parallel pairs
    cosine.diagonal().fill_(1.0)  # a point with itself: exactly θ = 0 (arccos(1 − ulp) would be 1.5e-8)
    theta = torch.arccos(cosine)
    return norms * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi), \
        (math.pi - theta) / (2 * math.pi)


def _check(parameterization: str, output_layer: str = "trainable", activation: str = "relu") -> None:
    for key, value, allowed in (("parameterization", parameterization, PARAMETERIZATIONS),
                                ("output_layer", output_layer, OUTPUT_LAYERS), ("activation", activation, ("relu",))):
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is invalid: valid options are {', '.join(allowed)}")


def ntk_two_layer(x: Tensor, *, parameterization: str = "standard", output_layer: str = "trainable",
                  init_scale: float = 1.0, activation: str = "relu") -> Tensor:
    """The infinite-width NTK of the harness's two_layer ReLU net with one output, x (n, d) -> (n, n).

    K(x, x') = Σ_j ∂f/∂a_j·∂f'/∂a_j (trainable a only) + Σ_j ∂f/∂w_j·∂f'/∂w_j, each term's sum over j by its mean:
      * standard, f = Σ_j a_j relu(w_jᵀx), w_j ~ N(0, s²/d·I); returns lim K/m:
          trainable (a_j ~ N(0, s²/m)): E_{Σ_1}[relu relu] (the w-gradients add only O(1) to K);
          fixed (a_j = 1) and fixed_signs (a_j = ±1): E_{Σ_1}[relu' relu']·xᵀx' (a's are not trained).
      * ntk, stored w_j, a_j ~ N(0, s²), f = Σ_j (a_j/√m) relu(w_jᵀx/√d); returns lim K:
          trainable: E_{Σ_1}[relu relu] + s²·E_{Σ_1}[relu' relu']·xᵀx'/d;
          fixed, fixed_signs: E_{Σ_1}[relu' relu']·xᵀx'/d.
    The relu' terms do not depend on s. Trainable equals ntk_mlp(x, depth=2) in either parameterization."""
    _check(parameterization, output_layer, activation)
    gram = x @ x.T  # (n, n)
    d, s2 = x.shape[1], init_scale ** 2
    both, step = relu_moments(s2 * gram / d)  # E[relu relu], E[relu' relu'] under Σ_1
    trainable = output_layer == "trainable"
    if parameterization == "ntk":
        return (both if trainable else 0.0) + (s2 if trainable else 1.0) * step * gram / d
    return both if trainable else step * gram


def ntk_mlp(x: Tensor, *, depth: int, parameterization: str = "standard", init_scale: float = 1.0) -> Tensor:
    """The infinite-width NTK of the harness's bias-free ReLU mlp with one output and every layer trained,
    x (n, d) -> (n, n) (docs/theory.md §5.3 with diagonal terms). depth L weight matrices W_1 (m, d), …, W_L (1, m);
    the recursion over layers l = 2..L is
        Θ_l = Σ_l/s² + Σ̇_l·Θ_{l−1},  Σ_l = s²·E_{Σ_{l−1}}[relu relu],  Σ̇_l = s²·E_{Σ_{l−1}}[relu' relu'],
    the first term from W_l's own gradient (h_{l−1}ᵀh'_{l−1}, a sum over the fan-in), the second from the layers
    below, and K = Θ_L. ntk (c_l = 1/√fan_in): Θ_1 = xᵀx'/d and K → Θ_L. standard: W_l's gradient sums m terms
    without the 1/m, so K/m → Θ_L started from Θ_1 = 0 (W_1's gradient adds only O(1) to K).
    With s² = 2 (He) and a unit diagonal, Σ_l and Σ̇_l are docs/theory.md §5.3's κ1 and κ0; its Θ has Σ_l where this
    has Σ_l/s², because there the factor √(2/m) sits in the activations and here s sits in the weights' law."""
    _check(parameterization)
    if depth < 2:
        raise ValueError(f"depth={depth} is invalid: must be >= 2 (weight matrices)")
    gram = x @ x.T  # (n, n)
    d, s2 = x.shape[1], init_scale ** 2
    sigma = s2 * gram / d  # Σ_1
    theta = gram / d if parameterization == "ntk" else torch.zeros_like(gram)  # Θ_1
    for _ in range(depth - 1):
        both, step = relu_moments(sigma)
        theta = both + s2 * step * theta
        sigma = s2 * both
    return theta


def du_gram(x: Tensor) -> Tensor:
    """Du et al.'s H∞_ij = x_iᵀx_j·(π − arccos(x_iᵀx_j/(‖x_i‖‖x_j‖)))/(2π), x (n, d) -> (n, n) (docs/theory.md §5.2):
    the NTK of f = (1/√m)Σ_r a_r relu(w_rᵀx), a_r = ±1 fixed, w_r ~ N(0, I_d). In the harness's terms it is
    ntk_two_layer(x, parameterization="standard", output_layer="fixed" or "fixed_signs") for any init_scale
    (lim K/m, relu' being scale-free), and d·ntk_two_layer(x, parameterization="ntk", output_layer="fixed_signs")
    (the harness's ntk parameterization divides w_jᵀx by √d; Du's does not)."""
    gram = x @ x.T
    return relu_moments(gram)[1] * gram
