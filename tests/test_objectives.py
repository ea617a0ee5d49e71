"""What is trained: frozen layers (model.train_layers), lazy scaling (model.lazy_alpha), the linearized model
(model.linearize) and the population loss (task.population), through the harness and against hand-built
references: autograd on the plain network with explicit masks, explicit Jacobians, finite differences.
"""
from __future__ import annotations

import csv
import math

import pytest
import torch

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build, init_params
from dynamics_bench.metrics import Snapshot
from dynamics_bench.metrics.hessian import hessian_product
from dynamics_bench.metrics.ntk import ntk_gram
from dynamics_bench.theory import population_loss
from tests.conftest import make_cfg, run_overrides

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

MLP3 = ("model=mlp", "model.depth=3", "model.width=6", "task=teacher", "task.n=10", "task.input_dim=3")


def built(*overrides: str, size: int = 2):
    """The built experiment, its θ_0 (anchored) and its data (E, n, ·)."""
    exp = build(make_cfg(*overrides, f"ensemble.size={size}"))
    params = init_params(exp)
    exp.objective.anchor(params)
    x, y = exp.task.data()
    return exp, params, x.expand(size, *x.shape), y.expand(size, *y.shape)


def snapshot(exp, params, x, y) -> Snapshot:
    return Snapshot(iteration=0, steps=[0] * x.shape[0], t=[0.0] * x.shape[0], params=params, params0=params,
                    objective=exp.objective, task=exp.task, x=x, y=y, settings=exp.settings)


def rows(path) -> list[dict]:
    with open(path / "metrics.csv") as f:
        return list(csv.DictReader(f))


# --- model.train_layers ---
def test_frozen_layers_stay_bitwise_and_the_gradient_is_the_trainable_part(tmp_path):
    exp, params, x, y = built(*MLP3, "model.train_layers=[W2]")
    loss, grad = exp.objective.loss_and_grad(params, x, y)
    assert list(grad) == ["W2"] and exp.objective.num_params == 36
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    reference = torch.autograd.grad(exp.objective.loss(leaves, x, y).sum(), leaves["W2"])[0]
    assert torch.equal(grad["W2"], reference)

    run_overrides(tmp_path, *MLP3, "model.train_layers=[W2]", "trainer.steps=20", "ensemble.size=2")
    start = init_params(exp)
    final = torch.load(tmp_path / "run" / "final_params.pt", weights_only=True)
    assert torch.equal(final["W1"], start["W1"]) and torch.equal(final["W3"], start["W3"])
    assert not torch.equal(final["W2"], start["W2"])


def test_hessian_and_ntk_see_only_the_trainable_parameters():
    exp, params, x, y = built(*MLP3, "model.train_layers=[W1,W3]")
    s = snapshot(exp, params, x, y)
    p = exp.objective.num_params  # 6·3 + 1·6 = 24
    basis = torch.eye(p, dtype=F64)[:, None].expand(p, 2, p)
    hessian = torch.stack([hessian_product(s)(v) for v in basis], -1)  # (E, P, P)
    for e in range(2):
        def loss_of(w1, w3):
            return exp.objective.loss({"W1": w1, "W2": params["W2"][e], "W3": w3}, x[e], y[e])
        full = torch.autograd.functional.hessian(loss_of, (params["W1"][e], params["W3"][e]))
        blocks = [[b.reshape(a.numel(), c.numel()) for b, c in zip(row, (params["W1"][e], params["W3"][e]))]
                  for row, a in zip(full, (params["W1"][e], params["W3"][e]))]
        reference = torch.cat([torch.cat(r, 1) for r in blocks], 0)
        torch.testing.assert_close(hessian[e], reference, rtol=1e-10, atol=1e-12)

    k = ntk_gram(exp.objective, params, x[:, :4])  # (E, 4, 4)
    for e in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda w1, w3: exp.objective.model.forward({"W1": w1, "W2": params["W2"][e], "W3": w3}, x[e, :4]).flatten(),
            (params["W1"][e], params["W3"][e]))
        j = torch.cat([g.flatten(1) for g in jac], 1)
        torch.testing.assert_close(k[e], j @ j.T, rtol=1e-10, atol=1e-12)


def test_train_layers_errors_and_the_conservation_metrics():
    with pytest.raises(ConfigError) as err:
        build(make_cfg(*MLP3, "model.train_layers=[W4]"))
    assert err.value.key == "model.train_layers[0]" and "W1, W2, W3" in err.value.allowed
    with pytest.raises(ConfigError, match="model.train_layers"):
        build(make_cfg(*MLP3, "model.train_layers=[]"))
    two_layer = ("model=two_layer", "model.width=4", "task=teacher")
    assert "imbalance" in build(make_cfg(*two_layer)).metrics
    assert "imbalance" not in build(make_cfg(*two_layer, "model.train_layers=[w]")).metrics
    with pytest.raises(ConfigError, match="freezes a"):
        build(make_cfg(*two_layer, "model.train_layers=[w]", "metrics.names=[imbalance]"))


# --- model.lazy_alpha and model.linearize ---
def test_lazy_model_starts_at_zero_and_its_loss_is_scaled():
    alpha = 7.0
    exp, params, x, y = built(*MLP3, f"model.lazy_alpha={alpha}")
    assert torch.equal(exp.objective.forward(params, x), torch.zeros_like(y))
    loss, _ = exp.objective.loss_and_grad(params, x, y)
    torch.testing.assert_close(loss, 0.5 * y.pow(2).sum(-1).mean(-1) / alpha**2, rtol=1e-14, atol=0)
    moved = {k: v + 1e-3 * torch.randn_like(v) for k, v in params.items()}
    f, f0 = exp.objective.model.forward(moved, x), exp.objective.model.forward(params, x)
    torch.testing.assert_close(exp.objective.forward(moved, x), alpha * (f - f0), rtol=1e-13, atol=1e-15)


def test_lazy_training_moves_the_weights_by_order_one_over_alpha(tmp_path):
    """Chizat–Oyallon–Bach (docs/theory.md §5.5): α·‖θ_T − θ_0‖ tends to a constant as α grows (the difference is
    O(1/α)); between α = 100 and 1000 it changes by 1%, not the 10× a non-lazy scaling would give."""
    moves = []
    for alpha in (100, 1000):
        summary = run_overrides(tmp_path, "model=two_layer", "model.activation=tanh", "model.width=20",
                                "task=teacher", "task.n=8", "trainer=gd", "trainer.lr=0.2", "trainer.steps=300",
                                f"model.lazy_alpha={alpha}", "metrics.names=[loss,weight_change]", name=str(alpha))
        moves.append(alpha * summary["members"][0]["final"]["weight_change"])
    assert moves[1] == pytest.approx(moves[0], rel=0.02)


def test_linearized_model_is_affine_in_the_parameters():
    exp, params, x, y = built(*MLP3, "model.linearize=true", size=1)
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    f0 = exp.objective.forward(params, x)
    step = lambda c: exp.objective.forward({k: params[k] + c * direction[k] for k in params}, x)  # noqa: E731
    torch.testing.assert_close(step(2.0) - f0, 2 * (step(1.0) - f0), rtol=1e-12, atol=1e-13)
    jac = torch.autograd.functional.jacobian(lambda *w: exp.objective.model.forward(dict(zip(params, w)), x[0]).flatten(),
                                             tuple(v[0] for v in params.values()))
    j = torch.cat([g.flatten(1) for g in jac], 1)
    d = torch.cat([v[0].flatten() for v in direction.values()])
    torch.testing.assert_close((step(1.0) - f0).flatten(), j @ d, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(f0, exp.objective.model.forward(params, x), rtol=0, atol=0)


def test_linearized_run_differs_from_the_network_and_fits_least_squares(tmp_path):
    """GD on the linearized model is GD on a linear least-squares problem in θ: its loss is convex, so a long
    run reaches the least-squares residual of projecting y − f(θ_0) on the Jacobian's column space (here n < P:
    interpolation, loss → 0), while the linear model's Hessian is constant along the run."""
    common = ("model=two_layer", "model.width=6", "task=teacher", "task.n=5", "trainer=gd", "trainer.lr=0.2",
              "trainer.steps=3000", "metrics.names=[loss,hessian]", "metrics.points=3")
    lin = run_overrides(tmp_path, *common, "model.linearize=true", name="lin")
    lin_rows = rows(tmp_path / "lin")
    assert lin["final_loss"] < 1e-12
    assert float(lin_rows[0]["hessian_max"]) == pytest.approx(float(lin_rows[-1]["hessian_max"]), rel=1e-10)


# --- task.population ---
POP = ("model=two_layer", "model.width=4", "task=teacher", "task.population=true", "task.input_dim=4",
       "task.teacher_width=2")


@pytest.mark.parametrize("activation", ["relu", "abs", "erf"])
def test_population_objective_is_the_closed_form(activation):
    exp, params, x, y = built(*POP, f"model.activation={activation}", f"task.teacher_activation={activation}")
    loss, grad = exp.objective.loss_and_grad(params, x, y)
    n = exp.objective.model.neurons(params)
    torch.testing.assert_close(loss, population_loss(n.w, n.a, exp.task.teacher.weights, activation))
    single, single_grad = exp.objective.loss_and_grad({k: v[:1] for k, v in params.items()}, x[:1], y[:1])
    torch.testing.assert_close(single, loss[:1], rtol=1e-14, atol=0)
    torch.testing.assert_close(single_grad["w"], grad["w"][:1], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("override, key", [
    ("model.bias=true", "model.bias"),
    ("model.activation=tanh", "model.activation"),
    ("loss=quartic", "loss.name"),
    ("loss.reduction=sum", "loss.reduction"),
    ("trainer=sgd", "trainer.name"),
    ("model.lazy_alpha=10", "model.lazy_alpha"),
    ("model.linearize=true", "model.linearize"),
    ("model=mlp", "model.name"),
])
def test_population_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        build(make_cfg(*POP, override))
    assert err.value.key == key


OUTPUT_LAYERS = [("trainable", "standard"), ("fixed", "standard"), ("norm", "standard"), ("fixed_signs", "ntk"),
                 ("trainable", "ntk")]


@pytest.mark.parametrize("activation", ["relu", "abs", "erf"])
@pytest.mark.parametrize("output_layer, parameterization", OUTPUT_LAYERS)
def test_population_loss_of_every_output_layer_vs_monte_carlo_and_finite_differences(activation, output_layer,
                                                                                      parameterization):
    """The objective's closed form against the model's own forward on 10⁶ Gaussian inputs (within 3 standard
    errors of the sample mean), and its gradient against central differences (h = 1e-6: truncation O(h²) ≈ 1e-12
    and round-off ≈ 1e-16/h ≈ 1e-10 relative to the O(1) loss; 1e-7 leaves room)."""
    exp, params, x, y = built(*POP, f"model.activation={activation}", f"task.teacher_activation={activation}",
                              f"model.output_layer={output_layer}", f"model.parameterization={parameterization}",
                              size=1)
    loss, grad = exp.objective.loss_and_grad(params, x, y)
    gen = torch.Generator().manual_seed(7)
    samples = torch.randn(10**6, 4, generator=gen, dtype=F64)
    teacher = exp.task.teacher
    target = teacher.weights.new_zeros(10**6, 1)
    target += getattr(torch, activation)(samples @ teacher.weights.T).sum(1, keepdim=True) if activation != "relu" \
        else torch.relu(samples @ teacher.weights.T).sum(1, keepdim=True)
    per_sample = 0.5 * (exp.objective.model.forward({k: v[0] for k, v in params.items()}, samples) - target).pow(2)
    error = per_sample.std() / math.sqrt(10**6)
    assert abs(per_sample.mean() - loss[0]) <= 3 * error
    for name, g in grad.items():
        for index in [(0, 0, 0), (0, g.shape[1] - 1, g.shape[2] - 1)]:
            def at(shift: float) -> float:
                moved = {k: v.clone() for k, v in params.items()}
                moved[name][index] += shift
                return exp.objective.loss(moved, x, y)[0].item()
            numeric = (at(1e-6) - at(-1e-6)) / 2e-6
            assert g[index].item() == pytest.approx(numeric, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("activation", ["relu", "abs"])
def test_population_hessian_is_finite_at_coincident_opposite_and_zero_students(activation):
    """near_teacher at angle 0 puts every student exactly on a teacher direction (arccos is singular there): the
    loss is ≤ 1e-14 (the closed form cancels O(1) terms), the gradient ~0 and the dense Hessian finite and positive
    semi-definite up to round-off (a global minimum). Then one student is flipped to the opposite direction and
    another set to zero: still finite, and the zero student's rows of the gradient and Hessian are exactly 0."""
    exp, params, x, y = built(*POP, f"model.activation={activation}", f"task.teacher_activation={activation}",
                              "model.init=near_teacher", "model.output_layer=norm", "metrics.names=[hessian]",
                              size=1)
    s = snapshot(exp, params, x, y)
    loss, grad = s.loss_and_grad()
    assert abs(loss.item()) <= 1e-14 and grad["w"].abs().max().item() <= 1e-12  # unit teachers: ~ulps of O(1)
    values = exp.metrics["hessian"].fn(s, {})[0] if exp.metrics["hessian"].remembers else exp.metrics["hessian"].fn(s)
    assert math.isfinite(values["hessian_max"].item()) and values["hessian_min"].item() >= -1e-12
    w = params["w"].clone()
    w[0, 1] = -w[0, 1]  # student 1 exactly opposite its teacher
    w[0, 2] = 0.0  # student 2 at zero norm
    moved = {"w": w}
    s = snapshot(exp, moved, x, y)
    loss, grad = s.loss_and_grad()
    assert torch.isfinite(loss).all() and torch.isfinite(grad["w"]).all()
    assert torch.equal(grad["w"][0, 2], torch.zeros(4, dtype=F64))
    p = exp.objective.num_params
    hessian = torch.stack([hessian_product(s)(v) for v in torch.eye(p, dtype=F64)[:, None]], -1)[0]  # (P, P)
    assert torch.isfinite(hessian).all()
    assert torch.equal(hessian[8:12], torch.zeros(4, p, dtype=F64))  # student 2's rows (w is (m, d) = (4, 4))


def test_population_run_logs_the_sample_loss_beside_it_with_ensembles_and_dopri5(tmp_path):
    common = (*POP, "model.activation=erf", "task.teacher_activation=erf", "trainer=gradient_flow",
              "trainer.method=dopri5", "trainer.t_max=2", "metrics.points=5")
    run_overrides(tmp_path, *common, "ensemble.size=3", name="ens")
    alone = run_overrides(tmp_path, *common, "seed=2", "ensemble.size=1", "task.seed=0", name="alone")
    ens_rows = rows(tmp_path / "ens")
    assert "sample_loss" in ens_rows[0] and float(ens_rows[-1]["loss"]) < float(ens_rows[0]["loss"])
    exp, params, x, y = built(*common, size=3)
    sample = exp.objective.loss_fn(exp.objective.model.forward(params, x), y)
    torch.testing.assert_close(torch.tensor([float(r["sample_loss"]) for r in ens_rows[:3]], dtype=F64), sample)
    # member 2 of seed 0 (E = 3) is seed 2 alone (seed·E + i), to dopri5's tolerance
    member = [r for r in ens_rows if r["member"] == "2"][-1]
    assert float(member["loss"]) == pytest.approx(alone["final_loss"], rel=1e-7)
    assert math.isfinite(alone["final_loss"])


def test_task_pt_holds_what_the_task_drew(tmp_path):
    run_overrides(tmp_path, "task=teacher", "task.teacher_width=3", "trainer.steps=2")
    state = torch.load(tmp_path / "run" / "task.pt", weights_only=True)
    exp = build(make_cfg("task=teacher", "task.teacher_width=3"))
    torch.testing.assert_close(state["teacher_weights"], exp.task.teacher.weights.cpu(), rtol=0, atol=0)
    assert state["x"].shape == (exp.task.data()[0].shape)
