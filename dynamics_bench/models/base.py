"""The batched model interface and the pieces every model shares (activations, initializers).

Parameters are a ``dict[str, Tensor]`` whose tensors all carry a leading ensemble axis E: member e's
parameters are ``{k: v[e] for k, v in params.items()}``. Models never mix members, so the gradient of
``loss.sum()`` gives every member its own gradient in one backward pass.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from dynamics_bench.config import ConfigError, choice, positive, read_file, require
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
    # per neuron, whatever the loss (paper (1), Prop. 8 for the algebraic sigmoid; docs/theory.md §4)
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


# parameterization -> the multiplier c(fan_in) a layer's stored weights get in the forward pass (mlp, two_layer):
# standard c = 1 (stored weights N(0, s²/fan_in)); ntk c = 1/√fan_in (stored N(0, s²); Jacot et al. 2018)
PARAMETERIZATIONS: dict[str, Callable[[int], float]] = {
    "standard": lambda fan_in: 1.0,
    "ntk": lambda fan_in: 1.0 / math.sqrt(fan_in),
}


@dataclass(frozen=True)
class Neurons:
    """A two-layer net's hidden units, for metrics: w (E, m, d) input weights, a (E, out, m) effective output
    weights (for a fixed or norm-tied output layer, the values it takes), b (E, m) biases or None."""

    w: Tensor
    a: Tensor
    b: Tensor | None


@dataclass(frozen=True)
class TaskView:
    """What a model may know about its task before step 0, as plain float64 CPU tensors (no Task import: tasks
    sit above models). Built by the experiment builder."""

    cost: Callable[[Params], Tensor]  # one member's unbatched params (autograd flows through) -> scalar loss
    x: Tensor  # (n, d) the fixed data set (matrix_cost: the identity)
    y: Tensor  # (n, out) targets (classification: (n,) class indices)
    task: str  # task.name
    loss: str  # loss.name
    reduction: str  # loss.reduction over samples ("sum" for matrix_cost, whatever the config says)
    population: bool = False  # the cost is the closed-form population loss (task.population=true)
    teacher_weights: Tensor | None = None  # (r, d) on a teacher task: f*(x) = Σ_i σ(w_i*ᵀx)
    teacher_activation: str | None = None
    # U (out, r), S (r,), V (in, r): the nonzero singular modes of Σ₃₁ = YᵀX/n (linear_regression) or of the
    # target (matrix_cost), descending; None on other tasks
    modes: tuple[Tensor, Tensor, Tensor] | None = None
    whitened: bool = False  # linear_regression with whiten=true: XᵀX/n = I exactly


class Model(ABC):
    """A batched model. Subclasses take keyword-only arguments (their config keys plus input_dim/output_dim)."""

    input_dim: int
    output_dim: int
    activation: Activation | None = None  # the hidden units' nonlinearity; None for a linear net

    init_file: InitFile | None = None  # init=file: every member's start, loaded when the model is built

    @abstractmethod
    def init_params(self, generators: list[torch.Generator]) -> Params:
        """One float64 CPU tensor per parameter, shape (E, ...), member e drawn from generators[e] only, in
        forward order (the input layer's first): metrics read the first weight matrix as the first layer."""

    @property
    @abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """name -> one member's shape for every parameter, in forward order: all of them, also those
        model.train_layers may freeze (the keys of init_params and final_params.pt)."""

    @abstractmethod
    def forward(self, params: Params, x: Tensor) -> Tensor:
        """x (E, n, input_dim) -> outputs (E, n, output_dim)."""

    @property
    def num_params(self) -> int:
        """Parameters per member, all of param_shapes, known before any is drawn."""
        return sum(math.prod(shape) for shape in self.param_shapes.values())

    def preactivations(self, params: Params, x: Tensor) -> list[Tensor]:
        """Each hidden layer's pre-activations (E, n, units), input side first; [] without hidden nonlinearity."""
        return []

    @property
    def smooth(self) -> bool:
        """Whether the model is smooth in its parameters (no kinks such as relu's): adaptive step-size control
        assumes it."""
        return True

    def prepare(self, task: TaskView) -> None:
        """Learn what an init or a metric needs to know about the task and cost before step 0 (default: nothing).

        Called once by the experiment builder, before init_params; raises ConfigError when the task rules out
        the chosen init."""

    def check_members(self, size: int) -> None:
        """ConfigError naming ensemble.size when the init cannot start `size` members (init=file holds a fixed
        number of starts); called by the experiment builder before any work."""
        if self.init_file is not None:
            self.init_file.check_members(size)

    def draw(self, generators: list[torch.Generator], member: Callable[[torch.Generator], Params] | None) -> Params:
        """What init_params returns: init=file's starts, else member(generators[e]) stacked over members."""
        if self.init_file is not None:
            return self.init_file.starts(len(generators))
        return stack_members([member(g) for g in generators])


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


def paired_rows(t: Tensor) -> Tensor:
    """(h, ...) -> (2h, ...): rows 2j and 2j+1 both t[j] (init=symmetric's twin units)."""
    return t.repeat_interleave(2, dim=0)


def opposite_columns(t: Tensor) -> Tensor:
    """(o, h) -> (o, 2h): columns 2j and 2j+1 are t[:, j] and −t[:, j], so twin units cancel in the output."""
    return torch.stack([t, -t], dim=-1).flatten(-2)


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


def check_init(init: str, init_scale: float, init_values: list | None, allowed: Iterable[str],
               init_path: str | None = None) -> None:
    """The checks every model shares: model.init is one of `allowed`, model.init_scale > 0, model.init_values
    is given only with model.init=explicit and model.init_path only (and always) with model.init=file."""
    choice("model.init", init, allowed)
    positive("model.init_scale", init_scale)
    shown = init_values if init_values is None else f"<{len(init_values)} matrices>"
    null_unless(init, "explicit", "model.init_values", init_values, shown)
    null_unless(init, "file", "model.init_path", init_path)
    require(init != "file" or init_path, "model.init_path", init_path,
            "model.init=file needs it: a .pt file of {name: (E, ...) tensor}, like a run's final_params.pt")


def null_unless(init: str, owner: str, key: str, value: Any, shown: Any = None) -> None:
    """A key that only model.init=`owner` reads must be null under any other init: a silently ignored value
    is a bug. `shown`: how to print the value (default: itself)."""
    require(value is None or init == owner, key, value if shown is None else shown,
            f"must be null unless model.init={owner}")


class InitFile:
    """init=file: every member's starting parameters from ``model.init_path``, a .pt file {name: (E, ...) tensor}
    keyed like final_params.pt, so a run can start where another ended, or one run of E members can start a
    grid of E points. Read and checked when the model is built; a relative path is relative to the cwd."""

    def __init__(self, path: str, shapes: dict[str, tuple[int, ...]]):
        self.path = path
        self.params = _read_starts(path, shapes)  # float64 CPU, in the model's order
        self.members = next(iter(self.params.values())).shape[0]  # E

    def check_members(self, size: int) -> None:
        require(size == self.members, "ensemble.size", size,
                f"must be {self.members}: model.init_path={self.path} holds {self.members} members' starts")

    def starts(self, members: int) -> Params:
        """Copies of the starts (the caller may train them in place) for `members` members."""
        self.check_members(members)
        return {k: v.clone() for k, v in self.params.items()}


def _read_starts(path: str, shapes: dict[str, tuple[int, ...]]) -> Params:
    """The file's tensors as float64 CPU (E, ...), or ConfigError naming model.init_path and what is wrong."""
    key = "model.init_path"
    data = read_file(key, path, lambda file: torch.load(file, map_location="cpu", weights_only=True),
                     "a .pt file of tensors")
    require(isinstance(data, dict) and all(isinstance(v, Tensor) for v in data.values()), key, path,
            "must hold a dict {name: tensor}, like a run's final_params.pt")
    want = ", ".join(shapes)
    require(set(data) == set(shapes), key, path, f"holds parameters {', '.join(map(str, data))}; this model's are "
            f"{want} (missing: {', '.join(k for k in shapes if k not in data) or 'none'}, unknown: "
            f"{', '.join(str(k) for k in data if k not in shapes) or 'none'})")
    for name, shape in shapes.items():
        got = tuple(data[name].shape)
        require(len(got) == len(shape) + 1 and got[1:] == shape, key, path,
                f"{name} has shape {got}; this model needs (E, {', '.join(map(str, shape))}) (E members first)")
    sizes = {name: data[name].shape[0] for name in shapes}
    require(len(set(sizes.values())) == 1 and min(sizes.values()) >= 1, key, path,
            f"every tensor must hold the same number E >= 1 of members; got {sizes}")
    out = {name: data[name].to(dtype=torch.float64) for name in shapes}
    bad = [name for name, v in out.items() if not bool(v.isfinite().all())]
    require(not bad, key, path, f"{', '.join(bad)} holds non-finite values (NaN or inf): a diverged run's end?")
    return out
