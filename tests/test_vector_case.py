"""The vector case of paper (1) (depth 2, scalar input and output): the inits placed by the theory's own
quantities (init=imbalanced: product w₀ and imbalance c; init=centre_stable: distance δ from the saddle's
centre-stable manifold w1 = s·w2ᵀ, s = sign f′(0)), the product and manifold_distance metrics, and short
gradient-flow runs against Prop. 5, Cor. 6 and Prop. 7 (docs/theory.md §2.4–2.5).

Expected values are hand computations or docs/theory.md closed forms, never numbers copied from a run.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import Tensor

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build, init_params
from dynamics_bench.metrics import METRICS, select_metrics
from dynamics_bench.models import build_model
from dynamics_bench.models.deep_linear import DeepLinear
from dynamics_bench.theory import vector_case_time
from tests.conftest import make_cfg, run_overrides

F64 = torch.float64
VECTOR = ["model=deep_linear", "task=matrix_cost", "trainer=gradient_flow", "trainer.method=rk4",
          "logger.tensorboard=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


def gens(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def imbalanced(w0: float, c: float, width: int = 5) -> DeepLinear:
    sec = {"name": "deep_linear", "depth": 2, "width": width, "init": "imbalanced", "init_product": w0,
           "init_imbalance": c}
    return build_model(sec, input_dim=1, output_dim=1)


def vectors(params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """w1 (E, k) and w2ᵀ (E, k)."""
    return params["W1"][:, :, 0], params["W2"][:, 0, :]


def imbalance_c(w1: Tensor, w2: Tensor) -> Tensor:
    """c = 2tr(C²) − tr(C)² with C = w1w1ᵀ − w2ᵀw2, written out per member: (E,)."""
    cm = w1[:, :, None] * w1[:, None, :] - w2[:, :, None] * w2[:, None, :]
    tr = torch.diagonal(cm, dim1=1, dim2=2).sum(1)
    return 2 * (cm @ cm).diagonal(dim1=1, dim2=2).sum(1) - tr**2


def snapshot(exp, params) -> SimpleNamespace:
    """What the vector-case metrics read of a Snapshot: the model and the parameters."""
    return SimpleNamespace(model=exp.objective.model, params=params)


# ---------------------------------------------------------------------------------------------------------------
# init=imbalanced
@pytest.mark.parametrize("w0,c", [(0.1, 16.0), (0.1, 0.0), (-0.7, 2.5), (0.0, 5.0), (0.0, 0.0), (2.0, 1e-3),
                                  (-3.0, 256.0)])
def test_imbalanced_init_hits_product_and_imbalance(w0, c):
    w1, w2 = vectors(imbalanced(w0, c).init_params(gens(range(4))))
    torch.testing.assert_close((w1 * w2).sum(1), torch.full((4,), w0, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(imbalance_c(w1, w2), torch.full((4,), c, dtype=F64), rtol=0, atol=1e-12)
    assert (w1.norm(dim=1) >= w2.norm(dim=1)).all()
    if w0 == 0 and c == 0:  # the saddle itself
        assert not w1.any() and not w2.any()


def test_imbalanced_init_is_along_one_direction_per_member():
    w1, w2 = vectors(imbalanced(0.5, 3.0, width=6).init_params(gens(range(5))))
    u = w1 / w1.norm(dim=1, keepdim=True)
    torch.testing.assert_close(w2, (w2 * u).sum(1, keepdim=True) * u, rtol=0, atol=1e-14)  # w2ᵀ ∥ w1
    cos = (u @ u.T).abs() - torch.eye(5, dtype=F64)
    assert cos.max() < 0.999  # members draw their own directions


def test_imbalanced_member_depends_only_on_its_generator():
    model = imbalanced(0.3, 1.0)
    batch, alone = model.init_params(gens([10, 11, 12])), model.init_params(gens([11]))
    for k in batch:
        assert torch.equal(batch[k][1], alone[k][0])


# ---------------------------------------------------------------------------------------------------------------
# prepare (f′(0)) and init=centre_stable
# f(w) = loss(w − y) on the matrix cost: mse ½(w−y)², quartic ¼(w−y)⁴, log_cosh log cosh(w−y)
SLOPES = [("mse", 1.0, -1.0), ("mse", -2.0, 2.0), ("quartic", 1.5, -1.5**3), ("log_cosh", 0.5, -math.tanh(0.5)),
          ("log_cosh", -0.5, math.tanh(0.5))]


@pytest.mark.parametrize("loss,target,slope", SLOPES)
@pytest.mark.parametrize("width", [1, 4])
def test_prepare_reads_the_slope_at_the_saddle(loss, target, slope, width):
    """f′(0) at any width, one hidden unit included."""
    model = build(make_cfg(*VECTOR, f"loss={loss}", f"task.target={target}", f"model.width={width}")).objective.model
    assert model.saddle_slope == pytest.approx(slope, rel=1e-14)
    assert model.saddle_sign == (1 if slope > 0 else -1)


@pytest.mark.parametrize("target,sign", [(1.0, -1), (-1.0, 1)])
def test_centre_stable_init_sits_at_the_offset(target, sign):
    delta = 0.3
    exp = build(make_cfg(*VECTOR, f"task.target={target}", "model.init=centre_stable",
                         f"model.init_offset={delta}", "ensemble.size=4", "model.width=6"))
    assert exp.objective.model.saddle_sign == sign  # f′(0) = −target under mse
    params = init_params(exp)
    w1, w2 = vectors(params)
    offset = w1 - sign * w2
    torch.testing.assert_close(offset.norm(dim=1), torch.full((4,), delta, dtype=F64), rtol=0, atol=1e-14)
    got = METRICS["manifold_distance"].fn(snapshot(exp, params))["manifold_distance"]
    torch.testing.assert_close(got, offset.norm(dim=1), rtol=0, atol=0)
    directions = offset / delta
    assert ((directions @ directions.T).abs() - torch.eye(4, dtype=F64)).max() < 0.999  # one v per member
    assert len({round(v, 12) for v in w2.norm(dim=1).tolist()}) == 4  # and its own Gaussian w2


def test_centre_stable_on_the_manifold_with_zero_offset():
    exp = build(make_cfg(*VECTOR, "model.init=centre_stable", "model.init_offset=0", "ensemble.size=3"))
    w1, w2 = vectors(init_params(exp))
    assert torch.equal(w1, -w2) and w1.any()


def test_centre_stable_without_slope_fails_in_build():
    """mse with target 0: f(w) = ½w², f′(0) = 0, the origin is a minimum, not a saddle."""
    with pytest.raises(ConfigError, match=r"f'\(0\) = 0") as err:
        build(make_cfg(*VECTOR, "task.target=0.0", "model.init=centre_stable", "model.init_offset=0.1"))
    assert err.value.key == "model.init" and err.value.value == "centre_stable"


def test_centre_stable_needs_prepare():
    model = build_model({"name": "deep_linear", "init": "centre_stable", "init_offset": 0.1},
                        input_dim=1, output_dim=1)
    with pytest.raises(RuntimeError, match="prepare"):
        model.init_params(gens([0]))


# ---------------------------------------------------------------------------------------------------------------
# Config errors: each names the key.
ERRORS = [
    (["model.init=centre_stable", "model.init_offset=0.1", "model.depth=3"], "model.init", "depth 3"),
    (["model.init=imbalanced", "model.init_product=0.1", "model.init_imbalance=1", "model.depth=1"],
     "model.init", "depth 1"),
    (["model.init=imbalanced", "model.init_product=0.1", "model.init_imbalance=1", "task.target=[[1.0,2.0]]"],
     "model.init", "input_dim 2"),
    (["model.init=centre_stable", "model.init_offset=0.1", "task=linear_regression"], "model.init", "input_dim 6"),
    (["model.init=imbalanced", "model.init_imbalance=1"], "model.init_product", "needs it"),
    (["model.init=imbalanced", "model.init_product=0.1"], "model.init_imbalance", "needs it"),
    (["model.init=imbalanced", "model.init_product=0.1", "model.init_imbalance=-1"], "model.init_imbalance",
     ">= 0"),
    (["model.init=imbalanced", "model.init_product=inf", "model.init_imbalance=1"], "model.init_product",
     "finite"),
    (["model.init=centre_stable"], "model.init_offset", "needs it"),
    (["model.init=centre_stable", "model.init_offset=-0.1"], "model.init_offset", ">= 0"),
    (["model.init=centre_stable", "model.init_offset=nan"], "model.init_offset", "finite"),
    (["model.init_offset=0.1"], "model.init_offset", "unless model.init=centre_stable"),
    (["model.init_product=0.1"], "model.init_product", "unless model.init=imbalanced"),
    (["model.init=centre_stable", "model.init_offset=0.1", "model.init_imbalance=1"], "model.init_imbalance",
     "unless model.init=imbalanced"),
    (["model.init=imbalanced", "model.init_product=0.1", "model.init_imbalance=1", "model.init_offset=0"],
     "model.init_offset", "unless model.init=centre_stable"),
]


@pytest.mark.parametrize("overrides,key,says", ERRORS, ids=[f"{k}-{s}" for _, k, s in ERRORS])
def test_config_errors_name_the_key(overrides, key, says):
    with pytest.raises(ConfigError) as err:
        build(make_cfg(*VECTOR, *overrides))
    assert err.value.key == key and says in str(err.value), str(err.value)


def test_constructor_checks_finiteness_without_the_schema():
    kw = dict(depth=2, width=3, init="imbalanced", init_scale=1.0, init_values=None, input_dim=1, output_dim=1)
    with pytest.raises(ConfigError, match=r"model\.init_imbalance=nan"):
        DeepLinear(**kw, init_product=0.1, init_imbalance=float("nan"))


# ---------------------------------------------------------------------------------------------------------------
# Metrics: values by hand, and when they apply.
def test_product_and_manifold_distance_by_hand():
    """k = 2. Member 0: w1 = (1, 2), w2 = (3, −1): w = 3 − 2 = 1. Member 1: w1 = (0, 1), w2 = (2, 2): w = 2.
    Target +1 (s = −1): d = ‖w1 + w2ᵀ‖ = ‖(4, 1)‖ = √17 and ‖(2, 3)‖ = √13.
    Target −1 (s = +1): d = ‖w1 − w2ᵀ‖ = ‖(−2, 3)‖ = √13 and ‖(−2, −1)‖ = √5."""
    params = {"W1": torch.tensor([[[1.0], [2.0]], [[0.0], [1.0]]], dtype=F64),
              "W2": torch.tensor([[[3.0, -1.0]], [[2.0, 2.0]]], dtype=F64)}
    for target, expected in ((1.0, [17, 13]), (-1.0, [13, 5])):
        exp = build(make_cfg(*VECTOR, f"task.target={target}", "model.width=2"))
        s = snapshot(exp, params)
        torch.testing.assert_close(METRICS["product"].fn(s)["product"], torch.tensor([1.0, 2.0], dtype=F64))
        got = METRICS["manifold_distance"].fn(s)["manifold_distance"]
        torch.testing.assert_close(got, torch.tensor(expected, dtype=F64).sqrt(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("overrides,product,manifold", [
    (["model=mlp"], "model=deep_linear", "model=deep_linear"),
    (["model.depth=3"], "vector case", "vector case"),
    (["task=linear_regression", "task.output_dim=1"], "vector case", "vector case"),
    (["task.target=0.0"], None, "f'(0) != 0"),
    (["loss=log_cosh", "task.target=-3.0"], None, None),
])
def test_requires_reasons(overrides, product, manifold):
    exp = build(make_cfg(*VECTOR, *overrides))
    for name, says in (("product", product), ("manifold_distance", manifold)):
        reason = METRICS[name].requires(exp.objective, exp.task)
        assert (reason is None) if says is None else (says in reason), reason
        assert (name in select_metrics("auto", exp.objective, exp.task)) == (says is None)


def test_naming_manifold_distance_without_a_saddle_is_an_error():
    with pytest.raises(ConfigError) as err:
        build(make_cfg(*VECTOR, "task.target=0.0", "metrics.names=[product,manifold_distance]"))
    assert err.value.key == "metrics.names[1]"


# ---------------------------------------------------------------------------------------------------------------
# Gradient flow (rk4): Prop. 5, Cor. 6, Prop. 7.
def test_on_the_manifold_the_flow_goes_to_the_saddle(tmp_path):
    """δ = 0, target 1: the flow slides into the origin, loss → f(0) = ½, and the distance to the manifold stays
    0 over the window t ≤ 20 < 30/|f′(0)| (docs/theory.md §2.5(f))."""
    run_overrides(tmp_path, *VECTOR, "model.init=centre_stable", "model.init_offset=0", "ensemble.size=2",
                  "trainer.h=0.05", "trainer.t_max=20")
    m = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert m["manifold_distance"].abs().max() <= 1e-12
    last = m[m["step"] == m["step"].max()]
    assert (last["loss"] - 0.5).abs().max() < 1e-12 and last["product"].abs().max() < 1e-12
    for _, member in m.groupby("member"):  # |w| decreases monotonically towards the saddle
        assert (member["product"].abs().diff().dropna() <= 0).all()


def test_off_the_manifold_the_flow_reaches_the_target(tmp_path):
    """δ = 1e-2: escape after ≈ ln(1/δ)/|f′(0)| ≈ 4.6, then convergence (Prop. 5; Cor. 6 with f* = 0)."""
    summary = run_overrides(tmp_path, *VECTOR, "model.init=centre_stable", "model.init_offset=1e-2",
                            "ensemble.size=2", "trainer.h=0.05", "trainer.t_max=20", "trainer.target_loss=1e-10")
    assert summary["status"] == "converged"
    m = pd.read_csv(tmp_path / "run" / "metrics.csv")
    for _, member in m.groupby("member"):  # u̇ = s·f′(w)·u = (1 − w)·u with w < 1 throughout: d only grows
        d = member["manifold_distance"].to_numpy()
        assert d[0] == pytest.approx(1e-2, rel=1e-12) and (d[1:] >= d[:-1] * (1 - 1e-12)).all()
    assert (m[m["step"] == m["step"].max()]["product"] - 1).abs().max() < 1e-4


def test_larger_imbalance_is_ahead_at_every_time(tmp_path):
    """Prop. 7: same product w₀ = 0.1, c = 16 vs c = 1: loss(t; 16) < loss(t; 1) at every logged t > 0."""
    losses = {}
    for c in (16, 1):
        run_overrides(tmp_path, *VECTOR, "model.init=imbalanced", "model.init_product=0.1",
                      f"model.init_imbalance={c}", "trainer.h=0.01", "trainer.t_max=4", name=f"c{c}")
        m = pd.read_csv(tmp_path / f"c{c}" / "metrics.csv")
        assert (m["imbalance_c"] - c).abs().max() < 1e-6 * c  # conserved by the flow (rk4: to O(h⁴))
        losses[c] = m.set_index("t")["loss"]
    assert losses[16].index.equals(losses[1].index)
    assert losses[16].iloc[0] == losses[1].iloc[0]  # same product, same loss at t = 0
    assert (losses[16].iloc[1:] < losses[1].iloc[1:]).all()


def test_time_to_target_matches_the_closed_form(tmp_path):
    """docs/theory.md §2.5(c), f = ½(x − y)², q = √(4y² + c): T = F(x1) − F(x0) with
    F(x) = (1/q)·ln|(q·√(4x² + c) + 4yx + c)/(x − y)|; loss ≤ 1e-10 means x1 = y − √(2·1e-10)."""
    y, x0, c, h = 1.0, 0.1, 16.0, 5e-3
    expected = vector_case_time(x0, y - math.sqrt(2e-10), y, c)
    summary = run_overrides(tmp_path, *VECTOR, "model.init=imbalanced", f"model.init_product={x0}",
                            f"model.init_imbalance={c}", f"trainer.h={h}", "trainer.t_max=4",
                            "trainer.target_loss=1e-10")
    assert summary["status"] == "converged"
    # located on rk4's dense output: error O(h⁴) ≈ 6e-10 times an O(1) constant, far below a step h/T ≈ 2e-3
    assert summary["time_to_target"] == pytest.approx(expected, rel=1e-7)
