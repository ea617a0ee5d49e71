"""Metrics against hand computations on tiny hand-made states, the logging grid, and metric selection.

Every expected number below is worked out by hand (written as an exact expression in the comments) or by a
few lines of plain numpy that do not go through dynamics_bench; none is copied from a run.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dynamics_bench.config import ConfigError
from dynamics_bench.losses import MSE, CrossEntropy, Logistic
from dynamics_bench.clocks import FixedClock, GridSpec, log_steps, log_times
from dynamics_bench.metrics import METRICS, MetricsConfig, evaluate, select_metrics
from dynamics_bench.trainers import GDConfig
from dynamics_bench.metrics.alignment import LIVE_FRACTION
from dynamics_bench.metrics.base import Snapshot
from dynamics_bench.models.deep_linear import DeepLinear
from dynamics_bench.models.two_layer import TwoLayer
from dynamics_bench.objective import Objective
from dynamics_bench.experiment import build
from dynamics_bench.tasks.base import Teacher
from tests.conftest import make_cfg

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def deep_linear(depth: int, width: int, d: int, o: int) -> DeepLinear:
    return DeepLinear(depth=depth, width=width, init="gaussian", init_scale=1.0, init_values=None,
                      input_dim=d, output_dim=o)


def two_layer(width: int, d: int, activation: str = "relu", bias: bool = False,
              output_layer: str = "trainable") -> TwoLayer:
    return TwoLayer(width=width, activation=activation, output_layer=output_layer, bias=bias, init="gaussian",
                    init_scale=1.0, init_values=None, input_dim=d, output_dim=1)


def snap(model, params, params0=None, *, x=None, y=None, loss=None, sum_over_samples=True, task=None,
         **kw) -> Snapshot:
    e = next(iter(params.values())).shape[0]
    if x is None:  # a dummy one-sample data set: metrics that do not look at data ignore it
        x = torch.zeros(e, 1, model.input_dim, dtype=F64)
        y = torch.zeros(e, 1, model.output_dim, dtype=F64)
    objective = Objective(model=model, loss=loss or MSE(), sum_over_samples=sum_over_samples)
    return Snapshot(iteration=0, steps=[0] * e, t=[0.0] * e, params=params,
                    params0=params if params0 is None else params0, objective=objective,
                    task=task or SimpleNamespace(teacher=None), x=x, y=y, **kw)


# ---------------------------------------------------------------------------------------------------------------
# loss, grad_norm, param_norm, weight_change(_rel)
def test_basic_metrics_by_hand():
    """Depth-2 linear net on the matrix cost ½‖W2W1 − M‖²_F (x = I, y = Mᵀ, summed over samples)."""
    model = deep_linear(2, 2, 2, 2)
    w1 = [[1.0, 2.0], [0.0, 1.0]]
    w2 = [[1.0, 0.0], [1.0, -1.0]]
    m = [[1.0, 1.0], [0.0, 2.0]]
    # W2W1 = [[1, 2], [1, 1]]; R = W2W1 − M = [[0, 1], [1, -1]]; L = ½(0 + 1 + 1 + 1) = 1.5
    # G1 = W2ᵀR with W2ᵀ = [[1, 1], [0, -1]] -> G1 = [[1, 0], [-1, 1]], ‖G1‖² = 3
    # G2 = R W1ᵀ, W1ᵀ = [[1, 0], [2, 1]] -> G2 = [[2, 1], [-1, -1]], ‖G2‖² = 7  => grad_norm = √10
    # ‖θ‖² = (1 + 4 + 0 + 1) + (1 + 0 + 1 + 1) = 9 => param_norm = 3
    params = {"W1": t([w1, w1]), "W2": t([w2, w2])}
    # member 0 starts at W1(0) = W1 − [[1, 0], [0, 0]], W2(0) = W2 − [[0, 0], [0, 2]] -> ‖θ − θ0‖ = √5,
    #   ‖θ0‖² = (0 + 4 + 0 + 1) + (1 + 0 + 1 + 1) = 8 -> rel = √5/√8
    # member 1 starts at θ0 = 0 -> weight_change = ‖θ‖ = 3, rel undefined (NaN)
    params0 = {"W1": t([[[0.0, 2.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]),
               "W2": t([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])}
    x = torch.eye(2, dtype=F64).expand(2, 2, 2)
    y = t(m).T.expand(2, 2, 2)
    names = ["loss", "grad_norm", "param_norm", "weight_change"]
    out = evaluate({k: METRICS[k] for k in names}, snap(model, params, params0, x=x, y=y))
    assert set(out) == {"loss", "grad_norm", "param_norm", "weight_change", "weight_change_rel"}
    assert all(v.shape == (2,) for v in out.values())
    torch.testing.assert_close(out["loss"], t([1.5, 1.5]), rtol=1e-14, atol=0)
    torch.testing.assert_close(out["grad_norm"], t([math.sqrt(10)] * 2), rtol=1e-14, atol=0)
    torch.testing.assert_close(out["param_norm"], t([3.0, 3.0]), rtol=1e-14, atol=0)
    torch.testing.assert_close(out["weight_change"], t([math.sqrt(5), 3.0]), rtol=1e-14, atol=0)
    rel = out["weight_change_rel"]
    assert rel[0].item() == pytest.approx(math.sqrt(5 / 8), rel=1e-14)
    assert math.isnan(rel[1].item())


def test_loss_metric_uses_mean_reduction_without_sum_over_samples():
    """The same state on a 2-sample regression set with mean reduction: L = mean of ½r²."""
    model = deep_linear(1, 1, 2, 1)
    params = {"W1": t([[[1.0, -2.0]]])}  # f(x) = x1 − 2x2
    x = t([[[1.0, 1.0], [3.0, 0.0]]])  # outputs −1, 3
    y = t([[[1.0], [0.0]]])  # residuals −2, 3 -> ½(4 + 9)/2 = 3.25
    out = METRICS["loss"].fn(snap(model, params, x=x, y=y, sum_over_samples=False))
    assert out["loss"].item() == pytest.approx(3.25, rel=1e-15)


def test_cached_loss_and_grad_are_used():
    """Full-batch trainers hand over L and ∇L; metrics must report those, not recompute them."""
    model = deep_linear(1, 1, 1, 1)
    params = {"W1": t([[[2.0]]])}
    s = snap(model, params, loss=None)
    s.loss, s.grad = t([7.0]), {"W1": t([[[3.0]]])}
    out = evaluate({k: METRICS[k] for k in ("loss", "grad_norm")}, s)
    assert out["loss"].item() == 7.0 and out["grad_norm"].item() == 3.0


# ---------------------------------------------------------------------------------------------------------------
# accuracy
DATA_X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]
DATA_Y = [0, 1, 1, 0]


def test_accuracy_cross_entropy_by_hand():
    model = deep_linear(1, 1, 2, 2)  # logits = W x
    w = [[1.0, 0.0], [0.0, 2.0]]
    # member 0: logits (1,0) (0,2) (1,2) (−1,0) -> classes 0 1 1 1 vs 0 1 1 0: 3/4
    # member 1 (−W): logits (−1,0) (0,−2) (−1,−2) (1,0) -> classes 1 0 0 0: only the last is right, 1/4
    params = {"W1": t([w, (-np.array(w)).tolist()])}
    x, y = t(DATA_X).expand(2, 4, 2), torch.tensor(DATA_Y).expand(2, 4)
    out = METRICS["accuracy"].fn(snap(model, params, x=x, y=y, loss=CrossEntropy(), sum_over_samples=False))
    torch.testing.assert_close(out["accuracy"], t([0.75, 0.25]), rtol=0, atol=0)


def test_accuracy_logistic_by_hand():
    model = deep_linear(1, 1, 2, 1)  # one score; class 1 iff score > 0
    # scores 1, −1, 0, −1 -> classes 1 0 0 0 vs 0 1 1 0: only the last is right (0 is not > 0)
    params = {"W1": t([[[1.0, -1.0]]])}
    x, y = t([DATA_X]), torch.tensor([DATA_Y])
    out = METRICS["accuracy"].fn(snap(model, params, x=x, y=y, loss=Logistic(), sum_over_samples=False))
    assert out["accuracy"].item() == 0.25


# ---------------------------------------------------------------------------------------------------------------
# deep-linear imbalance C_i = W_iW_iᵀ − W_{i+1}ᵀW_{i+1}
W1 = [[1.0, 2.0], [0.0, 1.0]]
W2 = [[1.0, 0.0], [1.0, 1.0]]
W3 = [[2.0, -1.0]]


def test_deep_linear_imbalance_by_hand():
    """Depth 3 (2 -> 2 -> 2 -> 1), worked by hand:
    W1W1ᵀ = [[5, 2], [2, 1]], W2ᵀW2 = [[2, 1], [1, 1]]  -> C1 = [[3, 1], [1, 0]],  ‖C1‖ = √11
    W2W2ᵀ = [[1, 1], [1, 2]], W3ᵀW3 = [[4, −2], [−2, 1]] -> C2 = [[−3, 3], [3, 1]], ‖C2‖ = √28
    θ0: W1 = W2 = I, W3 = [[1, 0]] -> C1(0) = 0, C2(0) = [[0, 0], [0, 1]]; scales ‖W1‖²+‖W2‖² = 4, ‖W2‖²+‖W3‖² = 3
    member 0: drift = max(‖C1 − C1(0)‖, ‖C2 − C2(0)‖) = max(√11, ‖[[−3, 3], [3, 0]]‖ = √27) = √27, rel = √27/4
    member 1 = 2θ (every C_i ×4): imbalance 4√28; drift = max(4√11, ‖[[−12, 12], [12, 3]]‖ = √441 = 21) = 21,
      rel 21/4  (÷ the max scale 4 over layers, not the drifting pair's 3)
    """
    model = deep_linear(3, 2, 2, 1)
    two = lambda m: (2 * np.array(m)).tolist()  # noqa: E731
    params = {"W1": t([W1, two(W1)]), "W2": t([W2, two(W2)]), "W3": t([W3, two(W3)])}
    eye = [[1.0, 0.0], [0.0, 1.0]]
    params0 = {"W1": t([eye, eye]), "W2": t([eye, eye]), "W3": t([[[1.0, 0.0]]] * 2)}
    out = METRICS["imbalance"].fn(snap(model, params, params0))
    assert set(out) == {"imbalance", "imbalance_drift", "imbalance_drift_rel", "imbalance/1", "imbalance/2"}
    expect = {
        "imbalance/1": [math.sqrt(11), 4 * math.sqrt(11)],
        "imbalance/2": [math.sqrt(28), 4 * math.sqrt(28)],
        "imbalance": [math.sqrt(28), 4 * math.sqrt(28)],
        "imbalance_drift": [math.sqrt(27), 21.0],
        "imbalance_drift_rel": [math.sqrt(27) / 4, 21.0 / 4],
    }
    for k, v in expect.items():
        torch.testing.assert_close(out[k], t(v), rtol=1e-14, atol=0, msg=k)


def test_deep_linear_imbalance_zero_drift_at_init():
    model = deep_linear(3, 2, 2, 1)
    params = {"W1": t([W1]), "W2": t([W2]), "W3": t([W3])}
    out = METRICS["imbalance"].fn(snap(model, params))  # params0 = params
    assert out["imbalance_drift"].item() == 0.0 and out["imbalance_drift_rel"].item() == 0.0
    assert out["imbalance"].item() == pytest.approx(math.sqrt(28), rel=1e-14)


def test_vector_case_imbalance_c():
    """Theory §1.6.1: c = 2tr(C²) − tr(C)² = (‖w1‖² + ‖w2‖²)² − 4(w2·w1)².
    w1 = (1, 2, −1)ᵀ, w2 = (0.5, −1, 2): ‖w1‖² = 6, ‖w2‖² = 5.25, w2·w1 = −3.5 -> c = 11.25² − 49 = 77.5625.
    Member 1: w1 = (1, 0, 0)ᵀ, w2 = (1, 0, 0) (balanced, C = 0) -> c = 2² − 4 = 0."""
    model = deep_linear(2, 3, 1, 1)
    params = {"W1": t([[[1.0], [2.0], [-1.0]], [[1.0], [0.0], [0.0]]]),
              "W2": t([[[0.5, -1.0, 2.0]], [[1.0, 0.0, 0.0]]])}
    out = METRICS["imbalance"].fn(snap(model, params))
    torch.testing.assert_close(out["imbalance_c"], t([77.5625, 0.0]), rtol=1e-14, atol=1e-14)
    # independent numpy check of the identity on random vectors
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5, 1)), rng.normal(size=(4, 1, 5))
    expected = (np.sum(a**2, (1, 2)) + np.sum(b**2, (1, 2))) ** 2 - 4 * np.einsum("eij,eji->e", b, a) ** 2
    got = METRICS["imbalance"].fn(snap(deep_linear(2, 5, 1, 1), {"W1": t(a), "W2": t(b)}))["imbalance_c"]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("depth, d, o", [(3, 1, 1), (2, 2, 1), (2, 1, 2)])
def test_imbalance_c_only_in_vector_case(depth, d, o):
    model = deep_linear(depth, 3, d, o)
    params = model.init_params([torch.Generator().manual_seed(0)])
    out = METRICS["imbalance"].fn(snap(model, params))
    assert "imbalance_c" not in out
    assert {f"imbalance/{i}" for i in range(1, depth)} <= set(out)


# ---------------------------------------------------------------------------------------------------------------
# two-layer neuron imbalance a_j² − ‖w_j‖² − b_j²
def test_two_layer_neuron_imbalance_with_bias_by_hand():
    """w = [[1, 2], [0, 1], [3, 0]], a = (2, −1, 1), b = (0.5, 1, −2):
    a² − ‖w‖² − b² = (4 − 5 − 0.25, 1 − 1 − 1, 1 − 9 − 4) = (−1.25, −1, −12) -> imbalance = 12
    θ0: w = [[1, 0], [0, 1], [1, 1]], a = (1, 1, 1), b = 0 -> (0, 0, −1); scales a² + ‖w‖² + b² = (2, 2, 3)
    drift = max(1.25, 1, 11) = 11, rel = max_j drift_j/scale_j = max(0.625, 0.5, 11/3) = 11/3.
    Width 3 ≤ 16: the signed q_j also come as imbalance/1..3."""
    model = two_layer(3, 2, bias=True)
    params = {"w": t([[[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]]]), "a": t([[[2.0, -1.0, 1.0]]]),
              "b": t([[0.5, 1.0, -2.0]])}
    params0 = {"w": t([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]), "a": t([[[1.0, 1.0, 1.0]]]), "b": t([[0.0] * 3])}
    out = METRICS["imbalance"].fn(snap(model, params, params0))
    assert set(out) == {"imbalance", "imbalance_drift", "imbalance_drift_rel", "imbalance/1", "imbalance/2",
                        "imbalance/3"}
    for j, q in enumerate([-1.25, -1.0, -12.0]):
        assert out[f"imbalance/{j + 1}"].item() == pytest.approx(q, rel=1e-15)
    assert out["imbalance"].item() == pytest.approx(12.0, rel=1e-15)
    assert out["imbalance_drift"].item() == pytest.approx(11.0, rel=1e-15)
    assert out["imbalance_drift_rel"].item() == pytest.approx(11.0 / 3, rel=1e-15)


def test_two_layer_neuron_imbalance_without_bias():
    """Same w, a without bias: a² − ‖w‖² = (−1, 0, −8); θ0 as above without b: (0, 0, −1), scales (2, 2, 3)
    -> imbalance 8, drift max(1, 0, 7) = 7, rel 7/3."""
    model = two_layer(3, 2, bias=False)
    params = {"w": t([[[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]]]), "a": t([[[2.0, -1.0, 1.0]]])}
    params0 = {"w": t([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]), "a": t([[[1.0, 1.0, 1.0]]])}
    out = METRICS["imbalance"].fn(snap(model, params, params0))
    assert out["imbalance"].item() == pytest.approx(8.0, rel=1e-15)
    assert out["imbalance_drift"].item() == pytest.approx(7.0, rel=1e-15)
    assert out["imbalance_drift_rel"].item() == pytest.approx(7.0 / 3, rel=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# alignment (theory §6.5)
TEACHER_W = [[2.0, 0.0], [0.0, 0.5]]  # directions e1, e2; norms must not matter
# student neurons, directions and ‖a_j‖·‖w_j‖ weights:
#  n1 w = (2, 0),           a = 1     -> (1, 0),               weight 2
#  n2 w = (1, 0.2),         a = 0.5   -> (1, 0.2)/√1.04,       weight 0.5√1.04
#  n3 w = (0, −3),          a = −2    -> (0, −1),              weight 6
#  n4 w = (−1e-4, −1e-4),   a = 0.01  -> −(1, 1)/√2,           weight 0.01·√2·1e-4 ≈ 1.4e-6 < 1e-3·6: dead
#  n5 w = (0.009, 0.003),   a = 1     -> (3, 1)/√10,           weight 0.003√10 ≈ 9.5e-3 > 1e-3·6: live
STUDENT_W = [[2.0, 0.0], [1.0, 0.2], [0.0, -3.0], [-1e-4, -1e-4], [0.009, 0.003]]
STUDENT_A = [1.0, 0.5, -2.0, 0.01, 1.0]
WEIGHTS = [2.0, 0.5 * math.sqrt(1.04), 6.0, 0.01 * math.sqrt(2) * 1e-4, 0.003 * math.sqrt(10)]
C2 = 1 / math.sqrt(1.04)  # n2's cosine with e1
SIGNED_BEST = [1.0, C2, 0.0, -1 / math.sqrt(2), 3 / math.sqrt(10)]  # max_i cos(w_j, w_i*)
ABS_BEST = [1.0, C2, 1.0, 1 / math.sqrt(2), 3 / math.sqrt(10)]  # max_i |cos|


def _mean(best):
    return sum(w * b for w, b in zip(WEIGHTS, best)) / sum(WEIGHTS)


@pytest.mark.parametrize("student, teacher, expected", [
    # signed: teacher e2's best student is n5 (1/√10 > n2's 0.2/√1.04; n3 is −1); live students' worst is n3 (0),
    # and n4 (−1/√2) is dead
    ("relu", "relu", (1 / math.sqrt(10), 0.0, _mean(SIGNED_BEST))),
    # |cos| when either activation is even: e2 is matched by n3; live worst is n5 (3/√10); n4 (1/√2) is dead
    ("abs", "relu", (1.0, 3 / math.sqrt(10), _mean(ABS_BEST))),
    ("relu", "abs", (1.0, 3 / math.sqrt(10), _mean(ABS_BEST))),
])
def test_alignment_by_hand(student, teacher, expected):
    assert LIVE_FRACTION == 1e-3
    model = two_layer(5, 2, activation=student)
    params = {"w": t([STUDENT_W]), "a": t([[STUDENT_A]])}
    task = SimpleNamespace(teacher=Teacher(weights=t(TEACHER_W), activation=teacher))
    out = METRICS["alignment"].fn(snap(model, params, task=task))
    teacher_min, student_min, student_mean = expected
    assert out["alignment_teacher_min"].item() == pytest.approx(teacher_min, rel=1e-14, abs=1e-15)
    assert out["alignment_student_min"].item() == pytest.approx(student_min, rel=1e-14, abs=1e-15)
    assert out["alignment_student_mean"].item() == pytest.approx(student_mean, rel=1e-14)


def test_alignment_fixed_output_layer_weights_by_w_norm():
    """output_layer=fixed: a_j = 1, so the weight is ‖w_j‖. w = (3, 0) (weight 3, cos 1 with e1) and
    w = (0, 1) (weight 1, cos 0 with e1): student_mean = (3·1 + 1·0)/4 = 0.75 against a teacher e1 alone."""
    model = two_layer(2, 2, output_layer="fixed")
    params = {"w": t([[[3.0, 0.0], [0.0, 1.0]]])}
    task = SimpleNamespace(teacher=Teacher(weights=t([[1.0, 0.0]]), activation="relu"))
    out = METRICS["alignment"].fn(snap(model, params, task=task))
    assert out["alignment_student_mean"].item() == pytest.approx(0.75, rel=1e-15)
    assert out["alignment_teacher_min"].item() == pytest.approx(1.0, rel=1e-15)
    assert out["alignment_student_min"].item() == pytest.approx(0.0, abs=1e-15)


def test_alignment_with_no_live_student_is_nan():
    """All-zero students: nothing is live, so there is no worst live cosine (NaN, an empty cell), not 1."""
    model = two_layer(2, 2)
    params = {"w": t([[[0.0, 0.0], [0.0, 0.0]]]), "a": t([[[0.0, 0.0]]])}
    task = SimpleNamespace(teacher=Teacher(weights=t([[1.0, 0.0]]), activation="relu"))
    out = METRICS["alignment"].fn(snap(model, params, task=task))
    assert math.isnan(out["alignment_student_min"].item())


# ---------------------------------------------------------------------------------------------------------------
# log grid
@pytest.mark.parametrize("steps, points", [(10_000, 100), (1_000_000, 50), (123_457, 30), (500, 100)])
def test_log_grid_large(steps, points):
    grid = sorted(log_steps(steps, points))
    assert len(grid) == points == len(set(grid))
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == steps
    assert all(0 <= g <= steps for g in grid)
    # Log-spaced at the top: where rounding to integers no longer matters (g >= 100: ±0.5% each), consecutive
    # ratios are all equal, and clearly above a uniform grid's top ratio (≈ 1 + 1/points).
    top = [g for g in grid if g >= 100]
    ratios = np.array(top[1:]) / np.array(top[:-1])
    assert len(ratios) >= 5
    r = np.median(ratios)
    assert np.all(np.abs(ratios / r - 1) < 0.02), ratios
    assert r > 1 + 2.0 / points  # clearly geometric, not uniform
    # a geometric sequence from 1 to steps with ratio r has 1 + ln(steps)/ln(r) points: at least points − 1
    n = 1 + math.log(steps) / math.log(r)
    assert n >= points - 1 - 0.5
    # the dense low end starts at every step, and gaps only grow (up to ±1 from rounding)
    assert grid[:3] == [0, 1, 2]
    gaps = np.diff(grid)
    assert np.all(gaps[1:] >= gaps[:-1] - 1)


def test_log_grid_two_points_is_first_and_last():
    assert log_steps(1000, 2) == {0, 1000}


@pytest.mark.parametrize("steps, points", [(0, 100), (5, 100), (99, 100), (1, 2)])
def test_log_grid_small_is_every_step(steps, points):
    assert log_steps(steps, points) == set(range(steps + 1))


@pytest.mark.parametrize("points", [2, 5, 100])
def test_log_grid_has_exactly_points_rows_at_the_boundary(points):
    """Every step while there are at most `points` (steps + 1 ≤ points), else exactly `points` rows: steps =
    points − 1, points and points + 1 straddle the switch."""
    for steps in range(points - 2, points + 3):
        grid = log_steps(steps, points)
        assert len(grid) == min(points, steps + 1) and {0, steps} <= grid, (steps, sorted(grid))


@pytest.mark.parametrize("steps, every, expected", [
    (10, 3, {0, 3, 6, 9, 10}),
    (9, 3, {0, 3, 6, 9}),
    (5, 1, {0, 1, 2, 3, 4, 5}),
    (4, 10, {0, 4}),
    (0, 2, {0}),
])
def test_log_grid_every(steps, every, expected):
    schedule = GDConfig(lr=1.0, steps=steps).schedule(torch.finfo(torch.float64).eps)
    assert FixedClock(schedule, GridSpec(every=every), 1).grid == expected


# ---------------------------------------------------------------------------------------------------------------
# select_metrics
BASIC = {"loss", "grad_norm", "param_norm", "weight_change", "lojasiewicz", "layer_change"}
FLIPS = {"activation_flips"}  # hidden relu or abs units
FIRST_ROW_EMPTY = {"loj_exponent", "loss_slope", "loss_rate"}  # need a previous row


@pytest.mark.parametrize("overrides, expected", [
    (["model=mlp"], BASIC | FLIPS),
    (["model=two_layer"], BASIC | FLIPS | {"imbalance", "alignment", "teacher"}),
    (["model=two_layer", "model.activation=tanh"], BASIC | {"alignment"}),
    (["model=two_layer", "model.output_layer=fixed"], BASIC | FLIPS | {"alignment", "teacher"}),
    (["model=two_layer", "task=linear_regression", "task.output_dim=1"], BASIC | FLIPS | {"imbalance"}),
    (["model=deep_linear", "task=classification", "loss=cross_entropy"], BASIC | {"accuracy", "imbalance"}),
    (["model=deep_linear", "model.depth=1", "task=matrix_cost"], BASIC),
    (["model=mlp", "task=classification", "loss=logistic"], BASIC | FLIPS | {"accuracy"}),
])
def test_auto_selects_only_applicable_metrics(overrides, expected):
    exp = build(make_cfg(*overrides, "metrics.names=auto"))
    assert set(exp.metrics) == expected
    # and every selected metric really evaluates on this experiment's model and task
    model = exp.objective.model
    params = model.init_params([torch.Generator().manual_seed(0)])
    x, y = exp.task.data()
    s = Snapshot(iteration=0, steps=[0], t=[0.0], params=params, params0=params, objective=exp.objective,
                 task=exp.task, x=x[None], y=y[None], settings=exp.settings)
    values = evaluate(exp.metrics, s)
    assert all(torch.isfinite(v).all() for k, v in values.items() if k not in FIRST_ROW_EMPTY)
    assert all(torch.isnan(values[k]).all() for k in FIRST_ROW_EMPTY & set(values))


def test_explicit_names_select_those_plus_loss():
    exp = build(make_cfg("model=deep_linear", "task=matrix_cost", "metrics.names=[imbalance]"))
    assert set(exp.metrics) == {"loss", "imbalance"}


@pytest.mark.parametrize("overrides, names, index", [
    (["model=mlp"], "[loss,imbalance]", 1),
    (["model=two_layer", "model.activation=sigmoid"], "[grad_norm,imbalance]", 1),
    (["model=two_layer", "task=linear_regression", "task.output_dim=1"], "[alignment]", 0),
    (["model=mlp"], "[loss,alignment]", 1),
    (["model=two_layer"], "[grad_norm,param_norm,accuracy]", 2),
])
def test_inapplicable_named_metric_is_a_config_error(overrides, names, index):
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*overrides, f"metrics.names={names}"))
    assert info.value.key == f"metrics.names[{index}]"
    assert f"metrics.names[{index}]" in str(info.value)


def test_select_metrics_directly():
    exp = build(make_cfg("model=mlp"))
    with pytest.raises(ConfigError, match=r"metrics\.names\[0\]"):
        select_metrics(["accuracy"], exp.objective, exp.task)
    assert set(select_metrics(["param_norm"], exp.objective, exp.task)) == {"loss", "param_norm"}


@pytest.mark.parametrize("key, lowest, below", [
    ("points", 2, 1), ("lanczos_steps", 2, 1), ("hessian_dense_max", 0, -1), ("heavy_every", 1, 0),
    ("every", 1, 0), ("probe", 1, 0), ("times", [0.0], [-0.5]),
])
def test_metrics_config_boundaries(key, lowest, below):
    """Each bound admits its lowest value and refuses the one below, naming the key."""
    MetricsConfig(**{key: lowest})
    with pytest.raises(ConfigError) as info:
        MetricsConfig(**{key: below})
    assert info.value.key.startswith(f"metrics.{key}")


def test_metrics_config_one_grid_and_probe_within_the_data():
    """metrics.every and metrics.times exclude each other; an explicit probe may be the whole data set, not more."""
    with pytest.raises(ConfigError, match="metrics.times"):
        MetricsConfig(every=2, times=[1.0])
    assert MetricsConfig(probe=5).settings(5, 0.1).probe == 5 and MetricsConfig().settings(5, 0.1).probe == 5
    with pytest.raises(ConfigError, match="metrics.probe"):
        MetricsConfig(probe=6).settings(5, 0.1)


@pytest.mark.parametrize("depth, applies", [(1, False), (2, True), (3, True)])
def test_mode_strength_applies_from_depth_two(depth, applies):
    """mode_strength needs a deep linear net of depth N ≥ 2 on a task with singular modes (N = 2 is Saxe's case)."""
    exp = build(make_cfg("model=deep_linear", f"model.depth={depth}", "task=linear_regression"))
    reason = METRICS["mode_strength"].requires(exp.objective, exp.task)
    assert (reason is None) == applies, reason


def test_product_and_mode_strength_by_hand():
    """product = w2·w1 of the vector case; mode_strength/α = u_αᵀ W₂W₁ v_α for the task's modes, per member (here
    the modes of a 3×2 task: U (3, 2), V (2, 2), so two columns)."""
    w1, w2 = t([[[1.0], [2.0]], [[0.5], [-1.0]]]), t([[[3.0, -1.0]], [[2.0, 4.0]]])  # (E, k, 1), (E, 1, k)
    out = METRICS["product"].fn(snap(deep_linear(2, 2, 1, 1), {"W1": w1, "W2": w2}))
    torch.testing.assert_close(out["product"], t([1.0, -3.0]), rtol=0, atol=0)
    u, v = torch.linalg.qr(torch.randn(3, 2, dtype=F64))[0], torch.linalg.qr(torch.randn(2, 2, dtype=F64))[0]
    task = SimpleNamespace(teacher=None, modes=lambda: (u, t([2.0, 1.0]), v))
    params = {"W1": torch.randn(2, 4, 2, dtype=F64), "W2": torch.randn(2, 3, 4, dtype=F64)}
    values, _ = METRICS["mode_strength"].fn(snap(deep_linear(2, 4, 2, 3), params, task=task), {})
    expected = torch.einsum("oa,eoi,ia->ea", u, params["W2"] @ params["W1"], v)  # (E, r)
    assert sorted(values) == ["mode_strength/1", "mode_strength/2"]
    torch.testing.assert_close(torch.stack([values["mode_strength/1"], values["mode_strength/2"]], 1), expected)


@pytest.mark.parametrize("sign", [1, -1])
def test_manifold_distance_by_hand(sign):
    """manifold_distance = ‖w1 − s·w2ᵀ‖, s = sign f′(0): 0 on the centre-stable manifold, δ at w1 = s·w2ᵀ + δv."""
    model = deep_linear(2, 2, 1, 1)
    model.saddle_sign = sign
    w2 = t([[[3.0, -0.5]], [[0.25, 2.0]]])  # (E, 1, k)
    w1 = sign * w2.transpose(1, 2) + t([[[0.0], [0.0]], [[0.6], [0.8]]])  # member 1 at δ = 1 along (0.6, 0.8)
    out = METRICS["manifold_distance"].fn(snap(model, {"W1": w1, "W2": w2}))
    torch.testing.assert_close(out["manifold_distance"], t([0.0, 1.0]), rtol=1e-15, atol=1e-15)


def test_log_times_of_a_horizon_within_one_step():
    """t_max ≤ h: the grid is 0 and t_max, nothing past t_max; else `points` times from 0 to t_max exactly."""
    assert log_times(0.5, 0.2, 10) == [0.0, 0.2]
    grid = log_times(0.01, 3.0, 10)
    assert len(grid) == 10 and grid[0] == 0.0 and grid[-1] == 3.0 and grid == sorted(grid)


def test_lanczos_memory_check_counts_members_steps_and_parameters(monkeypatch):
    """Above hessian_dense_max the Lanczos basis, E × steps × P numbers, must fit in half the free memory."""
    from dynamics_bench.metrics import hessian

    settings = MetricsConfig(hessian_dense_max=10, lanczos_steps=30).settings(8, 0.1)
    need = 4 * 30 * 1000 * 8  # E × steps × P × 8 bytes
    for free, refused in ((2 * need, False), (2 * need - 2, True)):
        monkeypatch.setattr(hessian, "free_memory", lambda device, free=free: free)
        if not refused:
            hessian.check_memory(parameters=1000, members=4, settings=settings, device=torch.device("cpu"),
                                 dtype=torch.float64)
            continue
        with pytest.raises(ConfigError, match="metrics.lanczos_steps"):
            hessian.check_memory(parameters=1000, members=4, settings=settings, device=torch.device("cpu"),
                                 dtype=torch.float64)
