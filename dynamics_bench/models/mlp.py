"""Bias-free fully connected network h_0 = x, h_l = σ(c_l W_l h_{l−1}) (l < L), f(x) = c_L W_L h_{L−1}.

``depth`` L >= 2 counts weight matrices: W_1 (m, d), W_2..W_{L−1} (m, m), W_L (out, m). The multiplier c_l on the
stored weight W_l is set by ``parameterization``:
  * ``standard``: c_l = 1, stored weights N(0, s²/fan_in) (the torch.nn / Allen-Zhu–Li–Song 2019 convention);
  * ``ntk``: c_l = 1/√fan_in, stored weights N(0, s²) (Jacot, Gabriel, Hongler, "Neural Tangent Kernel", 2018),
    so the effective weights c_l W_l match the standard ones at init but gradients scale differently in width.
``init=orthogonal`` makes every effective weight s·(semi-)orthogonal; ``init=explicit`` gives the stored values;
``init=symmetric`` is gaussian with the last hidden layer's units in twin pairs (2j, 2j+1): equal rows of W_{L−1}
(the network below is shared, so equal activations) and opposite columns of W_L, so f(x; θ_0) = 0 (the symmetric
start of Du et al. 2019 and Chizat et al. 2019; docs/theory.md §5.2); ``init=file`` reads every member's start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dynamics_bench.config import choice, require
from dynamics_bench.models.base import (ACTIVATIONS, PARAMETERIZATIONS, InitFile, Model, Params, check_init,
                                        explicit_matrices, fan_in_std, gaussian, opposite_columns, orthogonal,
                                        paired_rows)

INITS = ("gaussian", "orthogonal", "explicit", "symmetric", "file")  # balanced: deep_linear and two_layer only


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
    init_path: str | None = None  # init=file: a .pt file of {name: (E, ...) tensor}

    def __post_init__(self) -> None:
        require(self.depth >= 2, "model.depth", self.depth,
                "must be an integer >= 2 (weight matrices; use model=deep_linear or two_layer for fewer)")
        require(self.width >= 1, "model.width", self.width, "must be an integer >= 1")
        choice("model.activation", self.activation, ACTIVATIONS)
        choice("model.parameterization", self.parameterization, PARAMETERIZATIONS)
        check_init(self.init, self.init_scale, self.init_values, INITS, self.init_path)
        require(self.init != "symmetric" or self.width % 2 == 0, "model.width", self.width,
                "must be even with model.init=symmetric (the last hidden layer's units come in twin pairs)")


class MLP(Model):
    """x (E, n, d) -> (E, n, out); parameters "W1".."WL" (stored values; effective weight = layer_scales[l]·W)."""

    def __init__(self, *, depth: int, width: int, activation: str, parameterization: str, init: str,
                 init_scale: float, init_values: list | None, input_dim: int, output_dim: int,
                 init_path: str | None = None):
        MLPConfig(depth=depth, width=width, activation=activation, parameterization=parameterization, init=init,
                  init_scale=init_scale, init_values=init_values, init_path=init_path)  # validates
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
        self.init_file = InitFile(init_path, self.param_shapes) if init == "file" else None  # read and checked now
        inits: dict[str, Callable[[torch.Generator], list[Tensor]]] = {
            "gaussian": self._gaussian, "orthogonal": self._orthogonal, "explicit": self._explicit_values,
            "symmetric": self._symmetric}
        self._init_member = inits.get(init)  # None for init=file: draw() hands out the file's starts

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(zip(self.names, self.shapes))

    # --- initialization (one member, one generator): effective weights c_l W_l have the stated law ---
    def _gaussian(self, gen: torch.Generator) -> list[Tensor]:
        layers = zip(self.shapes, self.layer_scales)
        return [gaussian(gen, (o, i), fan_in_std(self.init_scale, i) / c) for (o, i), c in layers]

    def _orthogonal(self, gen: torch.Generator) -> list[Tensor]:
        return [self.init_scale / c * orthogonal(gen, o, i) for (o, i), c in zip(self.shapes, self.layer_scales)]

    def _explicit_values(self, gen: torch.Generator) -> list[Tensor]:
        return [w.clone() for w in self._explicit]

    def _symmetric(self, gen: torch.Generator) -> list[Tensor]:
        """Gaussian below the last hidden layer; W_{L−1}'s rows and W_L's columns drawn for m/2 units at the full
        width's scale and twinned: equal rows, opposite columns."""
        std = [fan_in_std(self.init_scale, i) / c for (_, i), c in zip(self.shapes, self.layer_scales)]
        below = [gaussian(gen, shape, sd) for shape, sd in zip(self.shapes[:-2], std)]
        (m, fan_in), (out, _) = self.shapes[-2:]
        last_hidden = paired_rows(gaussian(gen, (m // 2, fan_in), std[-2]))  # (m, fan_in)
        return below + [last_hidden, opposite_columns(gaussian(gen, (out, m // 2), std[-1]))]

    def init_params(self, generators: list[torch.Generator]) -> Params:
        return self.draw(generators, lambda g: dict(zip(self.names, self._init_member(g))))

    # --- forward and views ---
    def layer_matrices(self, params: Params) -> list[Tensor]:
        """The stored [W_1, ..., W_L], each (E, out_l, in_l); multiply by layer_scales[l] for effective weights."""
        return [params[n] for n in self.names]

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
