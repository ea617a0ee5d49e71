"""Claims P1.1–P1.6 (dynamics_bench/claims/paper1_flow.py): every verdict on synthetic data that must pass and data
that must fail, the figures drawn from the same data, and the vector-case closed forms of
dynamics_bench/theory/vector.py against independent computations."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.integrate import solve_ivp

from dynamics_bench.claims import paper1_flow as p1
from dynamics_bench.theory import vector_case_time
from dynamics_bench.theory.vector import (COSTS, cost, cost_slope, plain_flow, plain_time, reduced_product,
                                          time_between)


def verdicts(prediction_id: str, data: dict, draw: bool = False) -> dict[str, bool]:
    """{check id: passed} for the prediction's judge, asserting the ids are its sub-claims in order; `draw` also
    draws its figure from the same data."""
    prediction = next(p for p in p1.PREDICTIONS if p.id == prediction_id)
    checks = prediction.judge(data)
    assert [c.id for c in checks] == list(prediction.subclaims or (prediction.id,))
    if draw:
        assert isinstance(prediction.draw(data, checks), Figure)
    return {c.id: c.passed for c in checks}


def failing(prediction_id: str, data: dict, sub_claim: str) -> None:
    """Exactly `sub_claim` fails on `data`."""
    got = verdicts(prediction_id, data)
    assert not got[sub_claim] and all(v for k, v in got.items() if k != sub_claim), got


# P1.1 ------------------------------------------------------------------------------------------------------------
def p1_1_data(drift: float = 1e-12, gd: float = 1e-12) -> dict:
    return {"flow": {"N=2, mse": {"t": [0.0, 1.0, 10.0], "drift_rel": [0.0, drift / 2, drift],
                                  "harness_drift_rel": drift}},
            "gd": {"N=2, mse": [gd, gd / 2]}}


def test_p1_1_verdicts():
    assert all(verdicts("p1_1_invariant", p1_1_data(), draw=True).values())
    failing("p1_1_invariant", p1_1_data(drift=1e-6), "p1_1_a_flow_invariant")
    failing("p1_1_invariant", p1_1_data(gd=1e-8), "p1_1_b_gd_drift_identity")


def test_layer_imbalances_are_the_definition():
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(2, 4, 3)), "W2": rng.normal(size=(2, 4, 4)), "W3": rng.normal(size=(2, 3, 4))}
    c1, c2 = p1.layer_imbalances(params)
    e = 1
    assert np.allclose(c1[e], params["W1"][e] @ params["W1"][e].T - params["W2"][e].T @ params["W2"][e])
    assert np.allclose(c2[e], params["W2"][e] @ params["W2"][e].T - params["W3"][e].T @ params["W3"][e])


# P1.2 ------------------------------------------------------------------------------------------------------------
def p1_2_data(growth: float = 0.0, grad_end: float = 1e-10, failures: int = 0) -> dict:
    members = 100
    t = np.array([0.0, 1.0, 50.0, 100.0])
    norms = np.ones((4, members, 2)) * np.array([1.0, 2.0, 2.0 + 1e-12, 2.0 + 1e-12 + growth])[:, None, None]
    grads = np.ones((4, members)) * np.array([5.0, 1.0, 1e-6, grad_end])[:, None]
    residual = np.full(members, 1e-10)
    residual[:failures] = 1e-2
    record = {"t": t, "layer_norms": norms, "grad_t": t, "grad_norm": grads, "residual": residual}
    return {"depths": {"2": record}}


def test_p1_2_verdicts():
    assert all(verdicts("p1_2_convergence", p1_2_data(), draw=True).values())
    failing("p1_2_convergence", p1_2_data(growth=1e-3), "p1_2_a_norms_bounded")
    failing("p1_2_convergence", p1_2_data(grad_end=1e-3), "p1_2_b_gradient_vanishes")
    failing("p1_2_convergence", p1_2_data(failures=2), "p1_2_c_product_critical")
    assert verdicts("p1_2_convergence", p1_2_data(failures=1))["p1_2_c_product_critical"]  # 99% of 100


# P1.3 ------------------------------------------------------------------------------------------------------------
def p1_3_data(reduced_error: float = 1e-12, plain_error: float = 1e-12) -> dict:
    t = np.linspace(0, 5, 51)
    x = plain_flow(t, 0.1, 1.0, "mse")
    return {"curves": {"mse": {"y": 1.0, "x0": 0.1, "c": 1.0, "t": t, "x": x, "tau": t,
                               "x_reduced": x + reduced_error, "x_plain": x - plain_error}}}


def test_p1_3_verdicts():
    assert all(verdicts("p1_3_reduction", p1_3_data(), draw=True).values())
    failing("p1_3_reduction", p1_3_data(reduced_error=1e-7), "p1_3_a_reduced_ode")
    failing("p1_3_reduction", p1_3_data(plain_error=1e-7), "p1_3_b_time_change")


def test_flow_time_change_integrates_to_sixth_order():
    t = np.linspace(0, 5, 1001)
    assert np.max(np.abs(p1.flow_time_change(t, np.cos(3 * t)) - np.sin(3 * t) / 3)) < 1e-11


# P1.4 ------------------------------------------------------------------------------------------------------------
def p1_4_data(error: float = 1e-9, limit_error: float = 1e-3) -> dict:
    imbalances = [0.0, 1e4]
    predicted = [p1.predicted_time("mse", c) for c in imbalances]
    plain = predicted[1] * 100 * (1 + limit_error)
    return {"costs": {"mse": {"c": imbalances, "simulated": [p * (1 + error) for p in predicted],
                              "predicted": predicted, "plain": plain}}}


def test_p1_4_verdicts():
    assert all(verdicts("p1_4_time_to_eps", p1_4_data(), draw=True).values())
    failing("p1_4_time_to_eps", p1_4_data(error=1e-5), "p1_4_a_closed_form")
    failing("p1_4_time_to_eps", p1_4_data(limit_error=0.05), "p1_4_b_large_imbalance")
    data = p1_4_data()
    data["costs"]["mse"]["simulated"][0] = None  # never reached the target
    assert not verdicts("p1_4_time_to_eps", data)["p1_4_a_closed_form"]


# P1.5 ------------------------------------------------------------------------------------------------------------
def test_p1_5_verdicts():
    t = np.linspace(0, 1, 11)
    curves = {0.0: {"t": t, "loss": 1.0 / (1 + t)}, 4.0: {"t": t, "loss": 0.5 / (1 + t) + 0.5 * (t == 0)}}
    data = {"imbalances": [0.0, 4.0], "curves": curves, "product": 0.1, "target": 1.0}
    assert p1.judge_p1_5(data)[0].passed
    curves[4.0]["loss"] = curves[4.0]["loss"].copy()
    curves[4.0]["loss"][5] = 2.0
    assert not p1.judge_p1_5(data)[0].passed


# P1.6 ------------------------------------------------------------------------------------------------------------
def member(kind: str, f0: float) -> dict:
    t = np.linspace(0, 30, 31)
    if kind == "saddle":
        return {"t": t, "param_norm": np.exp(-t), "loss": f0 + 1e-20 * np.exp(-t), "product": -np.exp(-2 * t)}
    return {"t": t, "param_norm": 1 + t / 30, "loss": f0 * np.exp(-t), "product": 1 - np.exp(-t)}


def p1_6_data() -> dict:
    pairs = {"1": {"target": 1.0, "f0": 0.5, "s": -1.0, "members": {"+": member("target", 0.5),
                                                                      "-": member("saddle", 0.5)}},
             "-1": {"target": -1.0, "f0": 0.5, "s": 1.0, "members": {"+": member("saddle", 0.5),
                                                                       "-": member("target", 0.5)}}}
    offsets = [1e-6, 1e-8]
    escape = [[math.log(1 / d0) * 1.01] * 3 for d0 in offsets]
    return {"offsets": offsets, "width": 2,
            "costs": {"mse": {"y": 1.0, "slope_at_origin": -1.0, "escape": escape, "pairs": pairs,
                              "hessian": {"1": [-1.0, -1.0, 1.0, 1.0], "-1": [-1.0, -1.0, 1.0, 1.0]}}}}


def test_p1_6_verdicts():
    assert all(verdicts("p1_6_universality", p1_6_data(), draw=True).values())
    data = p1_6_data()
    data["costs"]["mse"]["pairs"]["1"]["members"]["-"]["param_norm"][10] = 2.0
    failing("p1_6_universality", data, "p1_6_a_manifold_descent")
    data = p1_6_data()
    data["costs"]["mse"]["escape"][0] = [math.log(1e6) * 1.2] * 3
    failing("p1_6_universality", data, "p1_6_b_escape_time")
    data = p1_6_data()
    members = data["costs"]["mse"]["pairs"]["-1"]["members"]
    members["-"] = member("saddle", 0.5)  # w1 = −w2ᵀ still goes in: the manifold did not flip with the sign
    failing("p1_6_universality", data, "p1_6_c_sign_flip")
    data = p1_6_data()
    data["costs"]["mse"]["hessian"]["-1"] = [-1.0, -1.0, 0.5, 1.5]
    failing("p1_6_universality", data, "p1_6_d_origin_hessian")


def test_escape_failure_sentence_names_the_offset():
    data = p1_6_data()
    data["costs"]["mse"]["escape"] = [[math.log(1 / d0) + 2.0] * 3 for d0 in data["offsets"]]
    check = p1.judge_p1_6(data)[1]
    assert not check.passed and "FAILS" in check.note
    assert check.numbers["fits"]["mse"]["slope_error"] == pytest.approx(0.0, abs=1e-9)
    assert check.numbers["fits"]["mse"]["scaled_offset"] == pytest.approx(2.0)
    assert "FAILS" not in p1.judge_p1_6(p1_6_data())[1].note


def test_pair_outcomes():
    pair = copy.deepcopy(p1_6_data()["costs"]["mse"]["pairs"]["1"])
    assert p1.pair_outcomes(pair) == {"+": "target", "-": "saddle"}
    pair["members"]["+"]["loss"] = np.full(31, 0.4)
    assert p1.pair_outcomes(pair)["+"] == "neither"


# theory/vector.py -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss,y", [("mse", 1.0), ("quartic", 1.5), ("log_cosh", 2.0)])
def test_plain_flow_solves_the_plain_ode(loss, y):
    tau = np.linspace(0, 4, 9)
    slope = cost_slope(loss, y)
    ode = solve_ivp(lambda _, x: [-slope(x[0])], (0, 4), [0.1], t_eval=tau, method="DOP853", rtol=1e-13,
                    atol=1e-15)
    assert np.max(np.abs(plain_flow(tau, 0.1, y, loss) - ode.y[0])) < 1e-11
    assert plain_time(0.1, float(plain_flow(2.5, 0.1, y, loss)), loss, y) == pytest.approx(2.5, rel=1e-10)


@pytest.mark.parametrize("loss", COSTS)
def test_cost_slope_is_the_derivative(loss):
    f, slope = cost(loss, 1.5), cost_slope(loss, 1.5)
    for x in (-3.0, 0.2, 1.4, 30.0):
        assert (f(x + 1e-6) - f(x - 1e-6)) / 2e-6 == pytest.approx(slope(x), rel=1e-6, abs=1e-9)
    if loss == "log_cosh":
        assert f(0.7) == pytest.approx(math.log(math.cosh(0.7 - 1.5)), rel=1e-14)
        assert f(900.0) == pytest.approx(898.5 - math.log(2), rel=1e-14)  # no overflow


def test_time_between_matches_the_closed_form():
    for c in (0.0, 1.0, 256.0):
        expected = vector_case_time(0.1, 0.99, 1.0, c)
        assert time_between(0.1, 0.99, c, cost_slope("mse", 1.0)) == pytest.approx(expected, rel=1e-10)


def test_reduced_product_inverts_the_closed_form():
    t = np.array([0.0, 0.5, 1.0, 3.0])
    x = reduced_product(t, 0.1, 16.0, cost_slope("mse", 1.0))
    assert [vector_case_time(0.1, xi, 1.0, 16.0) for xi in x[1:]] == pytest.approx(t[1:], rel=1e-9)


def test_unknown_cost_is_refused():
    with pytest.raises(ValueError):
        cost("hinge", 1.0)
