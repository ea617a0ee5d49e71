"""Runge–Kutta integrators, adaptive step-size control, event location and the metric grid of flow runs.

Unit level: the tableaus (nodes, weights, Butcher order conditions, stability polynomial, dense output) and
`rk_step`/`dense_point` on θ' = −Aθ (A SPD, exact solution exp(−tA)θ0) and on a hand-made AdaptiveClock loop.
Harness level: tiny runs through ``run_overrides`` against independent references: torchdiffeq (and scipy's
DOP853) on a hand-written vector field, the closed form of theory §1.6.3, the same member run alone.

Ratios are judged by |log2(ratio) − p| ≤ 0.25: the ratio of errors at h and h/2 is 2^p·(1 + O(h)), and 0.25
separates order p from p ± 1 by a factor 2^0.75 ≈ 1.7 either way; h is chosen so that the O(h) term is below
that (each measured value is in the test's docstring).
"""
from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from dynamics_bench.clocks import AdaptiveClock, FixedClock, GridSpec
from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build, init_params
from dynamics_bench.integrators import (BOSH3, DOPRI5, EULER, INTEGRATORS, Step, Tableau, advance, dense_point,
                                        rk_step)
from dynamics_bench.trainer import _Previous, locate_crossing, train
from dynamics_bench.trainers import GDConfig, Schedule
from dynamics_bench.theory import vector_case_time
from tests.conftest import make_cfg, run_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ("logger.tensorboard=false",)
VECTOR = ("model=deep_linear", "model.depth=2", "model.width=4", "task=matrix_cost", "task.target=2.0")
TANH = ("model=two_layer", "model.activation=tanh", "task=teacher", "task.n=20", "task.input_dim=3",
        "model.width=3")
FLOW = ("trainer=gradient_flow",)
DOPRI = (*FLOW, "trainer.method=dopri5", "trainer.max_steps=3000")  # a broken controller fails, not hangs
Y = 2.0  # the vector case's target: loss ½(x − y)², x = w2·w1

# order of each method's continuous extension (dense output), Hairer–Nørsett–Wanner I, II.6
DENSE_ORDER = {"euler": 1, "heun": 2, "rk4": 3, "bosh3": 3, "dopri5": 4}
# nodes c_i from the literature (Butcher; Bogacki–Shampine 1989; Dormand–Prince 1980)
NODES = {"euler": [0.0], "heun": [0.0, 1.0], "rk4": [0.0, 0.5, 0.5, 1.0], "bosh3": [0.0, 0.5, 0.75, 1.0],
         "dopri5": [0.0, 0.2, 0.3, 0.8, 8 / 9, 1.0, 1.0]}


def go(tmp: Path, *overrides: str, name: str = "run") -> dict:
    return run_overrides(tmp, *FAST, *overrides, name=name)


def rows(tmp: Path, name: str = "run") -> pd.DataFrame:
    return pd.read_csv(tmp / name / "metrics.csv")


def residual(loss) -> np.ndarray:
    """|x − y| from the vector case's loss ½(x − y)²: Lipschitz in θ (constant ~‖θ‖), unlike a relative loss."""
    return np.sqrt(2 * np.asarray(loss, dtype=float))


# ---------------------------------------------------------------------------------------------------------------
# A linear test problem θ' = −Aθ: three members with different SPD A, exact solution exp(−tA)θ0
E, N_DIM = 3, 4


def _linear_problem():
    g = torch.Generator().manual_seed(0)

    def spd(lo: float, hi: float) -> torch.Tensor:
        q, _ = torch.linalg.qr(torch.randn(N_DIM, N_DIM, generator=g, dtype=torch.float64))
        return q @ torch.diag(torch.linspace(lo, hi, N_DIM, dtype=torch.float64)) @ q.T

    a = torch.stack([spd(0.5, 2.0), spd(0.2, 3.0), spd(1.0, 4.0)])
    return a, torch.randn(E, N_DIM, generator=g, dtype=torch.float64)


A, X0 = _linear_problem()


def linear_grad(p):
    """L = ½xᵀAx, ∇L = Ax per member."""
    gx = (A @ p["x"][..., None])[..., 0]
    return 0.5 * (p["x"] * gx).sum(1), {"x": gx}


def exact(t: float, x: torch.Tensor = X0) -> torch.Tensor:
    return (torch.linalg.matrix_exp(-t * A) @ x[..., None])[..., 0]


def global_error(method: Tableau, steps: int, weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """Per-member ‖θ_N − θ(1)‖ after N fixed steps h = 1/N, propagating Σ weights_i g_i (default: b)."""
    h, x = 1.0 / steps, X0.clone()
    for _ in range(steps):
        step = rk_step(method, linear_grad, {"x": x}, h, linear_grad({"x": x}))
        x = x - h * sum(w * g["x"] for w, g in zip(weights or method.b, step.stages))
    return (x - exact(1.0)).norm(dim=1)


def log2_ratio(coarse: torch.Tensor, fine: torch.Tensor) -> list[float]:
    return torch.log2(coarse / fine).tolist()


# ---------------------------------------------------------------------------------------------------------------
# 1. Orders on θ' = −Aθ
@pytest.mark.parametrize("name, order, steps, low", [
    ("euler", 1, 64, False), ("heun", 2, 32, False), ("rk4", 4, 20, False), ("bosh3", 3, 32, False),
    ("bosh3", 2, 32, True), ("dopri5", 5, 40, False), ("dopri5", 4, 40, True)],
    ids=["euler", "heun", "rk4", "bosh3", "bosh3-low", "dopri5", "dopri5-low"])
def test_global_error_order(name, order, steps, low):
    """Global error at t = 1 with N and 2N fixed steps: ratio 2^p. `low` propagates the embedded solution
    (b_low) of an adaptive pair instead. Measured log2 ratios (3 members): euler 1.00–1.00, heun 2.03–2.05,
    rk4 4.05–4.09, bosh3 3.03–3.05, bosh3-low 2.07–2.13, dopri5 5.05–5.10 (h = 1/40; at h = 1/20 still
    5.1–5.2, the O(h) term), dopri5-low 4.03–4.06. The finest errors are 4e-13 (dopri5) and up: ≥ 30x the
    accumulated round-off."""
    method = INTEGRATORS[name]
    weights = method.b_low if low else None
    coarse, fine = global_error(method, steps, weights), global_error(method, 2 * steps, weights)
    assert fine.min() > 1e-13, fine  # truncation error, 30x or more above round-off (~1e-16 per step)
    ratios = log2_ratio(coarse, fine)
    assert all(abs(r - order) <= 0.25 for r in ratios), (name, low, ratios)


@pytest.mark.parametrize("h", [0.1, (0.1, 0.2, 0.3)], ids=["float", "per-member"])
def test_advance_moves_only_the_moving_members(h):
    """advance: θ −= h·direction in place for the members in `moving` only; a member left out stays bit for bit,
    even where its direction is NaN (a stopped member's). With all moving (None) every member moves."""
    theta = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    direction = torch.tensor([[1.0, -1.0], [math.nan, 1.0], [2.0, 0.5]], dtype=torch.float64)
    hs = torch.tensor(h if isinstance(h, tuple) else (h,) * 3, dtype=torch.float64)  # (E,)
    step = Step([], h if isinstance(h, float) else hs, {"x": direction}, None, None)
    params = {"x": theta.clone()}
    advance(params, step, torch.tensor([True, False, True]))
    expected = theta - hs[:, None] * direction
    assert torch.equal(params["x"][1], theta[1]) and torch.equal(params["x"][[0, 2]], expected[[0, 2]])
    finite = Step([], step.h, {"x": direction.nan_to_num()}, None, None)
    params = {"x": theta.clone()}
    advance(params, finite, None)
    assert torch.equal(params["x"], theta - hs[:, None] * direction.nan_to_num())


@pytest.mark.parametrize("method", [BOSH3, DOPRI5], ids=["bosh3", "dopri5"])
def test_error_estimate_scales_as_h_to_error_order_plus_one(method):
    """One step from θ0 with atol = 1, rtol = 0: `error` is the RMS of h·Σ(b − b_low)g, the local error of the
    embedded method, O(h^{error_order + 1}): ratio 2^3 = 8 (bosh3) and 2^5 = 32 (dopri5) per halving.
    Measured log2 at h = 0.05 -> 0.025: bosh3 2.94/2.88/2.87, dopri5 5.03/5.04/5.05. The estimate is also
    the RMS of θ_high − θ_low (to the round-off of that O(1) − O(1) difference, 1e-14)."""
    errs = []
    for h in (0.05, 0.025):
        p = {"x": X0.clone()}
        step = rk_step(method, linear_grad, p, h, linear_grad(p), rtol=0.0, atol=1.0)
        high = X0 - h * sum(b * g["x"] for b, g in zip(method.b, step.stages))
        low = X0 - h * sum(b * g["x"] for b, g in zip(method.b_low, step.stages))
        rms = (high - low).pow(2).mean(1).sqrt()
        torch.testing.assert_close(step.error, rms, rtol=1e-9, atol=1e-14)  # θ_high − θ_low cancels O(1) terms
        errs.append(step.error)
    ratios = log2_ratio(*errs)
    assert all(abs(r - (method.error_order + 1)) <= 0.25 for r in ratios), ratios


@pytest.mark.parametrize("method", [BOSH3, DOPRI5], ids=["bosh3", "dopri5"])
def test_error_estimate_is_relative_to_the_larger_end(method):
    """With atol = 0 each entry's tolerance is rtol·max(|θ_k|, |θ_{k+1}|), θ_{k+1} = θ_k − h·direction: one step
    h = 0.5 from X0 (large enough that |θ_{k+1}| and |θ_k + h·direction| differ), against the formula."""
    h, rtol = 0.5, 1e-3
    step = rk_step(method, linear_grad, {"x": X0.clone()}, h, linear_grad({"x": X0}), rtol=rtol, atol=0.0)
    high = X0 - h * sum(b * g["x"] for b, g in zip(method.b, step.stages))
    low = X0 - h * sum(b * g["x"] for b, g in zip(method.b_low, step.stages))
    ratio = (high - low) / (rtol * torch.maximum(X0.abs(), high.abs()))
    torch.testing.assert_close(step.error, ratio.pow(2).mean(1).sqrt(), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", list(DENSE_ORDER))
@pytest.mark.parametrize("s", [0.3, 0.7])
def test_dense_output_local_error_order(name, s):
    """θ(t_k + s·h) from `dense_point` against exp(−s·h·A)θ_k: a continuous extension of order q has local
    error O(h^{q+1}). Measured log2 (h = 0.1 -> 0.05, dopri5 0.05 -> 0.025): euler 1.95–1.99, heun
    2.96–2.99, rk4 3.98–4.00, bosh3 3.99–4.00, dopri5 5.07–5.15 (q = 1, 2, 3, 3, 4)."""
    method = INTEGRATORS[name]
    hs = (0.05, 0.025) if name == "dopri5" else (0.1, 0.05)
    errs = []
    for h in hs:
        p = {"x": X0.clone()}
        step = rk_step(method, linear_grad, p, h, linear_grad(p))
        point = dense_point(method, step, p, torch.full((E,), s, dtype=torch.float64))
        errs.append((point["x"] - exact(s * h)).norm(dim=1))
    assert errs[1].min() > 1e-13  # above round-off
    ratios = log2_ratio(*errs)
    assert all(abs(r - (DENSE_ORDER[name] + 1)) <= 0.25 for r in ratios), (name, s, ratios)


@pytest.mark.parametrize("name", list(INTEGRATORS))
def test_dense_output_endpoints(name):
    """s = 0 gives θ_k and s = 1 gives θ_{k+1} = θ_k − h·direction (what `advance` applies), to round-off,
    also with a per-member step size and per-member s."""
    method = INTEGRATORS[name]
    h = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    p = {"x": X0.clone()}
    step = rk_step(method, linear_grad, p, h, linear_grad(p))
    moved = {"x": X0.clone()}
    advance(moved, step, None)
    assert (moved["x"] - X0).norm(dim=1).min() > 1e-2  # the step really moves
    zero, one = (torch.full((E,), v, dtype=torch.float64) for v in (0.0, 1.0))
    torch.testing.assert_close(dense_point(method, step, p, zero)["x"], X0, rtol=0, atol=1e-15)
    torch.testing.assert_close(dense_point(method, step, p, one)["x"], moved["x"], rtol=1e-14, atol=1e-15)
    mixed = dense_point(method, step, p, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))["x"]
    torch.testing.assert_close(mixed, torch.stack([X0[0], moved["x"][1], X0[2]]), rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# 2. Tableau consistency
def _trees(max_order: int) -> dict[int, list[tuple]]:
    """Rooted trees by order; a tree is the tuple of its subtrees (each multiset generated once)."""
    out: dict[int, list[tuple]] = {1: [()]}
    size = {(): 1}
    for n in range(2, max_order + 1):
        smaller = [t for m in range(1, n) for t in out[m]]
        out[n] = [combo for k in range(1, n) for combo in itertools.combinations_with_replacement(smaller, k)
                  if sum(size[t] for t in combo) == n - 1]
        size.update({t: n for t in out[n]})
    return out


TREES = _trees(6)


def _gamma(tree: tuple) -> int:
    return (1 + sum(_order(t) for t in tree)) * math.prod(_gamma(t) for t in tree)


def _order(tree: tuple) -> int:
    return 1 + sum(_order(t) for t in tree)


def _matrix(method: Tableau) -> np.ndarray:
    s = method.stages
    a = np.zeros((s, s))
    for i, row in enumerate(method.a):
        a[i + 1, : len(row)] = row
    return a


def _phi(a: np.ndarray, tree: tuple) -> np.ndarray:
    """Stage vector of the elementary differential: Π over subtrees of A·Φ(subtree) (ones for a leaf)."""
    out = np.ones(a.shape[0])
    for t in tree:
        out = out * (a @ _phi(a, t))
    return out


def _defects(method: Tableau, weights: np.ndarray, order: int, s: float = 1.0) -> list[float]:
    """|weights·Φ(t) − s^{|t|}/γ(t)| over the trees of exactly this order."""
    a = _matrix(method)
    return [abs(weights @ _phi(a, t) - s ** order / _gamma(t)) for t in TREES[order]]


def test_tree_enumeration():
    """1, 1, 2, 4, 9, 20 rooted trees of order 1..6 and γ of the tall tree of order n is n! (guards the helper)."""
    assert [len(TREES[n]) for n in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    tall = ()
    for n in range(1, 7):
        assert _gamma(tall) == math.factorial(n)
        tall = (tall,)


@pytest.mark.parametrize("name", list(INTEGRATORS))
def test_tableau_consistency(name):
    """Row sums of a are the published nodes c; Σb = Σb_low = 1; FSAL methods evaluate their last stage at
    θ_{k+1} (last row of a = b without its last entry, b_last = 0, c_last = 1); the Butcher order conditions
    hold for every tree up to the declared order (b), error_order (b_low) and the dense order (w(s) at
    s = 0.3, 0.7), and fail for some tree of the next order, so the declared orders are exact. Entries are
    O(1)–O(10) rationals: round-off ≤ 1e-14, so 1e-12 is a clean pass and 1e-6 a clean fail (the smallest
    next-order defect is ~1e-4)."""
    method = INTEGRATORS[name]
    nodes = [0.0] + [sum(row) for row in method.a]
    np.testing.assert_allclose(nodes, NODES[name], rtol=0, atol=1e-15)
    assert sum(method.b) == pytest.approx(1.0, abs=1e-15)
    assert len(method.a) == method.stages - 1 and all(len(r) == i + 1 for i, r in enumerate(method.a))
    b = np.array(method.b)
    for p in range(1, method.order + 1):
        assert max(_defects(method, b, p)) <= 1e-12, (name, "order", p)
    assert max(_defects(method, b, method.order + 1)) > 1e-6
    if method.adaptive:
        assert sum(method.b_low) == pytest.approx(1.0, abs=1e-15)
        low = np.array(method.b_low)
        assert method.error_order < method.order
        for p in range(1, method.error_order + 1):
            assert max(_defects(method, low, p)) <= 1e-12, (name, "embedded order", p)
        assert max(_defects(method, low, method.error_order + 1)) > 1e-6
    if method.fsal:
        assert tuple(method.a[-1]) == tuple(method.b[:-1]) and method.b[-1] == 0.0
        assert nodes[-1] == pytest.approx(1.0, abs=1e-15)
        assert method.grad_evals_per_step == method.stages - 1
    else:
        assert method.grad_evals_per_step == method.stages
    q = DENSE_ORDER[name]
    s = torch.tensor([0.3, 0.7, 1.0], dtype=torch.float64)
    w = method.dense(s).numpy()
    np.testing.assert_allclose(w[2], b, rtol=0, atol=1e-14)  # s = 1: the step itself
    np.testing.assert_allclose(method.dense(torch.zeros(1, dtype=torch.float64)).numpy(), 0.0, atol=0)
    for row, sv in zip(w[:2], (0.3, 0.7)):
        for p in range(1, q + 1):
            assert max(_defects(method, row, p, sv)) <= 1e-12, (name, "dense", sv, p)
        assert max(_defects(method, row, q + 1, sv)) > 1e-6, (name, "dense order is higher than declared")


@pytest.mark.parametrize("name", list(INTEGRATORS))
def test_stability_polynomial_matches_exp(name):
    """On θ' = −λθ one step is θ1 = R(−z)θ0, z = hλ, with R(w) = Σ_k (bᵀA^{k−1}1) w^k, a polynomial of degree ≤
    stages. Order p means R agrees with exp to O(z^{p+1}): the coefficients are 1/k! for k ≤ p and differ at
    k = p + 1. `rk_step` must realize exactly this polynomial (round-off, 1e-14 relative) for per-member z."""
    method = INTEGRATORS[name]
    a, b = _matrix(method), np.array(method.b)
    coeff, v = [1.0], np.ones(method.stages)
    for _ in range(max(method.stages, method.order + 1)):  # degree ≤ stages: zeros beyond
        coeff.append(float(b @ v))
        v = a @ v
    for k in range(1, method.order + 1):
        assert coeff[k] == pytest.approx(1 / math.factorial(k), rel=1e-13), (name, k)
    assert abs(coeff[method.order + 1] - 1 / math.factorial(method.order + 1)) > 1e-4 / math.factorial(
        method.order + 1)
    lam = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    grad = lambda p: (0.5 * lam * p["x"][:, 0] ** 2, {"x": lam[:, None] * p["x"]})  # noqa: E731
    for h in (0.1, 0.4):
        p = {"x": torch.ones(3, 1, dtype=torch.float64)}
        step = rk_step(method, grad, p, h, grad(p))
        advance(p, step, None)
        z = (h * lam).numpy()
        poly = sum(c * (-z) ** k for k, c in enumerate(coeff))
        np.testing.assert_allclose(p["x"][:, 0].numpy(), poly, rtol=1e-14)
        if h == 0.1:  # z ≤ 0.2: |R(−z) − e^{−z}| / z^{p+1} is the first defect |c_{p+1} − 1/(p+1)!| up to O(z)
            gap = np.abs(poly - np.exp(-z)) / z ** (method.order + 1)
            first = abs(coeff[method.order + 1] - 1 / math.factorial(method.order + 1))
            np.testing.assert_allclose(gap, first, rtol=0.3)


# ---------------------------------------------------------------------------------------------------------------
# Shared harness runs (module scope: each is run once)
VEC_TIMES = [0.0, 0.5, 1.0, 2.0, 4.0, 10.0]


@pytest.fixture(scope="module")
def vector_dopri5(tmp_path_factory):
    """The vector case (width 4, y = 2, seed 0: x0 = −0.83, c = 70) under dopri5, rtol 1e-10, logged at
    metrics.times = [0.5, 1, 2, 4] (and 0, t_max = 10), with the parameters of every row saved."""
    tmp = tmp_path_factory.mktemp("vector_dopri5")
    overrides = (*VECTOR, *DOPRI, "trainer.rtol=1e-10", "metrics.times=[0.5,1,2,4]", "metrics.save_params=true")
    summary = go(tmp, *overrides)
    return overrides, summary, tmp / "run"


def vector_flow_reference(overrides, times):
    """θ(t) of the vector case from its hand-written field ẇ1 = −r·w2ᵀ, ẇ2 = −r·w1 (r = w2w1 − y), not the
    library's gradient: torchdiffeq dopri5 at rtol = atol = 1e-12, and scipy DOP853 at 1e-13 as a check."""
    import torchdiffeq
    from scipy.integrate import solve_ivp

    p = init_params(build(make_cfg(*overrides)))
    w1, w2 = p["W1"][0, :, 0], p["W2"][0, 0, :]
    k = w1.numel()

    def field(t, v):
        r = v[:k] @ v[k:] - Y
        return torch.cat([-r * v[k:], -r * v[:k]])

    v0 = torch.cat([w1, w2])
    ts = torch.tensor(times, dtype=torch.float64)
    ref = torchdiffeq.odeint(field, v0, ts, rtol=1e-12, atol=1e-12, method="dopri5")

    def field_np(t, v):
        r = v[:k] @ v[k:] - Y
        return np.concatenate([-r * v[k:], -r * v[:k]])

    check = solve_ivp(field_np, (0.0, times[-1]), v0.numpy(), method="DOP853", rtol=1e-13, atol=1e-13,
                      t_eval=np.array(times)).y.T
    return ref.numpy(), check, k


# ---------------------------------------------------------------------------------------------------------------
# 3. dopri5 against torchdiffeq
def test_dopri5_matches_torchdiffeq_on_the_vector_case(vector_dopri5):
    """Two references (torchdiffeq dopri5 1e-12, scipy DOP853 1e-13) agree to ≤ 4e-12 (measured; asserted
    ≤ 5e-11). (torchdiffeq's dopri8 is NOT usable here: at rtol = atol = 1e-12 it is off by 2.8e-9 at
    t = 0.5, measured against both.) The harness at rtol = 1e-10 (atol 1e-12) must match:
    * the `t` column equals the requested times exactly (the clock steps onto them, ==);
    * θ at every row within 1e-9 (measured 7e-12: dopri5 propagates the 5th-order solution, so its global
      error is well below rtol·|θ| per step; 1e-9 = 10·rtol allows a tolerance-proportionality constant of
      10 for |θ| ~ 1; the order itself is pinned down by the fixed-step tests above);
    * the residual |x − y| = √(2L) within 1e-9·(1 + ‖θ‖²) (|δx| ≤ ‖w1‖‖δw2‖ + ‖w2‖‖δw1‖), and the loss itself
      within 1e-8 relative while L ≥ 1e-6 (t ≤ 0.5; measured 1.7e-9): at later times L = ½(x − y)² has
      converged to ~1e-16..1e-22 and a relative comparison would measure 1e-11 absolute errors in x against a
      vanishing residual."""
    overrides, summary, out = vector_dopri5
    ref, check, k = vector_flow_reference(overrides, VEC_TIMES)
    assert np.abs(ref - check).max() <= 5e-11
    df = rows(out.parent)
    assert df["t"].tolist() == VEC_TIMES  # exactly, not approximately
    assert summary["t"] == 10.0 and summary["members"][0]["t"] == 10.0
    saved = sorted((out / "params").glob("*.pt"))
    assert len(saved) == len(VEC_TIMES)
    for i, path in enumerate(saved):
        snap = torch.load(path)
        assert snap["t"] == [VEC_TIMES[i]]
        theta = torch.cat([snap["params"]["W1"][0, :, 0], snap["params"]["W2"][0, 0, :]]).numpy()
        assert np.abs(theta - ref[i]).max() <= 1e-9, (VEC_TIMES[i], np.abs(theta - ref[i]).max())
    ref_r = np.abs(np.einsum("ti,ti->t", ref[:, :k], ref[:, k:]) - Y)
    ref_loss = 0.5 * ref_r**2
    scale = 1 + (ref**2).sum(1)
    assert (np.abs(residual(df["loss"]) - ref_r) <= 1e-9 * scale).all(), residual(df["loss"]) - ref_r
    for loss, expected in zip(df["loss"], ref_loss):
        if expected >= 1e-6:
            assert loss == pytest.approx(expected, rel=1e-8)
    assert df["loss"].iloc[-1] < 1e-15 < df["loss"].iloc[0]  # the run really converged


# ---------------------------------------------------------------------------------------------------------------
# 4. Per-member error control
def test_ensemble_member_equals_member_alone_under_dopri5(tmp_path):
    """Member e of an ensemble (seed s, size E) is seed s·E + e alone. Each member has its own step sizes and
    waits at the grid times, which changes nothing in its trajectory, so its accepted steps, rejections and
    gradient evaluations equal the lone run's. They would differ only if round-off in the batched error norm
    (a row-wise reduction over (E, ...) tensors) flipped an accept/reject decision sitting at err ≈ 1, which
    would shift the count by one step and its follow-up: ±2 allowed (measured: identical, and bitwise-equal
    parameters). θ within 1e-9 (the global error of the run, see the torchdiffeq test: a round-off-level change
    of the step sequence moves θ by at most that), the residual √(2L) likewise."""
    seed, size = 1, 3
    common = (*VECTOR, *DOPRI, "trainer.t_max=2", "metrics.times=[0.5,1]")
    ens = go(tmp_path, *common, f"seed={seed}", f"ensemble.size={size}", name="ens")
    ens_rows = rows(tmp_path, "ens")
    ens_params = torch.load(tmp_path / "ens" / "final_params.pt")
    assert len({m["steps"] for m in ens["members"]}) == size  # genuinely different members
    assert ens["grad_evals"] == 1 + 6 * ens["iterations"]
    for e in range(size):
        alone = go(tmp_path, *common, f"seed={seed * size + e}", "ensemble.size=1", name=f"alone{e}")
        mine, lone = ens["members"][e], alone["members"][0]
        assert mine["seed"] == lone["seed"] == seed * size + e
        assert abs(mine["steps"] - lone["steps"]) <= 2, (e, mine["steps"], lone["steps"])
        assert abs(mine["rejected_steps"] - lone["rejected_steps"]) <= 2
        assert mine["t"] == lone["t"] == 2.0
        # per-member cost: the first evaluation plus 6 per attempted step of its own
        assert mine["grad_evals"] == 1 + 6 * (mine["steps"] + mine["rejected_steps"])
        assert lone["grad_evals"] == 1 + 6 * alone["iterations"]
        a = ens_rows[ens_rows.member == e].reset_index(drop=True)
        b = rows(tmp_path, f"alone{e}")
        assert a["t"].tolist() == b["t"].tolist() == [0.0, 0.5, 1.0, 2.0]
        assert (np.abs(residual(a["loss"]) - residual(b["loss"])) <= 1e-9).all()
        p_alone = torch.load(tmp_path / f"alone{e}" / "final_params.pt")
        for k, v in p_alone.items():
            torch.testing.assert_close(ens_params[k][e], v[0], rtol=0, atol=1e-9)


def _drive_clock(nan_member: int | None, size: int,
                 method: Tableau = DOPRI5) -> tuple[list[float], list[bool], AdaptiveClock]:
    """A hand-made adaptive loop on θ' = −A0θ (eigenvalues 0.3..10) to t = 3, grid {0, 3}: member 0's
    sequence of attempted step sizes and accept flags; `nan_member`'s gradient is NaN everywhere."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(N_DIM, N_DIM, generator=g, dtype=torch.float64))
    a0 = q @ torch.diag(torch.tensor([0.3, 1.0, 3.0, 10.0], dtype=torch.float64)) @ q.T
    x0 = torch.randn(N_DIM, generator=g, dtype=torch.float64)

    def grad_fn(p):
        gx = (a0 @ p["x"][..., None])[..., 0]
        if nan_member is not None:
            gx = gx.clone()
            gx[nan_member] = math.nan
        return 0.5 * (p["x"] * gx).sum(1), {"x": gx}

    schedule = Schedule(method, 0.5, 3.0, None, None, None, 1e10, rtol=1e-8, atol=1e-10, max_steps=10_000)
    clock = AdaptiveClock(schedule, GridSpec(times=[]), size)
    params = {"x": x0.expand(size, N_DIM).clone()}
    loss, grad = grad_fn(params)
    running = [True] * size
    hs, accepted = [], []
    while clock.t[0] < 3.0 and len(hs) < 1000:
        if clock.due(running):
            clock.logged()
        h, moving = clock.step_size(running)
        step = rk_step(method, grad_fn, params, h, (loss, grad), schedule.rtol, schedule.atol)
        ok = clock.commit(step, moving)
        advance(params, step, ok)
        end_loss, end_grad = step.end
        loss = torch.where(ok, end_loss, loss)
        grad = {"x": torch.where(ok[:, None], end_grad["x"], grad["x"])}
        if bool(moving[0]):
            hs.append(float(h[0]))
            accepted.append(bool(ok[0]))
    return hs, accepted, clock


def test_nan_member_does_not_change_another_members_steps():
    """Step-size control per member: member 1's NaN error estimate rejects its every step (its h shrinks by
    MIN_FACTOR each time), while member 0's attempted step sizes and accept/reject decisions are the same
    sequence as when it runs alone (==: the controller works on member 0's own error only; the first trial
    step 0.5 on eigenvalue 10 forces rejections, so the sequence includes both branches)."""
    alone_h, alone_ok, alone = _drive_clock(None, 1)
    pair_h, pair_ok, pair = _drive_clock(1, 2)
    assert alone.t[0] == pair.t[0] == 3.0
    assert not all(alone_ok) and len(alone_h) > 50  # rejections and acceptances both happen
    assert pair_h == alone_h and pair_ok == alone_ok
    assert pair.accepted[0] == alone.accepted[0] and pair.rejected[0] == alone.rejected[0]
    assert pair.accepted[1] == 0 and pair.rejected[1] == len(pair_h) and pair.t[1] == 0.0


class _NaNFieldObjective:
    """L = ½‖θ‖² per member, but member 1's gradient is NaN wherever θ ≠ θ_0 (a finite loss next to an
    undefined vector field): only its first stage is finite."""

    def __init__(self, theta0):
        self.theta0 = theta0

    def loss(self, params, x, y):
        return 0.5 * params["x"].pow(2).sum(1)

    def loss_and_grad(self, params, x, y):
        grad = params["x"].clone()
        moved = (params["x"][1] != self.theta0[1]).any()
        grad[1] = torch.where(moved, float("nan"), grad[1])
        return self.loss(params, x, y), {"x": grad}


def test_member_with_a_nan_vector_field_stalls_and_is_recorded_diverged():
    """Through the real loop: member 1's steps are all rejected (NaN error), its step size underflows and it is
    recorded as diverged; member 0 reaches t_max and is not held at the grid by the stalled member."""
    theta0 = torch.tensor([[1.0, -2.0], [0.5, 0.3]], dtype=torch.float64)
    schedule = Schedule(DOPRI5, 0.1, 2.0, None, None, None, 1e10, locate_target=True, rtol=1e-8, atol=1e-10,
                        max_steps=10_000)
    data = (torch.zeros(2, 1, 1), torch.zeros(2, 1, 1))
    result = train(objective=_NaNFieldObjective(theta0), params={"x": theta0}, schedule=schedule,
                   batches=_Full(data),
                   grid=GridSpec(points=5), on_log=lambda snap, rows, grid, ending: None, snapshot=SimpleNamespace,
                   progress=lambda t: None)
    assert [m.status for m in result.members] == ["running", "diverged"]
    assert result.t[0] == 2.0 and result.t[1] == 0.0
    assert result.iterations < 10_000  # stopped by the underflow, not by the budget
    torch.testing.assert_close(result.params["x"][0], theta0[0] * math.exp(-2.0), rtol=1e-7, atol=0)


class _Full:
    full = True

    def __init__(self, data):
        self.data = data

    def __call__(self):
        return self.data

    def state(self):
        return []

    def restore(self, state):
        """The same data every step: nothing to rewind."""


class _NaNLossObjective:
    """L = ½‖θ‖² per member with ∇L = θ, but member 1's loss is NaN once ‖θ‖² < 1: a finite vector field and a
    loss that never overflows or passes the threshold, only NaN."""

    def loss(self, params, x, y):
        loss = 0.5 * params["x"].pow(2).sum(1)
        lost = (torch.arange(len(loss)) == 1) & (2 * loss < 1)
        return torch.where(lost, math.nan, loss)

    def loss_and_grad(self, params, x, y):
        return self.loss(params, x, y), {"x": params["x"].clone()}


@pytest.mark.parametrize("method", [EULER, DOPRI5], ids=["gd", "dopri5"])
def test_a_nan_loss_is_recorded_diverged(method):
    """Through the real loop, fixed and adaptive: a NaN loss (not inf, not above the threshold) stops its member
    as diverged at the first step past ‖θ‖² = 1, and only it. θ0 = (2, 0): GD with h = 0.1 has ‖θ_k‖² = 4·0.81^k,
    below 1 first at k = 7; the flow ‖θ(t)‖² = 4e^(−2t) at t = ln 2."""
    theta0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    schedule = Schedule(method, 0.1, 2.0, 20, None, None, 1e10, rtol=1e-8, atol=1e-10, max_steps=10_000)
    result = train(objective=_NaNLossObjective(), params={"x": theta0}, schedule=schedule,
                   batches=_Full((torch.zeros(2, 1, 1), torch.zeros(2, 1, 1))), grid=GridSpec(points=5),
                   on_log=lambda snap, rows, grid, ending: None, snapshot=SimpleNamespace, progress=lambda t: None)
    assert [m.status for m in result.members] == ["running", "diverged"]
    assert result.t[0] == pytest.approx(2.0) and math.log(2) < result.t[1] < 1.0
    if method is EULER:
        assert result.members[1].stop_step == result.steps[1] == 7


# ---------------------------------------------------------------------------------------------------------------
# 5. Event location
def closed_form_time(overrides) -> tuple[float, float, float]:
    """Theory §1.6.3: T(x0 -> x1) = F(x1) − F(x0), F(x) = (1/q)·ln|(q√(4x² + c) + 4yx + c)/(x − y)|,
    q = √(4y² + c), for f = ½(x − y)²; x0 = w2·w1, c = 2tr(C²) − tr(C)² at θ0, x1 with ½(x1 − y)² = 1e-6 on
    x0's side of y. Guarded by quadrature of ∫dx/((y − x)√(c + 4x²)) (scipy, u = −ln|y − x|)."""
    from scipy.integrate import quad

    p = init_params(build(make_cfg(*overrides)))
    w1, w2 = p["W1"][0], p["W2"][0]  # (k, 1), (1, k)
    x0 = float(w2 @ w1)
    cmat = w1 @ w1.T - w2.T @ w2
    c = float(2 * torch.trace(cmat @ cmat) - torch.trace(cmat) ** 2)
    side = 1.0 if x0 > Y else -1.0
    x1 = Y + side * math.sqrt(2 * 1e-6)
    closed = vector_case_time(x0, x1, Y, c)
    integrand = lambda u: 1 / math.sqrt(c + 4 * (Y + side * math.exp(-u)) ** 2)  # noqa: E731
    value, _ = quad(integrand, -math.log(abs(Y - x0)), -math.log(abs(Y - x1)), epsabs=0, epsrel=1e-13)
    assert closed == pytest.approx(value, rel=1e-10)
    return closed, x0, c


EVENT = (*VECTOR, "seed=1", "trainer.target_loss=1e-6", "metrics.points=10", *FLOW)


@pytest.mark.parametrize("method, tol", [
    (("trainer.method=dopri5", "trainer.rtol=1e-11"), 1e-8),
    (("trainer.method=rk4", "trainer.h=0.01"), 2e-7)], ids=["dopri5", "rk4"])
def test_time_to_target_matches_closed_form(tmp_path, method, tol):
    """Seed 1: x0 = −0.10, c = 2.43, T = 2.0458. time_to_target is located on the dense output between the
    steps around the crossing, so it is not a step time:
    * dopri5, rtol 1e-11: δT ≈ δx/|ẋ| with trajectory error δx ~ 1e-11 and |ẋ| = |x − y|√(c + 4x²) ≈ 6e-3 at
      the crossing, plus the order-4 dense output's error (local, ~rtol): ~2e-9 absolute, 1e-9 relative;
      measured 1.2e-10 (seeds 0..3: 5e-11..7e-10). 1e-8 relative.
    * rk4, h = 0.01: global relative error in x − y ≈ N·(hq)⁵/120 with q = √(16 + c) = 4.3, N = 205:
      ~2.5e-7, i.e. δT ≈ 2.5e-7/q ≈ 6e-8 absolute, 3e-8 relative; measured 1.4e-8. 2e-7 relative: a grid
      time (error up to h, 5e-3), linear interpolation (~1e-4) or a second-order interpolant (~8e-7) fail."""
    closed, x0, c = closed_form_time(EVENT)
    assert c > 1.0 and x0 < Y  # an imbalanced start approaching y from below
    s = go(tmp_path, *EVENT, *method)
    m = s["members"][0]
    assert s["status"] == m["status"] == "converged"
    t_hit = m["time_to_target"]
    assert t_hit == pytest.approx(closed, rel=tol), (t_hit, closed, t_hit / closed - 1)
    df = rows(tmp_path)
    assert t_hit not in df["t"].tolist()
    assert t_hit < s["t"] == df["t"].iloc[-1]  # stopped at the first step at or after the crossing
    assert df["loss"].iloc[-1] <= 1e-6 < df["loss"].iloc[-2]
    if "rk4" in method[0]:
        steps = t_hit / 0.01
        assert abs(steps - round(steps)) > 1e-3  # between two steps, not on one
        assert s["steps"] == math.ceil(steps - 1e-9) and s["t"] == pytest.approx(s["steps"] * 0.01, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# 6. grad_evals accounting
def test_grad_evals_accounting(tmp_path, vector_dopri5):
    """Every gradient the loop computes, the one at θ0 included: dopri5 (FSAL, 7 stages) 1 + 6 per attempted
    step, rejected ones included; rk4 1 + 4 per step; gd 1 + 1 per step. A first trial step h = 5 (on a
    problem whose rate is ~9) must be rejected, and still be counted."""
    _, s, _ = vector_dopri5
    m = s["members"][0]
    assert s["iterations"] == m["steps"] + m["rejected_steps"] and s["steps"] == m["steps"] > 0
    assert s["grad_evals"] == m["grad_evals"] == 1 + 6 * s["iterations"]

    big = go(tmp_path, *VECTOR, *DOPRI, "trainer.h=5", "trainer.t_max=1", "metrics.points=2", name="big")
    mb = big["members"][0]
    assert big["rejected_steps"] == mb["rejected_steps"] >= 1
    assert big["iterations"] == mb["steps"] + mb["rejected_steps"]
    assert big["grad_evals"] == mb["grad_evals"] == 1 + 6 * big["iterations"]
    assert big["t"] == 1.0

    rk4 = go(tmp_path, *VECTOR, *FLOW, "trainer.method=rk4", "trainer.h=0.05", "trainer.t_max=1",
             "metrics.points=2", name="rk4")
    assert rk4["steps"] == rk4["iterations"] == 20 and rk4["rejected_steps"] == 0
    assert rk4["grad_evals"] == rk4["members"][0]["grad_evals"] == 1 + 4 * rk4["steps"]

    gd = go(tmp_path, *VECTOR, "trainer=gd", "trainer.steps=20", "metrics.points=2", name="gd")
    assert gd["steps"] == 20 and gd["grad_evals"] == gd["members"][0]["grad_evals"] == 1 + gd["steps"]


# ---------------------------------------------------------------------------------------------------------------
# 7. Step budget
@pytest.mark.filterwarnings("ignore::UserWarning")  # the harness warns about dopri5 on a ReLU model
def test_step_budget_stops_the_run_cleanly(tmp_path):
    """ReLU teacher-student under dopri5 at rtol 1e-12 with trainer.max_steps = 20 attempted steps: the run
    stops with status step_budget (run and member), short of t_max, with its final row written, no exception."""
    s = go(tmp_path, "model=two_layer", "model.activation=relu", "task=teacher", "task.n=20", "task.input_dim=3",
           "model.width=3", *FLOW, "trainer.method=dopri5", "trainer.rtol=1e-12", "trainer.max_steps=20")
    assert s["status"] == "step_budget"
    assert [m["status"] for m in s["members"]] == ["step_budget"]
    assert s["iterations"] == 20  # attempts, accepted + rejected
    assert s["members"][0]["steps"] + s["members"][0]["rejected_steps"] == 20
    assert 0 < s["t"] < 10.0
    df = rows(tmp_path)
    assert df["step"].iloc[-1] == s["steps"] and df["t"].iloc[-1] == s["t"]
    assert math.isfinite(df["loss"].iloc[-1])


@pytest.mark.parametrize("grid", [["metrics.points=2"], []])  # no waiting before t_max; the default grid
def test_step_budget_is_per_member(tmp_path, grid):
    """Three members; unconstrained they need a0 < a1 < a2 attempted steps (accepted + rejected). With
    max_steps between the smallest and the largest, a member that reaches t_max within the budget is complete
    (status max_steps, the same attempts as without a budget), one short of it stops with step_budget after
    exactly max_steps attempts. Iterations a member spends waiting at a grid time for the others do not count:
    one member's cost never changes another's status."""
    common = (*VECTOR, *FLOW, "trainer.method=dopri5", "seed=1", "ensemble.size=3", "trainer.t_max=1", *grid)
    free = go(tmp_path, *common, name="free")
    attempts = [m["steps"] + m["rejected_steps"] for m in free["members"]]
    assert len(set(attempts)) == 3
    budget = (min(attempts) + max(attempts)) // 2
    s = go(tmp_path, *common, f"trainer.max_steps={budget}", name="budget")
    assert s["status"] == "step_budget"
    for m, needed in zip(s["members"], attempts):
        if needed <= budget:
            assert m["t"] == 1.0 and m["steps"] + m["rejected_steps"] == needed and m["status"] == "max_steps"
        else:
            assert m["status"] == "step_budget" and m["t"] < 1.0 and m["steps"] + m["rejected_steps"] == budget


# ---------------------------------------------------------------------------------------------------------------
# 8. Grid semantics
def test_default_adaptive_grid_is_log_spaced_to_t_max(tmp_path):
    """metrics.points = P: rows at 0, then P − 1 times log-spaced from h to t_max, t_max exactly; each member
    is stepped exactly onto every one (an ensemble logs all members at the same t)."""
    h, t_max, points = 0.01, 1.0, 8
    go(tmp_path, *VECTOR, *DOPRI, f"trainer.h={h}", f"trainer.t_max={t_max}", f"metrics.points={points}",
       "ensemble.size=2")
    df = rows(tmp_path)
    expected = [0.0] + [h * (t_max / h) ** (i / (points - 2)) for i in range(points - 1)]
    for e in range(2):
        t = df[df.member == e]["t"].tolist()
        assert len(t) == points and t[0] == 0.0 and t[-1] == t_max
        np.testing.assert_allclose(t, expected, rtol=1e-13)
    by_row = df["t"].to_numpy().reshape(points, 2)
    assert (by_row[:, 0] == by_row[:, 1]).all()


def test_every_k_steps_under_dopri5(tmp_path):
    """metrics.every = 5 with dopri5: each member's rows are at accepted steps 0, 5, 10, ... and its final
    step (members sync on step counts, each at its own t)."""
    s = go(tmp_path, *VECTOR, *DOPRI, "trainer.t_max=1", "metrics.every=5", "ensemble.size=2", "seed=1")
    df = rows(tmp_path)
    for e, m in enumerate(s["members"]):
        steps = df[df.member == e]["step"].tolist()
        assert all(k % 5 == 0 or k == m["steps"] for k in steps), steps
        assert steps[0] == 0 and steps[-1] == m["steps"]
        assert set(range(0, m["steps"] + 1, 5)) <= set(steps)
        assert df[df.member == e]["t"].iloc[-1] == 1.0
    assert s["members"][0]["steps"] != s["members"][1]["steps"]


@pytest.mark.parametrize("overrides, key", [
    (("metrics.times=[0.5,20]",), "metrics.times[1]"),
    (("metrics.times=[-0.5,1]",), "metrics.times[0]"),
    (("metrics.times=[0.5]", "metrics.every=5"), "metrics.times"),
    (("task=teacher", "task.online=true", "model=two_layer", "model.activation=tanh"), "trainer.method"),
], ids=["after-t_max", "negative", "every-and-times", "adaptive-online"])
def test_grid_and_method_config_errors(overrides, key):
    """Rejected at build time, naming the offending key (t_max = 10 by default)."""
    base = () if "task=teacher" in overrides else VECTOR
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*base, *DOPRI, *overrides))
    assert info.value.key == key, str(info.value)
    assert key in str(info.value)


def test_fixed_method_on_online_task_is_accepted():
    """The adaptive-online error is about error control, not the flow trainer: rk4 on an online task builds."""
    build(make_cfg("task=teacher", "task.online=true", "model=two_layer", *FLOW, "trainer.method=rk4"))


# ---------------------------------------------------------------------------------------------------------------
# 9. The loss decreases along the flow
def test_loss_is_non_increasing_along_adaptive_runs(tmp_path, vector_dopri5):
    """dL/dt = −‖∇L‖² ≤ 0. Tanh teacher-student (2 members, 40 log-spaced rows) under dopri5: the logged loss
    never increases by more than 1e-12 (θ errors ~1e-10 times ‖∇L‖ ≤ 1; measured: every interval decreases,
    by at least 6e-4), and drops overall. The vector run converges to the loss floor set by the trajectory
    error, ½(δx)² with δx ~ 3e-11, i.e. ~5e-22: there non-increase is asserted up to 1e-20."""
    s = go(tmp_path, *TANH, *DOPRI, "metrics.points=40", "ensemble.size=2")
    df = rows(tmp_path)
    for e in range(2):
        loss = df[df.member == e]["loss"].to_numpy()
        assert len(loss) == 40 and df[df.member == e]["t"].iloc[-1] == 10.0
        assert np.diff(loss).max() <= 1e-12, np.diff(loss).max()
        assert loss[-1] < 0.6 * loss[0]
    assert s["status"] == "max_steps"
    vec = rows(vector_dopri5[2].parent)["loss"].to_numpy()
    assert np.diff(vec).max() <= 1e-20 and vec[-1] < 1e-15


def test_adaptive_method_on_a_net_with_kinks_warns_at_build():
    """relu/abs defeat step-size control: building such a run says so (and names rk4); rk4 itself is quiet."""
    with pytest.warns(UserWarning, match="kinks.*rk4"):
        build(make_cfg("trainer=gradient_flow", "trainer.method=dopri5", "model.activation=relu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(make_cfg("trainer=gradient_flow", "trainer.method=rk4", "model.activation=relu"))
        build(make_cfg("trainer=gradient_flow", "trainer.method=dopri5", "model.activation=tanh"))


@pytest.mark.parametrize("curve, root", [
    (lambda s: torch.exp(-5 * s) - 0.1, math.log(10) / 5),
    (lambda s: (1 - s) ** 3 - 0.05, 1 - 0.05 ** (1 / 3)),
    (lambda s: 0.9 - s**4, 0.9 ** 0.25),
])
def test_locate_crossing_converges_superlinearly_on_curved_losses(curve, root):
    """Event location by Illinois regula falsi on the dense output: on an Euler step θ(s) = s (from θ_k = 0 with
    ∇L = −1, h = 1) the loss L(θ) = curve(θ) + level is found to round-off in far fewer evaluations than the
    60-iteration cap (plain regula falsi stalls on one end of a convex curve; Illinois halves that end's value)."""
    level, calls = 1.0, []
    params = {"x": torch.zeros(2, 1, dtype=torch.float64)}
    grad = {"x": -torch.ones(2, 1, dtype=torch.float64)}
    step = rk_step(EULER, lambda p: (None, grad), params, 1.0, (None, grad))

    def loss_at(p):
        calls.append(1)
        return curve(p["x"][:, 0]) + level

    prev = _Previous(step, params, loss_at(params), [0.0, 0.0])
    s = locate_crossing(loss_at, EULER, prev, level, curve(torch.ones(2, dtype=torch.float64)) + level)
    assert s == pytest.approx([root, root], abs=1e-13)
    assert len(calls) <= 20, len(calls)


def test_fixed_step_flow_lands_on_t_max_and_only_on_reachable_times(tmp_path):
    """h = 0.3, t_max = 1: three steps of 0.3 and a last one of 0.1 land on t = 1 exactly (no overshoot);
    metrics.times must be multiples of h (or t_max) for a fixed-step method, any time for an adaptive one."""
    s = go(tmp_path, *VECTOR, *FLOW, "trainer.h=0.3", "trainer.t_max=1", "metrics.times=[0.6,1]")
    assert s["t"] == 1.0 and s["steps"] == 4
    assert rows(tmp_path)["t"].tolist() == pytest.approx([0.0, 0.6, 1.0], abs=1e-15)
    with pytest.raises(ConfigError, match=r"metrics\.times\[0\].*multiple of the step 0\.3"):
        build(make_cfg(*VECTOR, *FLOW, "trainer.h=0.3", "trainer.t_max=1", "metrics.times=[0.5]"))
    build(make_cfg(*VECTOR, *DOPRI, "trainer.h=0.3", "trainer.t_max=1", "metrics.times=[0.5]"))


def test_shortened_last_step_inside_a_window(tmp_path):
    """The last fixed step (h = 0.3 to t_max = 1: 0.1) is shortened wherever it falls in a window of steps: a run
    with rows only at 0 and t_max (one window of four steps) ends at the θ, bit for bit, of a run with a row every
    step (windows of one), and not at the θ of four full steps."""
    common = (*VECTOR, *FLOW, "trainer.h=0.3", "metrics.names=[loss]")
    for name, overrides in {"window": ("trainer.t_max=1", "metrics.points=2"),
                            "step": ("trainer.t_max=1", "metrics.every=1"),
                            "full": ("trainer.t_max=1.2", "metrics.points=2")}.items():
        go(tmp_path, *common, *overrides, name=name)
    window, step, full = (torch.load(tmp_path / name / "final_params.pt") for name in ("window", "step", "full"))
    assert all(torch.equal(window[k], step[k]) for k in window)
    assert not any(torch.equal(window[k], full[k]) for k in window)


@pytest.mark.parametrize("overrides, key", [
    (("trainer.method=rk4", "trainer.rtol=1e-3"), "trainer.rtol"),  # fixed steps would silently ignore it
    (("trainer.method=rk4", "trainer.max_steps=5"), "trainer.max_steps"),
    (("trainer.method=dopri5", "trainer.rtol=1e-20"), "trainer.rtol"),  # below 100·eps: round-off
    (("trainer.method=dopri5", "trainer.rtol=1e-8", "dtype=float32"), "trainer.rtol"),
])
def test_tolerance_keys_are_validated(overrides, key):
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*VECTOR, *FLOW, *overrides))
    assert info.value.key == key


def test_a_stop_writes_only_the_stopped_members_row(tmp_path):
    """A member that reaches the target mid-interval gets its own row there; the others' rows stay on the grid
    (a member's metrics.csv does not depend on the rest of the ensemble)."""
    times = [0.5, 1.0, 2.0, 4.0]
    go(tmp_path, *VECTOR, *DOPRI, "ensemble.size=3", "seed=1", "trainer.t_max=4", f"metrics.times={times}",
       "trainer.target_loss=1e-3")
    df = rows(tmp_path)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert all(m["status"] == "converged" for m in s["members"])
    assert any(m["t"] not in times for m in s["members"])  # some member stopped between grid times
    for m in s["members"]:  # its grid rows and its own stop row, none at another member's stop
        assert set(df[df.member == m["member"]]["t"]) <= {0.0, *times, m["t"]}


def test_stall_threshold_is_relative_to_max_t_1():
    """A member stalls when its last step was rejected and h < 1e-14·max(t, 1): the bound is 1e-14 up to t = 1,
    then grows with t (README: trainer)."""
    clock = AdaptiveClock(Schedule(DOPRI5, 0.1, 10.0, None, None, None, 1e10, rtol=1e-8, atol=1e-10,
                                   max_steps=100), GridSpec(times=[]), 4)
    t = torch.tensor([0.5, 0.5, 5.0, 5.0], dtype=torch.float64)
    h = torch.tensor([0.9e-14, 1.5e-14, 4.9e-14, 5.1e-14], dtype=torch.float64)
    assert clock.stalled_mask(t, h, torch.ones(4, dtype=torch.bool)).tolist() == [True, False, True, False]
    assert not clock.stalled_mask(t, h, torch.zeros(4, dtype=torch.bool)).any()  # an accepted step never stalls


def test_a_tiny_first_trial_step_is_not_a_stall(tmp_path):
    """trainer.h = 1e-15 is below the stall threshold, but the step is accepted and grows (×10 per step):
    only a rejected step that small means a NaN/inf vector field."""
    s = go(tmp_path, *VECTOR, *DOPRI, "trainer.h=1e-15", "trainer.t_max=1", "metrics.points=2")
    assert s["status"] == "max_steps" and s["t"] == 1.0


@pytest.mark.parametrize("lr, steps", [(0.05, 200), (0.1, 7), (0.01, 1000)])
def test_gd_steps_are_all_exactly_lr(lr, steps):
    """GD is a map with step lr: its t_max = steps·lr, so the last step is lr too, bit for bit (only a flow
    whose t_max is not a multiple of h gets a shortened last step: 200·0.05 − 199·0.05 ≠ 0.05 in floats)."""
    clock = FixedClock(GDConfig(lr=lr, steps=steps).schedule(2.0**-52), GridSpec(), 1)
    assert clock.last_h == lr


def test_fixed_grid_rounds_metric_times_to_the_nearest_step():
    """metrics.times [0.3, 0.7] under lr = 0.1 are steps 3 and 7, although 0.3/0.1 = 2.9999999999999996 and
    0.7/0.1 = 6.999999999999999 in floats (truncated, the rows would be at steps 2 and 6)."""
    clock = FixedClock(GDConfig(lr=0.1, steps=10).schedule(2.0**-52), GridSpec(times=[0.3, 0.7]), 1)
    assert sorted(clock.grid) == [0, 3, 7, 10]
    assert [clock.times_at(k)[0] for k in (3, 7)] == pytest.approx([0.3, 0.7], abs=1e-15)


@pytest.mark.parametrize("method, atol, h0", [(BOSH3, 1e-7, 0.002), (BOSH3, 1e-7, 0.05), (DOPRI5, 1e-12, 0.005),
                                              (DOPRI5, 1e-12, 0.05)], ids=["bosh3", "bosh3-reject", "dopri5",
                                                                           "dopri5-reject"])
def test_step_size_controller_aims_at_the_tolerance(method, atol, h0):
    """Hairer–Wanner II.4: after a step with error estimate err (in units of the tolerance), accepted or rejected,
    the next trial step is h·0.9·err^(−1/(q+1)), q the order of the error estimate (error_order, the embedded
    pair's), so that the estimate, O(h^(q+1)), lands at 0.9^(q+1) on the same state. On θ' = −θ from err ≈ 1e-3
    (accepted) and err ≈ 20–200 (rejected) the new step's estimate is within 5% of 0.9^(q+1) (measured within
    1.5%: the O(h) departure from h^(q+1)); an exponent from the method's order p, 1/(p+1), would land at
    err^(1−(q+1)/(p+1)) times that: 0.2–0.4 or 2–2.4 times."""
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    grad = lambda p: (0.5 * p["x"].pow(2).sum(1), {"x": p["x"].clone()})  # noqa: E731
    clock = AdaptiveClock(Schedule(method, h0, 100.0, None, None, None, 1e10, rtol=0.0, atol=atol, max_steps=100),
                          GridSpec(times=[]), 1)
    clock.logged()  # past the row at t = 0
    errors = []
    for _ in range(2):  # the first trial step, then the one the controller chose, both from x0
        h, moving = clock.step_size([True])
        step = rk_step(method, grad, {"x": x0.clone()}, h, grad({"x": x0}), 0.0, atol)
        clock.commit(step, moving)
        clock.t.zero_()
        errors.append(float(step.error[0]))
    assert not 0.01 < errors[0] < 10  # far from the target: the controller has to act
    assert errors[1] == pytest.approx(0.9 ** (method.error_order + 1), rel=0.05)


def test_sgd_member_in_an_ensemble_stops_as_it_does_alone(tmp_path):
    """SGD checks the target on the full-data loss at rows written for every member (the grid), never at a
    row another member's stop triggered: a member's time_to_target is its own (alone = in the ensemble)."""
    common = ("trainer=sgd", "trainer.lr=0.6", "trainer.steps=400", "trainer.batch_size=4", "trainer.target_loss=0.05",
              "trainer.divergence_threshold=3", "metrics.every=100", "metrics.names=[loss]")
    ensemble = go(tmp_path, *common, "ensemble.size=6", name="ensemble")
    stops = [m["time_to_target"] for m in ensemble["members"]]
    assert any(t is not None for t in stops) and any(m["status"] == "diverged" for m in ensemble["members"])
    for i in (i for i, t in enumerate(stops) if t is not None):
        alone = go(tmp_path, *common, "ensemble.size=1", f"seed={i}", "task.seed=0", name=f"alone{i}")
        assert alone["time_to_target"] == stops[i]
