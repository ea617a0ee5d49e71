"""The two-layer invariants q_j = ‖a_j‖² − h_j as a live accuracy gauge (paper (1), Sec. 4; docs/theory.md §2.7, §4).

A neuron a·σ(w) on the single input x = 1 conserves a² − H(w) under gradient flow when H' = 2σ/σ', whatever the
loss: with u = Σ_j a_jσ(w_j) and g = ∇ℓ(u), ȧ_j = −gσ(w_j) and ẇ_j = −(a_jᵀg)σ'(w_j), so
d/dt ‖a_j‖² = −2(a_jᵀg)σ = H'(w_j)ẇ_j = d/dt H(w_j). With a bias, w_j + b_j moves twice as fast: ½H(w_j + b_j).
Checked here: the potentials against H' = 2σ/σ' and their constants, the erf quadrature against a power series
(and mpmath), dq/dt = 0 along a hand-written vector field, the paper's C(0,0) = −½, the drift of real runs, and
the reasons the metric gives where no invariant is known.
"""
from __future__ import annotations

import math
from decimal import Decimal, localcontext
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build
from dynamics_bench.metrics import METRICS
from dynamics_bench.metrics.base import MAX_UNIT_COLUMNS
from dynamics_bench.metrics.imbalance import neuron_imbalances
from dynamics_bench.models.base import ACTIVATIONS
from dynamics_bench.models.two_layer import TwoLayer
from tests.conftest import make_cfg, run_overrides

F64 = torch.float64
WITH_POTENTIAL = [k for k, a in ACTIVATIONS.items() if a.potential is not None]
SIGMOIDAL = ["algebraic_sigmoid", "tanh", "sigmoid", "erf"]

pytestmark = pytest.mark.usefixtures("one_thread")


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def two_layer(activation: str, width: int, output_dim: int = 1, bias: bool = False) -> TwoLayer:
    return TwoLayer(width=width, activation=activation, output_layer="trainable", bias=bias, init="gaussian",
                    init_scale=1.0, init_values=None, input_dim=1, output_dim=output_dim)


def imbalance_of(model: TwoLayer, params, params0) -> dict[str, torch.Tensor]:
    """The metric on a stand-in snapshot: it reads only the model and the two parameter sets."""
    return METRICS["imbalance"].fn(SimpleNamespace(model=model, params=params, params0=params0))


# ---------------------------------------------------------------------------------------------------------------
# the potentials H
def test_every_non_homogeneous_activation_has_a_potential():
    """The metric's only route for a non-homogeneous σ; the smooth flag marks exactly the kinked relu and abs."""
    assert set(WITH_POTENTIAL) == set(ACTIVATIONS)
    assert {k for k, a in ACTIVATIONS.items() if not a.smooth} == {"relu", "abs"}


@pytest.mark.parametrize("name", WITH_POTENTIAL)
def test_potential_derivative_is_two_sigma_over_sigma_prime(name):
    """H'(z) (autograd of H) = 2σ(z)/σ'(z) (autograd of σ) on a grid. |z| ≤ 3 keeps σ' = 1 − tanh² free of
    cancellation (at z = 4 it alone would cost 2e-10); relu only where it is live (z > 0), abs away from its kink."""
    act = ACTIVATIONS[name]
    z = torch.linspace(-3, 3, 60, dtype=F64)  # an even count: 0 is not a node
    if name == "relu":
        z = z[z > 0]
    z.requires_grad_(True)
    (dh,) = torch.autograd.grad(act.potential(z).sum(), z)
    (ds,) = torch.autograd.grad(act.fn(z).sum(), z)
    torch.testing.assert_close(dh, 2 * act.fn(z).detach() / ds, rtol=1e-10, atol=0)


@pytest.mark.parametrize("name, h0", [("algebraic_sigmoid", 0.5), ("tanh", 0.5), ("sigmoid", 2.0), ("erf", 0.0),
                                      ("relu", 0.0), ("abs", 0.0), ("linear", 0.0)])
def test_potential_constants(name, h0):
    """H is fixed by H' only up to a constant; these are the paper's forms: ½(1+w²)², ½cosh 2w, 2(w + eʷ)."""
    assert ACTIVATIONS[name].potential(t(0.0)).item() == h0


def test_potential_closed_forms_at_a_point():
    """At w = 1: ½(1+1)² = 2, ½cosh 2, 2(1 + e), 1 (homogeneous w²)."""
    expected = {"algebraic_sigmoid": 2.0, "tanh": 0.5 * math.cosh(2), "sigmoid": 2 * (1 + math.e), "relu": 1.0,
                "abs": 1.0, "linear": 1.0}
    for name, value in expected.items():
        assert ACTIVATIONS[name].potential(t(1.0)).item() == pytest.approx(value, rel=1e-15), name


def erf_potential_series(w: float) -> float:
    """H(w) = Σ_n 2^{n+1} w^{2n+2}/((2n+1)!!·(2n+2)): e^{z²}erf(z) = (2/√π) Σ_n 2^n z^{2n+1}/(2n+1)!! integrated
    term by term. Every term is positive (no cancellation); summed in 40-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 40
        w2 = Decimal(w) ** 2
        term, total, n = w2, Decimal(0), 0
        while term > total * Decimal("1e-35"):
            total += term
            term = term * 2 * w2 * (2 * n + 2) / ((2 * n + 3) * (2 * n + 4))
            n += 1
        return float(total)


ERF_POINTS = [1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 15.0, 20.0, 25.0]


def test_erf_potential_matches_its_power_series():
    """The documented range: 1e-13 relative for |w| ≤ 25 (H is even, so negative w too)."""
    w = t(ERF_POINTS + [-v for v in ERF_POINTS])
    expected = t([erf_potential_series(abs(v)) for v in w.tolist()])
    torch.testing.assert_close(ACTIVATIONS["erf"].potential(w), expected, rtol=1e-13, atol=0)


def test_erf_potential_matches_mpmath_quad():
    """A second, independent reference: mpmath's adaptive quadrature at 30 digits (where mpmath is installed)."""
    mpmath = pytest.importorskip("mpmath")
    points = [-3.0, 0.5, 2.0, 4.0, 6.0]
    with mpmath.workdps(30):
        integrand = lambda z: mpmath.sqrt(mpmath.pi) * mpmath.erf(z) * mpmath.exp(z * z)  # noqa: E731
        expected = t([float(mpmath.quad(integrand, [0, w])) for w in points])
    torch.testing.assert_close(ACTIVATIONS["erf"].potential(t(points)), expected, rtol=1e-13, atol=0)


def test_erf_potential_is_batched_and_overflows_to_inf():
    """Any shape (E, m) in, same shape out, entries independent; past |w| ≈ 26.6, H itself overflows float64."""
    w = t([[0.5, -2.0, 30.0], [1.0, 0.0, 4.0]])
    h = ACTIVATIONS["erf"].potential(w)
    assert h.shape == (2, 3)
    assert h[0, 2].item() == math.inf
    expected = t([erf_potential_series(abs(v)) for v in w.flatten().tolist()[:2] + w.flatten().tolist()[3:]])
    torch.testing.assert_close(torch.cat([h[0, :2], h[1]]), expected, rtol=1e-13, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# conservation along the exact flow, by hand
SIGMA_PRIME = {  # σ' written out, not autograd
    "relu": lambda z: (z > 0).to(z.dtype),
    "abs": torch.sign,
    "linear": torch.ones_like,
    "sigmoid": lambda z: torch.sigmoid(z) * torch.sigmoid(-z),
    "algebraic_sigmoid": lambda z: (1 + z * z) ** -1.5,
    "tanh": lambda z: 1 / torch.cosh(z) ** 2,
    "erf": lambda z: 2 / math.sqrt(math.pi) * torch.exp(-z * z),
}
TARGET = 0.7


def flow_velocity(name: str, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """θ̇ = −∇ Σ_k log cosh(u_k − 0.7) with u = Σ_j a_jσ(w_j + b_j) on the input x = 1 (a non-quadratic loss: the
    invariant does not care): ȧ_j = −gσ(z_j), ẇ_j = ḃ_j = −(a_jᵀg)σ'(z_j), with g = tanh(u − 0.7)."""
    a = params["a"]  # (E, out, m)
    z = params["w"][..., 0] + params.get("b", 0.0)  # (E, m)
    s = ACTIVATIONS[name].fn(z)
    g = torch.tanh((a * s.unsqueeze(1)).sum(2) - TARGET)  # (E, out)
    dz = -(a * g.unsqueeze(2)).sum(1) * SIGMA_PRIME[name](z)  # (E, m)
    velocity = {"w": dz.unsqueeze(-1), "a": -g.unsqueeze(2) * s.unsqueeze(1)}
    if "b" in params:
        velocity["b"] = dz
    return velocity


@pytest.mark.parametrize("name", WITH_POTENTIAL)
@pytest.mark.parametrize("width, output_dim, bias", [(1, 1, False), (1, 1, True), (6, 1, False), (4, 2, True)])
def test_invariant_is_conserved_along_the_exact_flow(name, width, output_dim, bias):
    """dq_j/dt = ∇q_j·θ̇ (autograd through the metric's own q) vanishes to round-off at random points, relative to
    the size 2|σ(z_j)·a_jᵀg| of each of its two cancelling terms. q_j depends on neuron j's parameters alone
    (w[:, j], a[:, :, j], b[:, j]), so ∇ Σ_j q_j holds every ∇q_j and the per-neuron contraction gives dq_j/dt."""
    gen = torch.Generator().manual_seed(width * 10 + output_dim + bias)
    e = 3
    params = {"w": 5 * torch.rand(e, width, 1, generator=gen, dtype=F64) - 2.5,
              "a": torch.randn(e, output_dim, width, generator=gen, dtype=F64)}
    if bias:
        params["b"] = 0.5 * torch.randn(e, width, generator=gen, dtype=F64)
    model = two_layer(name, width, output_dim, bias)
    velocity = flow_velocity(name, params)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = dict(zip(leaves, torch.autograd.grad(neuron_imbalances(model, leaves)[0].sum(), list(leaves.values()))))
    dq = (grads["w"] * velocity["w"]).sum(2) + (grads["a"] * velocity["a"]).sum(1)  # (E, m)
    if bias:
        dq = dq + grads["b"] * velocity["b"]
    da = 2 * (params["a"] * velocity["a"]).sum(1)  # d/dt ‖a_j‖², one of the two terms
    assert dq.shape == (e, width)
    assert (da.abs() > 0).any()  # not a vacuous check
    assert (dq.abs() <= 1e-12 * da.abs()).all(), (dq, da)


# ---------------------------------------------------------------------------------------------------------------
# the metric by hand
def test_potential_imbalance_by_hand():
    """algebraic_sigmoid with a bias, two outputs: q_j = ‖a_j‖² − ½H(w_j + b_j), H = ½(1+z²)².
    θ: w = (1, 0), b = (1, −1) -> z = (2, −1), ½H = (6.25, 1); a_1 = (1, 2), a_2 = (0, 2) -> ‖a‖² = (5, 4);
       q = (−1.25, 3), imbalance 3.
    θ0: w = b = 0 (½H = ¼), a_1 = (1, 0), a_2 = 0 -> q0 = (0.75, −0.25), scales ‖a‖² + |½H| = (1.25, 0.25).
    drift = (2, 3.25) -> imbalance_drift 3.25; rel = max(2/1.25, 3.25/0.25) = 13 per neuron (not 3.25/1.25)."""
    model = two_layer("algebraic_sigmoid", 2, output_dim=2, bias=True)
    params = {"w": t([[[1.0], [0.0]]]), "b": t([[1.0, -1.0]]), "a": t([[[1.0, 0.0], [2.0, 2.0]]])}
    params0 = {"w": t([[[0.0], [0.0]]]), "b": t([[0.0, 0.0]]), "a": t([[[1.0, 0.0], [0.0, 0.0]]])}
    out = imbalance_of(model, params, params0)
    expected = {"imbalance": 3.0, "imbalance_drift": 3.25, "imbalance_drift_rel": 13.0, "imbalance/1": -1.25,
                "imbalance/2": 3.0}
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert out[k].item() == pytest.approx(v, rel=1e-15), k


def test_neuron_fixed_at_zero_has_zero_relative_drift():
    """A relu neuron with a = w = 0 has both terms 0 and never moves (σ(0) = σ'(0) = 0): its drift/scale is 0,
    not 0/0, and must not hide the other neuron's (w = 1, a = 1 -> 2, drift 3 over scale 2)."""
    model = two_layer("relu", 2)
    params0 = {"w": t([[[0.0], [1.0]]]), "a": t([[[0.0, 1.0]]])}
    params = {"w": t([[[0.0], [1.0]]]), "a": t([[[0.0, 2.0]]])}
    assert imbalance_of(model, params, params0)["imbalance_drift_rel"].item() == 1.5


@pytest.mark.parametrize("width", [MAX_UNIT_COLUMNS, MAX_UNIT_COLUMNS + 1])
def test_per_neuron_columns_only_for_narrow_nets(width):
    model = two_layer("tanh", width)
    params = model.init_params([torch.Generator().manual_seed(0)])
    columns = {k for k in imbalance_of(model, params, params) if k.startswith("imbalance/")}
    assert columns == ({f"imbalance/{j}" for j in range(1, width + 1)} if width <= MAX_UNIT_COLUMNS else set())


# ---------------------------------------------------------------------------------------------------------------
# real runs of the seed paper's experiment
def seed_paper_run(tmp_path, name: str, *overrides: str) -> pd.DataFrame:
    run_overrides(tmp_path, "experiment=sigmoid_seed_paper", "metrics.points=10", *overrides, name=name)
    return pd.read_csv(tmp_path / name / "metrics.csv")


def test_paper_invariant_at_the_origin_is_minus_half(tmp_path):
    """Paper (1), Prop. 8: C(0, 0) = 0² − ½(1 + 0²)² = −½ (the paper prints −1; docs/theory.md §2.7). The origin is a
    critical point (σ(0) = 0 and a = 0), so C stays −½; the default start w = 0.5, a = 0.8 has
    C = 0.64 − ½·1.25² = −0.14125."""
    origin = seed_paper_run(tmp_path, "origin", "model.init_values=[[[0.0]],[[0.0]]]", "trainer.t_max=0.1")
    assert (origin["imbalance/1"] == -0.5).all()
    default = seed_paper_run(tmp_path, "default", "trainer.t_max=0.1")
    assert default["imbalance/1"].iloc[0] == pytest.approx(-0.14125, rel=1e-15)


@pytest.mark.parametrize("activation", SIGMOIDAL)
def test_rk4_run_conserves_the_invariant(tmp_path, activation):
    """500 rk4 steps of h = 1e-3. RK4's global error is O(h⁴): the test below measures ≈ 1e-7 relative drift at
    h = 0.1 over t = 4, so h = 1e-3 leaves ≈ 1e-15, under round-off; round-off itself adds at most ~1e-16 per step,
    ~5e-14 over 500 steps. 1e-10 keeps three orders of margin (measured: ≤ 4e-15 here, ≤ 4e-14 over t = 20)."""
    df = seed_paper_run(tmp_path, activation, f"model.activation={activation}", "trainer.method=rk4",
                        "trainer.h=1e-3", "trainer.t_max=0.5")
    assert df["loss"].iloc[-1] < df["loss"].iloc[0]  # it trained
    assert df["imbalance_drift_rel"].max() <= 1e-10


@pytest.mark.parametrize("method, coarse, fine, order", [("rk4", 0.2, 0.1, 4), ("euler", 0.02, 0.01, 1)])
def test_drift_shrinks_with_the_integrators_order(tmp_path, method, coarse, fine, order):
    """The gauge is live: halving h divides the final drift by ≈ 2^order (measured 17.3 for rk4, 2.01 for euler,
    the GD limit whose per-step drift is η²(‖∂_aL‖² − ‖∂_wL‖²)); the window [0.75, 1.5]·2^order allows for the
    higher-order terms at these coarse steps."""
    drifts = [seed_paper_run(tmp_path, f"{method}_{h}", f"trainer.method={method}", f"trainer.h={h}",
                             "trainer.t_max=4")["imbalance_drift_rel"].iloc[-1] for h in (coarse, fine)]
    assert drifts[1] > 1e-10  # well above round-off, so the ratio measures the integrator
    assert 0.75 * 2**order <= drifts[0] / drifts[1] <= 1.5 * 2**order


# ---------------------------------------------------------------------------------------------------------------
# where no invariant is known: the reasons
HOMOGENEOUS_OR_UNIT_INPUT = ("needs a homogeneous activation (relu, abs, linear), or a single input x = 1 "
                             "(task=matrix_cost with input size 1) and an activation with a known potential")


@pytest.mark.parametrize("overrides, because", [
    (["experiment=sigmoid_seed_paper", "model.output_layer=fixed", "model.init_values=[[[0.5]]]"],
     "needs model.output_layer=trainable"),
    (["model=two_layer", "task=teacher", "model.activation=sigmoid"],
     HOMOGENEOUS_OR_UNIT_INPUT + "; sigmoid is trained on 200 inputs of size"),
    (["experiment=sigmoid_seed_paper", "model.activation=tanh", "task.target=[[1.0,2.0]]", "model.init=gaussian",
      "model.init_values=null"],
     HOMOGENEOUS_OR_UNIT_INPUT + "; tanh is trained on 2 inputs of size 2"),
])
def test_requires_says_what_is_missing(overrides, because):
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*overrides, "metrics.names=[imbalance]"))
    assert info.value.key == "metrics.names[0]"
    assert because in str(info.value)


@pytest.mark.parametrize("activation", SIGMOIDAL + ["relu"])
def test_auto_selects_imbalance_on_the_unit_input(activation):
    exp = build(make_cfg("experiment=sigmoid_seed_paper", f"model.activation={activation}", "metrics.names=auto"))
    assert "imbalance" in exp.metrics
