"""The batched model interface and the pieces every model shares (activations, initializers).

Parameters are a ``dict[str, Tensor]`` whose tensors all carry a leading ensemble axis E: member e's
parameters are ``{k: v[e] for k, v in params.items()}``. Models never mix members, so the gradient of
``loss.sum()`` gives every member its own gradient in one backward pass.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor

from dynamics_bench.config import ConfigError, choice, positive, require
from dynamics_bench.quadrature import integral_from_zero

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity and the facts metrics need about it."""

    fn: Callable[[Tensor], Tensor]
    homogeneous: bool  # σ(cz) = cσ(z) for c > 0: two-layer nets then conserve a_j² − ‖w_j‖² on any data
    even: bool  # σ(−z) = σ(z): a neuron and its negation are the same, so alignment uses |cos|
    smooth: bool  # no kinks: adaptive step-size control assumes a smooth vector field, and relu/abs defeat it
    # H with H' = 2σ/σ' (fixed up to a constant): on the single input x = 1, gradient flow conserves a² − H(w)
    # per neuron, whatever the loss (paper (1), Prop. 8 for the algebraic sigmoid; theory.md §4)
    potential: Callable[[Tensor], Tensor] | None = None


# Composite Gauss–Legendre on [0, z]: 32 panels of 20 nodes put the erf potential within 1e-13 relative of its
# power series for |z| ≤ 25 (tests/test_invariants.py); past that, the integrand's peak at t = z grows too sharp.
ERF_PANELS, ERF_ORDER = 32, 20
SQRT_PI = math.sqrt(math.pi)


def _erf_potential(z: Tensor) -> Tensor:
    """H(z) = ∫₀ᶻ √π·erf(t)·e^{t²} dt (2σ/σ' for σ = erf), which has no closed form. Accurate for |z| ≤ 25;
    inf from |z| ≈ 26.6 in float64 (≈ 9.4 in float32), where e^{z²}, and H with it, overflows."""
    return integral_from_zero(lambda t: SQRT_PI * torch.erf(t) * torch.exp(t * t), z,
                              panels=ERF_PANELS, order=ERF_ORDER)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(torch.relu, homogeneous=True, even=False, smooth=False, potential=torch.square),
    "abs": Activation(torch.abs, homogeneous=True, even=True, smooth=False, potential=torch.square),
    "linear": Activation(lambda z: z, homogeneous=True, even=False, smooth=True, potential=torch.square),
    "sigmoid": Activation(torch.sigmoid, homogeneous=False, even=False, smooth=True,
                          potential=lambda z: 2 * (z + torch.exp(z))),
    "algebraic_sigmoid": Activation(lambda z: z * torch.rsqrt(1 + z * z), homogeneous=False, even=False, smooth=True,
                                    potential=lambda z: 0.5 * (1 + z * z) ** 2),
    "tanh": Activation(torch.tanh, homogeneous=False, even=False, smooth=True,
                       potential=lambda z: 0.5 * torch.cosh(2 * z)),
    "erf": Activation(torch.erf, homogeneous=False, even=False, smooth=True, potential=_erf_potential),
}


@dataclass(frozen=True)
class Neurons:
    """A two-layer net's hidden units, for metrics: w (E, m, d) input weights, a (E, out, m) effective output
    weights (for a fixed or norm-tied output layer, the values it takes), b (E, m) biases or None."""

    w: Tensor
    a: Tensor
    b: Tensor | None


class Model(ABC):
    """A batched model. Subclasses take keyword-only arguments (their config keys plus input_dim/output_dim)."""

    input_dim: int
    output_dim: int
    activation: Activation | None = None  # the hidden units' nonlinearity; None for a linear net

    @abstractmethod
    def init_params(self, generators: list[torch.Generator]) -> Params:
        """One float64 CPU tensor per parameter, shape (E, ...), member e drawn from generators[e] only, in
        forward order (the input layer's first): metrics read the first weight matrix as the first layer."""

    @abstractmethod
    def forward(self, params: Params, x: Tensor) -> Tensor:
        """x (E, n, input_dim) -> outputs (E, n, output_dim)."""

    @property
    @abstractmethod
    def num_params(self) -> int:
        """Trainable parameters per member (P), known before any is drawn."""

    def preactivations(self, params: Params, x: Tensor) -> list[Tensor]:
        """Each hidden layer's pre-activations (E, n, units), input side first; [] without hidden nonlinearity."""
        return []

    @property
    def smooth(self) -> bool:
        """Whether the model is smooth in its parameters (no kinks such as relu's): adaptive step-size control
        assumes it."""
        return True

    def prepare(self, cost: Callable[[Params], Tensor]) -> None:
        """Learn what an init or a metric needs to know about the cost before step 0 (default: nothing).

        `cost` maps one member's unbatched parameters (float64 CPU tensors; autograd flows through) to the
        scalar training loss on the task's fixed data.
        Called once by the experiment builder; raises ConfigError when the cost rules out the chosen init."""


def gaussian(gen: torch.Generator, shape: tuple[int, ...], std: float) -> Tensor:
    """Entries N(0, std²), float64 on CPU, from gen alone."""
    return torch.randn(shape, generator=gen, dtype=torch.float64) * std


def orthogonal(gen: torch.Generator, rows: int, cols: int) -> Tensor:
    """A (rows, cols) matrix with orthonormal rows or columns (whichever are fewer), Haar-distributed."""
    z = torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r))  # sign fix makes the distribution uniform (Mezzadri 2007)
    return q if rows >= cols else q.T


def explicit_matrices(key: str, values: list | None, shapes: list[tuple[int, int]]) -> list[Tensor]:
    """Validate ``model.init_values`` against the expected (out, in) shapes and return float64 tensors."""
    require(values is not None, key, values, f"model.init=explicit needs {len(shapes)} matrices of shapes "
            + ", ".join(f"{s[0]}x{s[1]}" for s in shapes))
    require(len(values) == len(shapes), key, f"<{len(values)} matrices>",
            f"expected {len(shapes)} matrices (W_1 first) of shapes " + ", ".join(f"{o}x{i}" for o, i in shapes))
    out = []
    for i, (value, shape) in enumerate(zip(values, shapes)):
        try:
            t = torch.tensor(value, dtype=torch.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}[{i}]", value, "must be a nested list of numbers") from exc
        if t.dim() == 1 and shape[0] == 1:
            t = t[None]
        require(tuple(t.shape) == shape, f"{key}[{i}]", f"<shape {'x'.join(map(str, t.shape))}>",
                f"W_{i + 1} must have shape {shape[0]}x{shape[1]} (out x in)")
        out.append(t)
    return out


def stack_members(members: list[Params]) -> Params:
    """[{name: tensor}] per member -> {name: (E, ...) tensor}."""
    return {k: torch.stack([p[k] for p in members]) for k in members[0]}


def parameter_count(params: Params) -> int:
    """Parameters per member (P) of an (E, ...) parameter dict."""
    return sum(v[0].numel() for v in params.values())


def per_member(v: Tensor, like: Tensor) -> Tensor:
    """An (E,) tensor viewed to broadcast over the trailing dims of `like` (E, ...)."""
    return v.view(-1, *[1] * (like.dim() - 1))


def fan_in_std(scale: float, fan_in: int) -> float:
    return scale / math.sqrt(fan_in)


def check_init(init: str, init_scale: float, init_values: list | None, allowed: Iterable[str]) -> None:
    """The checks every model shares: model.init is one of `allowed`, model.init_scale > 0, and
    model.init_values is given only with model.init=explicit (a silently ignored value is a bug)."""
    choice("model.init", init, allowed)
    positive("model.init_scale", init_scale)
    shown = init_values if init_values is None else f"<{len(init_values)} matrices>"
    require(init_values is None or init == "explicit", "model.init_values", shown,
            "must be null unless model.init=explicit")
