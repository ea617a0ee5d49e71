"""Claims P1.7–P1.11 (dynamics_bench/claims/paper1_saddles.py): every verdict on synthetic data that must pass and
data that must fail, the ids judge returns, and dynamics_bench/theory/scalar.py against independent computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.integrate import solve_ivp

from dynamics_bench.claims import paper1_saddles as claims
from dynamics_bench.theory import balanced_mode_time, saxe_mode_strength
from dynamics_bench.theory.scalar import (algebraic_sigmoid, linear_vector_field, plateau_time, reduced_product_path,
                                          sigmoid_centre_stable, sigmoid_invariant, sigmoid_target, sigmoid_unstable,
                                          sigmoid_vector_field)

PREDICTIONS = {p.id: p for p in claims.PREDICTIONS}


def verdicts(prediction_id: str, data: dict) -> dict[str, bool]:
    checks = PREDICTIONS[prediction_id].judge(data)
    assert [c.id for c in checks] == list(PREDICTIONS[prediction_id].subclaims)
    return {c.id: c.passed for c in checks}


def test_registry_order_and_ids():
    assert [p.number for p in claims.PREDICTIONS] == ["p1_7", "p1_8", "p1_9", "p1_10", "p1_11"]
    for p in claims.PREDICTIONS:
        assert all(s.startswith(p.number + "_") and s.split("_")[2] in "abc" for s in p.subclaims)


# P1.7 --------------------------------------------------------------------------------------------------------------
def p1_7_data(off_loss: float = 1e-12, on_loss: float = 0.5) -> dict:
    w1, w2 = claims.symmetric_grid(9)
    d = np.abs(w1 + w2)
    loss = np.where(d > 0, off_loss, on_loss)
    return {"grid": {"w1": w1.tolist(), "w2": w2.tolist(), "distance": d.tolist(), "final_loss": loss.tolist(),
                     "paths": []},
            "vector": {"distance": [0.0, 1e-6, 1e-2], "final_loss": [on_loss, off_loss, off_loss]}}


def test_p1_7_symmetric_grid_holds_the_manifold_exactly():
    w1, w2 = claims.symmetric_grid(25)
    assert len(w1) == 625 and np.sum(w1 + w2 == 0) == 25 and np.any((w1 == 0) & (w2 == 0))


def test_p1_7_verdicts():
    assert all(verdicts("p1_7_corollary6", p1_7_data()).values())
    stuck = verdicts("p1_7_corollary6", p1_7_data(off_loss=1e-3))
    assert not stuck["p1_7_a_off_manifold_converge"] and stuck["p1_7_b_on_manifold_stall"]
    escaped = verdicts("p1_7_corollary6", p1_7_data(on_loss=1e-12))
    assert escaped["p1_7_a_off_manifold_converge"] and not escaped["p1_7_b_on_manifold_stall"]


# P1.8 --------------------------------------------------------------------------------------------------------------
def p1_8_data(drift: float = 1e-13, final_loss: float = 1e-13, branch_end_loss: float = 0.5,
              rising: bool = False) -> dict:
    w, a = claims.symmetric_grid(9)
    loss = np.where((w == 0) & (a == 0), 0.5, final_loss)
    t = np.linspace(0, 20, 21)
    norm = np.exp(-t) * (1 + (t > 5) * rising * t)
    curve = {"t": t.tolist(), "loss": (0.5 + (branch_end_loss - 0.5) * (t >= 10)).tolist(), "norm": norm.tolist()}
    return {"grid": {"w": w.tolist(), "a": a.tolist(), "final_loss": loss.tolist()},
            "branch": {"w": [0.5], "curves": [curve]}, "paths": [], "drift_max": drift}


def test_p1_8_verdicts():
    ids = PREDICTIONS["p1_8_sigmoid_example"].subclaims
    assert all(verdicts("p1_8_sigmoid_example", p1_8_data()).values())
    for data, failing in ((p1_8_data(drift=1e-9), ids[0]), (p1_8_data(rising=True), ids[1]),
                          (p1_8_data(branch_end_loss=0.4), ids[1]), (p1_8_data(final_loss=1e-5), ids[2])):
        result = verdicts("p1_8_sigmoid_example", data)
        assert [i for i, ok in result.items() if not ok] == [failing]


def test_p1_8_only_the_origin_is_on_the_branch():
    w, a = claims.symmetric_grid(25)
    assert np.sum(claims.on_centre_stable(w, a)) == 1


# P1.9 --------------------------------------------------------------------------------------------------------------
def p1_9_data(best: list, fixed_status: list) -> dict:
    return {"imbalances": [0.0, 16.0, 4096.0], "fixed_lr": 0.1,
            "best": [{"status": "converged", "iterations": n, "diverged_step": None} for n in best],
            "fixed": [{"status": s, "iterations": None, "diverged_step": None} for s in fixed_status]}


def test_p1_9_verdicts():
    ok = p1_9_data([7, 5, 2], ["converged", "converged", "diverged"])
    assert all(verdicts("p1_9_gd_caveat", ok).values())
    spread = verdicts("p1_9_gd_caveat", p1_9_data([40, 5, 2], ["converged", "converged", "diverged"]))
    assert not spread["p1_9_a_iterations_c_independent"] and spread["p1_9_b_fixed_lr_diverges"]
    stable_data = p1_9_data([7, 5, 2], ["converged", "converged", "converged"])
    stable = verdicts("p1_9_gd_caveat", stable_data)
    assert stable["p1_9_a_iterations_c_independent"] and not stable["p1_9_b_fixed_lr_diverges"]
    assert "catapult" in PREDICTIONS["p1_9_gd_caveat"].judge(stable_data)[1].note  # a FAIL says why
    never = p1_9_data([7, 5, 2], ["converged"] * 3)
    never["best"][1]["iterations"] = None  # did not reach ε: an infinite ratio
    assert not verdicts("p1_9_gd_caveat", never)["p1_9_a_iterations_c_independent"]


# P1.10 -------------------------------------------------------------------------------------------------------------
def p1_10_data(hessian_error: float = 0.0, plateau_factor: float = 1.0, reduction_error: float = 0.0) -> dict:
    saddles = [{"point": [0, 0, 0.7], "hessian_max": 0.7 + hessian_error, "hessian_min": -0.7, "hessian_negative": 1},
               {"point": [0, 0, 0], "hessian_max": 0.0, "hessian_min": 0.0, "hessian_negative": 0}]
    plateau = [{"depth": 3, "eps": 1e-3, "time": 999.15 * plateau_factor, "leading": 1000.0, "quadrature": 999.15}]
    t = np.linspace(0, 5, 11)
    reduction = [{"start": [0.3, -0.8, 1.1], "t": t.tolist(), "product": (np.tanh(t) + reduction_error).tolist(),
                  "reduced": np.tanh(t).tolist()}]
    return {"saddles": saddles, "plateau": plateau, "reduction": reduction}


def test_p1_10_verdicts():
    ids = PREDICTIONS["p1_10_deep_scalar"].subclaims
    assert all(verdicts("p1_10_deep_scalar", p1_10_data()).values())
    for data, failing in ((p1_10_data(hessian_error=1e-3), ids[0]), (p1_10_data(plateau_factor=0.95), ids[1]),
                          (p1_10_data(reduction_error=1e-6), ids[2])):
        assert [i for i, ok in verdicts("p1_10_deep_scalar", data).items() if not ok] == [failing]


def test_predicted_saddle_eigenvalue():
    assert claims.predicted_saddle_eigenvalue([0, 0, 0.5, -1.3]) == pytest.approx(0.65)
    assert claims.predicted_saddle_eigenvalue([0, 0.5, 0, 0]) == 0.0


# P1.11 -------------------------------------------------------------------------------------------------------------
def p1_11_data(noise: float = 0.0, lag: float = 0.0) -> dict:
    t = np.linspace(0, 15, 301)
    s, u0 = [3.0, 2.0, 1.0, 0.5], 1e-3
    modes = [(saxe_mode_strength(np.maximum(t - lag / si, 0), si, u0) * (1 + noise)).tolist() for si in s]
    return {"t": t.tolist(), "s": s, "u0": u0, "modes": modes}


def test_p1_11_half_time_interpolation_is_exact_on_the_logistic():
    data = p1_11_data()
    t, s = np.asarray(data["t"]), 0.5
    assert claims.half_time(t, np.asarray(data["modes"][3]), s) == pytest.approx(math.log((s - 1e-3) / 1e-3) / (2 * s),
                                                                                 rel=1e-12)


def test_p1_11_verdicts():
    assert all(verdicts("p1_11_saxe", p1_11_data()).values())
    off = verdicts("p1_11_saxe", p1_11_data(noise=1e-6))
    assert not off["p1_11_a_mode_closed_form"] and off["p1_11_b_half_time"]
    late = verdicts("p1_11_saxe", p1_11_data(lag=0.2))  # every mode half-way 0.2/s late: s·t_half off by 0.2
    assert not late["p1_11_b_half_time"]


@pytest.mark.parametrize("prediction_id, data", [
    ("p1_7_corollary6", p1_7_data()), ("p1_8_sigmoid_example", p1_8_data()),
    ("p1_9_gd_caveat", p1_9_data([7, 5, 2], ["converged", "converged", "diverged"])),
    ("p1_10_deep_scalar", p1_10_data()), ("p1_11_saxe", p1_11_data())])
def test_figures_draw_from_synthetic_data(prediction_id, data):
    prediction = PREDICTIONS[prediction_id]
    fig = prediction.draw(data, prediction.judge(data))
    assert isinstance(fig, Figure) and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


# theory/scalar.py --------------------------------------------------------------------------------------------------
def test_reduced_product_path_matches_the_full_factor_flow():
    """Against the N-dimensional flow ẇ_i = −f'(x)·x/w_i (as Π_{j≠i} w_j) by scipy, for mixed signs and a sign
    change of the product."""
    for start in ([0.3, -0.8, 1.1], [0.4, -0.9, 0.6, -1.2]):
        def rhs(_t, w):
            x = np.prod(w)
            return [-(x - 1.0) * np.prod(np.delete(w, i)) for i in range(len(w))]
        times = np.linspace(0, 5, 26)
        full = solve_ivp(rhs, (0, 5), start, method="DOP853", t_eval=times, rtol=1e-13, atol=1e-15)
        reduced = reduced_product_path(start, times, lambda x: x - 1.0)
        assert np.max(np.abs(np.prod(full.y, axis=0) - reduced)) < 1e-10


def test_plateau_time_is_the_leading_term_of_the_quadrature():
    assert plateau_time(1e-3, 3, 1.0) == pytest.approx(1000.0)
    assert plateau_time(1e-2, 4, 2.0) == pytest.approx(2500.0)
    assert plateau_time(1e-4, 2, 1.0) == pytest.approx(math.log(1e4))
    exact = balanced_mode_time(1e-12, 0.5, 1.0, 3)  # ε = 1e-4: T = 1e4 − O(1)
    assert abs(exact / plateau_time(1e-4, 3, 1.0) - 1) < 2e-4
    with pytest.raises(ValueError):
        plateau_time(1e-2, 1, 1.0)


def test_sigmoid_branches_lie_on_the_saddle_level_set_and_the_field_is_the_gradient():
    w = np.linspace(-3, 3, 13)
    for branch in (sigmoid_centre_stable, sigmoid_unstable):
        assert np.allclose(sigmoid_invariant(w, branch(w)), -0.5, atol=1e-12)
    nonzero = w[w != 0]
    assert np.allclose(sigmoid_target(nonzero) * algebraic_sigmoid(nonzero), 1.0)
    # the field is −∇ of ½(1 − aσ(w))² (central differences) and conserves C (its derivative along it is 0)
    w0, a0, h = 0.7, -0.4, 1e-6
    def loss(w_: float, a_: float) -> float:
        return 0.5 * (1 - a_ * algebraic_sigmoid(w_)) ** 2
    dw, da = sigmoid_vector_field(np.array(w0), np.array(a0))
    assert dw == pytest.approx(-(loss(w0 + h, a0) - loss(w0 - h, a0)) / (2 * h), rel=1e-8)
    assert da == pytest.approx(-(loss(w0, a0 + h) - loss(w0, a0 - h)) / (2 * h), rel=1e-8)
    assert 2 * a0 * da - 2 * (1 + w0**2) * w0 * dw == pytest.approx(0.0, abs=1e-14)
    assert np.allclose(linear_vector_field(np.array(2.0), np.array(0.5)), (0.0, 0.0))
    # the centre-stable branch is the field's stable direction at the origin: the flow points back to the saddle
    eps = 1e-4
    dw, da = sigmoid_vector_field(np.array(eps), sigmoid_centre_stable(np.array(eps)))
    assert dw < 0 and da > 0
