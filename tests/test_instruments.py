"""The light instruments against hand-built states with known answers: teacher geometry (at the teacher, paper (2)'s
Claim-2 pair, an anti-aligned ReLU neuron), movement by layer and activation flips on explicit inits, and the
Łojasiewicz columns against hand computation and exact curves. Then what metrics with memory and heavy metrics
promise in a run: memory per member, the heavy grid, metric_seconds, state round trips, and the config errors.

Every expected number is a closed form written out below or a few lines of plain numpy/math, not a run's output.
"""
from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build
from dynamics_bench.losses import MSE
from dynamics_bench.metrics import METRICS, Evaluator, Settings, Snapshot
from dynamics_bench.models.mlp import MLP
from dynamics_bench.models.two_layer import TwoLayer
from dynamics_bench.objective import Objective
from dynamics_bench.sweep import aggregate
from dynamics_bench.tasks.base import Teacher
from tests.conftest import make_cfg, run_overrides

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def two_layer(width: int, d: int, activation: str = "relu", output_layer: str = "trainable",
              bias: bool = False) -> TwoLayer:
    return TwoLayer(width=width, activation=activation, output_layer=output_layer, bias=bias, init="gaussian",
                    init_scale=1.0, init_values=None, input_dim=d, output_dim=1)


def snap(model, params, params0=None, *, teacher: Teacher | None = None, x=None, y=None, steps=None, times=None,
         loss=None, grad=None, **settings) -> Snapshot:
    e = next(iter(params.values())).shape[0]
    if x is None:
        x = torch.zeros(e, 1, model.input_dim, dtype=F64)
        y = torch.zeros(e, 1, model.output_dim, dtype=F64)
    task = SimpleNamespace(teacher=teacher, num_classes=None)
    return Snapshot(iteration=0, steps=steps or [0] * e, t=times or [0.0] * e, params=params,
                    params0=params if params0 is None else params0,
                    objective=Objective(model=model, loss=MSE(), sum_over_samples=False), task=task, x=x, y=y,
                    loss=loss, grad=grad, settings=Settings(**settings))


def teacher_metrics(model, params, teacher) -> dict[str, float]:
    return {k: v.item() for k, v in METRICS["teacher"].fn(snap(model, params, teacher=teacher)).items()}


# ---------------------------------------------------------------------------------------------------------------
# teacher
TEACHER = t([[3.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # r = 2, ‖w_1*‖ = 3, ‖w_2*‖ = √2


@pytest.mark.parametrize("output_layer", ["trainable", "norm"])
@pytest.mark.parametrize("activation", ["relu", "abs"])
def test_a_student_at_the_teacher(activation, output_layer):
    """Two students per teacher splitting its mass: M_i = ‖w_i*‖, A = 0, ŵ_i = w_i*; for abs, one of them
    flipped (−w is the same |·| neuron). Trainable output: w_j = w_i*/2... with a_j = 1, c_j = ‖w_i*‖/2;
    norm-tied: w_j = w̄_i*·√(‖w_i*‖/2), c_j = ‖w_j‖² = ‖w_i*‖/2."""
    unit = TEACHER / TEACHER.norm(dim=1, keepdim=True)
    half = TEACHER.norm(dim=1, keepdim=True) / 2
    rows = unit * (half if output_layer == "trainable" else half.sqrt())
    sign = -1.0 if activation == "abs" else 1.0
    params = {"w": torch.stack([rows[0], sign * rows[0], rows[1], rows[1]])[None]}
    if output_layer == "trainable":
        params["a"] = torch.ones(1, 1, 4, dtype=F64)
    out = teacher_metrics(two_layer(4, 3, activation, output_layer), params, Teacher(TEACHER, activation))
    assert out["teacher_mass_error"] == pytest.approx(0.0, abs=1e-15)
    assert out["misalignment"] == pytest.approx(0.0, abs=1e-15)
    assert out["average_neuron_error"] == pytest.approx(0.0, abs=1e-15)
    assert out["teacher_mass/1"] == pytest.approx(3.0, rel=1e-15)
    assert out["teacher_mass/2"] == pytest.approx(math.sqrt(2), rel=1e-15)


@pytest.mark.parametrize("delta", [0.0125, 0.05, 0.2, 0.6])
@pytest.mark.parametrize("activation", ["relu", "abs"])
def test_claim_two_pair(delta, activation):
    """Paper (2), Claim 2: one unit teacher, two norm-tied students at ±δ with ‖w_j‖ = 1/√(2cos δ): mass error
    1/cos δ − 1, A = sin δ·tan δ, average-neuron error 0."""
    norm = 1 / math.sqrt(2 * math.cos(delta))
    w = [[norm * math.cos(delta), norm * math.sin(delta)], [norm * math.cos(delta), -norm * math.sin(delta)]]
    out = teacher_metrics(two_layer(2, 2, activation, "norm"), {"w": t([w])}, Teacher(t([[1.0, 0.0]]), activation))
    assert out["teacher_mass_error"] == pytest.approx(1 / math.cos(delta) - 1, rel=1e-13)
    assert out["misalignment"] == pytest.approx(math.sin(delta) * math.tan(delta), rel=1e-12)
    assert out["average_neuron_error"] == pytest.approx(0.0, abs=1e-15)


def test_an_anti_aligned_relu_neuron_counts_fully():
    """Student 1 sits on teacher 1 (c_1 = 3); student 2 = −w_2* with a = 2 (c_2 = 2√2): angle π to teacher 2 and
    π/2 to teacher 1, so sin²(min(d, π/2)) = 1 and A = |c_2| = 2√2. It counts for its closest teacher, teacher 1
    (π/2 beats π): M_1 = 3 + 2√2, M_2 = 0 (mass error 1); ŵ_1 = (3, −2, −2), ŵ_2 = 0 (average-neuron error 1)."""
    params = {"w": TEACHER[[0, 1]].clone()[None], "a": t([[[1.0, 2.0]]])}
    params["w"][0, 1] *= -1
    out = teacher_metrics(two_layer(2, 3), params, Teacher(TEACHER, "relu"))
    assert out["misalignment"] == pytest.approx(2 * math.sqrt(2), rel=1e-14)
    assert out["teacher_mass/1"] == pytest.approx(3 + 2 * math.sqrt(2), rel=1e-14)
    assert out["teacher_mass/2"] == 0.0
    assert out["teacher_mass_error"] == pytest.approx(1.0, rel=1e-15)
    assert out["average_neuron_error"] == pytest.approx(1.0, rel=1e-15)
    # a ReLU neuron more than π/2 from every teacher (cos d_j = −1 < 0) counts fully too
    out = teacher_metrics(two_layer(1, 3), {"w": -TEACHER[:1][None], "a": t([[[0.5]]])}, Teacher(TEACHER[:1], "relu"))
    assert out["misalignment"] == pytest.approx(1.5, rel=1e-15)  # |c| = 0.5·3
    # the same neuron under abs is aligned: −w_2* is w_2*
    out = teacher_metrics(two_layer(2, 3, "abs"), params, Teacher(TEACHER, "abs"))
    assert out["misalignment"] == pytest.approx(0.0, abs=1e-14)  # 2√2·(1 − cos²) with cos = 1 up to round-off
    assert out["teacher_mass_error"] == pytest.approx(1.0, rel=1e-14)  # M_2 = 2√2 against ‖w_2*‖ = √2


def test_a_hand_computed_misaligned_student():
    """One teacher e1; students w_1 = (1, 1) (45°, c = 2·√2) and w_2 = (0, −3) (90°, c = −1·3): A = Σ|c|sin²d =
    2√2·½ + 3·1; M = 2√2 − 3; ŵ = 2√2·(1, 1)/√2 + (−3)·(0, −1) = (2, 5); ‖ŵ − e1‖ = √26."""
    params = {"w": t([[[1.0, 1.0], [0.0, -3.0]]]), "a": t([[[2.0, -1.0]]])}
    out = teacher_metrics(two_layer(2, 2), params, Teacher(t([[1.0, 0.0]]), "relu"))
    assert out["misalignment"] == pytest.approx(math.sqrt(2) + 3, rel=1e-14)
    assert out["teacher_mass/1"] == pytest.approx(2 * math.sqrt(2) - 3, rel=1e-14)
    assert out["teacher_mass_error"] == pytest.approx(abs(2 * math.sqrt(2) - 3 - 1), rel=1e-14)
    assert out["average_neuron_error"] == pytest.approx(math.sqrt(26), rel=1e-14)


def test_a_fixed_output_student_and_a_tie():
    """Fixed output (a_j = 1): c_j = ‖w_j‖. Teachers e1, e2; students 2e1, e2 and e3, which is at π/2 from both
    (a tie): it counts once, for the first teacher (M_1 = 2 + 1, M_2 = 1: Σ M_i = Σ c_j), and fully in A."""
    params = {"w": t([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])}
    out = teacher_metrics(two_layer(3, 3, output_layer="fixed"), params, Teacher(t([[1.0, 0, 0], [0, 1.0, 0]]), "relu"))
    assert (out["teacher_mass/1"], out["teacher_mass/2"]) == (3.0, 1.0)
    assert out["misalignment"] == 1.0
    assert out["teacher_mass_error"] == 2.0  # |3 − 1|/1
    # ŵ_1 = 2e1 + e3, ŵ_2 = e2: errors ‖(1, 0, 1)‖ = √2 and 0
    assert out["average_neuron_error"] == pytest.approx(math.sqrt(2), rel=1e-15)


@pytest.mark.parametrize("r", [16, 17])
def test_teacher_mass_columns_only_up_to_16_teachers(r):
    directions = torch.eye(r, dtype=F64)
    out = teacher_metrics(two_layer(r, r, output_layer="fixed"), {"w": directions[None]}, Teacher(directions, "relu"))
    assert {k for k in out if k.startswith("teacher_mass/")} == ({f"teacher_mass/{i}" for i in range(1, r + 1)}
                                                                 if r <= 16 else set())
    assert out["teacher_mass_error"] == 0.0 and out["misalignment"] == 0.0


@pytest.mark.parametrize("overrides, index", [
    (["model.bias=true"], 1),  # the teacher has no bias
    (["model.activation=tanh"], 1),  # student and teacher differ
    (["model.activation=abs"], 1),  # student abs, teacher relu
    (["model.activation=tanh", "task.teacher_activation=tanh"], 1),  # equal, but not relu or abs
    (["model=mlp"], 1),
    (["model=two_layer", "task=linear_regression", "task.output_dim=1"], 1),
])
def test_teacher_where_it_does_not_apply_is_a_config_error(overrides, index):
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*overrides, "metrics.names=[loss,teacher]"))
    assert info.value.key == f"metrics.names[{index}]" and info.value.value == "teacher"
    assert "teacher" not in build(make_cfg(*overrides)).metrics  # auto leaves it out


# ---------------------------------------------------------------------------------------------------------------
# layer_change, layer_change_spec, activation_flips
def test_layer_change_on_explicit_states():
    """w(0) = [[3, 0], [0, 4]] (‖·‖_F = 5, ‖·‖₂ = 4), Δw = [[0, 2], [1, 0]] (‖·‖_F = √5, singular values 2 and
    1, rows of norm 2 and 1); a(0) = [[1, 2]] (‖·‖ = √5), Δa = [[3, 4]] (5)."""
    w0, a0 = t([[[3.0, 0.0], [0.0, 4.0]]]), t([[[1.0, 2.0]]])
    params0 = {"w": w0, "a": a0}
    params = {"w": w0 + t([[[0.0, 2.0], [1.0, 0.0]]]), "a": a0 + t([[[3.0, 4.0]]])}
    s = snap(two_layer(2, 2), params, params0)
    frob, _ = METRICS["layer_change"].fn(s, {})
    spec, _ = METRICS["layer_change_spec"].fn(s, {})
    expected = {"layer_change/w": math.sqrt(5), "layer_change_rel/w": math.sqrt(5) / 5,
                "layer_change/a": 5.0, "layer_change_rel/a": 5 / math.sqrt(5), "neuron_change_max": 2.0,
                "layer_change_spec/w": 2.0, "layer_change_spec_rel/w": 0.5,
                "layer_change_spec/a": 5.0, "layer_change_spec_rel/a": 5 / math.sqrt(5)}
    got = {k: v.item() for k, v in {**frob, **spec}.items()}
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-14), k


def test_layer_change_names_every_mlp_matrix_and_skips_biases():
    mlp = MLP(depth=3, width=4, activation="relu", parameterization="ntk", init="gaussian", init_scale=1.0,
              init_values=None, input_dim=2, output_dim=1)
    params0 = mlp.init_params([torch.Generator().manual_seed(0)])
    params = {k: v + 0.5 for k, v in params0.items()}  # every entry moved by ½: ‖ΔW‖_F = ½√(entries)
    values, _ = METRICS["layer_change"].fn(snap(mlp, params, params0), {})
    assert set(values) == {"neuron_change_max"} | {f"layer_change{r}/W{i}" for r in ("", "_rel") for i in (1, 2, 3)}
    for name, (rows, cols) in zip(mlp.names, mlp.shapes):
        assert values[f"layer_change/{name}"].item() == pytest.approx(0.5 * math.sqrt(rows * cols), rel=1e-14)
        rel = 0.5 * math.sqrt(rows * cols) / params0[name].norm().item()
        assert values[f"layer_change_rel/{name}"].item() == pytest.approx(rel, rel=1e-14)
    assert values["neuron_change_max"].item() == pytest.approx(0.5 * math.sqrt(2), rel=1e-14)  # rows of W1: 2 entries
    bias_net = two_layer(3, 2, bias=True)
    p0 = bias_net.init_params([torch.Generator().manual_seed(1)])
    values, _ = METRICS["layer_change"].fn(snap(bias_net, p0, p0), {})
    assert {k.split("/")[-1] for k in values if "/" in k} == {"w", "a"}


PROBE_X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]]


def test_activation_flips_of_a_two_layer_net():
    """w(0) rows (1, −1), (2, 1): pre-activations on the probe (x1, x2) -> (1, −1, 0, −3) and (2, 1, 3, 0).
    w(t) rows (1, 1), (2, 1): (1, 1, 2, 1) and unchanged. Signs: unit 1 flips at samples 2, 3 (0 -> +) and 4;
    unit 2 at none: 3 of 8 pairs. With probe = 2: sample 2 only, 1 of 4."""
    w0, w = t([[[1.0, -1.0], [2.0, 1.0]]]), t([[[1.0, 1.0], [2.0, 1.0]]])
    x = t([PROBE_X])
    model = two_layer(2, 2, output_layer="fixed")
    full, memory = METRICS["activation_flips"].fn(snap(model, {"w": w0}, x=x, y=x[..., :1], probe=4), {})
    assert full["activation_flips/1"].item() == 0.0 and set(full) == {"activation_flips/1"}
    values, _ = METRICS["activation_flips"].fn(snap(model, {"w": w}, {"w": w0}, x=x, y=x[..., :1], probe=4), memory)
    assert values["activation_flips/1"].item() == 3 / 8
    _, memory = METRICS["activation_flips"].fn(snap(model, {"w": w0}, x=x, y=x[..., :1], probe=2), {})
    values, _ = METRICS["activation_flips"].fn(snap(model, {"w": w}, {"w": w0}, x=x, y=x[..., :1], probe=2), memory)
    assert values["activation_flips/1"].item() == 1 / 4


def test_activation_flips_of_every_hidden_mlp_layer():
    """Depth 3 (two hidden layers), against numpy: the sign patterns of z_1 = c_1W_1x and z_2 = c_2W_2 relu(z_1)."""
    mlp = MLP(depth=3, width=5, activation="relu", parameterization="standard", init="gaussian", init_scale=1.0,
              init_values=None, input_dim=2, output_dim=1)
    p0 = mlp.init_params([torch.Generator().manual_seed(3)])
    p = {k: v + 0.4 * torch.randn(v.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
         for k, v in p0.items()}
    x = t([PROBE_X])

    def signs(params):
        w1, w2 = params["W1"][0].numpy(), params["W2"][0].numpy()
        z1 = np.array(PROBE_X) @ w1.T
        return np.sign(z1), np.sign(np.maximum(z1, 0) @ w2.T)
    expected = [float(np.mean(a != b)) for a, b in zip(signs(p), signs(p0))]
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    _, memory = METRICS["activation_flips"].fn(snap(mlp, p0, x=x, y=x[..., :1], probe=4), {})
    values, _ = METRICS["activation_flips"].fn(snap(mlp, p, p0, x=x, y=x[..., :1], probe=4), memory)
    assert [values["activation_flips/1"].item(), values["activation_flips/2"].item()] == expected


@pytest.mark.parametrize("overrides", [["model=deep_linear"], ["model.activation=tanh"], ["model.activation=linear"]])
def test_activation_flips_needs_kinked_hidden_units(overrides):
    with pytest.raises(ConfigError, match=r"metrics\.names\[0\]=.activation_flips.*relu or abs"):
        build(make_cfg(*overrides, "metrics.names=[activation_flips]"))


# ---------------------------------------------------------------------------------------------------------------
# lojasiewicz
def loj(model, params, rows: list[tuple[float, float, float]], floor: float = 0.0) -> list[dict[str, float]]:
    """The metric along rows (t, L, ‖∇L‖) of one member, memory carried from row to row as in a run."""
    memory, out = {}, []
    for time, loss, grad_norm in rows:
        grad = {"W1": t([[[grad_norm]]])}
        s = snap(model, params, times=[time], loss=t([loss]), grad=grad, loss_floor=floor)
        values, memory = METRICS["lojasiewicz"].fn(s, memory)
        out.append({k: v.item() for k, v in values.items()})
    return out


LINEAR = SimpleNamespace(input_dim=1, output_dim=1, param_shapes={})  # the metric reads only L, ‖∇L‖ and t
ONE = {"W1": t([[[1.0]]])}


def test_lojasiewicz_on_exact_curves():
    """L = t⁻³ -> loss_slope −3; L = e^{−2t} -> loss_rate 2; ‖∇L‖ = 1.5·L^{2/3} -> loj_exponent 2/3 (Xu–Du's
    rate, docs/theory.md §6.4); pl_ratio and kappa by definition."""
    power = loj(LINEAR, ONE, [(tt, tt**-3, 1.5 * tt**-2) for tt in (2.0, 5.0, 11.0)])
    for row in power[1:]:
        assert row["loss_slope"] == pytest.approx(-3.0, rel=1e-13)
        assert row["loj_exponent"] == pytest.approx(2 / 3, rel=1e-13)
    assert power[2]["pl_ratio"] == pytest.approx((1.5 * 11.0**-2) ** 2 / 11.0**-3, rel=1e-14)
    assert power[2]["kappa"] == pytest.approx(1.5 * 11.0**-2 / 11.0**-3, rel=1e-14)
    exponential = loj(LINEAR, ONE, [(tt, math.exp(-2 * tt), 0.3) for tt in (1.0, 1.7, 4.0)])
    for row in exponential[1:]:
        assert row["loss_rate"] == pytest.approx(2.0, rel=1e-13)
    assert all(math.isnan(power[0][k]) for k in ("loj_exponent", "loss_slope", "loss_rate"))  # no previous row


def test_lojasiewicz_memory_is_float64_in_a_float32_run():
    """L = 1e-10 then 1e-10·(1 − 1e-5), a unit of t apart, in float32: loss_rate ≈ 1e-5 from the float32 losses;
    a float32 memory would round log L ≈ −23 to ~2e-6 and get the rate 10% wrong."""
    losses = [1e-10, 1e-10 * (1 - 1e-5)]
    values32 = [torch.tensor([v], dtype=torch.float32) for v in losses]
    memory, rate = {}, None
    for time, loss in zip((1.0, 2.0), values32):
        s = snap(LINEAR, ONE, times=[time], loss=loss, grad={"W1": t([[[1.0]]])})
        values, memory = METRICS["lojasiewicz"].fn(s, memory)
        rate = values["loss_rate"].item()
    exact = -math.log(values32[1].item() / values32[0].item())  # from the float32 losses themselves
    assert rate == pytest.approx(exact, rel=1e-9) and exact == pytest.approx(1e-5, rel=1e-2)


def test_lojasiewicz_undefined_cells_are_empty():
    rows = loj(LINEAR, ONE, [(0.0, 1.0, 1.0), (0.5, 0.5, 0.8), (0.5, 0.5, 0.8), (1.0, 0.2, 0.4)], floor=0.3)
    assert math.isnan(rows[1]["loss_slope"])  # the previous row is at t = 0
    assert rows[1]["loss_rate"] == pytest.approx(-(math.log(0.2) - math.log(0.7)) / 0.5, rel=1e-14)
    assert all(math.isnan(rows[2][k]) for k in ("loj_exponent", "loss_slope", "loss_rate"))  # nothing moved
    assert all(math.isnan(rows[3][k]) for k in rows[3])  # L̃ = 0.2 − 0.3 < 0: nothing is defined


def test_lojasiewicz_matches_two_logged_rows(tmp_path):
    """In a run: each row's columns from its own and the previous row's loss, grad_norm and t in metrics.csv."""
    floor = 1e-3
    run_overrides(tmp_path, "model=deep_linear", "task=matrix_cost", "task.target=2.0", "trainer.lr=0.002",
                  "trainer.steps=60", "metrics.every=7", f"metrics.loss_floor={floor}",
                  "metrics.names=[grad_norm,lojasiewicz]", "logger.tensorboard=false")
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = [{k: float(v) if v else math.nan for k, v in r.items()} for r in csv.DictReader(f)]
    assert len(rows) == 10
    for prev, row in zip(rows, rows[1:]):
        lt, lt0 = math.log(row["loss"] - floor), math.log(prev["loss"] - floor)
        g, g0 = row["grad_norm"], prev["grad_norm"]
        assert row["pl_ratio"] == pytest.approx(g * g / (row["loss"] - floor), rel=1e-12)
        assert row["kappa"] == pytest.approx(g / (row["loss"] - floor), rel=1e-12)
        assert row["loj_exponent"] == pytest.approx((math.log(g) - math.log(g0)) / (lt - lt0), rel=1e-9)
        assert row["loss_rate"] == pytest.approx(-(lt - lt0) / (row["t"] - prev["t"]), rel=1e-9)
        if prev["t"] > 0:
            assert row["loss_slope"] == pytest.approx((lt - lt0) / math.log(row["t"] / prev["t"]), rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# metrics with memory, heavy metrics, selection and errors
def test_memory_moves_on_only_for_written_members():
    """Row 2 is written for member 0 only (member 1's step and t did not change): member 1's next loss_rate
    is measured from its row 1, member 0's from its row 2."""
    evaluator = Evaluator({"lojasiewicz": METRICS["lojasiewicz"]})
    params = {"W1": t([[[1.0]], [[1.0]]])}

    def row(times, losses, written):
        s = snap(LINEAR, params, times=times, loss=t(losses), grad={"W1": t([[[1.0]], [[1.0]]])})
        return evaluator(s, written)["loss_rate"].tolist()
    row([1.0, 1.0], [1.0, 1.0], [True, True])
    row([2.0, 2.0], [0.5, 0.5], [True, False])
    rates = row([3.0, 3.0], [0.25, 0.1], [True, True])
    assert rates[0] == pytest.approx(math.log(2), rel=1e-14)  # from t = 2, L = ½
    assert rates[1] == pytest.approx(math.log(10) / 2, rel=1e-14)  # from t = 1, L = 1 (from row 2: log 5)


def test_evaluator_state_round_trip():
    """A checkpoint's view: an evaluator restored from another's state_dict continues with the same values."""
    exp = build(make_cfg("metrics.names=[auto,ntk]"))
    params0 = exp.objective.model.init_params([torch.Generator().manual_seed(0)])
    x, y = exp.task.data()
    states = [params0, {k: v * 1.1 for k, v in params0.items()}, {k: v * 1.2 for k, v in params0.items()}]

    def snapshot(params, time):
        return Snapshot(iteration=0, steps=[0], t=[time], params=params, params0=params0, objective=exp.objective,
                        task=exp.task, x=x[None], y=y[None], settings=exp.settings)
    first = Evaluator(exp.metrics)
    for i, p in enumerate(states[:2]):
        first(snapshot(p, float(i)))
    second = Evaluator(exp.metrics)
    second.load_state_dict(first.state_dict())
    a, b = first(snapshot(states[2], 2.0)), second(snapshot(states[2], 2.0))
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
    assert a["ntk_change_rel"].item() > 0 and not math.isnan(a["loss_rate"].item())  # memory was used


def read_csv(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.filterwarnings("ignore:trainer.method=dopri5 on a model with kinks")
def test_a_member_out_of_steps_after_rejections_has_its_final_heavy_values(tmp_path):
    """A member whose step budget runs out after rejected steps only stops at the step and t of its last row, so
    metrics.csv does not repeat that row; its heavy values at the stop are still its final ones in summary.json."""
    summary = run_overrides(tmp_path, "trainer=gradient_flow", "trainer.method=dopri5", "trainer.max_steps=30",
                            "trainer.t_max=50", "ensemble.size=4", "metrics.every=1", "metrics.heavy_every=1000",
                            "metrics.names=[hessian]", "logger.tensorboard=false")
    assert [m["status"] for m in summary["members"]] == ["step_budget"] * 4
    assert all(m["final"]["hessian_max"] is not None for m in summary["members"])


def test_heavy_metrics_on_their_grid_first_last_and_stop_rows(tmp_path):
    """21 rows (every step), heavy_every=8: hessian at rows 0, 8, 16 and the last; empty elsewhere. The light
    metrics are on every row. summary.json has metric_seconds for every metric, and each member's final extremes."""
    summary = run_overrides(tmp_path, "model=deep_linear", "task=matrix_cost", "trainer.steps=20", "trainer.lr=0.01",
                            "metrics.every=1", "metrics.heavy_every=8", "metrics.names=[lojasiewicz,hessian]",
                            "logger.tensorboard=false")
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(21))
    assert [int(r["step"]) for r in rows if r["hessian_max"]] == [0, 8, 16, 20]
    assert all(r["pl_ratio"] for r in rows)
    assert set(summary["metric_seconds"]) == {"loss", "lojasiewicz", "hessian"}
    assert all(v >= 0 for v in summary["metric_seconds"].values())
    final = summary["members"][0]["final"]
    assert final["hessian_max"] > 0 and final["hessian_min"] is not None and final["hessian_negative"] is not None


def test_a_member_stop_row_is_heavy(tmp_path):
    """GD members stop at their first step below the target, mostly off the grid (every 4 steps; heavy on every
    2nd grid row: steps 0, 8, 16, ...): each member's stop row carries the heavy metrics, and the stop rows do not
    shift the heavy grid rows."""
    summary = run_overrides(tmp_path, "model=deep_linear", "task=matrix_cost", "ensemble.size=4", "trainer.lr=0.01",
                            "trainer.steps=400", "trainer.target_loss=1e-3", "metrics.every=4",
                            "metrics.heavy_every=2", "metrics.names=[layer_change_spec]", "logger.tensorboard=false")
    stops = [m["stop_step"] for m in summary["members"]]
    assert all(m["status"] == "converged" for m in summary["members"]) and len(set(stops)) > 1
    assert any(s % 4 and s < max(stops) - 8 for s in stops)  # an early stop-only row, grid rows after it
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    heavy = {(int(r["member"]), int(r["step"])) for r in rows if r["layer_change_spec/W1"]}
    assert {(e, 0) for e in range(4)} | {(e, s) for e, s in enumerate(stops)} <= heavy
    # whole iterations are heavy (every member's row there): the grid's every 2nd row and the stops
    grid_heavy = {s for s in range(0, max(stops) + 1, 8)}
    assert {step for _, step in heavy} == grid_heavy | set(stops)
    assert any(not r["layer_change_spec/W1"] for r in rows)  # light rows in between stay empty
    table = aggregate(tmp_path / "run")
    assert table["final_layer_change_spec/W1"].notna().all()  # sweep.csv gets the final heavy values


def test_auto_in_a_list_adds_heavy_metrics():
    exp = build(make_cfg("metrics.names=[auto,hessian,ntk]"))
    auto = set(build(make_cfg()).metrics)
    assert set(exp.metrics) == auto | {"hessian", "ntk"}
    assert {"lojasiewicz", "teacher", "layer_change", "activation_flips"} <= auto
    assert not auto & {"hessian", "ntk", "layer_change_spec"}  # heavy: only when named


@pytest.mark.parametrize("override, key", [
    ("metrics.probe=0", "metrics.probe"),
    ("metrics.probe=201", "metrics.probe"),  # the teacher task has n = 200
    ("metrics.heavy_every=0", "metrics.heavy_every"),
    ("metrics.lanczos_steps=1", "metrics.lanczos_steps"),
    ("metrics.hessian_dense_max=-1", "metrics.hessian_dense_max"),
    ("metrics.loss_floor=nan", "metrics.loss_floor"),
    ("metrics.names=[auto,hesian]", "metrics.names[1]"),
])
def test_bad_metric_settings_are_config_errors(override, key):
    with pytest.raises(ConfigError) as info:
        build(make_cfg(override))
    assert info.value.key == key and key in str(info.value)


def test_probe_defaults_to_at_most_32_samples():
    assert build(make_cfg()).settings.probe == 32
    assert build(make_cfg("task.n=20")).settings.probe == 20
    assert build(make_cfg("metrics.probe=200")).settings.probe == 200


def test_each_member_last_row_is_heavy_when_it_reaches_t_max_early(tmp_path):
    """Adaptive steps logged every accepted step: members reach t_max at different iterations and wait there
    (their rows are not written again). heavy_every=1000 leaves only the first and last rows heavy, and each
    member's own last row (at t_max) carries the heavy metrics, so summary.json has every member's final λ_max."""
    summary = run_overrides(tmp_path, "model=deep_linear", "task=linear_regression", "trainer=gradient_flow",
                            "trainer.method=dopri5", "trainer.t_max=2", "ensemble.size=3", "metrics.every=1",
                            "metrics.heavy_every=1000", "metrics.names=[hessian]", "logger.tensorboard=false")
    steps = [m["steps"] for m in summary["members"]]
    assert len(set(steps)) == 3  # the members finish at different iterations
    assert all(m["final"]["hessian_max"] is not None for m in summary["members"])
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    for member, last in enumerate(steps):
        mine = [r for r in rows if int(r["member"]) == member]
        assert float(mine[-1]["t"]) == 2.0 and int(mine[-1]["step"]) == last and mine[-1]["hessian_max"]
        assert not all(r["hessian_max"] for r in mine)  # and in between they are light
