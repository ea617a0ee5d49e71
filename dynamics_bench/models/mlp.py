"""Bias-free fully connected network h_0 = x, h_l = σ(c_l W_l h_{l−1}) (l < L), f(x) = c_L W_L h_{L−1}.

``depth`` L >= 2 counts weight matrices: W_1 (m, d), W_2..W_{L−1} (m, m), W_L (out, m). The multiplier c_l on the
stored weight W_l is set by ``parameterization``:
  * ``standard``: c_l = 1, stored weights N(0, s²/fan_in) (the torch.nn / Allen-Zhu–Li–Song 2019 convention);
  * ``ntk``: c_l = 1/√fan_in, stored weights N(0, s²) (Jacot, Gabriel, Hongler, "Neural Tangent Kernel", 2018),
    so the effective weights c_l W_l match the standard ones at init but gradients scale differently in width.
``init=orthogonal`` makes every effective weight s·(semi-)orthogonal; ``init=explicit`` gives the stored values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dynamics_bench.config import choice, require
from dynamics_bench.models.base import (ACTIVATIONS, Model, Params, check_init, explicit_matrices, fan_in_std,
                                        gaussian, orthogonal, stack_members)

INITS = ("gaussian", "orthogonal", "explicit")  # balanced is defined for deep_linear and two_layer only

# parameterization -> multiplier c_l(fan_in) applied to the stored weight in the forward pass
PARAMETERIZATIONS: dict[str, Callable[[int], float]] = {
    "standard": lambda fan_in: 1.0,
    "ntk": lambda fan_in: 1.0 / math.sqrt(fan_in),
}


@dataclass
class MLPConfig:
    name: str = "mlp"
    depth: int = 3  # L, number of weight matrices
    width: int = 64  # m, hidden width
    activation: str = "relu"
    parameterization: str = "standard"
    init: str = "gaussian"
    init_scale: float = 1.0
    init_values: list[Any] | None = None  # init=explicit: stored [W_1, ..., W_L], each (out, in)

    def __post_init__(self) -> None:
        require(self.depth >= 2, "model.depth", self.depth,
                "must be an integer >= 2 (weight matrices; use model=deep_linear or two_layer for fewer)")
        require(self.width >= 1, "model.width", self.width, "must be an integer >= 1")
        choice("model.activation", self.activation, ACTIVATIONS)
        choice("model.parameterization", self.parameterization, PARAMETERIZATIONS)
        check_init(self.init, self.init_scale, self.init_values, INITS)


class MLP(Model):
    """x (E, n, d) -> (E, n, out); parameters "W1".."WL" (stored values; effective weight = layer_scales[l]·W)."""

    def __init__(self, *, depth: int, width: int, activation: str, parameterization: str, init: str,
                 init_scale: float, init_values: list | None, input_dim: int, output_dim: int):
        MLPConfig(depth=depth, width=width, activation=activation, parameterization=parameterization, init=init,
                  init_scale=init_scale, init_values=init_values)  # validates
        self.depth, self.width, self.parameterization = depth, width, parameterization
        self.activation_name, self.activation = activation, ACTIVATIONS[activation]
        self.init, self.init_scale = init, init_scale
        self.input_dim, self.output_dim = input_dim, output_dim
        dims = [input_dim] + [width] * (depth - 1) + [output_dim]
        self.shapes: list[tuple[int, int]] = [(dims[i + 1], dims[i]) for i in range(depth)]  # (out, in) of W_l
        self.names = [f"W{i + 1}" for i in range(depth)]
        self.layer_scales: list[float] = [PARAMETERIZATIONS[parameterization](i) for _, i in self.shapes]  # c_l
        self._explicit: list[Tensor] | None = None
        if init == "explicit":  # validated now, so a bad init_values fails before any training
            self._explicit = explicit_matrices("model.init_values", init_values, self.shapes)
        inits: dict[str, Callable[[torch.Generator], list[Tensor]]] = {
            "gaussian": self._gaussian, "orthogonal": self._orthogonal, "explicit": self._explicit_values}
        self._init_member = inits[init]

    # --- initialization (one member, one generator): effective weights c_l W_l have the stated law ---
    def _gaussian(self, gen: torch.Generator) -> list[Tensor]:
        layers = zip(self.shapes, self.layer_scales)
        return [gaussian(gen, (o, i), fan_in_std(self.init_scale, i) / c) for (o, i), c in layers]

    def _orthogonal(self, gen: torch.Generator) -> list[Tensor]:
        return [self.init_scale / c * orthogonal(gen, o, i) for (o, i), c in zip(self.shapes, self.layer_scales)]

    def _explicit_values(self, gen: torch.Generator) -> list[Tensor]:
        return [w.clone() for w in self._explicit]

    def init_params(self, generators: list[torch.Generator]) -> Params:
        return stack_members([dict(zip(self.names, self._init_member(g))) for g in generators])

    # --- forward and views ---
    def layer_matrices(self, params: Params) -> list[Tensor]:
        """The stored [W_1, ..., W_L], each (E, out_l, in_l); multiply by layer_scales[l] for effective weights."""
        return [params[n] for n in self.names]

    @property
    def num_params(self) -> int:
        return sum(o * i for o, i in self.shapes)

    @property
    def smooth(self) -> bool:
        return self.activation.smooth

    def _hidden(self, params: Params, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """The pre-activations z_l = c_l W_l h_{l−1} (l < L) and the last hidden layer h_{L−1}, each (E, n, m);
        also one member's unbatched params with x (n, d)."""
        zs, h = [], x
        for w, c in zip(self.layer_matrices(params)[:-1], self.layer_scales[:-1]):
            zs.append(c * (h @ w.mT))
            h = self.activation.fn(zs[-1])
        return zs, h

    def preactivations(self, params: Params, x: Tensor) -> list[Tensor]:
        return self._hidden(params, x)[0]

    def forward(self, params: Params, x: Tensor) -> Tensor:
        h = self._hidden(params, x)[1]  # (E, n, m)
        return self.layer_scales[-1] * (h @ params[self.names[-1]].mT)  # (E, n, out)
