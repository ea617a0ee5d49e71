"""Two-layer network f(x) = Σ_j a_j σ(w_jᵀx + b_j), with a trainable, fixed (+1) or norm-tied output layer.

``output_layer=norm`` sets a_j = ‖w_j‖, the student of Zhou–Ge–Jin, "A Local Convergence Theory for Mildly
Over-Parameterized Two-Layer Neural Network" (COLT 2021): f(x) = Σ_j ‖w_j‖ σ(w_jᵀx), 2-homogeneous and
balanced by construction. For 1-homogeneous σ, gradient flow conserves a_j² − ‖w_j‖² − b_j² per neuron
(Du–Hu–Lee 2018, Thm 2.1); ``init=balanced`` starts every neuron with zero imbalance. ``output_layer=fixed`` is the
all-ones top layer; with output_dim > 1, fixed and norm outputs repeat the same sum in every output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dynamics_bench.config import choice, require
from dynamics_bench.models.base import (ACTIVATIONS, Model, Neurons, Params, check_init, explicit_matrices,
                                        fan_in_std, gaussian, orthogonal, stack_members)

INITS = ("gaussian", "orthogonal", "balanced", "explicit")


def _ones(params: Params, output_dim: int) -> Tensor:
    w = params["w"]  # (E, m, d) or (m, d)
    return w.new_ones(*w.shape[:-2], output_dim, w.shape[-2])  # (E, out, m)


def _norms(params: Params, output_dim: int) -> Tensor:
    w = params["w"]
    norms = torch.linalg.vector_norm(w, dim=-1).unsqueeze(-2)  # (E, 1, m)
    return norms.expand(*norms.shape[:-2], output_dim, norms.shape[-1])  # (E, out, m)


# output_layer -> effective output weights (E, out, m) from the parameters
OUTPUT_LAYERS: dict[str, Callable[[Params, int], Tensor]] = {
    "trainable": lambda params, output_dim: params["a"],
    "fixed": _ones,
    "norm": _norms,
}


@dataclass
class TwoLayerConfig:
    name: str = "two_layer"
    width: int = 8  # m, hidden neurons
    activation: str = "relu"
    output_layer: str = "trainable"
    bias: bool = False
    init: str = "gaussian"
    init_scale: float = 1.0
    init_values: list[Any] | None = None  # init=explicit: [w (m, d), a (out, m)], or [w] for fixed/norm

    def __post_init__(self) -> None:
        require(self.width >= 1, "model.width", self.width, "must be an integer >= 1")
        choice("model.activation", self.activation, ACTIVATIONS)
        choice("model.output_layer", self.output_layer, OUTPUT_LAYERS)
        check_init(self.init, self.init_scale, self.init_values, INITS)
        require(self.init != "balanced" or self.output_layer == "trainable", "model.init", self.init,
                f"balanced needs model.output_layer=trainable (got {self.output_layer}, whose a is not free); "
                "allowed here: gaussian, orthogonal, explicit")
        require(not (self.init == "explicit" and self.bias), "model.bias", self.bias,
                "must be false with model.init=explicit (init_values has no bias entry)")


class TwoLayer(Model):
    """x (E, n, d) -> Σ_j a_j σ(w_jᵀx + b_j) (E, n, out). Parameters "w" (E, m, d), "a" (E, out, m) when
    output_layer=trainable, "b" (E, m) when bias."""

    def __init__(self, *, width: int, activation: str, output_layer: str, bias: bool, init: str, init_scale: float,
                 init_values: list | None, input_dim: int, output_dim: int):
        TwoLayerConfig(width=width, activation=activation, output_layer=output_layer, bias=bias, init=init,
                       init_scale=init_scale, init_values=init_values)  # validates
        self.width, self.output_layer, self.bias = width, output_layer, bias
        self.activation_name, self.activation = activation, ACTIVATIONS[activation]
        self.init, self.init_scale = init, init_scale
        self.input_dim, self.output_dim = input_dim, output_dim
        self._output_weights = OUTPUT_LAYERS[output_layer]
        self._trainable_a = output_layer == "trainable"
        shapes = [(width, input_dim)] + ([(output_dim, width)] if self._trainable_a else [])
        self._explicit: list[Tensor] | None = None
        if init == "explicit":  # validated now, so a bad init_values fails before any training
            self._explicit = explicit_matrices("model.init_values", init_values, shapes)
        inits: dict[str, Callable[[torch.Generator], Params]] = {
            "gaussian": self._gaussian, "orthogonal": self._orthogonal, "balanced": self._balanced,
            "explicit": self._explicit_values}
        self._init_member = inits[init]

    # --- initialization (one member, one generator); draw order w, a, b ---
    def _gaussian(self, gen: torch.Generator) -> Params:
        s, m, d = self.init_scale, self.width, self.input_dim
        p = {"w": gaussian(gen, (m, d), fan_in_std(s, d))}
        if self._trainable_a:
            p["a"] = gaussian(gen, (self.output_dim, m), fan_in_std(s, m))
        if self.bias:
            p["b"] = gaussian(gen, (m,), fan_in_std(s, d))
        return p

    def _orthogonal(self, gen: torch.Generator) -> Params:
        s, m = self.init_scale, self.width
        p = {"w": s * orthogonal(gen, m, self.input_dim)}
        if self._trainable_a:
            p["a"] = s * orthogonal(gen, self.output_dim, m)
        if self.bias:
            p["b"] = torch.zeros(m, dtype=torch.float64)
        return p

    def _balanced(self, gen: torch.Generator) -> Params:
        """Gaussian, then each column a[:, j] rescaled to norm sqrt(‖w_j‖² + b_j²): a_j² − ‖w_j‖² − b_j² = 0."""
        p = self._gaussian(gen)
        incoming = p["w"].square().sum(-1) + (p["b"].square() if self.bias else 0.0)  # (m,)
        p["a"] = p["a"] * (incoming.sqrt() / torch.linalg.vector_norm(p["a"], dim=0))
        return p

    def _explicit_values(self, gen: torch.Generator) -> Params:
        return dict(zip(("w", "a"), (t.clone() for t in self._explicit)))

    def init_params(self, generators: list[torch.Generator]) -> Params:
        return stack_members([self._init_member(g) for g in generators])

    # --- forward and views ---
    def neurons(self, params: Params) -> Neurons:
        """w (E, m, d), effective a (E, out, m) (ones for fixed, ‖w_j‖ for norm), b (E, m) or None."""
        return Neurons(w=params["w"], a=self._output_weights(params, self.output_dim), b=params.get("b"))

    @property
    def num_params(self) -> int:
        m = self.width
        return m * self.input_dim + (self.output_dim * m if self._trainable_a else 0) + (m if self.bias else 0)

    @property
    def smooth(self) -> bool:
        return self.activation.smooth

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Batched: x (E, n, d) -> (E, n, out); also one member's unbatched params with x (n, d) -> (n, out).
        Matmuls, not einsum: einsum's wrapper and views cost more than the arithmetic at small sizes."""
        nrn = self.neurons(params)
        return self.activation.fn(_preactivation(nrn.w, nrn.b, x)) @ nrn.a.mT  # (E, n, out)

    def preactivations(self, params: Params, x: Tensor) -> list[Tensor]:
        return [_preactivation(params["w"], params.get("b"), x)]


def _preactivation(w: Tensor, b: Tensor | None, x: Tensor) -> Tensor:
    """w_jᵀx + b_j, (E, n, m)."""
    z = x @ w.mT
    return z if b is None else z + b.unsqueeze(-2)
