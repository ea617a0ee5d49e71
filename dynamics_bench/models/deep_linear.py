"""Deep linear network f(x) = W_N ⋯ W_1 x: the overparameterization g(W_1..W_N) = f(W_N⋯W_1) of paper (1)
(de Oliveira–Jatkar–Sontag, arXiv 2511.09810) and of Saxe–McClelland–Ganguli (2014).

``depth`` N counts weight matrices: W_1 (k, in), W_i (k, k), W_N (out, k); N = 1 is the linear model W_1 (out, in).
Gradient flow conserves C_i = W_i W_iᵀ − W_{i+1}ᵀ W_{i+1} (Arora et al. 2018; Du–Hu–Lee 2018, Thm 2.2);
``init=balanced`` starts on C = 0 with a Gaussian end-to-end matrix (Du–Hu–Lee 2018; Arora et al. 2019).
The vector case of paper (1) is depth 2 with input_dim = output_dim = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dynamics_bench.config import require
from dynamics_bench.models.base import (Model, Params, check_init, explicit_matrices, fan_in_std, gaussian,
                                        orthogonal, stack_members)

INITS = ("gaussian", "orthogonal", "balanced", "explicit")


@dataclass
class DeepLinearConfig:
    name: str = "deep_linear"
    depth: int = 2  # N, number of weight matrices
    width: int = 8  # k, hidden width
    init: str = "gaussian"
    init_scale: float = 1.0
    init_values: list[Any] | None = None  # init=explicit: [W_1, ..., W_N], each (out, in)

    def __post_init__(self) -> None:
        require(self.depth >= 1, "model.depth", self.depth, "must be an integer >= 1 (number of weight matrices)")
        require(self.width >= 1, "model.width", self.width, "must be an integer >= 1")
        check_init(self.init, self.init_scale, self.init_values, INITS)


class DeepLinear(Model):
    """x (E, n, in) -> x W_1ᵀ ⋯ W_Nᵀ (E, n, out); parameters "W1".."WN"."""

    def __init__(self, *, depth: int, width: int, init: str, init_scale: float, init_values: list | None,
                 input_dim: int, output_dim: int):
        # Validates (raises ConfigError) also when the model is built directly rather than by build_model.
        DeepLinearConfig(depth=depth, width=width, init=init, init_scale=init_scale, init_values=init_values)
        self.depth, self.width, self.init, self.init_scale = depth, width, init, init_scale
        self.input_dim, self.output_dim = input_dim, output_dim
        dims = [input_dim] + [width] * (depth - 1) + [output_dim]
        self.shapes: list[tuple[int, int]] = [(dims[i + 1], dims[i]) for i in range(depth)]  # (out, in) of W_i
        self.names = [f"W{i + 1}" for i in range(depth)]
        self._explicit: list[Tensor] | None = None
        if init == "explicit":  # validated now, so a bad init_values fails before any training
            self._explicit = explicit_matrices("model.init_values", init_values, self.shapes)
        inits: dict[str, Callable[[torch.Generator], list[Tensor]]] = {
            "gaussian": self._gaussian, "orthogonal": self._orthogonal,
            "balanced": self._balanced if depth > 1 else self._gaussian, "explicit": self._explicit_values}
        self._init_member = inits[init]

    # --- initialization (one member, one generator) ---
    def _gaussian(self, gen: torch.Generator) -> list[Tensor]:
        return [gaussian(gen, (o, i), fan_in_std(self.init_scale, i)) for o, i in self.shapes]

    def _orthogonal(self, gen: torch.Generator) -> list[Tensor]:
        return [self.init_scale * orthogonal(gen, o, i) for o, i in self.shapes]

    def _explicit_values(self, gen: torch.Generator) -> list[Tensor]:
        return [w.clone() for w in self._explicit]

    def _balanced(self, gen: torch.Generator) -> list[Tensor]:
        """A ~ N(0, s²/in) (out, in) drawn first, then U_1..U_{N−1} Haar (k, k). With A = UΣVᵀ and D = diag(σ^{1/N})
        over the top r = min(in, out, k) singular values: W_1 = U_1 D Vᵀ, W_i = U_i D U_{i−1}ᵀ, W_N = U D U_{N−1}ᵀ
        (only the first r columns of each U_i enter). Then every C_i = U_i D² U_iᵀ − U_i D² U_iᵀ = 0 and
        W_N⋯W_1 = U D^N Vᵀ is A's rank-r truncation."""
        n_in, n_out, k, depth = self.input_dim, self.output_dim, self.width, self.depth
        a = gaussian(gen, (n_out, n_in), fan_in_std(self.init_scale, n_in))
        u, sigma, vh = torch.linalg.svd(a, full_matrices=False)  # (out, r0), (r0,), (r0, in)
        r = min(n_in, n_out, k)
        d = torch.diag(sigma[:r] ** (1.0 / depth))  # (r, r)
        bases = [orthogonal(gen, k, k)[:, :r] for _ in range(depth - 1)]  # U_1..U_{N−1}, each (k, r)
        lefts = bases + [u[:, :r]]  # (k, r) ... (out, r)
        rights = [vh[:r].T] + bases  # (in, r), (k, r) ...
        return [left @ d @ right.T for left, right in zip(lefts, rights)]

    def init_params(self, generators: list[torch.Generator]) -> Params:
        return stack_members([dict(zip(self.names, self._init_member(g))) for g in generators])

    # --- forward and views ---
    def layer_matrices(self, params: Params) -> list[Tensor]:
        """[W_1, ..., W_N], each (E, out_i, in_i)."""
        return [params[n] for n in self.names]

    def end_to_end(self, params: Params) -> Tensor:
        """W_N ⋯ W_1, (E, out, in)."""
        mats = self.layer_matrices(params)
        prod = mats[0]
        for w in mats[1:]:
            prod = torch.einsum("eok,eki->eoi", w, prod)
        return prod

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Batched: x (E, n, in) -> (E, n, out); also one member's unbatched params with x (n, in)."""
        h = x  # (E, n, in)
        for w in self.layer_matrices(params):
            h = h @ w.mT  # (E, n, out_i)
        return h
