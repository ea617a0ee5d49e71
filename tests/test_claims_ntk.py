"""P3.1–P3.6 (dynamics_bench/claims/ntk.py): each verdict on synthetic data that must pass and data that must fail,
and the closed forms of dynamics_bench/theory/scalings.py against independent computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynamics_bench.claims import ntk
from dynamics_bench.theory.ntk import ntk_mlp
from dynamics_bench.theory.scalings import du_movement_bound, ntk_mlp_trained, unit_pair

WIDTHS = [128, 512, 2048, 8192, 32768]


def power(widths: list[float], exponent: float, scale: float = 1.0, seeds: int = 3) -> list[list[float]]:
    """scale·m^exponent for every width, the same for each seed."""
    return [[scale * m ** exponent] * seeds for m in widths]


def verdicts(checks) -> dict[str, bool]:
    return {c.id: c.passed for c in checks}


def assert_ids(prediction_id: str, checks) -> None:
    prediction = next(p for p in ntk.PREDICTIONS if p.id == prediction_id)
    assert [c.id for c in checks] == list(prediction.subclaims)


# P3.1 --------------------------------------------------------------------------------------------------------------
def p3_1_data(error: float, exponent: float) -> dict:
    return {"widths": WIDTHS, "lambda0": 0.013, "input_dim": 10,
            "lambda_min": [[0.013 * (1 + error)] * 3 for _ in WIDTHS], "deviation": power(WIDTHS, exponent, 3.0)}


def test_p3_1_verdicts():
    good = ntk.judge_p3_1(p3_1_data(0.01, -0.5))
    assert_ids("p3_1_kernel_at_init", good)
    assert all(verdicts(good).values())
    bad = verdicts(ntk.judge_p3_1(p3_1_data(0.08, -0.2)))
    assert not bad["p3_1_a_lambda_min_converges"] and not bad["p3_1_b_kernel_deviation_slope"]


# P3.2 --------------------------------------------------------------------------------------------------------------
def p3_2_data(rate_lambda: float, kink: bool = False) -> dict:
    """Losses (1 − η·rate_lambda)^(2k) logged every 5 steps; η = 5, λ0 = 0.013, λ_min(K(T)) = 0.013."""
    step = np.arange(0, 400, 5.0)
    loss = (1 - 5 * rate_lambda) ** (2 * step)
    if kink:  # a stall: one interval with no decrease, and a bend in the late half
        loss[40:] *= np.exp(-0.05 * (step[40:] - step[40]) ** 1.5 / 10)
        loss[10] = loss[9]
    return {"width": 4096, "lr": 5.0, "lambda0": 0.013, "lambda_min_final": [0.013],
            "curves": {"0": {"step": step.tolist(), "loss": loss.tolist()}}}


def test_p3_2_verdicts():
    good = ntk.judge_p3_2(p3_2_data(0.013))
    assert_ids("p3_2_linear_convergence", good)
    assert all(verdicts(good).values())
    bad = verdicts(ntk.judge_p3_2(p3_2_data(0.013, kink=True)))
    assert not bad["p3_2_a_late_linear"] and not bad["p3_2_b_contraction_bound"]
    assert not verdicts(ntk.judge_p3_2(p3_2_data(0.02)))["p3_2_c_asymptotic_slope"]


# P3.3 --------------------------------------------------------------------------------------------------------------
def p3_3_data(error: float, exponent: float, neuron_scale: float) -> dict:
    widths = [512, 2048, 8192, 32768]
    return {"widths": widths, "min_norm": 2.84, "lambda0": 0.13, "y_norm": 5.0, "n": 20, "final_loss": 1e-12,
            "movement": [[2.84 * (1 + error)] * 3 for _ in widths], "relative": power(widths, exponent, 2.0),
            "neuron": power(widths, exponent, neuron_scale)}


def test_p3_3_verdicts():
    good = ntk.judge_p3_3(p3_3_data(0.005, -0.5, 1.0))
    assert_ids("p3_3_movement", good)
    assert all(verdicts(good).values())
    bad = verdicts(ntk.judge_p3_3(p3_3_data(0.05, -0.2, 1e4)))
    assert not any(bad.values())


# P3.4 --------------------------------------------------------------------------------------------------------------
def test_p3_4_verdicts():
    good = ntk.judge_p3_4({"widths": WIDTHS, "kernel": power(WIDTHS, -0.55), "flips": power(WIDTHS, -0.55)})
    assert_ids("p3_4_kernel_stability", good)
    assert all(verdicts(good).values())
    bad = ntk.judge_p3_4({"widths": WIDTHS, "kernel": power(WIDTHS, -0.2), "flips": power(WIDTHS, -0.1)})
    assert not any(verdicts(bad).values())


# P3.5 --------------------------------------------------------------------------------------------------------------
def p3_5_data(good: bool) -> dict:
    widths = [32, 128, 512, 2048]
    e = 1.0 if good else 0.5  # exponents scaled off their predictions when bad

    def layers(exponent: float) -> list[dict]:
        return [{k: [m ** exponent] * 3 for k in ntk.LAYERS} for m in widths]
    times = [[[20.0 * math.log(1 / eps) if good else 20.0 * math.log(1 / eps) ** 3 for eps in ntk.EPSILONS]] * 3]
    deltas = [0.01, 0.0215, 0.0464, 0.1]
    return {"widths": widths, "iterations": power(widths, -0.1 if good else 0.5, 100.0),
            "frobenius": layers(-0.5 * e), "relative": layers(-1.0 * e), "spectral": layers(-0.5 * e),
            "times": times, "accuracy": [1.0] * 3 if good else [1.0, 0.97, 1.0],
            "accuracy_curve": {"step": [0, 10], "accuracy": [0.5, 1.0]},
            "separation_width": 1024, "deltas": deltas,
            "separation_times": [[10.0 / d ** (1.0 if good else 2.0)] * 3 for d in deltas],
            "separation_lambda_min": [[0.12 * d] * 3 for d in deltas], "separation_lambda_inf": [0.12 * d for d in deltas],
            "separation_lambda_final": [[0.12 * d] * 3 for d in deltas],
            "recursion_slopes": {"1": 1.06, "2": 1.03, "3": 1.01} if good else {"1": 1.3, "2": 1.03, "3": 1.01}}


def test_p3_5_verdicts():
    good = ntk.judge_p3_5(p3_5_data(True))
    assert_ids("p3_5_allen_zhu_scalings", good)
    assert all(verdicts(good).values()), [c.id for c in good if not c.passed]
    bad = ntk.judge_p3_5(p3_5_data(False))
    assert not any(verdicts(bad).values()), [c.id for c in bad if c.passed]
    quadratic = p3_5_data(True)  # the recursion right but the harness's own kernel wrong: g fails
    quadratic["separation_lambda_min"] = [[0.12 * d * d] * 3 for d in quadratic["deltas"]]
    assert not next(c for c in ntk.judge_p3_5(quadratic) if c.id == "p3_5_g_lambda_min_linear_in_delta").passed
    stalled = p3_5_data(True)
    stalled["separation_times"][0] = [math.nan] * 3
    check = ntk.judge_p3_5(stalled)[-1]
    assert not check.passed and "Not reached within the step budget at δ = 0.01" in check.note


# P3.6 --------------------------------------------------------------------------------------------------------------
def test_p3_6_verdicts():
    alphas = [10.0, 30.0, 100.0, 300.0, 1000.0]
    good = ntk.judge_p3_6({"alphas": alphas, "distance": [45.0 + 5 / a for a in alphas],
                           "gap": [1.0 / a ** 2 for a in alphas]})
    assert_ids("p3_6_lazy_training", good)
    assert all(verdicts(good).values())
    bad = ntk.judge_p3_6({"alphas": alphas, "distance": [45.0 + 50 / a for a in alphas],
                          "gap": [1.0 / a ** 0.5 for a in alphas]})
    assert not any(verdicts(bad).values())


# theory/scalings.py ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_every_layer_trained_is_ntk_mlp(parameterization):
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for depth in (2, 3, 4):
        torch.testing.assert_close(
            ntk_mlp_trained(x, depth=depth, trained=list(range(1, depth + 1)), parameterization=parameterization,
                            init_scale=1.3),
            ntk_mlp(x, depth=depth, parameterization=parameterization, init_scale=1.3))


def test_trained_middle_layers_match_empirical_kernel():
    """Only W2, W3 of a depth-4 standard mlp trained: K/m of wide random nets, with each layer's gradient from explicit
    backpropagation (⟨b_l, b'_l⟩·⟨h_{l−1}, h'_{l−1}⟩), → the recursion."""
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(4, 6, dtype=torch.float64, generator=g), dim=1)
    m, s = 4000, math.sqrt(2)
    kernels = []
    for _ in range(4):
        w1 = torch.randn(m, 6, dtype=torch.float64, generator=g) * s / math.sqrt(6)
        w2, w3 = (torch.randn(m, m, dtype=torch.float64, generator=g) * s / math.sqrt(m) for _ in range(2))
        w4 = torch.randn(m, dtype=torch.float64, generator=g) * s / math.sqrt(m)
        h1 = torch.relu(x @ w1.T)
        z2 = h1 @ w2.T
        h2 = torch.relu(z2)
        back3 = (h2 @ w3.T > 0) * w4  # ∂u/∂z3
        back2 = (z2 > 0) * (back3 @ w3)  # ∂u/∂z2
        kernels.append(((back3 @ back3.T) * (h2 @ h2.T) + (back2 @ back2.T) * (h1 @ h1.T)) / m)
    expected = ntk_mlp_trained(x, depth=4, trained=[2, 3], init_scale=s)
    torch.testing.assert_close(torch.stack(kernels).mean(0), expected, rtol=0.05, atol=0.01)


def test_unit_pair_and_radius():
    x = unit_pair(0.01, 8)
    assert torch.allclose(x.norm(dim=1), torch.ones(2, dtype=torch.float64))
    assert float((x[0] - x[1]).norm()) == pytest.approx(0.01, rel=1e-12)
    assert du_movement_bound(20, 5.0, 400, 0.1) == pytest.approx(4 * math.sqrt(20) * 5.0 / (20 * 0.1))
