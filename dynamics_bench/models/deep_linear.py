"""Deep linear network f(x) = W_N ⋯ W_1 x: the overparameterization g(W_1..W_N) = f(W_N⋯W_1) of paper (1)
(de Oliveira–Jatkar–Sontag, arXiv 2511.09810) and of Saxe–McClelland–Ganguli (2014).

``depth`` N counts weight matrices: W_1 (k, in), W_i (k, k), W_N (out, k); N = 1 is the linear model W_1 (out, in).
Gradient flow conserves C_i = W_i W_iᵀ − W_{i+1}ᵀ W_{i+1} (Arora et al. 2018; Du–Hu–Lee 2018, Thm 2.2);
``init=balanced`` starts on C = 0 with a Gaussian end-to-end matrix (Du–Hu–Lee 2018; Arora et al. 2019).

The vector case of paper (1) is depth 2 with input_dim = output_dim = 1: w1 = W_1 (k, 1), w2 = W_2 (1, k), product
w = w2·w1, cost f(w). Two inits place a start by the theory's own quantities (docs/theory.md §2.4–2.5):
``init=imbalanced`` fixes the product w₀ and the imbalance c = 2tr(C²) − tr(C)² (Prop. 7: c only rescales flow
time), and ``init=centre_stable`` starts at distance δ from the saddle's centre-stable manifold w1 = s·w2ᵀ,
s = sign f′(0) (Prop. 5, Cor. 6). The latter needs f′(0), which :meth:`DeepLinear.prepare` reads off the cost.

``init=decoupled`` is Saxe–McClelland–Ganguli's start (docs/theory.md §3): every layer aligned with the task's singular
modes Σ₃₁ = U S Vᵀ and balanced, W_1 = O_1 D Vᵀ, W_i = O_i D O_{i−1}ᵀ, W_N = U D O_{N−1}ᵀ, D = diag(u_α(0)^{1/N}),
so W_N⋯W_1 = U diag(u(0)) Vᵀ and each mode strength follows τu̇ = N u^{2−2/N}(s − u) on its own.
``init=file`` reads every member's start from a .pt file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dynamics_bench.config import ConfigError, require
from dynamics_bench.models.base import (InitFile, Model, Params, TaskView, check_init, explicit_matrices, fan_in_std,
                                        gaussian, null_unless, orthogonal)

INITS = ("gaussian", "orthogonal", "balanced", "explicit", "imbalanced", "centre_stable", "decoupled", "file")
VECTOR_INITS = ("imbalanced", "centre_stable")  # defined in the vector case only
# key -> (the one init that reads it, what it means); any other init needs it null (a silently ignored value is a bug)
VECTOR_KEYS: dict[str, tuple[str, str]] = {
    "init_product": ("imbalanced", "the product w₀ = w2·w1 at t = 0 (a finite number)"),
    "init_imbalance": ("imbalanced", "the imbalance c = 2tr(C²) − tr(C)² at t = 0 (a finite number >= 0)"),
    "init_offset": ("centre_stable", "the distance δ = ‖w1 − s·w2ᵀ‖ from the centre-stable manifold at t = 0 (>= 0)"),
}


@dataclass
class DeepLinearConfig:
    name: str = "deep_linear"
    depth: int = 2  # N, number of weight matrices
    width: int = 8  # k, hidden width
    init: str = "gaussian"
    init_scale: float = 1.0
    init_values: list[Any] | None = None  # init=explicit: [W_1, ..., W_N], each (out, in)
    init_product: float | None = None  # init=imbalanced: w₀ = w2·w1 at t = 0
    init_imbalance: float | None = None  # init=imbalanced: c = 2tr(C²) − tr(C)² >= 0 at t = 0
    init_offset: float | None = None  # init=centre_stable: δ = ‖w1 − s·w2ᵀ‖ >= 0 at t = 0
    init_mode_strength: float | list[float] | None = None  # init=decoupled: u_α(0) > 0, one or one per mode
    init_path: str | None = None  # init=file: a .pt file of {name: (E, ...) tensor}

    def __post_init__(self) -> None:
        require(self.depth >= 1, "model.depth", self.depth, "must be an integer >= 1 (number of weight matrices)")
        require(self.width >= 1, "model.width", self.width, "must be an integer >= 1")
        check_init(self.init, self.init_scale, self.init_values, INITS, self.init_path)
        check_vector_keys(self.init, {key: getattr(self, key) for key in VECTOR_KEYS})
        check_mode_strength(self.init, self.depth, self.init_mode_strength)


def check_mode_strength(init: str, depth: int, strength: float | list[float] | None) -> None:
    """init=decoupled needs depth >= 2 and u(0) > 0 (a number, or a list whose length prepare() checks against
    the task's rank); any other init needs it null."""
    key = "model.init_mode_strength"
    null_unless(init, "decoupled", key, strength)
    if init != "decoupled":
        return
    require(depth >= 2, "model.depth", depth, "must be >= 2 with model.init=decoupled (hidden layers to align)")
    require(strength is not None, key, strength, "model.init=decoupled needs it: the mode strengths u_α(0) > 0 at "
            "t = 0, one number for every mode or a list of one per mode (strongest first)")
    values = strength if isinstance(strength, list) else [strength]
    require(len(values) > 0 and all(v > 0 for v in values), key, strength, "must be > 0 (a number or a list)")


def check_vector_keys(init: str, values: dict[str, float | None]) -> None:
    """init=imbalanced needs init_product (finite) and init_imbalance (finite, >= 0); init=centre_stable needs
    init_offset (finite, >= 0); every other init needs all three null, since it would ignore them."""
    for key, value in values.items():
        owner, meaning = VECTOR_KEYS[key]
        name = f"model.{key}"
        if init != owner:
            require(value is None, name, value, f"must be null unless model.init={owner}")
            continue
        require(value is not None, name, value, f"model.init={init} needs it: {meaning}")
        require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                name, value, "must be a finite number")
        require(key == "init_product" or value >= 0, name, value, "must be >= 0")


class DeepLinear(Model):
    """x (E, n, in) -> x W_1ᵀ ⋯ W_Nᵀ (E, n, out); parameters "W1".."WN"."""

    def __init__(self, *, depth: int, width: int, init: str, init_scale: float, init_values: list | None,
                 input_dim: int, output_dim: int, init_product: float | None = None,
                 init_imbalance: float | None = None, init_offset: float | None = None,
                 init_mode_strength: float | list[float] | None = None, init_path: str | None = None):
        # Validates (raises ConfigError) also when the model is built directly rather than by build_model.
        DeepLinearConfig(depth=depth, width=width, init=init, init_scale=init_scale, init_values=init_values,
                         init_product=init_product, init_imbalance=init_imbalance, init_offset=init_offset,
                         init_mode_strength=init_mode_strength, init_path=init_path)
        self.depth, self.width, self.init, self.init_scale = depth, width, init, init_scale
        self.input_dim, self.output_dim = input_dim, output_dim
        self.init_product, self.init_imbalance, self.init_offset = init_product, init_imbalance, init_offset
        dims = [input_dim] + [width] * (depth - 1) + [output_dim]
        self.shapes: list[tuple[int, int]] = [(dims[i + 1], dims[i]) for i in range(depth)]  # (out, in) of W_i
        self.names = [f"W{i + 1}" for i in range(depth)]
        self.saddle_slope: float | None = None  # f′(0), set by prepare() in the vector case
        self.saddle_sign: int | None = None  # s = sign f′(0), or None when f′(0) = 0 or not the vector case
        self.init_mode_strength = init_mode_strength
        self._modes: tuple[Tensor, Tensor, Tensor] | None = None  # init=decoupled: U, u(0), V, set by prepare()
        self._explicit: list[Tensor] | None = None
        if init == "explicit":  # validated now, so a bad init_values fails before any training
            self._explicit = explicit_matrices("model.init_values", init_values, self.shapes)
        if init in VECTOR_INITS:
            require(self.vector_case, "model.init", init,
                    "needs the vector case of paper (1): model.depth=2 and a scalar input and output (e.g. "
                    f"task=matrix_cost with a number as task.target); got depth {depth}, input_dim {input_dim}, "
                    f"output_dim {output_dim}")
        self.init_file = InitFile(init_path, self.param_shapes) if init == "file" else None  # read and checked now
        inits: dict[str, Callable[[torch.Generator], list[Tensor]]] = {
            "gaussian": self._gaussian, "orthogonal": self._orthogonal,
            "balanced": self._balanced if depth > 1 else self._gaussian, "explicit": self._explicit_values,
            "imbalanced": self._imbalanced, "centre_stable": self._centre_stable, "decoupled": self._decoupled}
        self._init_member = inits.get(init)  # None for init=file: draw() hands out the file's starts

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(zip(self.names, self.shapes))

    @property
    def vector_case(self) -> bool:
        """Depth 2 with a scalar input and output: paper (1)'s w1 ∈ R^{k×1}, w2 ∈ R^{1×k} (Sec. 3)."""
        return self.depth == 2 and self.input_dim == 1 and self.output_dim == 1

    def prepare(self, task: TaskView) -> None:
        """Read f′(0) in the vector case (init=centre_stable, manifold_distance), and take the task's modes for
        init=decoupled; ConfigError where the task rules the init out."""
        if self.vector_case:
            self._read_saddle(task)
        if self.init == "decoupled":
            self._take_modes(task)

    def _read_saddle(self, task: TaskView) -> None:
        """f′(0) off the cost: f(w) = cost(W1 = w·e1, W2 = e1ᵀ), differentiated at w = 0.

        s = sign f′(0) fixes the saddle's centre-stable manifold w1 = s·w2ᵀ (paper (1), Prop. 5; it depends on f
        only through s) for init=centre_stable and the manifold_distance metric. With f′(0) = 0 the origin is no
        strict saddle and has no such manifold, so init=centre_stable is a ConfigError, raised before step 0."""
        w = torch.zeros((), dtype=torch.float64, requires_grad=True)
        e1 = torch.zeros(self.width, 1, dtype=torch.float64)
        e1[0, 0] = 1.0
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(task.cost({"W1": w * e1, "W2": e1.T}), [w], allow_unused=True)
        self.saddle_slope = 0.0 if slope is None else float(slope)
        self.saddle_sign = None if self.saddle_slope == 0 else int(math.copysign(1, self.saddle_slope))
        if self.init == "centre_stable" and self.saddle_sign is None:
            raise ConfigError("model.init", "centre_stable",
                              "f'(0) = 0 for this loss and task: the origin has no centre-stable manifold "
                              "(it is not a strict saddle); pick a target with f'(0) != 0, e.g. task.target "
                              "nonzero under mse")

    def _take_modes(self, task: TaskView) -> None:
        """Check that Saxe's decoupled dynamics hold on this task (the cost is ½‖Σ₃₁ − W_N⋯W_1‖_F² + const:
        matrix_cost, or whitened linear_regression under the mean) and keep U, u(0), V for the init."""
        require(task.modes is not None and (task.task == "matrix_cost" or task.whitened), "model.init", self.init,
                "needs task=matrix_cost or task=linear_regression with task.whiten=true (XᵀX/n = I, so the modes of "
                f"Σ₃₁ decouple); got task.name={task.task}" + ("" if task.modes is None else " with whiten=false"))
        require(task.loss == "mse", "loss.name", task.loss, "model.init=decoupled needs loss=mse (Saxe's dynamics)")
        require(task.task == "matrix_cost" or task.reduction == "mean", "loss.reduction", task.reduction,
                "model.init=decoupled on linear_regression needs loss.reduction=mean (the cost ½‖Σ₃₁ − W‖²: time in "
                "units of τ = 1)")
        u, s, v = task.modes  # (out, r), (r,), (in, r)
        r, key, strength = s.shape[0], "model.init_mode_strength", self.init_mode_strength
        require(r >= 1, "model.init", self.init, "needs a task with a nonzero singular mode (the target is 0)")
        require(self.width >= r, "model.width", self.width, f"must be >= the task's {r} modes with model.init=decoupled")
        require(not isinstance(strength, list) or len(strength) == r, key, strength,
                f"must be one number or a list of the task's {r} modes' strengths (strongest mode first)")
        u0 = torch.tensor(strength, dtype=torch.float64).expand(r)
        self._modes = (u.to(torch.float64).cpu(), u0, v.to(torch.float64).cpu())

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
        n_in, n_out = self.input_dim, self.output_dim
        a = gaussian(gen, (n_out, n_in), fan_in_std(self.init_scale, n_in))
        u, sigma, vh = torch.linalg.svd(a, full_matrices=False)  # (out, r0), (r0,), (r0, in)
        r = min(n_in, n_out, self.width)
        return self._aligned(gen, u[:, :r], sigma[:r], vh[:r].T)

    def _aligned(self, gen: torch.Generator, u: Tensor, strength: Tensor, v: Tensor) -> list[Tensor]:
        """Balanced layers with product U diag(strength) Vᵀ: D = diag(strength^{1/N}), U_1..U_{N−1} the first r
        columns of Haar (k, k) matrices drawn from gen, W_1 = U_1 D Vᵀ, W_i = U_i D U_{i−1}ᵀ, W_N = U D U_{N−1}ᵀ.
        u (out, r), strength (r,), v (in, r)."""
        k, r = self.width, strength.shape[0]
        d = torch.diag(strength ** (1.0 / self.depth))  # (r, r)
        bases = [orthogonal(gen, k, k)[:, :r] for _ in range(self.depth - 1)]  # U_1..U_{N−1}, each (k, r)
        lefts = bases + [u]  # (k, r) ... (out, r)
        rights = [v] + bases  # (in, r), (k, r) ...
        return [left @ d @ right.T for left, right in zip(lefts, rights)]

    def _decoupled(self, gen: torch.Generator) -> list[Tensor]:
        """Saxe's start: _aligned on the task's modes U, V with strengths u(0); the hidden bases O_i are Haar
        (drawn from gen; they do not enter the end-to-end dynamics), other hidden directions 0."""
        if self._modes is None:
            raise RuntimeError("model.init=decoupled needs DeepLinear.prepare(view) first (experiment.build calls "
                               "it): the layers are aligned with the task's modes")
        u, u0, v = self._modes
        return self._aligned(gen, u, u0, v)

    def _unit(self, gen: torch.Generator) -> Tensor:
        """A uniformly random unit vector in R^k, (k, 1)."""
        z = torch.randn(self.width, 1, generator=gen, dtype=torch.float64)
        return z / z.norm()

    def _imbalanced(self, gen: torch.Generator) -> list[Tensor]:
        """w1 = αu, w2ᵀ = βu along one random unit u, so C = (α² − β²)uuᵀ and c = (α² − β²)². With α² − β² = √c
        and αβ = w₀: α² = (√c + √(c + 4w₀²))/2 and β = w₀/α, hence ‖w1‖ = α >= |β| = ‖w2‖. Same w₀, larger c:
        the same product path, traversed sooner (Prop. 7: dw/dt = −f′(w)·√(c + 4w²)). w₀ = c = 0 is the saddle."""
        u = self._unit(gen)
        w0, c = self.init_product, self.init_imbalance
        alpha = math.sqrt((math.sqrt(c) + math.sqrt(c + 4 * w0 * w0)) / 2)
        beta = w0 / alpha if alpha > 0 else 0.0
        return [alpha * u, beta * u.T]

    def _centre_stable(self, gen: torch.Generator) -> list[Tensor]:
        """w2 ~ N(0, init_scale²/k) as in init=gaussian, then w1 = s·w2ᵀ + δv with v a random unit vector: at
        distance exactly δ from the centre-stable manifold {w1 = s·w2ᵀ} (Prop. 5); δ = 0 flows into the saddle at
        the origin (Cor. 6). The manifold is transversally unstable, ‖w1 − s·w2ᵀ‖ growing like e^{|f′(0)|t}: a
        float64 trajectory started exactly on it escapes by round-off after t ≈ 37/|f′(0)| when the arithmetic
        breaks the symmetry w1 ↔ s·w2ᵀ (docs/theory.md §2.5(f)), so trust on-manifold runs before t ≈ 30/|f′(0)| only.
        (On matrix_cost's single input the gradients are one scalar times w2ᵀ and w1, so an explicit step keeps
        w1 = s·w2ᵀ exactly; with data sets of several inputs round-off does push the run off, as theory says.)"""
        if self.saddle_sign is None:
            raise RuntimeError("model.init=centre_stable needs DeepLinear.prepare(view) first "
                               "(experiment.build calls it): the manifold depends on sign f'(0)")
        w2 = gaussian(gen, (1, self.width), fan_in_std(self.init_scale, self.width))
        v = self._unit(gen)
        return [self.saddle_sign * w2.T + self.init_offset * v, w2]

    def init_params(self, generators: list[torch.Generator]) -> Params:
        return self.draw(generators, lambda g: dict(zip(self.names, self._init_member(g))))

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
