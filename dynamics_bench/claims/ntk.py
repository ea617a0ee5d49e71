"""Paper (3), Allen-Zhu–Li–Song, with Du et al.'s two-layer NTK results and lazy training (Chizat–Oyallon–Bach):
P3.1–P3.6 of docs/theory.md §8. Width sweeps of the harness's two-layer and deep ReLU nets: the kernel at init, linear
convergence, movement, kernel stability, Allen-Zhu's scalings and the α-scaled lazy model."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from dynamics_bench.claims.base import Check, Context, Prediction, Run, at_least, at_most, in_range, within
from dynamics_bench.experiment import build
from dynamics_bench.metrics.ntk import ntk_gram
from dynamics_bench.theory.fits import exponential, line, power_law, time_to_reach
from dynamics_bench.theory.ntk import du_gram, ntk_two_layer
from dynamics_bench.theory.scalings import du_movement_bound, ntk_mlp_trained, unit_pair

DU = "Du, Zhai, Póczos, Singh (ICLR 2019)"
PAPER3 = "(3) Allen-Zhu–Li–Song"
SEEDS = 3
DU_SETTING = ("two_layer ReLU, output_layer=fixed_signs (±1, not trained), parameterization=ntk, init_scale=√d; "
              "task=teacher d = 10, r = 3, n = 20, normalize_inputs; loss mse with reduction=sum (½‖u − y‖²); ")


# shared helpers ----------------------------------------------------------------------------------------------------
def finals(run: Run) -> Any:
    """Each member's last metrics row (its stop or the end), by member."""
    return run.metrics.groupby("member").tail(1).set_index("member").sort_index()


def task_xy(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    task = run.task()
    return task["x"].to(torch.float64), task["y"].to(torch.float64).reshape(-1)


def slope(x: list[float], y: list[float]) -> float:
    """The fitted power-law exponent of y against x (log-log least squares); NaN if any y is missing or ≤ 0 (a
    width or δ that never got there must fail the check, not drop out of the fit)."""
    y = np.asarray(y, dtype=float)
    if not np.all(np.isfinite(y) & (y > 0)):
        return math.nan
    return power_law(np.asarray(x, dtype=float), y).slope


def seed_means(values: list[list[float]]) -> list[float]:
    return [float(np.mean(v)) for v in values]


def draw_sweep(ax: Any, widths: list[int], values: list[list[float]], label: str, predicted: float | None,
               color: str | None = None) -> None:
    """Members as dots, their mean as a line, the fitted slope and (if given) the predicted one as dashed lines."""
    means = np.asarray(seed_means(values))
    w = np.asarray(widths, dtype=float)
    line, = ax.plot(w, means, "o-", color=color, label=f"{label}: mean (fit slope {slope(widths, means):+.2f})")
    for i, member_values in enumerate(np.asarray(values, dtype=float).T):  # in the mean's colour
        ax.plot(w, member_values, ".", color=line.get_color(), alpha=0.4, label=None if i else f"{label}: members")
    if predicted is not None:
        anchor = means[-1] * (w / w[-1]) ** predicted
        ax.plot(w, anchor, "--", color=line.get_color(), lw=1, label=f"{label}: predicted slope {predicted:+.2f}")
    ax.set(xscale="log", yscale="log", xlabel="width m")


def bounded(values: list[float]) -> list[float]:
    """Finite values only, for maxima that must not be poisoned by a missing point (which the checks count)."""
    return [v for v in values if math.isfinite(v)]


# P3.1 --------------------------------------------------------------------------------------------------------------
def measure_p3_1(ctx: Context) -> dict[str, Any]:
    widths = ctx.pick(full=[128, 512, 2048, 8192, 32768], fast=[64, 256], cuda=[256, 1024, 4096, 16384, 65536])
    seeds = ctx.pick(full=SEEDS, fast=2)
    lambda_min, deviation = [], []
    lambda0 = k_inf = None
    for m in widths:
        run = ctx.run(f"m={m}", "p3_1_kernel_at_init", f"model.width={m}", f"ensemble.size={seeds}")
        x, _ = task_xy(run)
        if k_inf is None:
            scale = run.summary["config"]["model"]["init_scale"]
            k_inf = ntk_two_layer(x, parameterization="ntk", output_layer="fixed_signs", init_scale=scale)
            lambda0 = float(torch.linalg.eigvalsh(k_inf)[0])
        k0 = kernel_at(run, x)
        lambda_min.append(torch.linalg.eigvalsh(k0)[:, 0].tolist())
        deviation.append((torch.linalg.matrix_norm(k0 - k_inf) / torch.linalg.matrix_norm(k_inf)).tolist())
    return {"widths": widths, "lambda_min": lambda_min, "deviation": deviation, "lambda0": lambda0,
            "input_dim": int(x.shape[1])}


def kernel_at(run: Run, x: torch.Tensor) -> torch.Tensor:
    """The harness's empirical NTK (metrics.ntk's ntk_gram) at the run's final parameters, (E, n, n): θ_0 for a run
    of 0 steps."""
    exp = build(run.summary["config"])
    params = {k: v.to(torch.float64) for k, v in run.final_params().items()}
    members = next(iter(params.values())).shape[0]
    return ntk_gram(exp.objective, params, x.expand(members, *x.shape))


def judge_p3_1(data: dict[str, Any]) -> list[Check]:
    widths, lambda0 = data["widths"], data["lambda0"]
    wide = [i for i, m in enumerate(widths) if m >= 4096] or [len(widths) - 1]
    errors = [abs(v - lambda0) / lambda0 for i in wide for v in data["lambda_min"][i]]
    fitted = slope(widths, seed_means(data["deviation"]))
    few = "" if widths[wide[0]] >= 4096 else f"no width ≥ 4096 here: judged at m = {widths[-1]}. "
    return [
        at_most("p3_1_a_lambda_min_converges", "λ_min(K(0)) is within 5% of λ0 = λ_min(K∞) for m ≥ 4096 (n = 20)",
                "max relative error over m ≥ 4096 and seeds", max(errors), 0.05,
                note=few + "K = Du's H/d (ntk parameterization divides wᵀx by √d), so the relative error is Du's.",
                numbers={"lambda0": lambda0, "lambda0_du_units": lambda0 * data["input_dim"],
                         "lambda_min": dict(zip(map(str, widths), data["lambda_min"]))}),
        within("p3_1_b_kernel_deviation_slope", "‖K(0) − K∞‖_F ∝ m^(-1/2)",
               "slope of the seed-mean ‖K(0) − K∞‖_F/‖K∞‖_F against m (log-log)", fitted, -0.5, 0.15,
               numbers={"deviation": dict(zip(map(str, widths), data["deviation"]))}),
    ]


def draw_p3_1(data: dict[str, Any], checks: list[Check]) -> Figure:
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    w, lambda0 = np.asarray(data["widths"], dtype=float), data["lambda0"]
    for i, values in enumerate(np.asarray(data["lambda_min"]).T):
        left.plot(w, values, "o", alpha=0.6, label=f"λ_min(K(0)), seed {i}")
    left.axhline(lambda0, color="k", ls="--", lw=1, label="λ0 = λ_min(K∞) (theory)")
    left.fill_between(w, 0.95 * lambda0, 1.05 * lambda0, color="k", alpha=0.1, label="±5%")
    left.set(xscale="log", xlabel="width m", ylabel="λ_min of the NTK (harness units: Du's H/d)",
             title="P3.1 a: λ_min(K(0)) against λ_min(K∞)")
    left.legend(fontsize=7)
    draw_sweep(right, data["widths"], data["deviation"], "‖K(0) − K∞‖_F/‖K∞‖_F", -0.5)
    right.set(ylabel="relative deviation from K∞", title="P3.1 b: kernel concentration at init")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


# P3.2 --------------------------------------------------------------------------------------------------------------
def measure_p3_2(ctx: Context) -> dict[str, Any]:
    width = ctx.pick(full=4096, fast=256, cuda=32768)
    run = ctx.run(f"m={width}", "p3_2_linear_convergence", f"model.width={width}",
                  f"ensemble.size={ctx.pick(full=SEEDS, fast=1)}", *ctx.pick(full=[], fast=["trainer.steps=150"]))
    x, _ = task_xy(run)
    scale = run.summary["config"]["model"]["init_scale"]
    k_inf = ntk_two_layer(x, parameterization="ntk", output_layer="fixed_signs", init_scale=scale)
    metrics = run.metrics
    curves = {str(i): {"step": g["step"].tolist(), "loss": g["loss"].tolist()} for i, g in metrics.groupby("member")}
    return {"width": width, "lr": run.summary["config"]["trainer"]["lr"], "curves": curves,
            "lambda0": float(torch.linalg.eigvalsh(k_inf)[0]),
            "lambda_min_final": finals(run)["ntk_lambda_min"].tolist()}


def late_fit(step: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """(slope, R²) of log loss against steps over the second half of the run's steps."""
    late = step >= step.max() / 2
    fit = exponential(step[late], loss[late])
    return fit.slope, fit.r2


def worst_contraction(step: np.ndarray, loss: np.ndarray) -> float:
    """The largest per-step factor (L_b/L_a)^(1/(b−a)) between consecutive logged rows."""
    return float(np.max((loss[1:] / loss[:-1]) ** (1.0 / np.diff(step))))


def judge_p3_2(data: dict[str, Any]) -> list[Check]:
    lr, lambda0 = data["lr"], data["lambda0"]
    fits, contractions, ratios = [], [], []
    for (member, curve), lam in zip(data["curves"].items(), data["lambda_min_final"]):
        step, loss = np.asarray(curve["step"], dtype=float), np.asarray(curve["loss"], dtype=float)
        fitted, r2 = late_fit(step, loss)
        fits.append((fitted, r2))
        contractions.append(worst_contraction(step, loss))
        ratios.append(fitted / (2 * math.log(1 - lr * lam)))
    bound = 1 - lr * lambda0 / 2
    worst_ratio = max(ratios, key=lambda r: abs(r - 1))
    return [
        at_least("p3_2_a_late_linear", "log‖u − y‖² is linear in steps at late times",
                 "min over seeds of R² of log loss against steps (second half of the run)",
                 min(r for _, r in fits), 0.999, 0.001,
                 note="Tolerance fixed here: R² ≥ 0.999 over the second half of the steps.",
                 numbers={"late_slopes": [f for f, _ in fits], "r2": [r for _, r in fits]}),
        at_most("p3_2_b_contraction_bound", "Each GD step contracts ‖u − y‖² by at least 1 − ηλ0/2",
                "max over seeds and logged intervals of the per-step factor", max(contractions), bound,
                1 - bound, numbers={"eta": lr, "lambda0": lambda0, "per_seed": contractions}),
        within("p3_2_c_asymptotic_slope", "Late slope of log‖u − y‖² per step = 2·log(1 − ηλ_min(K)) within 10%",
               "fitted slope / 2·log(1 − η·λ_min(K(T))) (the seed farthest from 1)", worst_ratio, 1.0, 0.1,
               note="λ_min(K) of the empirical NTK at the last row (the kernel GD sees at late times).",
               numbers={"ratios": ratios, "lambda_min_final": data["lambda_min_final"]}),
    ]


def draw_p3_2(data: dict[str, Any], checks: list[Check]) -> Figure:
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    lr = data["lr"]
    for (member, curve), lam in zip(data["curves"].items(), data["lambda_min_final"]):
        step, loss = np.asarray(curve["step"]), np.asarray(curve["loss"])
        line, = ax.plot(step, loss, label=f"seed {member} (harness)")
        ax.plot(step, loss[0] * (1 - lr * lam) ** (2 * step), "--", color=line.get_color(), lw=1,
                label=f"(1 − ηλ_min(K))^(2k), seed {member}")
    step = np.asarray(next(iter(data["curves"].values()))["step"])
    first = next(iter(data["curves"].values()))["loss"][0]
    ax.plot(step, first * (1 - lr * data["lambda0"] / 2) ** step, "k:", label="Du's bound (1 − ηλ0/2)^k")
    ax.set(yscale="log", xlabel="GD steps k", ylabel="½‖u − y‖²",
           title=f"P3.2: linear convergence, m = {data['width']}, η = {lr:g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# P3.3 --------------------------------------------------------------------------------------------------------------
def measure_p3_3(ctx: Context) -> dict[str, Any]:
    widths = ctx.pick(full=[512, 1024, 2048, 4096, 8192, 16384, 32768], fast=[64, 256])
    seeds = ctx.pick(full=SEEDS, fast=1)
    movement, relative, neuron = [], [], []
    for m in widths:
        run = ctx.run(f"m={m}", "p3_3_movement", f"model.width={m}", f"ensemble.size={seeds}",
                      *ctx.pick(full=[], fast=["trainer.steps=150"]))
        last = finals(run)
        root_d = math.sqrt(run.summary["config"]["task"]["input_dim"])  # Du's w = stored w/√d
        movement.append((last["layer_change/w"] / root_d).tolist())
        relative.append(last["weight_change_rel"].tolist())
        neuron.append((last["neuron_change_max"] / root_d).tolist())
    x, y = task_xy(run)
    h_inf = du_gram(x)
    return {"widths": widths, "movement": movement, "relative": relative, "neuron": neuron,
            "min_norm": float(torch.sqrt(y @ torch.linalg.solve(h_inf, y))),
            "lambda0": float(torch.linalg.eigvalsh(h_inf)[0]), "y_norm": float(y.norm()), "n": int(x.shape[0]),
            "final_loss": run.summary["final_loss"]}


def radius(data: dict[str, Any], m: int) -> float:
    return du_movement_bound(data["n"], data["y_norm"], m, data["lambda0"])  # u(0) = 0: ‖y − u(0)‖ = ‖y‖


def judge_p3_3(data: dict[str, Any]) -> list[Check]:
    widths, target = data["widths"], data["min_norm"]
    wide = [i for i, m in enumerate(widths) if m >= 8192] or [len(widths) - 1]
    errors = [abs(v - target) / target for i in wide for v in data["movement"][i]]
    over = [v / radius(data, m) for m, values in zip(widths, data["neuron"]) for v in values]
    few = "" if widths[wide[0]] >= 8192 else f"no width ≥ 8192 here: judged at m = {widths[-1]}. "
    return [
        at_most("p3_3_a_min_norm_distance", "With the symmetric init, ‖W(∞) − W(0)‖_F is within 2% of √(yᵀH∞⁻¹y)",
                "max relative error over m ≥ 8192 and seeds", max(errors), 0.02,
                note=few + "‖W(∞) − W(0)‖ in Du's units (stored w/√d), after GD (η = 5, ½‖u − y‖² ≤ 1e-12): GD's "
                     "steps lie in the span of the Jacobian's rows, so it reaches the same min-norm interpolant.",
                numbers={"predicted": target, "movement": dict(zip(map(str, widths), data["movement"]))}),
        within("p3_3_b_relative_change_slope", "‖W(∞) − W(0)‖_F/‖W(0)‖_F ∝ m^(-1/2)",
               "slope of the seed-mean relative change against m", slope(widths, seed_means(data["relative"])),
               -0.5, 0.1, numbers={"relative": dict(zip(map(str, widths), data["relative"]))}),
        within("p3_3_c_neuron_move_slope", "Max per-neuron movement ∝ m^(-1/2)",
               "slope of the seed-mean max_r ‖w_r(∞) − w_r(0)‖ against m", slope(widths, seed_means(data["neuron"])),
               -0.5, 0.15, note="Tolerance ±0.15 fixed here (theory.md gives none), as for P3.1's and P3.5's slopes.",
               numbers={"neuron": dict(zip(map(str, widths), data["neuron"]))}),
        at_most("p3_3_d_neuron_move_bound", "Every neuron stays within R' = 4√n‖y − u(0)‖/(√m λ0)",
                "max over widths and seeds of max_r ‖w_r(∞) − w_r(0)‖ / R'", max(bounded(over) or [math.inf]), 1.0,
                note="Du's units; u(0) = 0 (symmetric init), λ0 = λ_min(H∞).",
                numbers={"R_prime": {str(m): radius(data, m) for m in widths}}),
    ]


def draw_p3_3(data: dict[str, Any], checks: list[Check]) -> Figure:
    fig = Figure(figsize=(13, 4))
    first, second, third = fig.subplots(1, 3)
    w = np.asarray(data["widths"], dtype=float)
    for i, values in enumerate(np.asarray(data["movement"]).T):
        first.plot(w, values, "o", alpha=0.6, label=f"‖W(∞) − W(0)‖_F, seed {i}")
    first.axhline(data["min_norm"], color="k", ls="--", lw=1, label="√(yᵀH∞⁻¹y) (theory)")
    first.fill_between(w, 0.98 * data["min_norm"], 1.02 * data["min_norm"], color="k", alpha=0.1, label="±2%")
    first.set(xscale="log", xlabel="width m", ylabel="‖W(∞) − W(0)‖_F (Du's units)",
              title="P3.3 a: movement → min-norm interpolant")
    first.legend(fontsize=7)
    draw_sweep(second, data["widths"], data["relative"], "‖ΔW‖_F/‖W(0)‖_F", -0.5)
    second.set(ylabel="relative change of W", title="P3.3 b: relative change")
    second.legend(fontsize=7)
    draw_sweep(third, data["widths"], data["neuron"], "max_r ‖Δw_r‖", -0.5)
    third.plot(w, [radius(data, int(m)) for m in w], "k--", lw=1, label="Du's radius R' (bound)")
    third.set(ylabel="max per-neuron movement (Du's units)", title="P3.3 c, d: per-neuron movement")
    third.legend(fontsize=7)
    fig.tight_layout()
    return fig


# P3.4 --------------------------------------------------------------------------------------------------------------
def measure_p3_4(ctx: Context) -> dict[str, Any]:
    widths = ctx.pick(full=[128, 512, 2048, 8192, 32768], fast=[64, 256])
    seeds = ctx.pick(full=SEEDS, fast=1)
    kernel, flips = [], []
    for m in widths:
        last = finals(ctx.run(f"m={m}", "p3_4_kernel_stability", f"model.width={m}", f"ensemble.size={seeds}",
                              *ctx.pick(full=[], fast=["trainer.steps=150"])))
        kernel.append(last["ntk_change_rel"].tolist())
        flips.append(last["activation_flips/1"].tolist())
    return {"widths": widths, "kernel": kernel, "flips": flips}


def judge_p3_4(data: dict[str, Any]) -> list[Check]:
    widths = data["widths"]
    flips = seed_means(data["flips"])
    return [
        in_range("p3_4_a_kernel_change_slope", "‖H(T) − H(0)‖_F/‖H(0)‖_F decreases with m, slope in [−0.8, −0.4]",
                 "slope of the seed-mean relative kernel change against m", slope(widths, seed_means(data["kernel"])),
                 -0.8, -0.4, numbers={"kernel_change": dict(zip(map(str, widths), data["kernel"]))}),
        at_most("p3_4_b_flip_fraction_slope",
                "The activation-flip fraction decreases with m at least as fast as the bound's m^(-1/3)",
                "slope of the seed-mean flip fraction against m", slope(widths, flips), -1 / 3,
                note="Passes iff the slope ≤ −1/3 (the bound's rate; theory.md expects ≈ −0.5 to −0.6).",
                numbers={"flips": dict(zip(map(str, widths), data["flips"]))}),
    ]


def draw_p3_4(data: dict[str, Any], checks: list[Check]) -> Figure:
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    draw_sweep(left, data["widths"], data["kernel"], "‖K(T) − K(0)‖_F/‖K(0)‖_F", -0.5)
    left.set(ylabel="relative kernel change", title="P3.4 a: kernel stability")
    left.legend(fontsize=7)
    draw_sweep(right, data["widths"], data["flips"], "flip fraction", -0.5)
    w = np.asarray(data["widths"], dtype=float)
    right.plot(w, seed_means(data["flips"])[-1] * (w / w[-1]) ** (-1 / 3), "k:", lw=1, label="bound's rate m^(-1/3)")
    right.set(ylabel="fraction of (sample, unit) sign flips", title="P3.4 b: activation flips")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


# P3.5 --------------------------------------------------------------------------------------------------------------
ETA0 = 1.0  # η = η0/m; η0·λ_max(K/m) ≈ 0.9 on P3.5's data
SEPARATION_ETA0 = 2.0  # two close points: λ_max(K/m) ≈ 0.5
EPSILONS = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
SEPARATION_EPS = 0.1  # T_ε: F ≤ 0.1·F(0)
SEPARATION_MIN_STEPS = 1500  # room for a slow mode slower than the infinite-width one (1300 steps at δ ≈ 0.046)
LAYERS = ("W2", "W3")


def measure_p3_5(ctx: Context) -> dict[str, Any]:
    widths = ctx.pick(full=[32, 64, 128, 256, 512, 1024, 2048], fast=[32, 64],
                      cuda=[32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])
    seeds = ctx.pick(full=SEEDS, fast=1)
    sweep: dict[str, Any] = {"iterations": [], "frobenius": [], "relative": [], "spectral": [], "times": []}
    for m in widths:
        run = ctx.run(f"m={m}", "p3_5_allen_zhu", f"model.width={m}", f"trainer.lr={ETA0 / m}",
                      f"ensemble.size={seeds}", *ctx.pick(full=[], fast=["trainer.steps=150"]))
        last = finals(run)
        sweep["frobenius"].append({k: last[f"layer_change/{k}"].tolist() for k in LAYERS})
        sweep["relative"].append({k: last[f"layer_change_rel/{k}"].tolist() for k in LAYERS})
        sweep["spectral"].append({k: last[f"layer_change_spec_rel/{k}"].tolist() for k in LAYERS})
        curves = [g for _, g in run.metrics.groupby("member")]
        sweep["times"].append([[time_to_reach(g["step"], g["loss"], eps) for eps in EPSILONS] for g in curves])
        sweep["iterations"].append([t[-1] for t in sweep["times"][-1]])
    labels = ctx.run("random_labels", "p3_5_random_labels", f"ensemble.size={seeds}",
                     *ctx.pick(full=[], fast=["model.width=32", f"trainer.lr={4 / 32}", "trainer.steps=30"]))
    return {"widths": widths, **sweep, "accuracy": finals(labels)["accuracy"].tolist(),
            "accuracy_curve": labels.member(0)[["step", "accuracy"]].to_dict("list"),
            **measure_separation(ctx, seeds)}


def separation_kernel_slopes(deltas: np.ndarray, dim: int) -> dict[str, float]:
    """The slope of λ_min(K∞) against δ for L = 1, 2, 3 trained m×m layers (depth L + 2), by the NTK recursion."""
    slopes = {}
    for hidden in (1, 2, 3):
        lam = [float(torch.linalg.eigvalsh(ntk_mlp_trained(unit_pair(d, dim), depth=hidden + 2,
                                                            trained=list(range(2, hidden + 2)),
                                                            init_scale=math.sqrt(2)))[0]) for d in deltas]
        slopes[str(hidden)] = slope(list(deltas), lam)
    return slopes


def measure_separation(ctx: Context, seeds: int) -> dict[str, Any]:
    """T_ε against δ on two unit inputs at distance δ with opposite labels, and the empirical λ_min(K(0))."""
    width = ctx.pick(full=1024, fast=32, cuda=8192)
    deltas = ctx.pick(full=list(np.geomspace(1e-2, 1e-1, 4)), fast=[0.3, 1.0], cuda=list(np.geomspace(1e-3, 1e-1, 5)))
    dim = 8
    times, lambda_min, lambda_final, lambda_inf = [], [], [], []
    for delta in deltas:
        x = unit_pair(float(delta), dim)
        path = ctx.work_dir / "inits" / f"pair_{delta:.4g}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": x, "y": torch.tensor([1.0, -1.0], dtype=torch.float64)}, path)
        lam_inf = float(torch.linalg.eigvalsh(ntk_mlp_trained(x, depth=4, trained=[2, 3], init_scale=math.sqrt(2)))[0])
        estimate = math.log(1 / SEPARATION_EPS) / (2 * SEPARATION_ETA0 * lam_inf)  # the linear rate's steps
        steps = ctx.pick(full=max(math.ceil(4 * estimate), SEPARATION_MIN_STEPS), fast=math.ceil(4 * estimate))
        run = ctx.run(f"delta={delta:.4g}", "p3_5_allen_zhu_separation", "task=dataset", f"task.path={path}",
                      f"model.width={width}", "model.init=gaussian", f"trainer.lr={SEPARATION_ETA0 / width}",
                      f"trainer.steps={steps}", "trainer.target_loss=null", f"ensemble.size={seeds}",
                      "metrics.names=[loss,ntk]", "metrics.heavy_every=100000")
        curves = [g for _, g in run.metrics.groupby("member")]
        times.append([time_to_reach(g["step"], g["loss"] / g["loss"].iloc[0], SEPARATION_EPS) for g in curves])
        lambda_min.append([float(g["ntk_lambda_min"].iloc[0]) / width for g in curves])
        lambda_final.append([float(g["ntk_lambda_min"].dropna().iloc[-1]) / width for g in curves])
        lambda_inf.append(lam_inf)
    return {"separation_width": width, "deltas": [float(d) for d in deltas], "separation_times": times,
            "separation_lambda_min": lambda_min, "separation_lambda_final": lambda_final,
            "separation_lambda_inf": lambda_inf,
            "recursion_slopes": separation_kernel_slopes(np.geomspace(1e-3, 1e-1, 9), dim)}


def layer_slopes(widths: list[int], per_width: list[dict[str, list[float]]]) -> dict[str, float]:
    return {k: slope(widths, seed_means([entry[k] for entry in per_width])) for k in LAYERS}


def farthest(slopes: dict[str, float], predicted: float) -> float:
    return max(slopes.values(), key=lambda s: abs(s - predicted) if math.isfinite(s) else math.inf)


def log_linearity(times: list[float], first: int = 0) -> float:
    """R² of T_ε against log(1/ε) over EPSILONS[first:] (NaN if a level was not reached)."""
    t = np.asarray(times[first:], dtype=float)
    if not np.all(np.isfinite(t)):
        return math.nan
    return line(np.log(1 / np.asarray(EPSILONS[first:])), t).r2


def judge_p3_5(data: dict[str, Any]) -> list[Check]:
    widths = data["widths"]
    iterations = seed_means(data["iterations"])
    frobenius = layer_slopes(widths, data["frobenius"])
    relative = layer_slopes(widths, data["relative"])
    spectral = layer_slopes(widths, data["spectral"])
    linearity = [log_linearity(t) for t in data["times"][-1]]
    late_linearity = [log_linearity(t, first=2) for t in data["times"][-1]]
    slopes = {**{f"recursion L={k}": v for k, v in data["recursion_slopes"].items()},
              f"harness m={data['separation_width']}": slope(data["deltas"], seed_means(data["separation_lambda_min"]))}
    worst = data["times"][-1][int(np.nanargmin(linearity))] if any(map(math.isfinite, linearity)) else []
    convex = (" FAIL because T_ε is convex in log(1/ε): steps per decade "
              f"{', '.join(f'{d:.0f}' for d in np.diff(worst))} (worst seed): the fast kernel modes die first and the "
              "rate settles to the slowest mode's only after a few decades, so T_ε ∝ log(1/ε) holds asymptotically "
              f"(R² over ε = 1e-3…1e-6 alone: {', '.join(f'{r:.3f}' for r in late_linearity)} by seed; the window "
              "of all six levels was fixed before the run and is kept)." if linearity and min(linearity) < 0.99 else "")
    deltas = data["deltas"]
    time_slope = slope(deltas, seed_means(data["separation_times"]))
    stalled = [d for d, t in zip(deltas, data["separation_times"]) if not all(map(math.isfinite, t))]
    falls = ", ".join(f"{np.mean(a):.2g} → {np.mean(b):.2g} (δ = {d:.3g})" for d, a, b in
                      zip(deltas, data["separation_lambda_min"], data["separation_lambda_final"]))
    why = (f" Not reached within the step budget at δ = {', '.join(f'{d:.3g}' for d in stalled)}." if stalled else "")
    failed = not abs(time_slope + 1.0) <= 0.2
    reached = [(d, float(np.mean(t))) for d, t in zip(deltas, data["separation_times"]) if all(map(math.isfinite, t))]
    local = (f" T_ε where reached: {', '.join(f'{t:.0f} (δ = {d:.3g})' for d, t in reached)}"
             + (f", slope {slope(*map(list, zip(*reached))):.2f} over those δ." if len(reached) > 1 else ".")
             if reached else "")
    why += local + f" λ_min(K)/m from θ_0 to the run's end: {falls}." + (
        " The slow mode's eigenvalue does not stay near its initial value: in a check outside the suite (δ = 0.1, "
        "the first 50 steps) it fell 0.0097 → 0.0010 at m = 1024, 0.0112 → 0.0012 at m = 4096, and alike at "
        "η0 = 0.25, within the first ~10% of the loss decrease, so "
        "neither the step size nor a 1/√m finite-width change accounts for it; its cause is not established here, "
        "and Allen-Zhu's width condition m ≥ Ω(n²⁴L¹²/δ⁸) is far from met at these sizes." if failed else "")
    small = (f"Sizes: m ≤ {widths[-1]} (stated: wider, `--device cuda` runs to 8192). "
             if widths[-1] < 8192 else "")
    return [
        in_range("p3_5_a_iterations_bounded", "Iterations to F ≤ 1e-6 stay bounded as m grows (η = η0/m)",
                 "slope of the seed-mean iterations to F ≤ 1e-6 against m", slope(widths, iterations), -0.3, 0.0,
                 note=small + "Passes for slopes in [−0.3, 0]: theory.md's 'slope ≥ −0.3, no growth'. "
                      f"η0 = {ETA0} (η·λ_max ≈ 0.9), not theory.md's 0.02, so "
                      "runs take ~100 steps, not ~1000; the harness's readout is N(0, 2/m), not N(0, 1): Allen-Zhu's "
                      "net times √(2/d), a constant.",
                 numbers={"iterations": dict(zip(map(str, widths), data["iterations"]))}),
        within("p3_5_b_frobenius_change_slope", "‖ΔW_ℓ‖_F ∝ m^(-1/2) for each trained m×m layer",
               "slope of ‖ΔW_ℓ‖_F against m (the layer farthest from −0.5)", farthest(frobenius, -0.5), -0.5, 0.15,
               numbers={"slopes": frobenius}),
        within("p3_5_c_relative_frobenius_slope", "‖ΔW_ℓ‖_F/‖W_ℓ(0)‖_F ∝ m^(-1)",
               "slope of the relative Frobenius change against m (the layer farthest from −1)",
               farthest(relative, -1.0), -1.0, 0.15, numbers={"slopes": relative}),
        within("p3_5_d_relative_spectral_slope", "‖ΔW_ℓ‖₂/‖W_ℓ(0)‖₂ ∝ m^(-1/2)",
               "slope of the relative spectral change against m (the layer farthest from −0.5)",
               farthest(spectral, -0.5), -0.5, 0.15, note="Tolerance ±0.15 fixed here, as for b.",
               numbers={"slopes": spectral}),
        at_least("p3_5_e_log_epsilon_time", "T_ε ∝ log(1/ε): linear convergence",
                 f"min over seeds of R² of T_ε against log(1/ε), ε = 1e-1…1e-6, m = {widths[-1]}",
                 min(linearity) if all(map(math.isfinite, linearity)) else math.nan, 0.99, 0.01,
                 note="Tolerance fixed here: R² ≥ 0.99 over all six levels." + convex,
                 numbers={"T_eps": data["times"][-1], "late_r2": late_linearity}),
        at_least("p3_5_f_random_labels", "100% training accuracy with cross-entropy on random labels",
                 "min over seeds of the final training accuracy", min(data["accuracy"]), 1.0, 0.01,
                 note="m = 512 (W2, W3 trained), n = 32 random ±, stopped once the summed cross-entropy ≤ 0.6 < ln 2 "
                      "(every sample then classified right)."),
        within("p3_5_g_lambda_min_linear_in_delta", "λ_min of the NTK on two inputs at distance δ is ∝ δ",
               "slope of λ_min against δ, farthest from 1 of: the NTK recursion's (L = 1, 2, 3; δ ∈ [1e-3, 1e-1]) "
               "and the harness's λ_min(K(0))/m (seed mean)", farthest(slopes, 1.0), 1.0, 0.1,
               note="Infinite-width recursion (theory/scalings.py) for the harness's net with L = 1, 2, 3 trained m×m "
                    f"layers, and the harness's own kernel at m = {data['separation_width']} over δ ∈ "
                    f"[{deltas[0]:.3g}, {deltas[-1]:.3g}]; tolerance ±0.1 fixed here.",
               numbers={"slopes": slopes,
                        "empirical_lambda_min": dict(zip(map(str, deltas), data["separation_lambda_min"])),
                        "lambda_inf": dict(zip(map(str, deltas), data["separation_lambda_inf"]))}),
        within("p3_5_h_time_inverse_in_delta", "T_ε ∝ 1/δ at fixed η (opposite labels on the close pair)",
               f"slope of the seed-mean T_ε (F ≤ 0.1·F(0)) against δ, m = {data['separation_width']}",
               time_slope, -1.0, 0.2,
               note=(f"δ ∈ [{deltas[0]:.3g}, {deltas[-1]:.3g}] (stated: [1e-3, 1e-1], `--device cuda`), m = "
                     f"{data['separation_width']}, η = {SEPARATION_ETA0}/m, Gaussian init (the symmetric mlp start "
                     "zeroes W2's gradient at θ_0), steps: 4× the infinite-width linear estimate, at least "
                     f"{SEPARATION_MIN_STEPS} (NaN: not reached)." + why),
               numbers={"T_eps": dict(zip(map(str, deltas), data["separation_times"])),
                        "lambda_min_final": dict(zip(map(str, deltas), data["separation_lambda_final"]))}),
    ]


def draw_p3_5(data: dict[str, Any], checks: list[Check]) -> Figure:
    fig = Figure(figsize=(14, 8))
    axes = fig.subplots(2, 3)
    widths = data["widths"]
    draw_sweep(axes[0, 0], widths, data["iterations"], "iterations to F ≤ 1e-6", 0.0)
    axes[0, 0].set(ylabel="GD steps", title="P3.5 a: iterations to ε against width")
    for ax, key, predicted, label in ((axes[0, 1], "frobenius", -0.5, "‖ΔW_ℓ‖_F"),
                                      (axes[0, 2], "relative", -1.0, "‖ΔW_ℓ‖_F/‖W_ℓ(0)‖_F"),
                                      (axes[1, 0], "spectral", -0.5, "‖ΔW_ℓ‖₂/‖W_ℓ(0)‖₂")):
        for layer, color in zip(LAYERS, ("C0", "C1")):
            draw_sweep(ax, widths, [entry[layer] for entry in data[key]], f"{label}, {layer}", predicted, color)
        ax.set(ylabel=label, title=f"P3.5: {label} against width")
    for seed, t in enumerate(data["times"][-1]):
        axes[1, 1].plot(np.log(1 / np.asarray(EPSILONS)), t, "o-", label=f"seed {seed} (harness)")
    axes[1, 1].set(xlabel="log(1/ε)", ylabel="GD steps to F ≤ ε", title=f"P3.5 e: T_ε, m = {widths[-1]}")
    curve = data["accuracy_curve"]
    inset = axes[1, 1].inset_axes([0.12, 0.52, 0.33, 0.33])  # upper left: the T_ε lines rise to the right
    inset.plot(curve["step"], curve["accuracy"], "C3")
    inset.set(xlabel="GD steps", ylabel="accuracy", xscale="symlog")
    inset.set_title("f: random labels", fontsize=7)
    inset.tick_params(labelsize=6)
    ax = axes[1, 2]
    deltas = np.asarray(data["deltas"])
    draw_sweep(ax, list(deltas), data["separation_times"], "T_ε (F ≤ 0.1·F0)", -1.0, "C2")
    lam = np.asarray(seed_means(data["separation_lambda_min"]))
    ax.plot(deltas, 1 / (SEPARATION_ETA0 * lam), "C4^:", label="1/(η0·λ_min(K(0))/m), harness")
    ax.plot(deltas, 1 / (SEPARATION_ETA0 * np.asarray(data["separation_lambda_inf"])), "k--", lw=1,
            label="1/(η0·λ_min(K∞)), recursion")
    ax.set(xlabel="input distance δ", ylabel="GD steps", title="P3.5 g, h: two inputs at distance δ")
    for a in axes.flat:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=6)
    fig.tight_layout()
    return fig


# P3.6 --------------------------------------------------------------------------------------------------------------
def measure_p3_6(ctx: Context) -> dict[str, Any]:
    alphas = ctx.pick(full=[10.0, 30.0, 100.0, 300.0, 1000.0], fast=[30.0, 100.0, 300.0])
    steps = ctx.pick(full=[], fast=["trainer.steps=10", "metrics.points=5"])
    distance, gap = [], []
    for alpha in alphas:
        lazy = ctx.run(f"alpha={alpha:g}", "p3_6_lazy", f"model.lazy_alpha={alpha}", *steps)
        linear = ctx.run(f"alpha={alpha:g}_linear", "p3_6_lazy", f"model.lazy_alpha={alpha}", "model.linearize=true",
                         *steps)
        distance.append(alpha * float(finals(lazy)["weight_change"].iloc[0]))
        gap.append(float(np.max(np.abs(outputs(lazy) - outputs(linear)))))
    return {"alphas": alphas, "distance": distance, "gap": gap}


def outputs(run: Run) -> np.ndarray:
    """The trained model's outputs on the task's inputs at every saved row, (rows, n): α·(f(θ_t) − f(θ_0)), or
    α·J(θ_t − θ_0) under model.linearize, evaluated by the harness's own objective."""
    exp = build(run.summary["config"])
    x, _ = exp.task.data()
    saved = [torch.load(p, weights_only=True) for p in sorted((run.dir / "params").glob("*.pt"))]
    exp.objective.anchor({k: v.to(torch.float64) for k, v in saved[0]["params"].items()})
    with torch.no_grad():
        rows = [exp.objective.forward({k: v.to(torch.float64) for k, v in s["params"].items()}, x[None])
                for s in saved]
    return torch.stack(rows)[:, 0].reshape(len(saved), -1).numpy()


def judge_p3_6(data: dict[str, Any]) -> list[Check]:
    alphas, distance = np.asarray(data["alphas"]), np.asarray(data["distance"])
    lazy = alphas >= 30
    reference = distance[-1]
    spread = float(np.max(np.abs(distance[lazy] - reference)) / reference) if lazy.any() else math.nan
    return [
        at_most("p3_6_a_scaled_distance_constant", "α·‖w_T − w0‖ is constant within 1% for α ≥ 30",
                "max over α ≥ 30 of |α‖w_T − w0‖ − (the same at the largest α)| / the latter", spread, 0.01,
                note="tanh two-layer net (softplus is not in the harness), symmetric start, GD to t = 200.",
                numbers={"alpha_distance": dict(zip(map(str, data["alphas"]), data["distance"]))}),
        at_most("p3_6_b_linearization_gap", "sup_t|f − f_lin| decreases at least like 1/α",
                "slope of sup_t max_i |αf − αf_lin| against α (log-log)", slope(data["alphas"], data["gap"]), -1.0,
                note="Passes iff the slope ≤ −1 (theory.md: do not assert a steeper exponent; −2 is seen with the "
                     "symmetric start).", numbers={"gap": dict(zip(map(str, data["alphas"]), data["gap"]))}),
    ]


def draw_p3_6(data: dict[str, Any], checks: list[Check]) -> Figure:
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    alphas = np.asarray(data["alphas"])
    left.plot(alphas, data["distance"], "o-", label="α·‖w_T − w0‖ (harness)")
    left.axhline(data["distance"][-1], color="k", ls="--", lw=1, label="constant (value at the largest α)")
    left.set(xscale="log", xlabel="scale α", ylabel="α·‖w_T − w0‖", title="P3.6 a: lazy distance against α")
    left.legend(fontsize=7)
    gap = np.asarray(data["gap"])
    right.plot(alphas, gap, "o-", label=f"sup_t |f − f_lin| (fit slope {slope(data['alphas'], data['gap']):+.2f})")
    right.plot(alphas, gap[0] * (alphas / alphas[0]) ** -1.0, "k--", lw=1, label="bound's rate α^(-1)")
    right.set(xscale="log", yscale="log", xlabel="scale α", ylabel="sup over t and inputs of |f − f_lin|",
              title="P3.6 b: distance to the linearization")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


PREDICTIONS = [
    Prediction(
        id="p3_1_kernel_at_init", paper=f"{DU}, via {PAPER3}",
        statement="λ_min(H(0)) → λ0 = λ_min(H∞) within 5% for m ≥ 4096; ‖H(0) − H∞‖ ∝ m^(-1/2)",
        setting=DU_SETTING + "init=gaussian, no training (the ntk metric and θ_0 at step 0); "
                "m ∈ {128, 512, 2048, 8192, 32768}, 3 seeds (ensemble.size=3)",
        measure=measure_p3_1, judge=judge_p3_1, draw=draw_p3_1,
        subclaims=("p3_1_a_lambda_min_converges", "p3_1_b_kernel_deviation_slope")),
    Prediction(
        id="p3_2_linear_convergence", paper=f"{DU}, via {PAPER3}",
        statement="log‖u − y‖² is linear in steps, contracting by ≤ 1 − ηλ0/2 per step, late slope 2·log(1 − ηλ_min(H))",
        setting=DU_SETTING + "init=symmetric (u(0) = 0), m = 4096; GD η = 5 until ½‖u − y‖² ≤ 1e-24, logged every "
                "5 steps; 3 seeds",
        measure=measure_p3_2, judge=judge_p3_2, draw=draw_p3_2,
        subclaims=("p3_2_a_late_linear", "p3_2_b_contraction_bound", "p3_2_c_asymptotic_slope")),
    Prediction(
        id="p3_3_movement", paper=f"{DU}, via {PAPER3}",
        statement="Symmetric init: ‖W(∞) − W(0)‖_F → √(yᵀH∞⁻¹y), relative change ∝ m^(-1/2), neurons within R'",
        setting=DU_SETTING + "init=symmetric; GD η = 5 until ½‖u − y‖² ≤ 1e-12; m = 2^9 … 2^15, 3 seeds",
        measure=measure_p3_3, judge=judge_p3_3, draw=draw_p3_3,
        subclaims=("p3_3_a_min_norm_distance", "p3_3_b_relative_change_slope", "p3_3_c_neuron_move_slope",
                   "p3_3_d_neuron_move_bound")),
    Prediction(
        id="p3_4_kernel_stability", paper=f"{DU}, via {PAPER3}",
        statement="Relative kernel change over training ∝ m^(-1/2) (slope in [−0.8, −0.4]); fewer flips as m grows",
        setting=DU_SETTING + "init=symmetric; GD η = 5 until ½‖u − y‖² ≤ 1e-12; ntk at θ_0 and the end; "
                "m ∈ {128, 512, 2048, 8192, 32768}, 3 seeds",
        measure=measure_p3_4, judge=judge_p3_4, draw=draw_p3_4,
        subclaims=("p3_4_a_kernel_change_slope", "p3_4_b_flip_fraction_slope")),
    Prediction(
        id="p3_5_allen_zhu_scalings", paper=f"{PAPER3}, Thm 1 (GD, regression)",
        statement="Only the m×m layers trained, η = η0/m: width-independent iterations, ‖ΔW‖_F ∝ m^(-1/2), "
                  "random labels fitted, T_ε ∝ 1/δ",
        setting="mlp depth 4 (W1 fixed, W2 and W3 m×m trained, W4 fixed readout), ReLU, standard parameterization, "
                "init_scale √2; task=teacher d = 8, r = 3, n = 10, normalize_inputs; mse, reduction=sum; GD "
                f"η = {ETA0}/m until F ≤ 1e-6, logged every step; m = 32 … 2048, 3 seeds. Random labels: classification "
                "n = 32, d = 10, 2 classes, cross_entropy (sum), m = 512, η = 4/m. Separation: task=dataset with two "
                f"unit inputs at distance δ ∈ [1e-2, 1e-1] and labels ±1, Gaussian init, m = 1024, η = {SEPARATION_ETA0}/m",
        measure=measure_p3_5, judge=judge_p3_5, draw=draw_p3_5,
        subclaims=("p3_5_a_iterations_bounded", "p3_5_b_frobenius_change_slope", "p3_5_c_relative_frobenius_slope",
                   "p3_5_d_relative_spectral_slope", "p3_5_e_log_epsilon_time", "p3_5_f_random_labels",
                   "p3_5_g_lambda_min_linear_in_delta", "p3_5_h_time_inverse_in_delta")),
    Prediction(
        id="p3_6_lazy_training", paper="Chizat, Oyallon, Bach (NeurIPS 2019)",
        statement="α·‖w_T − w0‖ constant within 1% for α ≥ 30; sup_t|f − f_lin| falls at least like 1/α",
        setting="two_layer tanh, trainable output, parameterization=ntk, init=symmetric, m = 200; task=teacher d = 5, "
                "r = 3, n = 20, normalize_inputs; mse, reduction=sum; model.lazy_alpha α ∈ {10, 30, 100, 300, 1000} "
                "with and without model.linearize; GD η = 0.5 for 400 steps (t = 200), params saved at 40 rows; seed 0",
        measure=measure_p3_6, judge=judge_p3_6, draw=draw_p3_6,
        subclaims=("p3_6_a_scaled_distance_constant", "p3_6_b_linearization_gap")),
]
