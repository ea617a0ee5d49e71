"""Theory-driven starts and the NTK two-layer net against oracles: the NTK forward against the standard net with
effective weights, the teacher reproduced exactly at angle 0, the NNLS start against perturbed masses and the KKT
conditions, the symmetric start's zero output, Saxe's decoupled start against the closed-form mode dynamics, the
conserved imbalance in stored variables, init=file round trips, and every ConfigError by its key."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build, init_params, task_view
from dynamics_bench.metrics import select_metrics
from dynamics_bench.metrics.imbalance import neuron_imbalances
from dynamics_bench.metrics.modes import mode_strength
from dynamics_bench.models import build_model
from dynamics_bench.models.base import ACTIVATIONS
from dynamics_bench.theory import balanced_mode_strength, population_loss, saxe_mode_strength
from tests.conftest import make_cfg, run_overrides

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def gens(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def member(params: dict[str, Tensor], e: int) -> dict[str, Tensor]:
    return {k: v[e] for k, v in params.items()}


def cfg(*overrides: str):
    """The composed config; a task=<name> drops the task.* keys before it (they belong to the task it replaces)."""
    last = max((i for i, o in enumerate(overrides) if o.startswith("task=")), default=0)
    return make_cfg(*(o for i, o in enumerate(overrides) if i >= last or not o.startswith("task.")))


def config_error(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        build(cfg(*overrides))
    return err.value


# ---------------------------------------------------------------------------------------------------------------
# two_layer under parameterization=ntk, and output_layer=fixed_signs.
def ntk_reference(p: dict[str, Tensor], x: Tensor, activation: str, layer: str, out: int) -> Tensor:
    """One member written out: Σ_j (a_j/√m) σ((w_jᵀx + b_j)/√d)."""
    w = p["w"]
    m, d = w.shape
    z = (x @ w.T + p.get("b", 0.0)) / math.sqrt(d)
    a = {"trainable": lambda: p["a"], "fixed": lambda: torch.ones(out, m, dtype=F64),
         "norm": lambda: w.norm(dim=1).repeat(out, 1),
         "fixed_signs": lambda: torch.tensor([(-1.0) ** j for j in range(m)], dtype=F64).repeat(out, 1)}[layer]()
    return ACTIVATIONS[activation].fn(z) @ a.T / math.sqrt(m)


NTK_CASES = [(layer, bias, act) for layer in ("trainable", "fixed", "norm", "fixed_signs") for bias in (False, True)
             for act in ("relu", "tanh")]


@pytest.mark.parametrize("layer,bias,act", NTK_CASES, ids=["-".join(map(str, c)) for c in NTK_CASES])
def test_ntk_two_layer_against_unbatched_reference(layer, bias, act):
    sec = {"name": "two_layer", "width": 6, "activation": act, "output_layer": layer, "bias": bias,
           "parameterization": "ntk"}
    model = build_model(sec, input_dim=3, output_dim=2)
    params = {k: v.requires_grad_() for k, v in model.init_params(gens(range(3))).items()}
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(3, 5, 3, generator=g, dtype=F64), torch.randn(3, 5, 2, generator=g, dtype=F64)
    out = model.forward(params, x)
    grads = torch.autograd.grad(0.5 * ((out - y) ** 2).sum(), list(params.values()))
    for e in range(3):
        pe = {k: v.detach()[e].clone().requires_grad_() for k, v in params.items()}
        ref = ntk_reference(pe, x[e], act, layer, 2)
        torch.testing.assert_close(out[e], ref, rtol=1e-12, atol=1e-14)
        ref_grads = torch.autograd.grad(0.5 * ((ref - y[e]) ** 2).sum(), list(pe.values()))
        for gb, gu in zip(grads, ref_grads):
            torch.testing.assert_close(gb[e], gu, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bias", [False, True])
def test_ntk_is_the_standard_net_of_the_effective_weights_and_its_gradient_the_chain_rule(bias):
    d, m = 3, 7
    sec = {"name": "two_layer", "width": m, "bias": bias, "activation": "tanh"}
    ntk, std = (build_model({**sec, "parameterization": p}, input_dim=d, output_dim=2) for p in ("ntk", "standard"))
    stored = ntk.init_params(gens(range(2)))
    scale = {"w": 1 / math.sqrt(d), "a": 1 / math.sqrt(m), "b": 1 / math.sqrt(d)}
    effective = {k: (v * scale[k]).requires_grad_() for k, v in stored.items()}
    stored = {k: v.requires_grad_() for k, v in stored.items()}
    x = torch.randn(2, 4, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    f_ntk, f_std = ntk.forward(stored, x), std.forward(effective, x)
    torch.testing.assert_close(f_ntk, f_std, rtol=1e-13, atol=1e-15)
    for name, g_ntk, g_std in zip(stored, torch.autograd.grad(f_ntk.sum(), list(stored.values())),
                                  torch.autograd.grad(f_std.sum(), list(effective.values()))):
        torch.testing.assert_close(g_ntk, scale[name] * g_std, rtol=1e-13, atol=1e-15)  # ∂f/∂θ = c·∂f/∂(cθ)
    nrn = ntk.neurons(stored)
    torch.testing.assert_close(nrn.w, effective["w"])
    torch.testing.assert_close(nrn.a, effective["a"])


def test_ntk_gaussian_init_stores_unit_variance():
    model = build_model({"name": "two_layer", "width": 400, "bias": True, "parameterization": "ntk",
                         "init_scale": 1.5}, input_dim=100, output_dim=30)
    p = model.init_params(gens(range(2)))
    for t in p.values():  # 6 standard errors of the sample std: a false failure is a < 1e-8 event
        assert abs(t.std().item() / 1.5 - 1) < 6 / math.sqrt(2 * t.numel())


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_fixed_signs_has_no_a_and_alternating_signs(parameterization):
    m = 5
    model = build_model({"name": "two_layer", "width": m, "output_layer": "fixed_signs",
                         "parameterization": parameterization}, input_dim=3, output_dim=2)
    params = model.init_params(gens(range(2)))
    assert set(params) == set(model.param_shapes) == {"w"} and model.num_params == m * 3
    c_a = 1 / math.sqrt(m) if parameterization == "ntk" else 1.0
    expected = c_a * torch.tensor([1.0, -1, 1, -1, 1], dtype=F64)
    assert torch.equal(model.neurons(params).a, expected.expand(2, 2, m))


PARAM_COUNTS = [
    ({"name": "two_layer", "width": 4, "bias": True}, 3 * 4 + 2 * 4 + 4),
    ({"name": "two_layer", "width": 4, "output_layer": "norm"}, 3 * 4),
    ({"name": "deep_linear", "depth": 3, "width": 4}, 3 * 4 + 4 * 4 + 4 * 2),
    ({"name": "mlp", "depth": 2, "width": 4}, 3 * 4 + 4 * 2),
]


@pytest.mark.parametrize("sec,count", PARAM_COUNTS, ids=[s["name"] + str(i) for i, (s, _) in enumerate(PARAM_COUNTS)])
def test_param_shapes_are_what_init_draws(sec, count):
    model = build_model(sec, input_dim=3, output_dim=2)
    params = model.init_params(gens([0]))
    assert {k: tuple(v.shape[1:]) for k, v in params.items()} == model.param_shapes
    assert list(params) == list(model.param_shapes) and model.num_params == count


def test_imbalance_is_conserved_in_stored_variables_under_ntk():
    """d/dt q_j = ∇q_j·(−∇L) = 0 along the flow for q = the imbalance metric's per-neuron quantity, under ntk
    (relu, with bias); the same quantity in effective weights is not conserved."""
    model = build_model({"name": "two_layer", "width": 6, "bias": True, "parameterization": "ntk"},
                        input_dim=4, output_dim=2)
    params = model.init_params(gens(range(2)))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 9, 4, generator=g, dtype=F64), torch.randn(2, 9, 2, generator=g, dtype=F64)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(0.5 * ((model.forward(leaves, x) - y) ** 2).sum(), list(leaves.values()))
    flow = tuple(-gr for gr in grads)

    def rate(q_of) -> Tensor:  # (E, m): dq/dt along −∇L, by a Jacobian-vector product
        return torch.func.jvp(lambda *p: q_of(dict(zip(leaves, p))), tuple(params.values()), flow)[1]

    q, scale = neuron_imbalances(model, params)
    assert rate(lambda p: neuron_imbalances(model, p)[0]).abs().max() <= 1e-13 * scale.max()
    effective = rate(lambda p: model.neurons(p).a.square().sum(1) - model.neurons(p).w.square().sum(2)
                     - model.neurons(p).b.square())
    assert effective.abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# init=near_teacher.
TEACHER = ["task=teacher", "task.input_dim=4", "task.teacher_width=2", "task.teacher_norms=[1.0,2.5]", "task.n=50",
           "model=two_layer", "model.init=near_teacher", "model.width=5", "ensemble.size=2", "trainer.steps=0"]
NEAR_CASES = [(act, layer, par) for act in ("relu", "abs") for layer in ("trainable", "fixed", "norm")
              for par in ("standard", "ntk")]


def _groups(model, params, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Per student: the cosine with its teacher (j mod r), and the per-teacher sum of c_j = a_j‖w_j‖ (E, r)."""
    nrn = model.neurons(params)
    r = teacher.shape[0]
    group = torch.arange(model.width) % r
    norms = nrn.w.norm(dim=2)  # (E, m)
    cos = (nrn.w / norms[..., None] * (teacher / teacher.norm(dim=1, keepdim=True))[group]).sum(2)
    mass = torch.zeros(norms.shape[0], r, dtype=F64).index_add_(1, group, nrn.a[:, 0] * norms)
    return cos, mass


@pytest.mark.parametrize("act,layer,par", NEAR_CASES, ids=["-".join(c) for c in NEAR_CASES])
def test_near_teacher_at_angle_zero_computes_the_teacher(act, layer, par):
    exp = build(make_cfg(*TEACHER, f"task.teacher_activation={act}", f"model.activation={act}",
                         f"model.output_layer={layer}", f"model.parameterization={par}"))
    params = init_params(exp)
    cost = task_view(exp.task, exp.objective).cost
    for e in range(2):
        assert cost(member(params, e)).item() <= 1e-26
    cos, mass = _groups(exp.objective.model, params, exp.task.teacher.weights)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-14)
    torch.testing.assert_close(mass, exp.task.teacher.norms.expand(2, 2), rtol=1e-14, atol=0)


@pytest.mark.parametrize("layer", ["trainable", "norm"])
def test_near_teacher_turns_each_student_by_the_angle_and_keeps_the_masses(layer):
    angle = 0.3
    exp = build(make_cfg(*TEACHER, f"model.output_layer={layer}", f"model.init_angle={angle}",
                         "model.parameterization=ntk"))
    params = init_params(exp)
    cos, mass = _groups(exp.objective.model, params, exp.task.teacher.weights)
    torch.testing.assert_close(cos, torch.full_like(cos, math.cos(angle)), rtol=0, atol=1e-14)
    torch.testing.assert_close(mass, exp.task.teacher.norms.expand(2, 2), rtol=1e-14, atol=0)
    assert not torch.equal(params["w"][0], params["w"][1])  # each member turns its own way
    assert task_view(exp.task, exp.objective).cost(member(params, 0)).item() > 1e-4


def test_near_teacher_when_the_member_draws_the_teachers_own_numbers():
    """The task's seed defaults to the run's, so member 0's generator repeats the teacher's draw: with m = r each
    random vector is its teacher's direction. Students must still turn by exactly the angle (once they were NaN)."""
    angle = 0.15
    exp = build(make_cfg(*TEACHER, "model.width=2", f"model.init_angle={angle}", "seed=0"))
    assert exp.config["task"]["seed"] == 0 == exp.member_seeds[0]
    params = init_params(exp)
    assert all(torch.isfinite(v).all() for v in params.values())
    cos, _ = _groups(exp.objective.model, params, exp.task.teacher.weights)
    torch.testing.assert_close(cos, torch.full_like(cos, math.cos(angle)), rtol=0, atol=1e-14)


NEAR_ERRORS = [
    (["task.teacher_activation=tanh", "model.activation=relu"], "task.teacher_activation"),
    (["task.teacher_activation=abs", "model.activation=relu"], "model.activation"),
    (["model.activation=tanh", "task.teacher_activation=tanh"], "model.activation"),
    (["task.input_dim=1"], "model.init"),
    (["model.width=1"], "model.width"),
    (["model.bias=true"], "model.bias"),
    (["model.output_layer=fixed_signs"], "model.output_layer"),
    (["model.init_angle=-0.1"], "model.init_angle"),
    (["task=linear_regression", "task.output_dim=1"], "model.init"),
]


@pytest.mark.parametrize("overrides,key", NEAR_ERRORS, ids=[f"{k}:{o[0]}" for o, k in NEAR_ERRORS])
def test_near_teacher_config_errors(overrides, key):
    err = config_error(*TEACHER, *overrides)
    assert err.key == key and f"{key}=" in str(err)


# ---------------------------------------------------------------------------------------------------------------
# init=nnls (Zhou–Ge–Jin Algorithm 1).
NNLS = ["task=teacher", "task.input_dim=3", "task.teacher_width=2", "task.n=200", "model=two_layer",
        "model.init=nnls", "model.width=12", "trainer.steps=0"]
NNLS_CASES = [(act, layer, pop) for act, layer in (("relu", "trainable"), ("abs", "norm"), ("relu", "fixed_signs"))
              for pop in (False, True)]


@pytest.mark.parametrize("act,layer,population", NNLS_CASES, ids=[f"{a}-{b}-pop{c}" for a, b, c in NNLS_CASES])
def test_nnls_masses_are_optimal(act, layer, population):
    """The loss of the z-parameterized net Σ_j z_j s_j σ(w̄_jᵀx) (s_j the output sign; directions redrawn from the
    member's seed: init=nnls draws them first) is at the NNLS z*: equal to the model's loss, no lower for any
    ±1e-3 change of a mass that stays >= 0, and KKT holds (∂L/∂z_j = 0 where z_j > 0, >= 0 where z_j = 0)."""
    exp = build(make_cfg(*NNLS, f"task.teacher_activation={act}", f"model.activation={act}",
                         f"model.output_layer={layer}", f"task.population={str(population).lower()}"))
    model, task = exp.objective.model, exp.task
    params = init_params(exp)
    nrn = model.neurons(params)
    z_star = nrn.a[0, 0].abs() * nrn.w[0].norm(dim=1)  # (m,) masses
    w = torch.randn(12, 3, generator=torch.Generator().manual_seed(exp.member_seeds[0]), dtype=F64)
    directions = w / w.norm(dim=1, keepdim=True)
    signs = torch.tensor([(-1.0) ** j if layer == "fixed_signs" else 1.0 for j in range(12)], dtype=F64)
    x, y = task.data()

    def loss(z: Tensor) -> Tensor:
        if population:
            return population_loss(directions[None], (z * signs)[None, None], task.teacher.weights, act)[0]
        return 0.5 * ((ACTIVATIONS[act].fn(x @ directions.T) @ (z * signs) - y[:, 0]) ** 2).mean()

    best = loss(z_star).item()
    assert task_view(task, exp.objective).cost(member(params, 0)).item() == pytest.approx(best, rel=1e-12)
    live = z_star > 0
    assert 0 < live.sum() < 12  # a real NNLS: some masses at the bound
    for j in range(12):
        for step in (1e-3, -1e-3):
            z = z_star.clone()
            z[j] += step
            if z[j] >= 0:
                assert loss(z).item() >= best - 1e-15
    z = z_star.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(z), [z])
    assert grad[live].abs().max() <= 1e-9 and grad[~live].min() >= -1e-9


NNLS_ERRORS = [
    (["loss=quartic"], "loss.name"),
    (["model.activation=tanh", "task.teacher_activation=tanh"], "model.activation"),
    (["model.bias=true"], "model.bias"),
    (["task.population=true", "task.teacher_activation=abs"], "model.activation"),
    (["task=linear_regression", "task.output_dim=2"], "model.init"),
    (["model.init_angle=0.1"], "model.init_angle"),
]


@pytest.mark.parametrize("overrides,key", NNLS_ERRORS, ids=[f"{k}:{o[0]}" for o, k in NNLS_ERRORS])
def test_nnls_config_errors(overrides, key):
    err = config_error(*NNLS, *overrides)
    assert err.key == key and f"{key}=" in str(err)


# ---------------------------------------------------------------------------------------------------------------
# init=symmetric.
SYMMETRIC = (
    [({"name": "two_layer", "output_layer": layer, "parameterization": par, "bias": bias}, "two_layer")
     for layer in ("trainable", "fixed_signs") for par in ("standard", "ntk") for bias in (False, True)]
    + [({"name": "mlp", "depth": depth, "parameterization": par}, "mlp") for depth in (2, 3)
       for par in ("standard", "ntk")]
)


def _output_terms(model, params, x: Tensor) -> Tensor:
    """|a_j σ_j(x)| summed over the last hidden layer's units j: the scale the cancellation is measured on."""
    if "w" in params:
        nrn = model.neurons(params)
        hidden = model.activation.fn(model.preactivations(params, x)[0])  # (E, n, m)
        return hidden.abs() @ nrn.a.abs().mT
    hidden = model.activation.fn(model.preactivations(params, x)[-1])
    return model.layer_scales[-1] * hidden.abs() @ params[model.names[-1]].abs().mT


@pytest.mark.parametrize("sec,kind", SYMMETRIC, ids=["-".join(map(str, s.values())) for s, _ in SYMMETRIC])
def test_symmetric_start_outputs_zero(sec, kind):
    model = build_model({**sec, "init": "symmetric", "width": 8, "activation": "tanh"}, input_dim=3, output_dim=2)
    params = model.init_params(gens(range(3)))
    x = torch.randn(3, 10, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    out, terms = model.forward(params, x), _output_terms(model, params, x)
    assert terms.min() > 0 and (out.abs() <= 1e-12 * terms).all()
    first = params["w" if kind == "two_layer" else model.names[-2]]
    assert torch.equal(first[:, 0::2], first[:, 1::2])  # twin rows
    assert not torch.equal(first[:, 0], first[:, 2])


SYMMETRIC_ERRORS = [
    ({"name": "two_layer", "width": 5}, "model.width"),
    ({"name": "mlp", "width": 5}, "model.width"),
    ({"name": "two_layer", "output_layer": "fixed"}, "model.init"),
    ({"name": "two_layer", "output_layer": "norm"}, "model.init"),
    ({"name": "deep_linear"}, "model.init"),
]


@pytest.mark.parametrize("sec,key", SYMMETRIC_ERRORS, ids=[f"{s['name']}-{k}" for s, k in SYMMETRIC_ERRORS])
def test_symmetric_config_errors(sec, key):
    with pytest.raises(ConfigError) as err:
        build_model({**sec, "init": "symmetric"}, input_dim=3, output_dim=1)
    assert err.value.key == key


# ---------------------------------------------------------------------------------------------------------------
# init=decoupled (Saxe et al.) and the mode_strength metric.
SAXE = ["model=deep_linear", "model.width=4", "model.init=decoupled", "task=linear_regression", "task.input_dim=4",
        "task.output_dim=3", "task.n=4", "task.singular_values=[3.0,1.5,1.0]", "task.whiten=true"]


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("task", ["linear_regression", "matrix_cost"])
def test_decoupled_start_is_aligned_and_balanced(depth, task):
    u0 = [0.02, 0.05, 0.1]
    extra = ["task=matrix_cost", "task.target=gaussian", "task.input_dim=4", "task.output_dim=3"] \
        if task == "matrix_cost" else []
    exp = build(cfg(*SAXE, *extra, f"model.depth={depth}", f"model.init_mode_strength={u0}", "ensemble.size=2"))
    model, params = exp.objective.model, init_params(exp)
    u, _, v = exp.task.modes()
    torch.testing.assert_close(model.end_to_end(params), (u * torch.tensor(u0, dtype=F64)) @ v.T
                               .expand(2, -1, -1), rtol=0, atol=1e-15)
    mats = model.layer_matrices(params)
    for a, b in zip(mats[:-1], mats[1:]):  # C_i = W_iW_iᵀ − W_{i+1}ᵀW_{i+1} = 0
        assert (a @ a.mT - b.mT @ b).abs().max() <= 1e-15
    values = mode_strength(SimpleNamespace(model=model, params=params, task=exp.task), {})[0]
    assert list(values) == ["mode_strength/1", "mode_strength/2", "mode_strength/3"]
    torch.testing.assert_close(torch.stack(list(values.values()), 1), torch.tensor([u0, u0], dtype=F64))


@pytest.mark.parametrize("depth,u0", [(2, 0.01), (3, 0.05)])
def test_decoupled_modes_follow_the_closed_form(tmp_path, depth, u0):
    """Gradient flow (dopri5, rtol 1e-10) from the decoupled start: each mode strength is Saxe's sigmoid (N = 2) or
    the balanced quadrature u̇ = N u^{2−2/N}(s − u) (N = 3), within 1e-8 relative."""
    run_overrides(tmp_path, *SAXE, f"model.depth={depth}", f"model.init_mode_strength={u0}", "trainer=gradient_flow",
                  "trainer.method=dopri5", "trainer.rtol=1e-10", "trainer.atol=1e-12", "trainer.t_max=6",
                  "metrics.names=[mode_strength]", "metrics.points=20", "logger.tensorboard=false")
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    s = torch.load(tmp_path / "run" / "task.pt")["S"].numpy()
    assert len(rows) >= 20
    for a, s_a in enumerate(s):
        t = rows["t"].to_numpy()
        ref = saxe_mode_strength(t, s_a, u0) if depth == 2 else balanced_mode_strength(t, s_a, u0, depth)
        got = rows[f"mode_strength/{a + 1}"].to_numpy()
        assert ref[-1] > 0.9 * s_a  # every mode is learned in the window
        assert np.all(np.abs(got - ref) <= 1e-8 * np.abs(ref))


def test_mode_strength_has_a_column_for_every_mode():
    """r = 18 modes (more than the 16 per-unit columns other metrics stop at): all 18, as asked."""
    exp = build(make_cfg("model=deep_linear", "model.width=20", "task=matrix_cost", "task.target=gaussian",
                         "task.input_dim=20", "task.output_dim=18", "trainer.steps=0"))
    params = init_params(exp)
    values = mode_strength(SimpleNamespace(model=exp.objective.model, params=params, task=exp.task), {})[0]
    assert list(values) == [f"mode_strength/{a + 1}" for a in range(18)]
    u, _, v = exp.task.modes()
    diag = torch.diagonal(u.T @ exp.objective.model.end_to_end(params)[0] @ v)
    torch.testing.assert_close(torch.stack(list(values.values()), 1)[0], diag, rtol=1e-12, atol=0)
    assert "mode_strength" in exp.metrics  # in auto


@pytest.mark.parametrize("overrides", [["model=two_layer", "task=linear_regression"],
                                       ["model=deep_linear", "model.depth=1", "task=linear_regression"],
                                       ["model=deep_linear", "task=teacher"]])
def test_mode_strength_where_it_does_not_apply_is_a_config_error(overrides):
    exp = build(make_cfg(*overrides))
    assert "mode_strength" not in exp.metrics
    with pytest.raises(ConfigError, match=r"metrics\.names\[0\]=.mode_strength"):
        select_metrics(["mode_strength"], exp.objective, exp.task)


DECOUPLED_ERRORS = [
    (["task.whiten=false"], "model.init"),
    (["task=teacher"], "model.init"),
    (["model.width=2"], "model.width"),
    (["model.init_mode_strength=[0.1,0.2]"], "model.init_mode_strength"),
    (["model.init_mode_strength=[0.1,0.2,-0.3]"], "model.init_mode_strength"),
    (["model.init_mode_strength=0.0"], "model.init_mode_strength"),
    (["model.init_mode_strength=null"], "model.init_mode_strength"),
    (["model.depth=1"], "model.depth"),
    (["loss=quartic"], "loss.name"),
    (["loss.reduction=sum"], "loss.reduction"),
    (["model.init=gaussian"], "model.init_mode_strength"),
]


@pytest.mark.parametrize("overrides,key", DECOUPLED_ERRORS, ids=[f"{k}:{o[0]}" for o, k in DECOUPLED_ERRORS])
def test_decoupled_config_errors(overrides, key):
    err = config_error(*SAXE, "model.init_mode_strength=0.01", *overrides)
    assert err.key == key and f"{key}=" in str(err)


# ---------------------------------------------------------------------------------------------------------------
# init=file.
FILE_CASES = [["model=two_layer", "model.bias=true", "model.parameterization=ntk"],
              ["model=deep_linear", "task=linear_regression", "model.depth=3"], ["model=mlp", "model.width=6"]]


@pytest.mark.parametrize("model", FILE_CASES, ids=[m[0] for m in FILE_CASES])
def test_file_init_starts_where_another_run_ended(tmp_path, model):
    base = [*model, "ensemble.size=3", "metrics.names=[loss]", "logger.tensorboard=false"]
    run_overrides(tmp_path, *base, "trainer.steps=3", name="first")
    final = torch.load(tmp_path / "first" / "final_params.pt")
    exp = build(make_cfg(*base, "model.init=file", f"model.init_path={tmp_path / 'first' / 'final_params.pt'}"))
    start = init_params(exp)
    assert list(start) == list(final)
    for k in final:
        assert torch.equal(start[k], final[k])
    summary = run_overrides(tmp_path, *base, "trainer.steps=2", "model.init=file",
                            f"model.init_path={tmp_path / 'first' / 'final_params.pt'}", name="second")
    assert summary["status"] == "max_steps"


def _file_error(tmp_path: Path, content, *overrides: str) -> ConfigError:
    path = tmp_path / "start.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    return config_error("model=two_layer", "model.width=3", "task.input_dim=2", "model.init=file",
                        f"model.init_path={path}", *overrides)


def _starts(e: int = 2, **change) -> dict:
    return {"w": torch.zeros(e, 3, 2), "a": torch.zeros(e, 1, 3), **change}


FILE_ERRORS = [
    (None, "cannot be read"),
    (b"junk\n", "cannot be read"),  # not a zip or pickle: torch.load raises struct.error
    ([1, 2], "must hold a dict"),
    ({"w": torch.zeros(2, 3, 2)}, "missing: a"),
    (_starts(b=torch.zeros(2, 3)), "unknown: b"),
    (_starts(w=torch.zeros(2, 2, 3)), "w has shape (2, 2, 3)"),
    (_starts(a=torch.zeros(3, 1, 3)), "the same number E"),
    (_starts(w=torch.full((2, 3, 2), math.nan)), "non-finite"),
]


@pytest.mark.parametrize("content,message", FILE_ERRORS, ids=[m for _, m in FILE_ERRORS])
def test_file_init_errors_name_the_path(tmp_path, content, message):
    err = _file_error(tmp_path, content, "ensemble.size=2")
    assert err.key == "model.init_path" and message in str(err)


def test_file_init_of_one_member(tmp_path):
    """A file of one start (E = 1) is a start for a run of one member; E = 0 holds none."""
    torch.save(_starts(e=1), tmp_path / "one.pt")
    model = build_model({"name": "two_layer", "width": 3, "init": "file", "init_path": str(tmp_path / "one.pt")},
                        input_dim=2, output_dim=1)
    assert model.init_params(gens(range(1)))["w"].shape == (1, 3, 2)
    err = _file_error(tmp_path, _starts(e=0), "ensemble.size=1")
    assert err.key == "model.init_path" and "E >= 1" in str(err)


def test_file_init_member_count_is_the_ensemble_size(tmp_path):
    err = _file_error(tmp_path, _starts(e=2), "ensemble.size=3")
    assert err.key == "ensemble.size" and "3" in str(err) and "holds 2" in str(err)
    model = build_model({"name": "two_layer", "width": 3, "init": "file", "init_path": str(tmp_path / "start.pt")},
                        input_dim=2, output_dim=1)
    assert model.init_params(gens(range(2)))["w"].dtype == F64  # float32 file, float64 starts
    with pytest.raises(ConfigError, match="ensemble.size"):
        model.init_params(gens(range(4)))


@pytest.mark.parametrize("overrides,key", [
    (["model.init=file"], "model.init_path"),
    (["model.init_path=x.pt"], "model.init_path"),
    (["model=deep_linear", "model.init_path=x.pt"], "model.init_path"),
    (["model=mlp", "model.init_path=x.pt"], "model.init_path"),
])
def test_init_path_only_with_init_file(overrides, key):
    err = config_error(*overrides)
    assert err.key == key
