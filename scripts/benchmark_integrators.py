#!/usr/bin/env python
"""Accuracy against cost of the harness's gradient-flow integrators: how many gradient evaluations each method
needs for a relative loss error of 1e-6, on two deep linear problems.

Problems (the issue's), both float64 on the CPU, gradient flow to t_max = 10:
  (a) deep_linear depth 3, width 20, gaussian init, on `matrix_cost` with a 5x5 target of N(0, 1) entries
      (task.seed 0), mse;
  (b) the vector case: deep_linear depth 2, width 8, init=imbalanced with product w0 = 0.1 and imbalance c = 1,
      on `matrix_cost` with the scalar target 2, mse.

Every run goes through the harness itself, ``dynamics_bench.run(compose(*overrides), out_dir)``, with
``metrics.names=[loss]`` and ``metrics.times`` = the common grid t = 0.1, 0.2, ..., 10 (100 times; every fixed
step h used divides 0.1, so no time is rounded). The cost is summary["grad_evals"] (every gradient evaluation,
rejected steps included); the loss comes from metrics.csv at the grid times.

  reference  dopri5 at rtol 1e-13, atol 1e-16; checked against an independent scipy DOP853 solution (of the
             harness's own gradient for (a); of the scalar ODE of the product, d log(2 - w)/dt = -sqrt(c + 4w²),
             for (b)). Their largest difference on the error grid, times FLOOR_FACTOR, is the fit floor.
  error      max over the grid times where the reference loss exceeds 1e-8 of |L - L_ref| / L_ref
  methods    euler (= GD with lr = h: checked bit for bit against trainer=gd), heun, rk4 over fixed steps h;
             bosh3, dopri5 over rtol 1e-3 ... 1e-12 with atol = 1e-2·rtol
  unstable   a fixed-step run with h·λ_max above its method's real-axis stability bound (λ_max: the largest
             Hessian eigenvalue at the reference's final parameters); like a `diverged` run it is left out of
             the fits and the 1e-6 costs (such runs rarely reach the harness's divergence threshold: the
             iterates move to a flatter region instead of blowing up)
  fit        least squares of log10(error) on log10(grad_evals) over the asymptotic points, all with the error
             between the fit floor and FIT_MAX_ERROR: for a fixed-step method every stable such point (at least
             the 3 most accurate); for an adaptive one the run of tolerances, from the tightest down, over
             which the error stays proportional to rtol (local exponent in TOL_EXPONENT_RANGE). Slope ~ -order.
  1e-6       grad_evals for error 1e-6: interpolated log-log between the cheapest pair of measured runs that
             brackets it, or extrapolated along the fitted slope from the fitted point nearest to 1e-6
             (flagged) when no run got there. Euler/GD would need ~1e8 steps, so it is always extrapolated.

Results: <out>.json (every raw point with its grid losses, fits, the 1e-6 costs, ratios, machine), <out>.md,
<out>.png. --quick: a handful of points and a loose reference, a smoke check (< 30 s).

    python scripts/benchmark_integrators.py [--quick] [--out results/integrators] [--reanalyse JSON]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dynamics_bench import compose, run
from dynamics_bench.experiment import build, init_params
from machine import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
TARGET_ERROR = 1e-6
REQUIRED_RATIO = 1000.0
LOSS_FLOOR = 1e-8  # the error is taken where the reference loss exceeds this
FIT_MAX_ERROR = 1e-2  # above it a run is pre-asymptotic
FLOOR_FACTOR = 10.0  # fit floor = FLOOR_FACTOR x the reference's difference from the independent solution
MIN_FIT_POINTS = 3
TOL_EXPONENT_RANGE = (0.7, 1.3)  # adaptive: d log(error) / d log(rtol) in the tolerance-proportional regime
GRID = [k / 10 for k in range(1, 101)]  # flow times 0.1 ... 10: multiples of every fixed step used
T_MAX = 10.0
REFERENCE = {"method": "dopri5", "rtol": 1e-13, "atol": 1e-16, "independent_rtol": 1e-13}
ATOL_FACTOR = 1e-2  # adaptive sweeps: atol = ATOL_FACTOR * rtol
ORDERS = {"euler": 1, "heun": 2, "rk4": 4, "bosh3": 3, "dopri5": 5}
ADAPTIVE = ("bosh3", "dopri5")
FIXED = ("euler", "heun", "rk4")
LABELS = {"euler": "euler/GD", "heun": "heun", "rk4": "rk4", "bosh3": "bosh3", "dopri5": "dopri5"}
# h·λ bound on the negative real axis (|R(−hλ)| <= 1); fixed-step runs beyond it are "unstable", and for the
# adaptive methods it explains the tolerance-independent part of the cost on a stiff problem
STABILITY = {"euler": 2.0, "heun": 2.0, "rk4": 2.7853, "bosh3": 2.5127, "dopri5": 3.3066}
VECTOR = {"product": 0.1, "imbalance": 1.0, "target": 2.0}  # problem (b)

COMMON = ["task=matrix_cost", "loss=mse", "dtype=float64", "device=cpu", "seed=0", "logger.tensorboard=false",
          "logger.progress=false", "metrics.names=[loss]",
          "metrics.times=[" + ",".join(f"{t:g}" for t in GRID) + "]"]
PROBLEMS = {
    "a": {"title": "(a) deep linear N=3, k=20, 5x5 Gaussian target, gaussian init",
          "overrides": ["model=deep_linear", "model.depth=3", "model.width=20", "model.init=gaussian",
                        "task.target=gaussian", "task.input_dim=5", "task.output_dim=5", "task.seed=0", *COMMON]},
    "b": {"title": "(b) vector case N=2, k=8, target 2, w0=0.1, c=1",
          "overrides": ["model=deep_linear", "model.depth=2", "model.width=8", "model.init=imbalanced",
                        f"model.init_product={VECTOR['product']}", f"model.init_imbalance={VECTOR['imbalance']}",
                        f"task.target={VECTOR['target']}", *COMMON]},
}

FULL = {
    "euler": [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4],
    "heun": [0.1, 0.05, 0.025, 0.02, 0.01, 0.005, 0.0025, 0.002, 0.001, 5e-4, 1e-4],
    "rk4": [0.1, 0.05, 0.025, 0.02, 0.0125, 0.01, 0.005, 0.0025],
    "bosh3": [10.0 ** -k for k in range(3, 13)],
    "dopri5": [10.0 ** -k for k in range(3, 13)],
    "gd_check": [0.01, 0.001],
}
QUICK = {  # enough to exercise every path (fits, interpolation, extrapolation, the ratio) in < 30 s
    "euler": [0.01, 0.005], "heun": [0.01, 0.005], "rk4": [0.02, 0.01], "bosh3": [1e-7, 1e-8],
    "dopri5": [1e-8, 1e-10], "gd_check": [0.01],
}
QUICK_REFERENCE = {"method": "dopri5", "rtol": 1e-12, "atol": 1e-15, "independent_rtol": 1e-13}


# --- running through the harness ---------------------------------------------------------------------------
def method_overrides(method: str, value: float, atol: float | None = None) -> list[str]:
    """Trainer overrides: h for a fixed-step method (or lr for the GD check), rtol/atol for an adaptive one."""
    if method == "gd":
        return ["trainer=gd", f"trainer.lr={value!r}", f"trainer.steps={round(T_MAX / value)}"]
    out = ["trainer=gradient_flow", f"trainer.method={method}", f"trainer.t_max={T_MAX!r}"]
    if method in ADAPTIVE:
        return out + [f"trainer.rtol={value!r}", f"trainer.atol={atol!r}", "trainer.max_steps=1000000"]
    return out + [f"trainer.h={value!r}"]


def read_losses(path: Path) -> dict[float, float]:
    """Grid time -> member 0's loss, from metrics.csv (NaN is written as an empty cell)."""
    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            t, k = float(r["t"]), round(float(r["t"]) * 10)
            if r["member"] == "0" and 1 <= k <= len(GRID) and abs(t - GRID[k - 1]) <= 1e-9 and GRID[k - 1] not in rows:
                rows[GRID[k - 1]] = float(r["loss"]) if r["loss"] != "" else math.nan
    return rows


def run_point(problem: str, method: str, value: float, atol: float | None = None,
              keep_params: bool = False) -> dict:
    """One harness run: cost, status and the loss at every grid time (and the final parameters if asked)."""
    overrides = PROBLEMS[problem]["overrides"] + method_overrides(method, value, atol)
    cfg = compose(*overrides)
    with tempfile.TemporaryDirectory(prefix="dynbench_integrators_") as out:
        start = time.perf_counter()
        summary = run(cfg, out)
        end_to_end = time.perf_counter() - start
        losses = read_losses(Path(out) / "metrics.csv")
        final = torch.load(Path(out) / "final_params.pt") if keep_params else None
    missing = [t for t in GRID if t not in losses]
    if summary["status"] != "diverged" and missing:
        raise RuntimeError(f"{problem} {method} {value}: no metrics row at t = {missing[:5]}")
    adaptive = method in ADAPTIVE
    point = {"problem": problem, "method": method, "h": None if adaptive else value,
             "rtol": value if adaptive else None, "atol": atol if adaptive else None,
             "status": summary["status"], "grad_evals": summary["grad_evals"], "iterations": summary["iterations"],
             "accepted_steps": summary["steps"], "rejected_steps": summary["rejected_steps"],
             "wall_seconds": summary["wall_seconds"], "end_to_end_seconds": end_to_end,
             "final_loss": summary["final_loss"], "overrides": overrides,
             "losses": [losses.get(t, math.nan) for t in GRID]}
    return (point, final) if keep_params else point


def relative_error(losses: list[float], reference: list[float]) -> float | None:
    """max |L - L_ref| / L_ref over the grid times where L_ref > LOSS_FLOOR; None if any is not finite."""
    errs = [abs(a - r) / r for a, r in zip(losses, reference) if r > LOSS_FLOOR]
    return max(errs) if all(math.isfinite(e) for e in errs) else None


# --- what the harness does not do for us: an independent solution, the stiffness ------------------------------
def _flat_objective(problem: str):
    """The problem's objective on one flattened parameter vector: (params0 flat, loss(v), grad(v), unflatten)."""
    exp = build(compose(*PROBLEMS[problem]["overrides"], *method_overrides("dopri5", 1e-10, 1e-12)))
    params0 = init_params(exp)
    x, y = exp.task.data()
    x, y = x[None], y[None]
    keys, shapes = list(params0), [params0[k].shape for k in params0]
    sizes = [math.prod(s) for s in shapes]

    def unflatten(v: torch.Tensor) -> dict:
        return {k: p.reshape(s) for k, p, s in zip(keys, torch.split(v, sizes), shapes)}

    def loss(v: torch.Tensor) -> torch.Tensor:
        return exp.objective.loss(unflatten(v), x, y)[0]

    def grad(v: torch.Tensor) -> torch.Tensor:
        _, g = exp.objective.loss_and_grad(unflatten(v), x, y)
        return torch.cat([g[k].reshape(-1) for k in keys])

    flat0 = torch.cat([params0[k].reshape(-1) for k in keys])
    return flat0, loss, grad, keys


def independent_solution(problem: str, rtol: float) -> tuple[list[float], str]:
    """The grid losses from scipy's DOP853 (8th order), with neither the harness's integrators nor its clock:
    (a) the harness's gradient of the flattened parameters (atol 1e-16); (b) the scalar ODE of the product: the
    vector case keeps w1 and w2ᵀ along one unit vector, so w = w2·w1 obeys dw/dt = -f'(w)·sqrt(c + 4w²), solved
    for log(2 - w) so that the tolerance is relative to the residual, i.e. to the loss (2 - w)²/2."""
    from scipy.integrate import solve_ivp

    if problem == "b":
        c, w0, m = VECTOR["imbalance"], VECTOR["product"], VECTOR["target"]

        def rhs(t, y):
            w = m - math.exp(y[0])
            return [-math.sqrt(c + 4 * w * w)]
        sol = solve_ivp(rhs, (0.0, T_MAX), [math.log(m - w0)], method="DOP853", rtol=rtol, atol=rtol, t_eval=GRID)
        return ([0.5 * math.exp(2 * y) for y in sol.y[0]],
                f"scipy DOP853 rtol=atol={rtol:g} on d log(2 - w)/dt = -sqrt(c + 4w^2)")
    flat0, loss, grad, _ = _flat_objective(problem)
    sol = solve_ivp(lambda t, v: -grad(torch.from_numpy(v)).numpy(), (0.0, T_MAX), flat0.numpy(), method="DOP853",
                    rtol=rtol, atol=1e-16, t_eval=GRID)
    return ([float(loss(torch.from_numpy(sol.y[:, i].copy()))) for i in range(len(GRID))],
            f"scipy DOP853 rtol={rtol:g} atol=1e-16 on the harness's gradient (flattened parameters)")


def hessian_extremes(problem: str, params: dict) -> dict:
    """Largest and smallest Hessian eigenvalue of the loss at `params` (one member's, as saved by the harness)."""
    _, loss, _, keys = _flat_objective(problem)
    v = torch.cat([params[k].to(torch.float64).reshape(-1) for k in keys])
    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, v))
    return {"lambda_max": float(eig[-1]), "lambda_min": float(eig[0])}


# --- analysis -----------------------------------------------------------------------------------------------
def classify(p: dict, lambda_max: float) -> str:
    """ok, diverged (the harness's status) or unstable (a fixed step above its method's stability bound)."""
    if p["status"] == "diverged" or p["error"] is None:
        return "diverged"
    if p["method"] not in ADAPTIVE and p["h"] * lambda_max > STABILITY[p["method"]]:
        return "unstable"
    return "ok"


def fit_points(points: list[dict], floor: float) -> list[dict]:
    """The asymptotic points of one method (see the module docstring)."""
    ok = [p for p in points if p["regime"] == "ok" and p["error"] >= floor]
    if not ok:
        return []
    if ok[0]["method"] not in ADAPTIVE:
        use = [p for p in ok if p["error"] <= FIT_MAX_ERROR]
        if len(use) < MIN_FIT_POINTS:  # the most accurate ones, short of a 100% error
            use = sorted((p for p in ok if p["error"] < 1.0), key=lambda p: p["error"])[:MIN_FIT_POINTS]
        return use
    ok = sorted(ok, key=lambda p: p["rtol"])  # tightest first
    use = [ok[0]] if ok[0]["error"] <= FIT_MAX_ERROR else []
    for tight, loose in zip(ok, ok[1:]):
        if not use or loose["error"] > FIT_MAX_ERROR:
            break
        exponent = math.log(loose["error"] / tight["error"]) / math.log(loose["rtol"] / tight["rtol"])
        if not TOL_EXPONENT_RANGE[0] <= exponent <= TOL_EXPONENT_RANGE[1]:
            break
        use.append(loose)
    return use


def _line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    x, y = np.log10(xs), np.log10(ys)
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept), float(np.sqrt(np.mean((y - slope * x - intercept) ** 2)))


def fit_order(points: list[dict], floor: float) -> dict | None:
    """log10(error) = slope·log10(grad_evals) + intercept over the asymptotic points; for an adaptive method
    also the slope against rtol (1: tolerance proportionality) and against the cost above the method's cheapest
    run (a diagnostic: the part of the cost that the tolerance controls)."""
    use = fit_points(points, floor)
    if len(use) < 2:
        return None
    slope, intercept, rms = _line([p["grad_evals"] for p in use], [p["error"] for p in use])
    out = {"slope": slope, "intercept": intercept, "rms_residual_decades": rms, "points": len(use),
           "evals_range": [min(p["grad_evals"] for p in use), max(p["grad_evals"] for p in use)],
           "error_range": [min(p["error"] for p in use), max(p["error"] for p in use)],
           "used": [p["h"] if p["h"] is not None else p["rtol"] for p in use]}
    if use[0]["method"] in ADAPTIVE:
        baseline = min(p["grad_evals"] for p in points if p["regime"] == "ok")
        out["slope_vs_rtol"] = _line([p["rtol"] for p in use], [p["error"] for p in use])[0]
        above = [p for p in use if p["grad_evals"] > baseline]
        out["baseline_evals"] = baseline
        out["slope_vs_evals_above_baseline"] = (
            _line([p["grad_evals"] - baseline for p in above], [p["error"] for p in above])[0]
            if len(above) >= 2 else None)
    return out


def evals_for(points: list[dict], fit: dict | None, floor: float, order: int,
              target: float = TARGET_ERROR) -> dict:
    """grad_evals for error = target: interpolated log-log between the cheapest bracketing pair of measured runs
    (stable ones, by cost), else extrapolated along the fitted slope from the fitted point nearest the target."""
    pts = sorted((p for p in points if p["regime"] == "ok"), key=lambda p: p["grad_evals"])
    direct = next((p for p in pts if p["error"] <= target), None)
    out = {"target_error": target, "cheapest_run_meeting_target": None if direct is None else direct["grad_evals"]}
    for lo, hi in zip(pts, pts[1:]):
        if lo["error"] > target >= hi["error"]:
            x0, x1 = math.log10(lo["grad_evals"]), math.log10(hi["grad_evals"])
            y0, y1 = math.log10(lo["error"]), math.log10(hi["error"])
            x = x0 + (math.log10(target) - y0) * (x1 - x0) / (y1 - y0)
            return {**out, "grad_evals": 10**x, "how": "interpolated", "between": [lo["grad_evals"], hi["grad_evals"]]}
    if fit is None or fit["slope"] >= 0:
        return {**out, "grad_evals": None, "how": "not reached"}
    used = fit_points(points, floor)
    anchor = min(used, key=lambda p: abs(math.log10(p["error"] / target)))
    decades = math.log10(target / anchor["error"])
    return {**out, "grad_evals": anchor["grad_evals"] * 10 ** (decades / fit["slope"]), "how": "extrapolated",
            "anchor": anchor["grad_evals"], "anchor_error": anchor["error"], "slope_used": fit["slope"],
            "grad_evals_at_theoretical_order": anchor["grad_evals"] * 10 ** (-decades / order)}


def analyse(res: dict) -> None:
    """Errors, regimes, fits, the 1e-6 costs and the ratios, into res (in place)."""
    res["fits"], res["evals_at_target"], res["ratios"] = {}, {}, {}
    res["stability_bounds"] = STABILITY
    for problem in PROBLEMS:
        ref = res["references"][problem]
        ref["error_times"] = [t for t, r in zip(GRID, ref["losses"]) if r > LOSS_FLOOR]
        masked = [(a, r) for a, r in zip(ref["independent"]["losses"], ref["losses"]) if r > LOSS_FLOOR]
        ref["independent"]["max_rel_diff"] = max(abs(a - r) / r for a, r in masked)
        floor = ref["fit_floor"] = FLOOR_FACTOR * ref["independent"]["max_rel_diff"]
        lam = ref["hessian"]["lambda_max"]
        for p in res["points"]:
            if p["problem"] == problem:
                p["error"] = None if p["status"] == "diverged" else relative_error(p["losses"], ref["losses"])
                p["regime"] = classify(p, lam)
                p["h_lambda_max"] = None if p["h"] is None else p["h"] * lam
                # one accepted step per grid interval, plus the first trial step (0.01) inside the first one
                p["grid_bound"] = p["method"] in ADAPTIVE and p["accepted_steps"] <= len(GRID) + 1
        fits, evals = res["fits"][problem], res["evals_at_target"][problem] = {}, {}
        for method in ORDERS:
            pts = [p for p in res["points"] if p["problem"] == problem and p["method"] == method]
            for p in pts:
                p["in_fit"] = False
            fits[method] = fit_order(pts, floor)
            for p in fit_points(pts, floor) if fits[method] else []:
                p["in_fit"] = True
            evals[method] = evals_for(pts, fits[method], floor, ORDERS[method])
        euler, dopri = evals["euler"]["grad_evals"], evals["dopri5"]["grad_evals"]
        ratio = euler / dopri if euler and dopri else None
        res["ratios"][problem] = {
            "euler_over_dopri5": ratio, "required": REQUIRED_RATIO,
            "pass": None if ratio is None else ratio >= REQUIRED_RATIO,
            "euler_how": evals["euler"]["how"], "dopri5_how": evals["dopri5"]["how"],
            "to_dopri5": {m: (evals[m]["grad_evals"] / dopri if evals[m]["grad_evals"] and dopri else None)
                          for m in ORDERS}}


# --- output -------------------------------------------------------------------------------------------------
def fmt(v: float | None, spec: str = ".3g") -> str:
    return "—" if v is None else format(v, spec)


def _value(p: dict) -> str:
    return f"h={p['h']:g}" if p["h"] is not None else f"rtol={p['rtol']:g}"


def problem_notes(res: dict, problem: str) -> list[str]:
    """Observations computed from the data: unstable runs, grid-bound and rejected adaptive steps, diagnostics."""
    pts = [p for p in res["points"] if p["problem"] == problem]
    ref, fits, notes = res["references"][problem], res["fits"][problem], []
    unstable = [p for p in pts if p["regime"] == "unstable"]
    if unstable:
        notes.append("Unstable (h·λ_max above the real-axis stability bound, left out): " + ", ".join(
            f"{p['method']} h={p['h']:g} (h·λ_max = {p['h_lambda_max']:.2f}, error {p['error']:.2g}, harness "
            f"status {p['status']})" for p in unstable) + ".")
    diverged = [p for p in pts if p["regime"] == "diverged"]
    if diverged:
        notes.append("Diverged (harness status, left out): " + ", ".join(f"{p['method']} {_value(p)}"
                                                                          for p in diverged) + ".")
    lam = ref["hessian"]["lambda_max"]
    for method in ADAPTIVE:
        mp = [p for p in pts if p["method"] == method]
        if not mp:
            continue
        bound = [p for p in mp if p["grid_bound"]]
        rej = [p["rejected_steps"] for p in mp]
        f = fits[method]
        h_stab = STABILITY[method] / lam
        limit = (f"stability caps its step at {STABILITY[method]:g}/λ_max = {h_stab:.3g}, so at least "
                 f"{T_MAX / h_stab:.0f} steps to t = {T_MAX:g}" if h_stab < 0.1 else
                 f"stability would allow steps up to {h_stab:.2g}, so the 0.1 grid is the cap: at least "
                 f"{len(GRID)} steps")
        text = (f"{method}: {min(rej)}–{max(rej)} rejected steps per run; the cheapest run takes "
                f"{min(p['grad_evals'] for p in mp)} grad_evals ({min(p['accepted_steps'] for p in mp)} accepted "
                f"steps): {limit}, whatever the tolerance")
        if bound:
            text += (f"; {len(bound)} run(s) ({', '.join(_value(p) for p in bound)}) are grid-bound (one step per "
                     f"grid interval, after the first trial step of 0.01), with errors "
                     f"{', '.join(format(p['error'], '.3g') for p in bound)}: set by the 0.1 step, not by rtol")
        if f is not None:
            ratio = statistics.median(p["error"] / p["rtol"] for p in mp if p["in_fit"])
            text += (f". Fit over rtol {', '.join(f'{v:g}' for v in f['used'])}: slope {f['slope']:.2f} against "
                     f"grad_evals, {f['slope_vs_rtol']:.2f} against rtol (error ≈ {ratio:.2g}·rtol), "
                     f"{fmt(f['slope_vs_evals_above_baseline'], '.2f')} against grad_evals minus the cheapest run's")
        notes.append(text + ".")
    e = res["evals_at_target"][problem]["euler"]
    if e["how"] == "extrapolated":
        notes.append(f"euler/GD extrapolated from h = {T_MAX / e['anchor']:g} ({e['anchor']} grad_evals, error "
                     f"{e['anchor_error']:.3g}) along the fitted slope {e['slope_used']:.3f}: "
                     f"{e['grad_evals']:.3g} grad_evals (with the exact order 1: "
                     f"{e['grad_evals_at_theoretical_order']:.3g}); a direct run would take about "
                     f"{e['grad_evals'] * res['per_eval_seconds'][problem]['euler'] / 3600:.0f} h here.")
    notes.append(f"λ_max of the Hessian at the reference's final parameters: {lam:.4g}; real-axis stability needs "
                 "h < " + ", ".join(f"{b / lam:.3g} ({m})" for m, b in STABILITY.items()) + ".")
    return notes


def _tolerance_ratios(res: dict, needed: bool = False) -> str:
    """The range of error / rtol over the adaptive runs in the fits, e.g. "4e+03–7e+04" (needed: the range of
    TARGET_ERROR / that ratio, the rtol each method needs, per problem by the median ratio)."""
    pts = [p for p in res["points"] if p["in_fit"] and p["method"] in ADAPTIVE]
    if not pts:
        return "—"
    if not needed:
        r = [p["error"] / p["rtol"] for p in pts]
        return f"{min(r):.0e}–{max(r):.0e}"
    r = [TARGET_ERROR / statistics.median(p["error"] / p["rtol"] for p in pts
                                          if p["problem"] == q and p["method"] == m)
         for q in PROBLEMS for m in ADAPTIVE if any(p["problem"] == q and p["method"] == m for p in pts)]
    return f"{min(r):.0e}–{max(r):.0e}"


def markdown(res: dict) -> str:
    m, rs = res["machine"], res["reference_settings"]
    checks = "; ".join(f"({c['problem']}) h = {c['h']:g}: " + (
        "bit-identical losses at every grid time and the same grad_evals" if c["identical"]
        else f"DIFFERENT (max rel. diff {c['max_rel_diff']:.2e})") for c in res["gd_check"])
    lines = [
        "# Integrators: gradient evaluations for a relative loss error of 1e-6",
        "",
        "Every run goes through the harness (`dynamics_bench.run(compose(...), out_dir)`), float64 on the CPU, "
        f"torch threads = {m['threads']}, gradient flow to t_max = {T_MAX:g}, the loss logged at the common grid "
        "t = 0.1, 0.2, ..., 10 (`metrics.times`; every fixed step h used divides 0.1, so no time is rounded). "
        "Cost = `grad_evals` from summary.json (every gradient evaluation, rejected steps included).",
        "",
        f"* Reference: {rs['method']} at rtol {rs['rtol']:g}, atol {rs['atol']:g}, checked against an independent "
        "scipy DOP853 solution (below).",
        f"* Error: max over the grid times where the reference loss exceeds {LOSS_FLOOR:g} of |L − L_ref| / L_ref.",
        f"* Sweeps: euler, heun, rk4 over h; bosh3, dopri5 over rtol with atol = {ATOL_FACTOR:g}·rtol. "
        f"Euler is GD with lr = h: trainer=gd gives {checks}, hence “euler/GD”.",
        "* Unstable: a fixed-step run with h·λ_max above the method's real-axis stability bound (2 for euler and "
        "heun, 2.785 for rk4; λ_max = the largest Hessian eigenvalue at the reference's final parameters). Such runs "
        "and `diverged` ones are left out of fits and interpolation.",
        f"* Fit: least squares of log error on log grad_evals over the asymptotic points, errors between the fit "
        f"floor ({FLOOR_FACTOR:g}× the reference's difference from the independent solution) and "
        f"{FIT_MAX_ERROR:g}: every stable fixed-step point there (at least the {MIN_FIT_POINTS} most accurate); for "
        f"an adaptive method the tolerances, from the tightest, over which error ∝ rtol (local exponent "
        f"{TOL_EXPONENT_RANGE[0]}–{TOL_EXPONENT_RANGE[1]}).",
        "* 1e-6 cost: interpolated log-log between the two measured runs that bracket it, or, where no run got "
        "there, *extrapolated* from the fitted point nearest 1e-6 along the fitted slope.",
        "",
    ]
    if res["quick"]:
        lines += ["**Quick smoke run** (`--quick`): a handful of points and a loose reference; these are not the "
                  "benchmark's numbers.", ""]
    for problem, spec in PROBLEMS.items():
        r, fits, ev = res["ratios"][problem], res["fits"][problem], res["evals_at_target"][problem]
        rc = res["references"][problem]
        lines += [
            f"## {spec['title']}",
            "",
            f"Error grid: {len(rc['error_times'])} times, t = {rc['error_times'][0]:g} … {rc['error_times'][-1]:g} "
            f"(reference loss {rc['losses'][0]:.3g} at t = 0.1, {rc['losses'][len(rc['error_times']) - 1]:.2g} at "
            f"t = {rc['error_times'][-1]:g}). Reference: {rc['grad_evals']} grad_evals, {rc['rejected_steps']} "
            f"rejected steps, {rc['wall_seconds']:.1f} s. Independent check ({rc['independent']['what']}): max "
            f"relative difference {rc['independent']['max_rel_diff']:.2e} on the error grid, so the fit floor is "
            f"{rc['fit_floor']:.1e}.",
            "",
            "| method | order | fitted slope (points) | grad_evals for 1e-6 | how | cheapest run with error ≤ 1e-6 "
            "| ratio to dopri5 |",
            "|---|---:|---:|---:|---|---:|---:|",
        ]
        for method in ORDERS:
            f, e = fits[method], ev[method]
            slope = "—" if f is None else f"{f['slope']:.2f} ({f['points']})"
            how = e["how"] + (f" from {e['anchor']} evals (error {e['anchor_error']:.2e})"
                              if e["how"] == "extrapolated" else "")
            lines.append(f"| {LABELS[method]} | {ORDERS[method]} | {slope} | {fmt(e['grad_evals'], '.3g')} | {how} "
                         f"| {fmt(e['cheapest_run_meeting_target'], 'd')} | {fmt(r['to_dopri5'][method], '.3g')} |")
        verdict = {True: "≥ 1000: **PASS**", False: "< 1000: **FAIL**", None: "**not determined**"}[r["pass"]]
        lines += ["", f"**euler/GD ÷ dopri5 at error 1e-6: {fmt(r['euler_over_dopri5'], '.3g')}** "
                      f"(euler {r['euler_how']}, dopri5 {r['dopri5_how']}): {verdict}.", ""]
        lines += [f"* {n}" for n in problem_notes(res, problem)] + [""]
    lines += [
        "## Reading",
        "",
        "* Fixed-step methods: fitted slopes against grad_evals " + "; ".join(
            f"({name}) " + ", ".join(f"{LABELS[m]} {res['fits'][name][m]['slope']:.2f}" for m in FIXED)
            for name in res["fits"]) + " (orders 1, 2, 4). Euler/GD's cost at 1e-6 is extrapolated along its "
        "measured slope where no run got there; with the exact order 1: " + ", ".join(
            f"({name}) {res['evals_at_target'][name]['euler'].get('grad_evals_at_theoretical_order', math.nan):.3g}"
            for name in res["evals_at_target"]) + ".",
        "* Adaptive methods keep error ∝ rtol, but their fitted slopes against grad_evals can be steeper than "
        "−order: part of their cost does not depend on the tolerance — the stability limit of an explicit step "
        "(largest Hessian eigenvalue " + ", ".join(
            f"({name}) {res['references'][name]['hessian']['lambda_max']:.3g}" for name in res["references"])
        + ") and the metric grid (adaptive steps stop on every `metrics.times` entry). Against the cost above "
        "the cheapest run the slopes come closer to −order (per-problem notes above).",
        f"* The error is relative to a loss that falls to {LOSS_FLOOR:g}, where an absolute parameter error δ gives a "
        f"relative loss error ~δ/√L ≈ 1e4·δ; the controller bounds δ by atol + rtol·|θ| per step, hence errors of "
        f"{_tolerance_ratios(res)}×rtol in the fits, so error 1e-6 takes rtol ≈ {_tolerance_ratios(res, True)}.",
        "",
    ]
    lines += ["## Raw points", "",
              "| problem | method | h | rtol | atol | status | grad_evals | accepted | rejected | error | regime "
              "| in fit | loop s |", "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|"]
    for p in res["points"]:
        regime = p["regime"] + (" (grid-bound)" if p["grid_bound"] else "")
        lines.append(f"| {p['problem']} | {LABELS[p['method']]} | {fmt(p['h'], 'g')} | {fmt(p['rtol'], 'g')} | "
                     f"{fmt(p['atol'], 'g')} | {p['status']} | {p['grad_evals']} | {p['accepted_steps']} | "
                     f"{p['rejected_steps']} | {fmt(p['error'], '.3e')} | {regime} | {'yes' if p['in_fit'] else ''} | "
                     f"{p['wall_seconds']:.2f} |")
    lines += [
        "",
        "Status `max_steps` is the harness's name for a run that reached t_max. The adaptive clock steps exactly onto "
        f"every grid time, so an adaptive run takes at least {len(GRID)} accepted steps (steps capped at the 0.1 "
        "spacing); grid-bound: one accepted step per grid interval (plus the first trial step, trainer.h = 0.01).",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} CPUs, load average {m['load_average_start']} at the start, "
        f"{m['load_average_end']} at the end), torch {m['torch']}, Python {m['python']}, scipy {m['scipy']}, "
        f"{m['date']}, git {m['git_revision']}. Total runtime {res['total_seconds']:.0f} s.",
        "",
        f"Reproduce: `python scripts/benchmark_integrators.py{' --quick' if res['quick'] else ''}`",
        "",
    ]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = 30.0  # errors above are drawn at this height (triangles)
    colors = {"euler": "C0", "heun": "C1", "rk4": "C2", "bosh3": "C3", "dopri5": "C4"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)
    for ax, (problem, spec) in zip(axes, PROBLEMS.items()):
        floor = res["references"][problem]["fit_floor"]
        for method in ORDERS:
            pts = [p for p in res["points"] if p["problem"] == problem and p["method"] == method
                   and p["regime"] != "diverged"]
            key = (lambda p: -p["rtol"]) if method in ADAPTIVE else (lambda p: -p["h"])
            pts.sort(key=key)
            ok = [p for p in pts if p["regime"] == "ok"]
            color, fit = colors[method], res["fits"][problem][method]
            label = LABELS[method] + ("" if fit is None else f" (fitted slope {fit['slope']:.2f})")
            ax.loglog([p["grad_evals"] for p in ok], [min(p["error"], top) for p in ok], "-", color=color, lw=1,
                      label=label)
            for p in pts:
                clipped = p["error"] > top
                marker = "x" if p["regime"] == "unstable" else ("^" if clipped else "o")
                ax.loglog([p["grad_evals"]], [min(p["error"], top)], marker, color=color, ms=5,
                          mfc=color if p["in_fit"] else "none")
            e = res["evals_at_target"][problem][method]
            if e["how"] == "extrapolated":
                ax.loglog([e["anchor"], e["grad_evals"]], [e["anchor_error"], TARGET_ERROR], ":", color=color, lw=1.2)
                ax.loglog([e["grad_evals"]], [TARGET_ERROR], "D", mfc="none", color=color, ms=8)
            elif e["grad_evals"] is not None:
                ax.loglog([e["grad_evals"]], [TARGET_ERROR], "D", color=color, ms=6)
        ax.axhline(TARGET_ERROR, color="k", lw=0.8, ls="--")
        lo = min(ax.get_ylim()[0], floor / 3)
        ax.axhspan(1e-30, floor, color="0.85", zorder=0)
        ax.set_ylim(bottom=lo)
        ax.text(ax.get_xlim()[0] * 1.3, TARGET_ERROR * 1.6, "error 1e-6", fontsize=8)
        ax.text(ax.get_xlim()[0] * 1.3, floor * 0.4, "below the fit floor (reference accuracy)", fontsize=7,
                color="0.4")
        r = res["ratios"][problem]
        ax.set_title(f"{spec['title']}\neuler/GD ÷ dopri5 at error 1e-6: {fmt(r['euler_over_dopri5'], '.3g')}",
                     fontsize=9)
        ax.set_xlabel("gradient evaluations (grad_evals)")
        ax.set_ylabel(f"max relative loss error where reference loss > {LOSS_FLOOR:g}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("filled: points in the fit; x: unstable step (not fitted); ▲: error above 30, drawn at 30; "
                 "◆: cost at 1e-6 (open + dotted: extrapolated along the fitted slope)", fontsize=9)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def collect(sweeps: dict, reference: dict) -> dict:
    """Every harness run: the reference (with its checks), the sweeps, the GD check."""
    for method in ("euler", "heun", "rk4", "gd_check"):
        for h in sweeps[method]:
            if abs(round(0.1 / h) * h - 0.1) > 1e-12:
                raise ValueError(f"{method} h = {h} does not divide the grid spacing 0.1")
    res = {"references": {}, "points": [], "gd_check": []}
    for problem in PROBLEMS:
        print(f"problem {problem}: reference {reference}", flush=True)
        ref, final = run_point(problem, reference["method"], reference["rtol"], reference["atol"], keep_params=True)
        ref["hessian"] = hessian_extremes(problem, {k: v[0] for k, v in final.items()})
        start = time.perf_counter()
        losses, what = independent_solution(problem, reference["independent_rtol"])
        ref["independent"] = {"what": what, "seconds": time.perf_counter() - start, "losses": losses}
        res["references"][problem] = ref
        print(f"  reference: {ref['grad_evals']} grad_evals, {ref['rejected_steps']} rejected, "
              f"{ref['wall_seconds']:.1f} s; lambda_max {ref['hessian']['lambda_max']:.4g}", flush=True)
        for method in ORDERS:
            for value in sweeps[method]:
                atol = ATOL_FACTOR * value if method in ADAPTIVE else None
                p = run_point(problem, method, value, atol)
                res["points"].append(p)
                error = None if p["status"] == "diverged" else relative_error(p["losses"], ref["losses"])
                print(f"  {method:<7} {_value(p):<12} {p['status']:<9} evals {p['grad_evals']:>7} rejected "
                      f"{p['rejected_steps']:>4} error {fmt(error, '.3e'):>10} {p['wall_seconds']:6.2f} s", flush=True)
        for h in sweeps["gd_check"]:
            gd = run_point(problem, "gd", h)
            fe = next(p for p in res["points"] if p["problem"] == problem and p["method"] == "euler" and p["h"] == h)
            diffs = [abs(a - b) / max(abs(b), 1e-300) for a, b in zip(gd["losses"], fe["losses"])]
            check = {"problem": problem, "h": h, "gd_overrides": gd["overrides"],
                     "identical": gd["losses"] == fe["losses"] and gd["grad_evals"] == fe["grad_evals"],
                     "max_rel_diff": max(diffs), "gd_grad_evals": gd["grad_evals"],
                     "euler_grad_evals": fe["grad_evals"]}
            res["gd_check"].append(check)
            print(f"  gd check h={h:g}: identical to euler: {check['identical']}", flush=True)
    res["per_eval_seconds"] = {
        problem: {m: (sum(p["wall_seconds"] for p in res["points"] if p["problem"] == problem and p["method"] == m)
                      / max(1, sum(p["grad_evals"] for p in res["points"] if p["problem"] == problem
                                   and p["method"] == m)))
                  for m in ORDERS} for problem in PROBLEMS}
    return res


def json_safe(value):
    """NaN/inf (a diverged run's losses) as null: the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def from_json(value):
    """Inverse of json_safe for the loss lists (null -> NaN)."""
    if isinstance(value, dict):
        return {k: ([math.nan if x is None else x for x in v] if k == "losses" else from_json(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def compact_json(data) -> str:
    """Indented JSON with every list of plain numbers (the 100 grid losses of each run) on one line."""
    inline: list[str] = []

    def mark(value):
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            if value and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value):
                inline.append(json.dumps(value, allow_nan=False))
                return f"\x00{len(inline) - 1}\x00"
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(data), indent=1, allow_nan=False, default=str)
    return re.sub(r'"\\u0000(\d+)\\u0000"', lambda m: inline[int(m.group(1))], text)


def write(res: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out.with_suffix(s) for s in (".json", ".md", ".png"))
    json_path.write_text(compact_json(json_safe(res)) + "\n")
    md_path.write_text(markdown(res))
    plot(res, png_path)
    print(f"wrote {json_path}, {md_path}, {png_path}")


def report(res: dict) -> None:
    for problem in PROBLEMS:
        r, ev, fits = res["ratios"][problem], res["evals_at_target"][problem], res["fits"][problem]
        print(f"problem {problem}: grad_evals for error 1e-6: " + ", ".join(
            f"{m} {fmt(ev[m]['grad_evals'], '.3g')} ({ev[m]['how']}, slope "
            f"{fmt((fits[m] or {}).get('slope'), '.2f')})" for m in ORDERS))
        print(f"problem {problem}: euler/dopri5 = {fmt(r['euler_over_dopri5'], '.3g')} "
              f"(>= {REQUIRED_RATIO:g}: {r['pass']})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a handful of points and a looser reference (dopri5 rtol 1e-12): a smoke check, < 30 s; "
                         "writes to a temporary directory unless --out is given")
    ap.add_argument("--out", type=Path, default=None,
                    help="output stem: <out>.json, <out>.md, <out>.png (default results/integrators)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, for stable timing)")
    ap.add_argument("--reanalyse", type=Path, default=None, metavar="JSON",
                    help="run nothing: redo the analysis, tables and plot from the raw points of an earlier "
                         "<out>.json (written next to it unless --out is given)")
    args = ap.parse_args(argv)
    if args.reanalyse is not None:
        res = from_json(json.loads(args.reanalyse.read_text()))
        analyse(res)
        report(res)
        write(res, args.out or args.reanalyse.with_suffix(""))
        return 0
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "dynbench_integrators_quick" / "integrators" if args.quick
                    else ROOT / "results" / "integrators")
    torch.set_num_threads(args.threads)
    sweeps, reference = (QUICK, QUICK_REFERENCE) if args.quick else (FULL, REFERENCE)

    info = machine("dynamics_bench", "numpy", "scipy", "hydra-core")
    start = time.perf_counter()
    res = {"what": "gradient evaluations each harness integrator needs for a relative loss error of 1e-6 "
                   "(max over the grid where the reference loss > 1e-8), deep linear problems (a), (b)",
           "quick": args.quick, "grid": GRID, "t_max": T_MAX, "loss_floor": LOSS_FLOOR,
           "fit_max_error": FIT_MAX_ERROR, "floor_factor": FLOOR_FACTOR, "tol_exponent_range": TOL_EXPONENT_RANGE,
           "target_error": TARGET_ERROR, "atol_factor": ATOL_FACTOR, "reference_settings": reference,
           "stability_bounds": STABILITY, "problems": {k: v["overrides"] for k, v in PROBLEMS.items()},
           "sweeps": sweeps, "orders": ORDERS, **collect(sweeps, reference)}
    analyse(res)
    res["total_seconds"] = time.perf_counter() - start
    info["load_average_end"] = load_average()
    res["machine"] = info
    report(res)
    print(f"total {res['total_seconds']:.0f} s")
    write(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
