"""Two-layer network f(x) = Σ_j a_j σ(w_jᵀx + b_j), with a trainable, fixed (+1), sign-fixed (±1) or norm-tied
output layer, in the standard or the NTK parameterization.

``output_layer=norm`` sets a_j = ‖w_j‖, the student of Zhou–Ge–Jin, "A Local Convergence Theory for Mildly
Over-Parameterized Two-Layer Neural Network" (COLT 2021): f(x) = Σ_j ‖w_j‖ σ(w_jᵀx), 2-homogeneous and
balanced by construction. ``output_layer=fixed`` is the all-ones top layer; ``fixed_signs`` is Du–Zhai–Póczos–Singh
(ICLR 2019)'s untrained ±1 layer, as the alternation a_j = +1 (j even), −1 (j odd), 0-based. With output_dim > 1,
the untrained layers repeat the same sum in every output.

``parameterization=ntk`` multiplies the stored weights in the forward pass (docs/theory.md §5.2):
f(x) = Σ_j (a_j/√m) σ((w_jᵀx + b_j)/√d). The bias is a weight on a constant input inside the first layer, so it
shares that layer's 1/√d (as mlp.py's layers share one multiplier). Every init sets the effective weights
(c·stored) and stores effective/c, so gaussian's stored weights are N(0, s²); explicit gives the stored values.
For 1-homogeneous σ, f depends on neuron j only through c_a c_w a_j·(w_j, b_j), so gradient flow conserves
a_j² − ‖w_j‖² − b_j² in the STORED variables under either parameterization (Du–Hu–Lee 2018, Thm 2.1; the
imbalance metric reads :meth:`TwoLayer.stored_neurons`); ``init=balanced`` starts there with zero imbalance.
:meth:`TwoLayer.neurons` gives the effective weights, what the function and the teacher metrics see.

Zhou–Ge–Jin's starts (docs/theory.md §6.6), for relu/abs without bias: ``init=near_teacher`` puts students on
the teacher's neurons, turned by ``model.init_angle``; ``init=nnls`` is their Algorithm 1 (random directions, output
masses by non-negative least squares). Both set each unit's output mass c_j = a_j‖w_j‖ (effective weights) through
the output layer (:data:`OUTPUT_LAYERS`). ``init=symmetric`` twins units (2j, 2j+1) with equal input and opposite
output weights, so f(x; θ_0) = 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from dynamics_bench.config import choice, require
from dynamics_bench.models.base import (ACTIVATIONS, PARAMETERIZATIONS, InitFile, Model, Neurons, Params, TaskView,
                                        check_init, explicit_matrices, fan_in_std, gaussian, null_unless,
                                        opposite_columns, orthogonal, paired_rows)
from dynamics_bench.theory import gaussian_kernel

INITS = ("gaussian", "orthogonal", "balanced", "explicit", "near_teacher", "nnls", "symmetric", "file")
MASS_ACTIVATIONS = ("relu", "abs")  # 1-homogeneous: unit j adds c_j·σ(w̄_jᵀx), c_j = a_j‖w_j‖ its output mass
EIGEN_CUTOFF = 1e-14  # nnls on the population loss: eigenvalues of G below this × λ_max count as 0 (round-off)


def _ones(params: Params, output_dim: int) -> Tensor:
    w = params["w"]  # (E, m, d) or (m, d)
    return w.new_ones(*w.shape[:-2], output_dim, w.shape[-2])  # (E, out, m)


def _signs(m: int) -> Tensor:
    """+1, −1, +1, ... (m,): fixed_signs' a_j, +1 for j even (0-based)."""
    s = torch.ones(m, dtype=torch.float64)
    s[1::2] = -1.0
    return s


def _alternating(params: Params, output_dim: int) -> Tensor:
    """fixed_signs' output weights (E, out, m), made where the parameters are (no host copy per forward)."""
    a = _ones(params, output_dim)
    a[..., 1::2] = -1.0
    return a


def _norms(params: Params, output_dim: int) -> Tensor:
    """‖w_j‖ as the output weights (E, out, m). At w_j = 0 its first and second derivatives are taken as 0 (the
    double where keeps sqrt′(0) = ∞ out of the graph): a zero neuron of the 2-homogeneous ‖w_j‖σ(w_jᵀx) then gets a
    zero block of the gradient and of Hessian-vector products, not NaN."""
    square = params["w"].square().sum(-1)
    nonzero = square > 0
    norms = torch.where(nonzero, torch.where(nonzero, square, 1.0).sqrt(), 0.0).unsqueeze(-2)  # (E, 1, m)
    return norms.expand(*norms.shape[:-2], output_dim, norms.shape[-1])  # (E, out, m)


# Output masses c ≥ 0 (m,) -> the stored ‖w_j‖ and, for a trainable layer, the stored a_j, given the multipliers
# c_w, c_a: effective a_j·‖w_j‖ = c_j with a_j = ‖w_j‖ (trainable: balanced), a_j = c_a (fixed, fixed_signs: the
# sign is the layer's) or a_j = c_a‖w_j‖ stored (norm).
Masses = Callable[[Tensor, float, float], "tuple[Tensor, Tensor | None]"]


@dataclass(frozen=True)
class OutputLayer:
    """What `output_layer` means: the stored output weights (E, out, m) from the parameters, whether "a" is a
    parameter, how output masses are set through it, and the signs s_j (m,) a mass gets (+1 but for fixed_signs)."""

    weights: Callable[[Params, int], Tensor]
    trainable: bool
    masses: Masses
    signs: Callable[[int], Tensor] = lambda m: torch.ones(m, dtype=torch.float64)


OUTPUT_LAYERS: dict[str, OutputLayer] = {
    "trainable": OutputLayer(lambda params, output_dim: params["a"], True,
                             lambda c, cw, ca: (c.sqrt() / cw, c.sqrt() / ca)),
    "fixed": OutputLayer(_ones, False, lambda c, cw, ca: (c / (ca * cw), None)),
    "norm": OutputLayer(_norms, False, lambda c, cw, ca: ((c / (ca * cw)).sqrt(), None)),
    "fixed_signs": OutputLayer(_alternating, False, lambda c, cw, ca: (c / (ca * cw), None), _signs),
}


@dataclass
class TwoLayerConfig:
    name: str = "two_layer"
    width: int = 8  # m, hidden neurons
    activation: str = "relu"
    output_layer: str = "trainable"
    parameterization: str = "standard"
    bias: bool = False
    init: str = "gaussian"
    init_scale: float = 1.0
    init_values: list[Any] | None = None  # init=explicit: [w (m, d), a (out, m)], or [w] for untrained outputs
    init_path: str | None = None  # init=file: a .pt file of {name: (E, ...) tensor}
    init_angle: float | None = None  # init=near_teacher: radians between student and teacher (null: 0)

    def __post_init__(self) -> None:
        require(self.width >= 1, "model.width", self.width, "must be an integer >= 1")
        choice("model.activation", self.activation, ACTIVATIONS)
        choice("model.output_layer", self.output_layer, OUTPUT_LAYERS)
        choice("model.parameterization", self.parameterization, PARAMETERIZATIONS)
        check_init(self.init, self.init_scale, self.init_values, INITS, self.init_path)
        null_unless(self.init, "near_teacher", "model.init_angle", self.init_angle)
        require(self.init_angle is None or self.init_angle >= 0, "model.init_angle", self.init_angle,
                "must be >= 0 (radians)")
        require(self.init != "balanced" or self.output_layer == "trainable", "model.init", self.init,
                f"balanced needs model.output_layer=trainable (got {self.output_layer}, whose a is not free)")
        require(not (self.init == "explicit" and self.bias), "model.bias", self.bias,
                "must be false with model.init=explicit (init_values has no bias entry)")
        self._check_mass_init()
        require(self.init != "symmetric" or self.output_layer in ("trainable", "fixed_signs"), "model.init",
                self.init, f"symmetric needs opposite output weights in each twin pair: model.output_layer=trainable "
                f"or fixed_signs (got {self.output_layer})")
        require(self.init != "symmetric" or self.width % 2 == 0, "model.width", self.width,
                "must be even with model.init=symmetric (units come in twin pairs)")

    def _check_mass_init(self) -> None:
        """near_teacher and nnls set output masses of relu/abs units without bias; near_teacher's are positive."""
        if self.init not in ("near_teacher", "nnls"):
            return
        require(self.activation in MASS_ACTIVATIONS, "model.activation", self.activation,
                f"model.init={self.init} needs relu or abs (1-homogeneous: a unit adds a_j‖w_j‖·σ(w̄_jᵀx))")
        require(not self.bias, "model.bias", self.bias, f"must be false with model.init={self.init} (the teacher "
                "and Algorithm 1 have no bias)")
        require(self.init != "near_teacher" or self.output_layer != "fixed_signs", "model.output_layer",
                self.output_layer, "model.init=near_teacher gives every student the positive mass ‖w_i*‖/|T_i|; "
                "with fixed_signs the odd units' a_j = −1 cannot carry it: use trainable, fixed or norm")


class TwoLayer(Model):
    """x (E, n, d) -> Σ_j c_a a_j σ(c_w (w_jᵀx + b_j)) (E, n, out). Parameters (stored) "w" (E, m, d), "a" (E, out, m)
    when output_layer=trainable, "b" (E, m) when bias; c_w = c_a = 1 (standard) or 1/√d, 1/√m (ntk)."""

    def __init__(self, *, width: int, activation: str, output_layer: str, bias: bool, init: str, init_scale: float,
                 init_values: list | None, input_dim: int, output_dim: int, parameterization: str = "standard",
                 init_path: str | None = None, init_angle: float | None = None):
        TwoLayerConfig(width=width, activation=activation, output_layer=output_layer, bias=bias, init=init,
                       init_scale=init_scale, init_values=init_values, parameterization=parameterization,
                       init_path=init_path, init_angle=init_angle)  # validates
        self.width, self.output_layer, self.bias = width, output_layer, bias
        self.activation_name, self.activation = activation, ACTIVATIONS[activation]
        self.parameterization, self.init, self.init_scale = parameterization, init, init_scale
        self.init_angle = init_angle or 0.0
        self.input_dim, self.output_dim = input_dim, output_dim
        self._layer = OUTPUT_LAYERS[output_layer]
        self.scale_w = PARAMETERIZATIONS[parameterization](input_dim)  # c_w, also the bias's
        self.scale_a = PARAMETERIZATIONS[parameterization](width)  # c_a
        self._explicit: list[Tensor] | None = None
        if init == "explicit":  # validated now, so a bad init_values fails before any training
            self._explicit = explicit_matrices("model.init_values", init_values, list(self.param_shapes.values()))
        self.init_file = InitFile(init_path, self.param_shapes) if init == "file" else None  # read and checked now
        self._task: TaskView | None = None  # set by prepare() for the inits that read the task
        self._task_checks: dict[str, Callable[[TaskView], None]] = {
            "near_teacher": self._check_near_teacher, "nnls": self._check_nnls}
        inits: dict[str, Callable[[torch.Generator], Params]] = {
            "gaussian": self._gaussian, "orthogonal": self._orthogonal, "balanced": self._balanced,
            "explicit": self._explicit_values, "near_teacher": self._near_teacher, "nnls": self._nnls,
            "symmetric": self._symmetric}
        self._init_member = inits.get(init)  # None for init=file: draw() hands out the file's starts

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        m = self.width
        shapes = {"w": (m, self.input_dim)}
        if self._layer.trainable:
            shapes["a"] = (self.output_dim, m)
        if self.bias:
            shapes["b"] = (m,)
        return shapes

    # --- what the task must offer (prepare) ---
    def prepare(self, task: TaskView) -> None:
        """near_teacher and nnls read the task (teacher, data, loss); ConfigError where it rules them out."""
        check = self._task_checks.get(self.init)
        if check is not None:
            check(task)
            self._task = task

    def _check_near_teacher(self, task: TaskView) -> None:
        why = "model.init=near_teacher needs "
        require(task.teacher_weights is not None, "model.init", self.init,
                f"needs a teacher task (task=teacher) to start near; got task.name={task.task}")
        t_act, (r, d) = task.teacher_activation, task.teacher_weights.shape
        require(t_act in MASS_ACTIVATIONS, "task.teacher_activation", t_act, why + "relu or abs")
        require(self.activation_name == t_act, "model.activation", self.activation_name,
                why + f"the teacher's activation (task.teacher_activation={t_act})")
        require(d >= 2, "model.init", self.init, f"needs task.input_dim >= 2 (got {d}): a student is turned "
                "toward a direction orthogonal to its teacher's")
        require(self.width >= r, "model.width", self.width, why + f"at least the teacher's {r} neurons (m >= r)")

    def _check_nnls(self, task: TaskView) -> None:
        why = "model.init=nnls needs "
        require(task.loss == "mse", "loss.name", task.loss, why + "loss=mse (a least-squares fit of the masses)")
        if task.population:
            require(self.activation_name == task.teacher_activation, "model.activation", self.activation_name,
                    why + f"on the population loss the teacher's activation ({task.teacher_activation})")
            return
        regression = task.y.is_floating_point() and task.y.dim() == 2 and task.y.shape[1] == 1
        require(regression, "model.init", self.init, f"needs a regression task with one output (task.name="
                f"{task.task} has targets of shape {tuple(task.y.shape)})")

    # --- initialization (one member, one generator); draw order w, a, b ---
    def _gaussian(self, gen: torch.Generator) -> Params:
        s, m, d = self.init_scale, self.width, self.input_dim
        p = {"w": gaussian(gen, (m, d), fan_in_std(s, d) / self.scale_w)}
        if self._layer.trainable:
            p["a"] = gaussian(gen, (self.output_dim, m), fan_in_std(s, m) / self.scale_a)
        if self.bias:
            p["b"] = gaussian(gen, (m,), fan_in_std(s, d) / self.scale_w)
        return p

    def _orthogonal(self, gen: torch.Generator) -> Params:
        s, m = self.init_scale, self.width
        p = {"w": s / self.scale_w * orthogonal(gen, m, self.input_dim)}
        if self._layer.trainable:
            p["a"] = s / self.scale_a * orthogonal(gen, self.output_dim, m)
        if self.bias:
            p["b"] = torch.zeros(m, dtype=torch.float64)
        return p

    def _balanced(self, gen: torch.Generator) -> Params:
        """Gaussian, then each stored column a[:, j] rescaled to norm sqrt(‖w_j‖² + b_j²) (stored): the conserved
        a_j² − ‖w_j‖² − b_j² is 0."""
        p = self._gaussian(gen)
        incoming = p["w"].square().sum(-1) + (p["b"].square() if self.bias else 0.0)  # (m,)
        p["a"] = p["a"] * (incoming.sqrt() / torch.linalg.vector_norm(p["a"], dim=0))
        return p

    def _explicit_values(self, gen: torch.Generator) -> Params:
        return dict(zip(("w", "a"), (t.clone() for t in self._explicit)))

    def _symmetric(self, gen: torch.Generator) -> Params:
        """Gaussian for m/2 units at the full width's scale, each twinned: equal w_j (and b_j), opposite a_j
        (fixed_signs' ±1 already alternate)."""
        s, half, d = self.init_scale, self.width // 2, self.input_dim
        p = {"w": paired_rows(gaussian(gen, (half, d), fan_in_std(s, d) / self.scale_w))}
        if self._layer.trainable:
            p["a"] = opposite_columns(gaussian(gen, (self.output_dim, half), fan_in_std(s, self.width) / self.scale_a))
        if self.bias:
            p["b"] = paired_rows(gaussian(gen, (half,), fan_in_std(s, d) / self.scale_w))
        return p

    def _with_masses(self, directions: Tensor, mass: Tensor) -> Params:
        """Stored parameters whose unit j has direction w̄_j (directions (m, d), unit rows) and output mass
        c_j = mass[j] >= 0 (m,) in effective weights; mass 0 is a zero unit."""
        norm, a = self._layer.masses(mass, self.scale_w, self.scale_a)
        p = {"w": directions * norm[:, None]}  # (m, d)
        if a is not None:
            p["a"] = a.expand(self.output_dim, -1).clone()  # (out, m)
        return p

    def _task_or_fail(self) -> TaskView:
        if self._task is None:
            raise RuntimeError(f"model.init={self.init} needs TwoLayer.prepare(view) first (experiment.build calls "
                               "it): the start depends on the task")
        return self._task

    def _near_teacher(self, gen: torch.Generator) -> Params:
        """Student j follows teacher i = j mod r (T_i its students): direction cos θ·w̄_i* + sin θ·u_j, u_j a random
        unit vector ⟂ w̄_i*, and mass ‖w_i*‖/|T_i|, so at θ = 0 the group computes σ(w_i*ᵀx) exactly."""
        teacher = self._task_or_fail().teacher_weights.to(torch.float64)  # (r, d)
        r, m = teacher.shape[0], self.width
        group = torch.arange(m) % r  # (m,) teacher of each student
        star = teacher[group]  # (m, d)
        norms = torch.linalg.vector_norm(star, dim=1)  # (m,)
        unit = star / norms[:, None]
        # u_j = B_i z_j/‖z_j‖ with B_i an orthonormal basis of w̄_i*'s complement: ⟂ by construction, even when z
        # repeats the teacher's own draw (the task's seed and member 0's are both `seed` by default)
        basis = _complement(unit[:r])[group]  # (m, d, d − 1)
        z = gaussian(gen, (m, self.input_dim - 1), 1.0)
        turn = torch.einsum("mdk,mk->md", basis, z / torch.linalg.vector_norm(z, dim=1, keepdim=True))
        directions = math.cos(self.init_angle) * unit + math.sin(self.init_angle) * turn
        return self._with_masses(directions, norms / torch.bincount(group, minlength=r)[group])

    def _nnls(self, gen: torch.Generator) -> Params:
        """Zhou–Ge–Jin's Algorithm 1: directions w̄_j from N(0, I_d), then masses z ≥ 0 minimizing the loss of
        Σ_j z_j s_j σ(w̄_jᵀx) (s_j the output layer's sign) over z ≥ 0 (docs/theory.md §6.6)."""
        import scipy.optimize  # here, not at the top: slow to import, and only this init needs it

        task = self._task_or_fail()
        w = gaussian(gen, (self.width, self.input_dim), 1.0)
        directions = w / torch.linalg.vector_norm(w, dim=1, keepdim=True)  # (m, d)
        signs = self._layer.signs(self.width)  # (m,) s_j
        system = _population_system if task.population else _sample_system
        a, rhs = system(task, self.activation_name, directions, signs)
        z, _ = scipy.optimize.nnls(a.numpy(), rhs.numpy())
        return self._with_masses(directions, torch.from_numpy(np.asarray(z, dtype=np.float64)))

    def init_params(self, generators: list[torch.Generator]) -> Params:
        return self.draw(generators, self._init_member)

    # --- forward and views ---
    def stored_neurons(self, params: Params) -> Neurons:
        """The stored w (E, m, d), output weights a (E, out, m) (for untrained layers, the values they take) and
        b (E, m) or None: the variables gradient flow moves, in which the imbalance is conserved."""
        return Neurons(w=params["w"], a=self._layer.weights(params, self.output_dim), b=params.get("b"))

    def neurons(self, params: Params) -> Neurons:
        """The effective weights c_w·w (E, m, d), c_a·a (E, out, m), c_w·b (E, m) or None: what the function (and
        the teacher metrics) see; the stored ones under parameterization=standard."""
        n = self.stored_neurons(params)
        return Neurons(w=_scaled(n.w, self.scale_w), a=_scaled(n.a, self.scale_a),
                       b=None if n.b is None else _scaled(n.b, self.scale_w))

    @property
    def smooth(self) -> bool:
        return self.activation.smooth

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Batched: x (E, n, d) -> (E, n, out); also one member's unbatched params with x (n, d) -> (n, out).
        Matmuls, not einsum: einsum's wrapper and views cost more than the arithmetic at small sizes."""
        nrn = self.neurons(params)
        return self.activation.fn(_preactivation(nrn.w, nrn.b, x)) @ nrn.a.mT  # (E, n, out)

    def preactivations(self, params: Params, x: Tensor) -> list[Tensor]:
        nrn = self.neurons(params)
        return [_preactivation(nrn.w, nrn.b, x)]


def _scaled(t: Tensor, c: float) -> Tensor:
    """c·t, skipping the multiply at c = 1 (the standard parameterization's hot path)."""
    return t if c == 1.0 else c * t


def _preactivation(w: Tensor, b: Tensor | None, x: Tensor) -> Tensor:
    """w_jᵀx + b_j, (E, n, m)."""
    z = x @ w.mT
    return z if b is None else z + b.unsqueeze(-2)


def _sample_system(task: TaskView, activation: str, directions: Tensor, signs: Tensor) -> tuple[Tensor, Tensor]:
    """The sample loss ½·mean_i (Σ_j z_j s_j σ(w̄_jᵀx_i) − y_i)² is ½‖Φz − y‖²/n: Φ (n, m) and y (n,)."""
    x, y = task.x.to(torch.float64), task.y.to(torch.float64)
    return ACTIVATIONS[activation].fn(x @ directions.T) * signs, y[:, 0]


def _population_system(task: TaskView, activation: str, directions: Tensor, signs: Tensor) -> tuple[Tensor, Tensor]:
    """The population loss ½zᵀGz − bᵀz + const, G_jk = s_j s_k k(w̄_j, w̄_k), b_j = s_j Σ_i k(w̄_j, w_i*), as a least
    squares ½‖Az − t‖² + const: with G = QΛQᵀ, A = Λ^{1/2}Qᵀ and t = Λ^{−1/2}Qᵀb (AᵀA = G, Aᵀt = b). An eigen
    rather than a Cholesky square root, because G is singular to round-off for many or nearly parallel
    directions; b lies in G's range (Gv = 0 means Σ_j v_j s_j σ(w̄_jᵀx) = 0 a.s., so bᵀv = 0), so dropping
    G's null space loses nothing."""
    teacher = task.teacher_weights.to(torch.float64)
    gram = gaussian_kernel(activation, directions, directions) * signs[:, None] * signs[None, :]  # (m, m)
    b = gaussian_kernel(activation, directions, teacher).sum(1) * signs  # (m,)
    lam, q = torch.linalg.eigh(gram)
    keep = lam > EIGEN_CUTOFF * lam.max()
    root = lam[keep].sqrt()
    return root[:, None] * q[:, keep].T, (q[:, keep].T @ b) / root


def _complement(units: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (r, d, d − 1) of the complement of each unit vector in units (r, d): the last d − 1
    columns of Q in the QR factorization of [ū | I]."""
    r, d = units.shape
    stacked = torch.cat([units[:, :, None], torch.eye(d, dtype=units.dtype).expand(r, d, d)], dim=2)  # (r, d, d+1)
    q, _ = torch.linalg.qr(stacked)  # (r, d, d): q[..., 0] = ±ū
    return q[:, :, 1:]
