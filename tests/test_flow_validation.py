"""The harness's gradient flow against mathematics it did not compute: the vector case's one-dimensional
reduction solved by an independent solver (scipy DOP853), the time-to-target quadrature of theory §1.6.3 (closed
form for mse, scipy.integrate.quad otherwise), and GD's first-order distance to the flow."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad, solve_ivp

from dynamics_bench.theory import vector_case_time
from tests.conftest import run_overrides

K, Y = 4, 2.0  # vector case width and scalar target
W1 = [[0.3], [-0.2], [0.25], [0.1]]  # (k, 1): product x0 = w2·w1 = 0.08, imbalance c = 0.2304
W2 = [[0.5, 0.1, -0.2, 0.3]]  # (1, k)
TIMES = [round(0.2 * i, 2) for i in range(1, 21)]  # 0.2 .. 4: multiples of every GD step used below

# cost f(x) of the product and its derivative, per loss (matrix_cost sums over the one entry)
COSTS = {
    "mse": (lambda x: 0.5 * (x - Y) ** 2, lambda x: x - Y),
    "log_cosh": (lambda x: math.log(math.cosh(x - Y)), lambda x: math.tanh(x - Y)),
}


def vector_case(loss: str, *extra: str) -> list[str]:
    return ["model=deep_linear", "model.depth=2", f"model.width={K}", "model.init=explicit",
            f"model.init_values=[{W1},{W2}]", "task=matrix_cost", f"task.target={Y}", f"loss={loss}",
            "logger.tensorboard=false", *extra]


def start() -> tuple[float, float]:
    """x0 = w2·w1 and c = 2tr(C²) − tr(C)² = (‖w1‖² + ‖w2‖²)² − 4x0² (theory §1.6.1)."""
    w1, w2 = np.array(W1)[:, 0], np.array(W2)[0]
    x0 = float(w2 @ w1)
    return x0, float((w1 @ w1 + w2 @ w2) ** 2 - 4 * x0**2)


def reduced_flow(loss: str, times: list[float]) -> np.ndarray:
    """x(t) from dx/dt = −f'(x)·√(c + 4x²) (paper (1), eq. 19), by scipy's DOP853 at rtol 1e-13."""
    x0, c = start()
    fprime = COSTS[loss][1]
    sol = solve_ivp(lambda t, x: -fprime(x[0]) * math.sqrt(c + 4 * x[0] ** 2), (0, times[-1]), [x0],
                    method="DOP853", t_eval=times, rtol=1e-13, atol=1e-15)
    assert sol.success
    return sol.y[0]


def flow_run(tmp_path, loss: str, *extra: str, name: str) -> tuple[dict, pd.DataFrame]:
    s = run_overrides(tmp_path, *vector_case(loss, "trainer=gradient_flow", *extra), name=name)
    return s, pd.read_csv(tmp_path / name / "metrics.csv")


@pytest.mark.parametrize("loss", list(COSTS))
def test_vector_case_loss_matches_an_independent_solution(tmp_path, loss):
    """dopri5 at rtol 1e-12 vs the 1-D reduction solved by DOP853 at rtol 1e-13: the losses agree to 1e-8
    relative where the loss exceeds 1e-8. The loss's relative error is |f'/f|·|δx| ≈ 2|δx|/|x − y| (mse), so
    it grows as the loss falls: at L = 1e-8 (|x − y| = 1.4e-4) an error |δx| ≈ 1e-12·2 in the product makes
    ~3e-8 at worst. Measured: 3e-9 (mse), 6e-10 (log_cosh); at rtol 1e-11 it is 2e-8, so the test resolves
    the tolerance."""
    s, m = flow_run(tmp_path, loss, "trainer.method=dopri5", "trainer.rtol=1e-12", "trainer.atol=1e-14",
                    "trainer.t_max=4", f"metrics.times={TIMES}", name=loss)
    assert s["status"] == "max_steps"
    rows = m[m["t"].isin(TIMES)]
    assert rows["t"].tolist() == TIMES  # exactly at the grid times
    f = COSTS[loss][0]
    reference = np.array([f(x) for x in reduced_flow(loss, TIMES)])
    rel = np.abs(rows["loss"].to_numpy() - reference) / reference
    assert reference[-1] < 1e-3 * reference[0]  # the run crosses the loss's whole descent, not a flat piece
    assert rel[reference > 1e-8].max() <= 1e-8, rel


def quadrature_time(loss: str, x1: float) -> float:
    """T(x0 → x1) = ∫ dx / (−f'(x)·√(c + 4x²)) (theory §1.6.3), by scipy's quad."""
    x0, c = start()
    fprime = COSTS[loss][1]
    value, err = quad(lambda x: 1.0 / (-fprime(x) * math.sqrt(c + 4 * x * x)), x0, x1, epsabs=0, epsrel=1e-13,
                      limit=200)
    return value


def closed_form_time(x1: float) -> float:
    """For f = ½(x − y)², theory §1.6.3's closed form from this file's start."""
    x0, c = start()
    return vector_case_time(x0, x1, Y, c)


TARGET = 1e-6


def crossing(loss: str) -> float:
    """The product x1 < y where f(x1) = TARGET (x rises monotonically from x0 < y towards y)."""
    if loss == "mse":
        return Y - math.sqrt(2 * TARGET)
    return Y - math.acosh(math.exp(TARGET))


def test_closed_form_agrees_with_quadrature():
    """The reference itself: theory's closed form and scipy's quad agree to 1e-10."""
    assert closed_form_time(crossing("mse")) == pytest.approx(quadrature_time("mse", crossing("mse")), rel=1e-10)


@pytest.mark.parametrize("loss", list(COSTS))
@pytest.mark.parametrize("method, extra, tol", [
    # dopri5: the state is accurate to ~rtol·t, so the crossing time to a few 1e-12 relative, located on the
    # order-4 dense output whose error is within the step's tolerance (measured 6e-12 mse, 2e-12 log_cosh)
    ("dopri5", ["trainer.rtol=1e-12", "trainer.atol=1e-14"], 1e-10),
    # rk4 at h = 0.01: global error O(h⁴) = 1e-8 times an O(1) constant; its order-3 dense output adds O(h⁴)
    # (measured 1.3e-8 mse, 8e-9 log_cosh; a step-rounded time would be off by up to h/T ≈ 4e-3)
    ("rk4", ["trainer.h=0.01"], 1e-7),
])
def test_time_to_target_matches_quadrature(tmp_path, loss, method, extra, tol):
    """time_to_target is located between steps (event location), not rounded to the grid or to a step."""
    expected = closed_form_time(crossing(loss)) if loss == "mse" else quadrature_time(loss, crossing(loss))
    s, _ = flow_run(tmp_path, loss, f"trainer.method={method}", *extra, "trainer.t_max=20",
                    f"trainer.target_loss={TARGET}", name=f"{loss}_{method}")
    assert s["status"] == "converged"
    assert s["time_to_target"] == pytest.approx(expected, rel=tol)
    if method == "rk4":  # between steps, not on one: the step grid would be off by up to h/t ≈ 1e-3 relative
        assert abs(s["time_to_target"] / 0.01 - round(s["time_to_target"] / 0.01)) > 1e-6


def test_gd_distance_to_the_flow_shrinks_in_proportion_to_lr(tmp_path):
    """GD is the Euler step of the flow, a first-order method: max_t |L_GD(t) − L_flow(t)| over t ∈ (0, 4] is
    ~ C·lr, so halving lr halves it (ratios 2 ± 0.2; the O(lr²) remainder is ~1% of it at these lr). The flow is
    dopri5 at rtol 1e-12, whose error is ~1e-6 of the smallest GD gap."""
    deep = ["model=deep_linear", "model.depth=3", "model.width=5", "task=matrix_cost", "task.target=gaussian",
            "task.input_dim=3", "task.output_dim=3", "logger.tensorboard=false", f"metrics.times={TIMES}"]
    run_overrides(tmp_path, *deep, "trainer=gradient_flow", "trainer.method=dopri5", "trainer.rtol=1e-12",
                  "trainer.t_max=4", name="flow")
    flow = pd.read_csv(tmp_path / "flow" / "metrics.csv").set_index("t")["loss"]
    gaps = []
    for lr in (0.02, 0.01, 0.005):
        run_overrides(tmp_path, *deep, "trainer=gd", f"trainer.lr={lr}", f"trainer.steps={round(4 / lr)}",
                      name=f"gd{lr}")
        gd = pd.read_csv(tmp_path / f"gd{lr}" / "metrics.csv")
        gd = gd[gd["step"].isin([round(t / lr) for t in TIMES])]
        assert np.allclose(gd["t"].to_numpy(), TIMES, rtol=0, atol=1e-12)
        gaps.append(np.abs(gd["loss"].to_numpy() - flow.loc[TIMES].to_numpy()).max())
    assert gaps[-1] > 1e-6  # a real gap, far above the reference's error
    ratios = [gaps[0] / gaps[1], gaps[1] / gaps[2]]
    assert all(1.8 <= r <= 2.2 for r in ratios), (gaps, ratios)


@pytest.mark.parametrize("activation", ["algebraic_sigmoid", "tanh", "sigmoid", "erf"])
def test_sigmoidal_invariant_drift_follows_the_tolerance(tmp_path, activation):
    """The seed paper's neuron a·σ(w) on the input 1 conserves a² − H(w) (theory §1.5, §4). Explicit Runge–Kutta
    does not conserve it exactly: its drift is the integration error, so it follows the tolerance. dopri5 over
    t ∈ [0, 20] at rtol 1e-12 keeps the relative drift ≤ 1e-10 (measured ~1e-14); at rtol 1e-8 it is far
    larger (measured 4e-10 to 3e-9), so the gauge sees the integrator's error."""
    drift = {}
    for rtol in (1e-12, 1e-8):
        s = run_overrides(tmp_path, "experiment=sigmoid_seed_paper", f"model.activation={activation}",
                          "trainer.method=dopri5", f"trainer.rtol={rtol}", f"trainer.atol={rtol * 1e-2}",
                          "trainer.t_max=20", "logger.tensorboard=false", name=f"{rtol}")
        assert s["final_loss"] < 1e-9  # the neuron reached the target: the run crossed its whole dynamics
        drift[rtol] = s["invariant_drift_max"]
    assert drift[1e-12] <= 1e-10
    assert drift[1e-8] > 10 * drift[1e-12]
