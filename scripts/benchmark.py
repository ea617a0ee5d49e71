#!/usr/bin/env python
"""One benchmark table: the harness against hand-written PyTorch loops, every row a ratio taken side by side.

Each row times a harness arm and a hand-written reference in this one process (start-up: as subprocesses),
interleaved R times with the order rotating round by round, every arm of a row with the same torch thread count
(one for groups 1, 4 and 5; torch's default, a thread per core, for the batched work of 2 and 3; --threads T sets
every group's), recorded per row. The figure is the median of the per-round ratios (machines are noisy: only
ratios taken side by side mean anything). On CUDA every timed region starts and ends with torch.cuda.synchronize.
The harness runs end to end through ``dynamics_bench.run`` into a temporary directory; its rate is
summary["steps_per_second"] (the training loop, metric logging included). Groups:

  1 problem   the benchmark problem (two-layer ReLU teacher-student, d=50, r=5, m=20, n=2000, float32,
              full-batch GD) with the default metrics and logger, eager and with trainer.compile=true, against a
              hand-written eager autograd loop on the same data and start. Reference row: a hand-written
              torch.compile'd torch.func step (CUDA: mode="reduce-overhead", a CUDA graph per step).
  2 ensemble  ensemble.size=E (default metrics and logger) in member-steps/s against E single hand-written loops
              run one after another (past `singles` of them, the first `singles`: every member costs the same).
              Reference row: a hand-written batched ensemble (concatenated weights, one batched matmul a layer).
  3 wide      a wide two-layer ReLU net (NTK parameterization, so one lr is stable at every width; as in the
              hand loop, the only metric is the loss, at the two ends) in TFLOP/s, 6·n·m·d per GD step, against
              the hand-written loop.
  4 flow      dopri5 gradient flow of a deep linear net (trainer=gradient_flow trainer.method=dopri5, metrics at
              the two ends) against torchdiffeq.odeint(method="dopri5") of −∇L from a hand-written loss, same
              rtol/atol: steps/s, with each final state's error against a tight scipy DOP853 solution.
  5 metrics   what the default metric grid costs: the default run (100 rows) against metrics.points=2 (the two
              ends), as a share of the default run's wall time; the same for every metric (heavy ones on every
              row); each metric's own time per row (2R rounds: a default run is short).
  6 startup   `dynamics-bench trainer.steps=1` against `python -c "import torch"`, each a fresh process.
  7 sweep     a two-job sweep through the joblib launcher (hydra/launcher=joblib, n_jobs=2: the jobs side by side,
              threads=auto each within its share of the cores) against the same two jobs one after the other
              (Hydra's basic launcher, one process), each a `dynamics-bench -m` command, wall seconds: the
              benchmark problem (one thread a job either way) and a larger problem (step work above
              runtime.SMALL_WORK: alone a job takes every core). CPU only.
  8 aggregate `dynamics-bench-aggregate` reading a generated sweep of 1,000 runs (copies of one real run, their
              overrides and multirun.yaml rewritten: seed=range(0,1000)), its table, sweep.csv and report, in runs/s,
              against a hand-written reader of the same files (json.load of each summary.json, yaml of each
              .hydra/overrides.yaml, one pandas row per member).

A missed goal stays in the table with its ratio, and the Markdown gives a profile of the harness arm (cProfile's
top entries by own time; for start-up, import time per package). Rows are kept in <out>/benchmarks.json by
device and row: a run replaces the rows it measures and keeps every other (a CUDA run keeps the CPU rows), and
<out>/benchmarks.md is rendered from all of them. --quick rows are marked as such.

    python scripts/benchmark.py [--device cpu|cuda] [--quick] [--only GROUPS] [--repeats R] [--threads T]
                                [--out DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import io
import json
import operator
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import yaml
from hydra.errors import ConfigCompositionException
from torch import Tensor

from dynamics_bench import ConfigError, compose, run
from dynamics_bench.experiment import build, init_params
from dynamics_bench.sweep import main as aggregate_main
from machine import load_average, machine, short_name

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["logger.progress=false"]
ENDS_ONLY = ["metrics.points=2", "logger.tensorboard=false"]  # metrics at t = 0 and the end, no TensorBoard
TEACHER = ["model=two_layer", "model.activation=relu", "task=teacher", "task.input_dim=50", "task.teacher_width=5",
           "task.n=2000", "dtype=float32", "trainer=gd"]
PROBLEM = [*TEACHER, "model.width=20"]
WIDE = [*TEACHER, "model.parameterization=ntk", "metrics.names=[loss]", *ENDS_ONLY]  # the loss, like the hand loop
WIDE_N, WIDE_D, WIDE_MIN_STEPS = 2000, 50, 10
FLOW = ["model=deep_linear", "model.depth=3", "model.width=20", "model.init=gaussian", "task=matrix_cost",
        "task.target=gaussian", "task.input_dim=5", "task.output_dim=5", "loss=mse", "dtype=float64",
        "trainer=gradient_flow", "trainer.method=dopri5", "trainer.max_steps=1000000", "metrics.names=[loss]",
        *ENDS_ONLY]
FLOW_TOL = {"rtol": 1e-8, "atol": 1e-10}
FLOW_REFERENCE_TOL = {"rtol": 1e-13, "atol": 1e-15}
EVERY_METRIC = "metrics.names=[auto,ntk,hessian,layer_change_spec]"
PROFILE_LINES = 8
WARM_STEPS = 20  # warm-up runs, not recorded: first-call costs (imports, kernels, compilation) hit no arm

Goal = tuple[str, float]  # (">=" or "<=", value) on the row's figure
OPERATORS = {">=": operator.ge, "<=": operator.le}
GOALS: dict[str, dict[str, Goal]] = {  # the goals per device kind, by goal name
    "cpu": {"eager": (">=", 0.95), "compiled": (">=", 1.2), "ensemble_8": (">=", 2.0), "flow": (">=", 0.9),
            "startup": ("<=", 1.5), "sweep": ("<=", 1.0)},
    "cuda": {"eager": (">=", 0.95), "compiled": (">=", 10.0), "ensemble_1024": (">=", 500.0), "wide": (">=", 0.9),
             "flow": (">=", 0.9), "startup": ("<=", 1.5)},
}
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Plan:
    """How big each group is on a device kind, full or --quick."""

    repeats: int
    problem_steps: int
    ensemble_sizes: tuple[int, ...]
    ensemble_steps: int
    singles: int  # hand-written single loops timed per round (the first min(E, singles) members)
    widths: tuple[int, ...]
    wide_flops: float  # per arm and round: steps = max(WIDE_MIN_STEPS, wide_flops / (6·n·m·d))
    flow_t_max: float


PLANS = {
    ("cpu", False): Plan(5, 6000, (1, 8, 64), 1000, 16, (2**10, 2**12, 2**14), 1e11, 20.0),
    ("cpu", True): Plan(3, 1500, (1, 8, 64), 300, 8, (2**10, 2**12), 2e10, 10.0),
    ("cuda", False): Plan(5, 6000, (1, 8, 64, 1024), 1000, 16, (2**14, 2**16, 2**18), 3e13, 20.0),
    ("cuda", True): Plan(2, 1500, (1, 8, 64, 1024), 300, 4, (2**14, 2**16, 2**18), 1e13, 10.0),
}


@dataclass
class Bench:
    """What every group is run with."""

    device: str
    plan: Plan
    repeats: int
    quick: bool
    threads_key: bool  # whether the harness has a top-level `threads` (it then sets the count for its run)
    threads: int = 1  # torch threads of every arm in the group being run

    @property
    def overrides(self) -> list[str]:
        """For every harness config: the device, and the thread count where the harness has the key."""
        return [f"device={self.device}"] + ([f"threads={self.threads}"] if self.threads_key else [])

    @property
    def kind(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    def compose(self, *overrides: str):
        return compose(*QUIET, *self.overrides, *overrides)

    def goal(self, name: str) -> Goal | None:
        return GOALS[self.kind].get(name)


@dataclass
class Row:
    """One line of the table. figure: the median over rounds of `kind` (a ratio harness ÷ reference, or the
    share of the harness arm's time that the reference arm does not spend); harness, reference: median values."""

    id: str
    what: str
    unit: str
    harness: float | None = None
    reference: float | None = None
    reference_name: str = ""
    figure: float | None = None
    figure_range: list[float] | None = None
    kind: str = "ratio"
    goal: Goal | None = None
    threads: int | str | None = None  # None: the group's (set when the group is done)
    status: str = "measured"  # or "not available"
    notes: str = ""
    profile: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def missed(self) -> bool:
        return self.goal is not None and self.figure is not None and not OPERATORS[self.goal[0]](self.figure,
                                                                                              self.goal[1])


Arm = Callable[[], dict[str, Any]]  # one timed run -> {"value": the row's unit, ...}
FIGURES: dict[str, Callable[[float, float], float]] = {
    "ratio": operator.truediv,  # harness ÷ reference
    "share": lambda harness, reference: 1.0 - reference / harness,  # of the harness arm's time, not in the reference
}


# --- timing -----------------------------------------------------------------------------------------------------------
def clock(device: str) -> float:
    """perf_counter after the device's queued work is done."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()


def interleave(arms: dict[str, Arm], repeats: int) -> list[dict[str, Any]]:
    """R rounds of every arm, the order rotated by one each round: no arm always runs first or after another."""
    names, rounds = list(arms), []
    for i in range(repeats):
        order = names[i % len(names):] + names[:i % len(names)]
        rounds.append({"order": order, **{name: arms[name]() for name in order}})
        print(f"    round {i}: " + ", ".join(f"{n} {rounds[-1][n]['value']:.4g}" for n in order), flush=True)
    return rounds


def median(rounds: list[dict], arm: str, key: str = "value") -> float:
    return statistics.median(r[arm][key] for r in rounds)


def compare(row: Row, rounds: list[dict], arm: str, reference: str) -> Row:
    """Fill the row's medians and figure from the rounds of `arm` against `reference`."""
    figures = [FIGURES[row.kind](r[arm]["value"], r[reference]["value"]) for r in rounds]
    row.harness, row.reference = median(rounds, arm), median(rounds, reference)
    row.figure, row.figure_range = statistics.median(figures), [min(figures), max(figures)]
    row.extra["rounds"] = [{"order": r["order"], arm: r[arm]["value"], reference: r[reference]["value"]}
                           for r in rounds]
    return row


def unavailable(row: Row, reason: str) -> Row:
    row.status, row.notes = "not available", reason
    return row


# --- profiles of missed goals -----------------------------------------------------------------------------------------
def _where(file: str, line: int, name: str) -> str:
    if file == "~":
        return name  # a builtin
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{file}:{line}({name})"


def profile_top(arm: Arm) -> list[str]:
    """cProfile's top PROFILE_LINES entries by own time of one run of the arm."""
    prof = cProfile.Profile()
    prof.enable()
    arm()
    prof.disable()
    stats = pstats.Stats(prof)
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:PROFILE_LINES]
    lines = [f"{'own s':>8} {'share':>6} {'cum s':>8} {'calls':>8}  function ({stats.total_tt:.3f} s profiled)"]
    for (file, line, name), (_, calls, own, cumulative, _) in top:
        lines.append(f"{own:8.3f} {own / stats.total_tt:6.1%} {cumulative:8.3f} {calls:8d}  {_where(file, line, name)}")
    return lines


def attach_profile(row: Row, arm: Arm) -> Row:
    if row.missed:
        print(f"    {row.id} missed its goal: profiling the harness arm", flush=True)
        row.profile = profile_top(arm)
    return row


# --- the harness ------------------------------------------------------------------------------------------------------
def run_harness(cfg, b: Bench, keep_params: bool = False) -> dict[str, Any]:
    """One end-to-end run into a temporary directory: the summary's figures (and the final parameters)."""
    with tempfile.TemporaryDirectory(prefix="dynbench_bench_") as out:
        start = clock(b.device)
        summary = run(cfg, out)
        end_to_end = clock(b.device) - start
        lines = len((Path(out) / "metrics.csv").read_text().splitlines()) - 1  # a line per row and member
        final = torch.load(Path(out) / "final_params.pt") if keep_params else None
    torch.set_num_threads(b.threads)  # every arm the same count, whatever a run may set
    return {"steps_per_second": summary["steps_per_second"], "wall_seconds": summary["wall_seconds"],
            "end_to_end_seconds": end_to_end, "iterations": summary["iterations"], "final_loss": summary["final_loss"],
            "status": summary["status"], "compile_seconds": summary.get("compile_seconds"),
            "metric_seconds": summary["metric_seconds"], "csv_lines": lines, "final_params": final}


def harness_arm(cfg, b: Bench, value: Callable[[dict], float] = lambda r: r["steps_per_second"],
                keep_params: bool = False) -> Arm:
    """A run of the harness as an arm; `value`: the row's unit from the run's figures."""
    def arm() -> dict[str, Any]:
        r = run_harness(cfg, b, keep_params)
        return {**r, "value": value(r)}
    return arm


def try_config(b: Bench, *overrides: str):
    """The composed and validated config, or the ConfigError/Hydra refusal's message (a key not there yet)."""
    try:
        cfg = b.compose(*overrides)
        build(cfg)
        return cfg, None
    except (ConfigError, ConfigCompositionException) as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


# --- hand-written two-layer loops -------------------------------------------------------------------------------------
@dataclass
class TwoLayerStart:
    """The harness's data, members' starts (w (E, m, d), a (E, 1, m)) and step, as plain tensors."""

    x: Tensor  # (n, d)
    y: Tensor  # (n, 1)
    w: Tensor
    a: Tensor
    lr: float
    scale: float  # c_w·c_a of the parameterization (1 for the standard one)


def two_layer_start(cfg) -> TwoLayerStart:
    exp = build(cfg)
    model = exp.objective.model
    assert model.output_layer == "trainable" and not model.bias
    x, y = exp.task.data()
    p0 = init_params(exp)
    start = TwoLayerStart(x.contiguous(), y.contiguous(), p0["w"], p0["a"], exp.schedule.h,
                          model.scale_w * model.scale_a)
    harness_loss = exp.objective.loss(p0, x.expand(exp.ensemble_size, *x.shape), y.expand(exp.ensemble_size, *y.shape))
    hand_loss = two_layer_loss(start.x, start.y, start.w, start.a, start.scale)
    assert torch.allclose(hand_loss, harness_loss, rtol=1e-4), (hand_loss, harness_loss)  # the same objective (float32)
    return start


def two_layer_loss(x: Tensor, y: Tensor, w: Tensor, a: Tensor, scale: float) -> Tensor:
    """½·mean over samples of (c·relu(x wᵀ) aᵀ − y)², c = c_w·c_a (ReLU is positively homogeneous): one member's
    w (m, d), a (1, m) -> a scalar; batched w (E, m, d), a (E, 1, m) -> (E,)."""
    out = torch.relu(x @ w.mT) @ a.mT  # (n, 1) or (E, n, 1)
    if scale != 1.0:  # the NTK parameterization's constant; the standard one has none
        out = out * scale
    return 0.5 * (out - y).pow(2).mean((-2, -1))


def hand_gd(s: TwoLayerStart, w: Tensor, a: Tensor, steps: int, device: str) -> tuple[float, Tensor]:
    """GD from (w, a) by autograd and in-place updates, then L(θ_N) (the harness also evaluates θ_N): (seconds,
    final loss)."""
    w, a = w.clone().requires_grad_(True), a.clone().requires_grad_(True)
    start = clock(device)
    for _ in range(steps):
        loss = two_layer_loss(s.x, s.y, w, a, s.scale).sum()  # the sum: each member's gradient is its own
        gw, ga = torch.autograd.grad(loss, [w, a])
        with torch.no_grad():
            w.sub_(gw, alpha=s.lr)
            a.sub_(ga, alpha=s.lr)
    with torch.no_grad():
        final = two_layer_loss(s.x, s.y, w, a, s.scale)
    return clock(device) - start, final.detach()


def hand_singles(s: TwoLayerStart, members: int, steps: int, device: str) -> dict[str, Any]:
    """The first `members` members, each its own loop, one after another: member-steps/s."""
    seconds, losses = 0.0, []
    for i in range(members):
        t, final = hand_gd(s, s.w[i], s.a[i], steps, device)
        seconds += t
        losses.append(final.item())
    return {"value": members * steps / seconds, "final_loss": statistics.fmean(losses)}


def hand_batched(s: TwoLayerStart, steps: int, device: str) -> dict[str, Any]:
    """Every member at once, weights concatenated along a leading axis: member-steps/s."""
    seconds, final = hand_gd(s, s.w, s.a, steps, device)
    return {"value": s.w.shape[0] * steps / seconds, "final_loss": final.mean().item()}


def compiled_step(s: TwoLayerStart, device: str) -> Callable:
    """torch.compile of one functional GD step (torch.func.grad); on CUDA as a CUDA graph."""
    from torch.func import grad

    gradient = grad(lambda w, a: two_layer_loss(s.x, s.y, w, a, s.scale), argnums=(0, 1))

    def step(w: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        gw, ga = gradient(w, a)
        return w - s.lr * gw, a - s.lr * ga
    return torch.compile(step, mode="reduce-overhead" if device.startswith("cuda") else None)


def hand_compiled(s: TwoLayerStart, step: Callable, steps: int, device: str) -> dict[str, Any]:
    """The compiled step from member 0's start: steps/s (compilation happened at warm-up)."""
    mark = torch.compiler.cudagraph_mark_step_begin if device.startswith("cuda") else (lambda: None)
    w, a = s.w[0].clone(), s.a[0].clone()
    start = clock(device)
    for _ in range(steps):
        mark()  # each call a new CUDA-graph step: the last step's outputs are this one's inputs
        w, a = step(w, a)
    final = two_layer_loss(s.x, s.y, w, a, s.scale).item()
    return {"value": steps / (clock(device) - start), "final_loss": final}


def final_losses(rounds: list[dict], *arms: str) -> str:
    last = rounds[-1]
    return "final loss " + ", ".join(f"{arm} {last[arm]['final_loss']:.6g}" for arm in arms)


# --- 1: the benchmark problem -----------------------------------------------------------------------------------------
def compile_hand_step(s: TwoLayerStart, device: str) -> tuple[Callable | None, float, str | None]:
    """The compiled step, compiled now (outside every timed region): (step, seconds, None), or (None, 0, why)."""
    try:
        step = compiled_step(s, device)
        start = time.perf_counter()
        hand_compiled(s, step, 2, device)
        return step, time.perf_counter() - start, None
    except Exception as exc:  # no C++ compiler, an unsupported op: the reference row says so
        return None, 0.0, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def problem_arms(b: Bench, s: TwoLayerStart, step: Callable | None, steps: int) -> tuple[dict[str, Arm], str | None]:
    """The arms at `steps` steps, and why the compiled harness arm is missing (its key may not be there yet)."""
    arms: dict[str, Arm] = {"hand": lambda: hand_singles(s, 1, steps, b.device),
                            "harness": harness_arm(b.compose(*PROBLEM, f"trainer.steps={steps}"), b)}
    compiled, reason = try_config(b, *PROBLEM, f"trainer.steps={steps}", "trainer.compile=true")
    if compiled is not None:
        arms["harness_compiled"] = harness_arm(compiled, b)
    if step is not None:
        arms["hand_compiled"] = lambda: hand_compiled(s, step, steps, b.device)
    return arms, reason


def group_problem(b: Bench) -> list[Row]:
    steps = b.plan.problem_steps
    s = two_layer_start(b.compose(*PROBLEM))  # data and starts do not depend on the number of steps
    step, compile_seconds, step_reason = compile_hand_step(s, b.device)
    for arm in problem_arms(b, s, step, WARM_STEPS)[0].values():
        arm()
    arms, compiled_reason = problem_arms(b, s, step, steps)
    rounds = interleave(arms, b.repeats)
    hand = "hand-written eager autograd loop"
    eager = compare(Row("1.eager", "benchmark problem, default metrics and logger, eager", "steps/s",
                        reference_name=hand, goal=b.goal("eager")), rounds, "harness", "hand")
    eager.notes = (f"{steps} steps, E=1; {final_losses(rounds, 'hand', 'harness')}; harness end to end "
                   f"{median(rounds, 'harness', 'end_to_end_seconds'):.2f} s")
    rows = [attach_profile(eager, arms["harness"])]
    compiled = Row("1.compiled", "benchmark problem, default metrics and logger, trainer.compile=true", "steps/s",
                   reference_name=hand, goal=b.goal("compiled"))
    if compiled_reason is not None:
        rows.append(unavailable(compiled, compiled_reason))
    else:
        compare(compiled, rounds, "harness_compiled", "hand")
        compile_s = rounds[-1]["harness_compiled"]["compile_seconds"]
        compiled.notes = (f"{steps} steps; compile_seconds {fmt(compile_s)} (not in steps/s); "
                          f"{final_losses(rounds, 'hand', 'harness_compiled')}")
        rows.append(attach_profile(compiled, arms["harness_compiled"]))
    reference = Row("1.hand_compiled", "reference: hand-written torch.compile'd torch.func step", "steps/s",
                    reference_name=hand)
    if step is None:
        rows.append(unavailable(reference, step_reason))
    else:
        compare(reference, rounds, "hand_compiled", "hand")
        reference.notes = (f"compiled once in {compile_seconds:.1f} s (not timed); "
                           f"{final_losses(rounds, 'hand', 'hand_compiled')}")
        rows.append(reference)
    return rows


# --- 2: ensembles -----------------------------------------------------------------------------------------------------
def ensemble_arms(b: Bench, size: int, steps: int) -> dict[str, Arm]:
    cfg = b.compose(*PROBLEM, f"trainer.steps={steps}", f"ensemble.size={size}")
    s = two_layer_start(cfg)
    singles = min(size, b.plan.singles)
    return {"singles": lambda: hand_singles(s, singles, steps, b.device),
            "harness": harness_arm(cfg, b, lambda r: size * r["steps_per_second"]),
            "batched": lambda: hand_batched(s, steps, b.device)}


def group_ensemble(b: Bench) -> list[Row]:
    steps, rows = b.plan.ensemble_steps, []
    for size in b.plan.ensemble_sizes:
        print(f"  E={size}", flush=True)
        for arm in ensemble_arms(b, size, WARM_STEPS).values():
            arm()
        arms = ensemble_arms(b, size, steps)
        rounds = interleave(arms, b.repeats)
        singles = min(size, b.plan.singles)
        hand = (f"{size} single hand-written loop" + ("s, one after another" if size > 1 else "")
                + ("" if singles == size else f" (the first {singles} timed)"))
        row = compare(Row(f"2.E{size}", f"ensemble E={size}, default metrics and logger", "member-steps/s",
                          reference_name=hand, goal=b.goal(f"ensemble_{size}")), rounds, "harness", "singles")
        row.notes = (f"{steps} steps; {final_losses(rounds, 'singles', 'harness', 'batched')} (the mean over the "
                     "members each arm ran)")
        rows.append(attach_profile(row, arms["harness"]))
        batched = compare(Row(f"2.E{size}.batched", f"reference: hand-written batched ensemble E={size}",
                              "member-steps/s", reference_name=hand), rounds, "batched", "singles")
        batched.notes = f"{steps} steps; weights (E, m, d) and (E, 1, m), x broadcast: one batched matmul a layer"
        rows.append(batched)
    return rows


# --- 3: wide nets -----------------------------------------------------------------------------------------------------
def wide_arms(b: Bench, width: int, steps: int) -> dict[str, Arm]:
    cfg = b.compose(*WIDE, f"model.width={width}", f"trainer.steps={steps}")
    s = two_layer_start(cfg)
    flops = 6 * WIDE_N * width * WIDE_D

    def hand() -> dict[str, Any]:
        seconds, final = hand_gd(s, s.w[0], s.a[0], steps, b.device)
        return {"value": flops * steps / seconds / 1e12, "final_loss": final.item()}
    return {"hand": hand, "harness": harness_arm(cfg, b, lambda r: flops * r["steps_per_second"] / 1e12)}


def group_wide(b: Bench) -> list[Row]:
    rows = []
    for width in b.plan.widths:
        steps = max(WIDE_MIN_STEPS, round(b.plan.wide_flops / (6 * WIDE_N * width * WIDE_D)))
        print(f"  m={width}, {steps} steps", flush=True)
        for arm in wide_arms(b, width, 2).values():
            arm()
        arms = wide_arms(b, width, steps)
        rounds = interleave(arms, b.repeats)
        row = compare(Row(f"3.m{width}", f"wide two-layer ReLU net, m={width} (n={WIDE_N}, d={WIDE_D}, NTK "
                          "parameterization, the loss at the two ends)", "TFLOP/s", reference_name="hand-written loop",
                          goal=b.goal("wide")), rounds, "harness", "hand")
        row.notes = f"{steps} steps, 6·n·m·d per step; {final_losses(rounds, 'hand', 'harness')}"
        rows.append(attach_profile(row, arms["harness"]))
    return rows


# --- 4: adaptive flow against torchdiffeq -----------------------------------------------------------------------------
@dataclass
class FlowProblem:
    x: Tensor
    y: Tensor
    start: list[Tensor]  # W_1, ..., W_N of member 0
    names: list[str]
    t_max: float


def deep_linear_loss(x: Tensor, y: Tensor, mats: list[Tensor]) -> Tensor:
    """½ Σ (x W_1ᵀ ⋯ W_Nᵀ − y)², summed over samples and outputs (matrix_cost)."""
    h = x
    for w in mats:
        h = h @ w.mT
    return 0.5 * (h - y).pow(2).sum()


def flow_field(x: Tensor, y: Tensor) -> Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]:
    """θ' = −∇L(θ) by autograd of the hand-written loss, as torchdiffeq calls it: f(t, (W_1, ..., W_N))."""
    def field(t: Tensor, mats: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            leaves = [w.detach().requires_grad_(True) for w in mats]
            grads = torch.autograd.grad(deep_linear_loss(x, y, leaves), leaves)
        return tuple(-g for g in grads)
    return field


def flow_problem(cfg) -> FlowProblem:
    exp = build(cfg)
    names = exp.objective.model.names
    p0 = init_params(exp)
    x, y = exp.task.data()
    start = [p0[k][0] for k in names]
    harness_loss = exp.objective.loss(p0, x[None], y[None])[0]
    assert torch.allclose(deep_linear_loss(x, y, start), harness_loss, rtol=1e-12)  # the same objective
    return FlowProblem(x, y, start, names, exp.schedule.t_max)


def flow_reference(p: FlowProblem) -> Tensor:
    """θ(t_max) by scipy's DOP853 at FLOW_REFERENCE_TOL, float64 on the CPU, flattened."""
    from scipy.integrate import solve_ivp

    cpu = [w.detach().cpu() for w in p.start]
    field, sizes = flow_field(p.x.cpu(), p.y.cpu()), [w.numel() for w in cpu]

    def rhs(t: float, v) -> Any:
        mats = tuple(part.reshape(w.shape) for part, w in zip(torch.from_numpy(v).split(sizes), cpu))
        return torch.cat([g.reshape(-1) for g in field(torch.tensor(t), mats)]).numpy()
    flat = torch.cat([w.reshape(-1) for w in cpu]).numpy()
    sol = solve_ivp(rhs, (0.0, p.t_max), flat, method="DOP853", **FLOW_REFERENCE_TOL)
    return torch.from_numpy(sol.y[:, -1].copy())


def relative_error(mats: list[Tensor], reference: Tensor) -> float:
    flat = torch.cat([w.detach().cpu().to(reference.dtype).reshape(-1) for w in mats])
    return float((flat - reference).norm() / reference.norm())


def torchdiffeq_arm(p: FlowProblem, reference: Tensor, device: str) -> Arm:
    from torchdiffeq import odeint

    field = flow_field(p.x, p.y)
    t = torch.tensor([0.0, p.t_max], dtype=p.x.dtype, device=p.x.device)

    def arm() -> dict[str, Any]:
        calls = 0

        def counted(t: Tensor, mats: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            nonlocal calls
            calls += 1
            return field(t, mats)
        start = clock(device)
        solution = odeint(counted, tuple(p.start), t, method="dopri5", **FLOW_TOL)
        seconds = clock(device) - start
        steps = (calls - 2) / 6  # f(θ_0) and one trial evaluation pick the first step; then 6 per step (FSAL)
        return {"value": steps / seconds, "seconds": seconds, "steps": steps,
                "error": relative_error([s[-1] for s in solution], reference)}
    return arm


def group_flow(b: Bench) -> list[Row]:
    tol = [f"trainer.{k}={v}" for k, v in FLOW_TOL.items()]
    cfg = b.compose(*FLOW, *tol, f"trainer.t_max={b.plan.flow_t_max}")
    p = flow_problem(cfg)
    reference = flow_reference(p)

    def harness() -> dict[str, Any]:
        r = run_harness(cfg, b, keep_params=True)
        final = r.pop("final_params")
        error = relative_error([final[k][0] for k in p.names], reference)
        return {**r, "value": r["steps_per_second"], "seconds": r["wall_seconds"], "steps": r["iterations"],
                "error": error}
    arms = {"torchdiffeq": torchdiffeq_arm(p, reference, b.device), "harness": harness}
    for arm in arms.values():
        arm()
    rounds = interleave(arms, b.repeats)
    row = compare(Row("4.dopri5", f"dopri5 flow, deep linear N=3 k=20 on a 5x5 matrix cost, t_max={p.t_max:g}, "
                      f"rtol={FLOW_TOL['rtol']:g} atol={FLOW_TOL['atol']:g}", "steps/s",
                      reference_name="torchdiffeq.odeint dopri5, −∇L by autograd of a hand-written loss",
                      goal=b.goal("flow")), rounds, "harness", "torchdiffeq")
    h, d = rounds[-1]["harness"], rounds[-1]["torchdiffeq"]
    time_ratio = statistics.median(r["torchdiffeq"]["seconds"] / r["harness"]["seconds"] for r in rounds)
    row.notes = (f"steps (accepted + rejected): harness {h['steps']}, torchdiffeq {d['steps']:g}; final-state "
                 f"relative error against DOP853 at rtol {FLOW_REFERENCE_TOL['rtol']:g}: harness {h['error']:.2e}, "
                 f"torchdiffeq {d['error']:.2e}; time to t_max torchdiffeq ÷ harness {time_ratio:.3f}")
    return [attach_profile(row, harness)]


# --- 5: the metric grid's cost ----------------------------------------------------------------------------------------
def group_metrics(b: Bench) -> list[Row]:
    configs = {"default": b.compose(), "ends": b.compose("metrics.points=2"), "every": b.compose(EVERY_METRIC)}

    arms = {name: harness_arm(cfg, b, lambda r: r["wall_seconds"]) for name, cfg in configs.items()}
    for warm in arms.values():
        warm()
    rounds = interleave(arms, 2 * b.repeats)
    rows = []
    for name, what in (("default", "the default metric grid (auto, 100 rows) of the default run"),
                       ("every", f"every metric ({EVERY_METRIC}), heavy ones on every row, default run")):
        row = compare(Row(f"5.{'grid' if name == 'default' else 'every_metric'}", what, "wall s", kind="share",
                          reference_name="the same run, metrics.points=2 (t = 0 and the end)"), rounds, name, "ends")
        rows_per_run = rounds[-1][name]["csv_lines"]  # one member
        row.extra["metric_seconds"] = {k: statistics.median(r[name]["metric_seconds"][k] for r in rounds)
                                       for k in rounds[-1][name]["metric_seconds"]}
        row.extra["rows_per_run"] = rows_per_run
        row.notes = (f"{rows_per_run} rows a run; Σ metric_seconds {sum(row.extra['metric_seconds'].values()):.4f} s "
                     "(per metric below)")
        rows.append(row)
    return rows


# --- 6: start-up ------------------------------------------------------------------------------------------------------
def cli_command() -> list[str]:
    script = shutil.which("dynamics-bench")
    return [script] if script else [sys.executable, "-m", "dynamics_bench"]


def process_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def cli_arm() -> Arm:
    def arm() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="dynbench_startup_") as out:
            return {"value": process_seconds([*cli_command(), "trainer.steps=1", f"hydra.run.dir={out}"])}
    return arm


def import_profile() -> list[str]:
    """Where one CLI process spends its time: import time (python -X importtime's own times) summed per top-level
    package, the largest first, and the rest of the process."""
    with tempfile.TemporaryDirectory(prefix="dynbench_startup_") as out:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dynamics_bench", "trainer.steps=1",
                               f"hydra.run.dir={out}"], check=True, capture_output=True, text=True)
        total = time.perf_counter() - start
    packages: dict[str, float] = {}
    for line in done.stderr.splitlines():  # "import time: <own µs> | <cumulative µs> | <indent><module>"
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            package = parts[2].strip().split(".")[0]
            packages[package] = packages.get(package, 0.0) + int(parts[0]) / 1e6
    imports = sum(packages.values())
    top = sorted(packages.items(), key=lambda kv: kv[1], reverse=True)[:PROFILE_LINES]
    lines = [f"{'own s':>8} {'share':>6}  imports of (process {total:.2f} s, of which imports {imports:.2f} s)"]
    lines += [f"{s:8.3f} {s / total:6.1%}  {name}" for name, s in top]
    return lines + [f"{total - imports:8.3f} {(total - imports) / total:6.1%}  (the rest: interpreter, Hydra, the run)"]


def group_startup(b: Bench) -> list[Row]:
    arms = {"cli": cli_arm(), "torch": lambda: {"value": process_seconds([sys.executable, "-c", "import torch"])}}
    for arm in arms.values():
        arm()
    rounds = interleave(arms, b.repeats)
    row = compare(Row("6.startup", "start-up: `dynamics-bench trainer.steps=1` (a process)", "wall s",
                      reference_name='`python -c "import torch"` (a process)', goal=b.goal("startup"),
                      threads="the CLI's"), rounds, "cli", "torch")
    row.notes = f"command: {Path(cli_command()[0]).name} trainer.steps=1, as a new user runs it"
    if row.missed:
        row.profile = import_profile()
    return [row]


# --- 7: a two-job sweep through the joblib launcher ---------------------------------------------------------------
SWEEP_JOBS = ["seed=0,1"]  # two jobs
LARGE = [*TEACHER, "model.width=200"]  # (50·200 + 200) parameters × 2000 samples ≈ 2e7 ≥ SMALL_WORK: auto takes every core
LAUNCHERS = {"joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "sequential": []}


def sweep_arm(launcher: list[str], problem: list[str]) -> Arm:
    """One `dynamics-bench -m` command of the two jobs into a temporary sweep directory, timed as a process."""
    def arm() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="dynbench_sweep_") as out:
            seconds = process_seconds([*cli_command(), "-m", *QUIET, *launcher, *problem, *SWEEP_JOBS,
                                       f"hydra.sweep.dir={out}"])
            threads = sorted(json.loads(p.read_text())["threads"] for p in Path(out).glob("*/summary.json"))
        return {"value": seconds, "threads": threads}
    return arm


def group_sweep(b: Bench) -> list[Row]:
    rows = []
    for name, problem, what in (
            ("small", [*PROBLEM, f"trainer.steps={b.plan.problem_steps}"], "the benchmark problem"),
            ("large", [*LARGE, f"trainer.steps={b.plan.problem_steps // 10}"],
             "a larger problem (m=200: step work above SMALL_WORK)")):
        row = Row(f"7.joblib_{name}", f"two-job sweep (seed=0,1), joblib launcher n_jobs=2: {what}", "wall s",
                  reference_name="the same two jobs one after the other (basic launcher)", goal=b.goal("sweep"),
                  threads="auto")
        if b.kind != "cpu" or importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
            rows.append(unavailable(row, "a CPU measurement: the jobs share the machine's cores" if b.kind != "cpu"
                                    else "needs the launchers extra: pip install 'dynamics_bench[launchers]'"))
            continue
        print(f"  {name}", flush=True)
        arms = {launcher: sweep_arm(args, problem) for launcher, args in LAUNCHERS.items()}
        rounds = interleave(arms, b.repeats)
        compare(row, rounds, "joblib", "sequential")
        steps = next(o for o in problem if o.startswith("trainer.steps="))
        row.notes = (f"{steps}, default metrics and logger, each arm a `dynamics-bench -m` process (start-up "
                     f"included); threads=auto took {rounds[-1]['joblib']['threads']} under joblib, "
                     f"{rounds[-1]['sequential']['threads']} one after the other; {os.cpu_count()} cores")
        rows.append(row)
    return rows


# --- 8: aggregating a sweep of 1,000 runs -----------------------------------------------------------------------------
AGGREGATE_RUNS = 1000


def generated_sweep(root: Path, runs: int) -> Path:
    """A sweep of `runs` copies of one real run (a one-job multirun: seed=0): each copy's .hydra/overrides.yaml
    says seed=i, and multirun.yaml asks for seed=range(0,runs)."""
    fixed = [*QUIET, "trainer.steps=100"]
    process_seconds([*cli_command(), "-m", *fixed, "seed=0", f"hydra.sweep.dir={root}"])
    multirun = yaml.safe_load((root / "multirun.yaml").read_text())
    multirun["hydra"]["overrides"]["task"] = [*fixed, f"seed=range(0,{runs})"]
    (root / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    for i in range(1, runs):
        shutil.copytree(root / "0", root / str(i))
        (root / str(i) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*fixed, f"seed={i}"]))
    return root


def aggregate_arm(root: Path, runs: int) -> Arm:
    """What `dynamics-bench-aggregate ROOT` does (its table printed to nowhere): runs per second."""
    def arm() -> dict[str, Any]:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            aggregate_main([str(root)])
        seconds = time.perf_counter() - start
        return {"value": runs / seconds, "seconds": seconds, "report": out.getvalue().splitlines()[-1]}
    return arm


def hand_reader(root: Path, runs: int) -> Arm:
    """The hand-written reference: every summary.json and .hydra/overrides.yaml read, one row per member."""
    def arm() -> dict[str, Any]:
        start = time.perf_counter()
        rows = []
        for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            summary = json.loads((run_dir / "summary.json").read_text())
            given = dict(o.split("=", 1) for o in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()))
            rows += [{"run": run_dir.name, **given, "status": m["status"], "final_loss": m["final_loss"],
                      **{f"final_{k}": v for k, v in m["final"].items()}} for m in summary["members"]]
        pd.DataFrame(rows).to_csv(root / "hand.csv", index=False)
        seconds = time.perf_counter() - start
        return {"value": runs / seconds, "seconds": seconds}
    return arm


def group_aggregate(b: Bench) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="dynbench_aggregate_") as out:
        root = generated_sweep(Path(out) / "sweep", AGGREGATE_RUNS)
        arms = {"aggregate": aggregate_arm(root, AGGREGATE_RUNS), "hand": hand_reader(root, AGGREGATE_RUNS)}
        for arm in arms.values():
            arm()
        rounds = interleave(arms, b.repeats)
    row = compare(Row("8.aggregate_1000", f"dynamics-bench-aggregate of a sweep of {AGGREGATE_RUNS:,} runs "
                      "(table, sweep.csv, report)", "runs/s", threads=1,
                      reference_name="hand-written reader: json + yaml per run, a pandas row per member"),
                  rounds, "aggregate", "hand")
    row.notes = (f"{median(rounds, 'aggregate', 'seconds'):.2f} s per {AGGREGATE_RUNS:,} runs (hand-written "
                 f"{median(rounds, 'hand', 'seconds'):.2f} s); each run a real one's copy (trainer.steps=100, "
                 f"default metrics: 101 metrics.csv rows, TensorBoard); report: {rounds[-1]['aggregate']['report']}")
    return [row]


TORCH_THREADS = torch.get_num_threads()  # torch's default: one per physical core
# each group and its torch threads (--threads overrides): one for the small problems, whose step is too short for
# intra-op threads to pay; every core for ensembles and wide nets, whose batched matmuls use them (the issue's
# ensemble anchors were taken so)
GROUPS: dict[str, tuple[Callable[[Bench], list[Row]], int]] = {
    "problem": (group_problem, 1), "ensemble": (group_ensemble, TORCH_THREADS), "wide": (group_wide, TORCH_THREADS),
    "flow": (group_flow, 1), "metrics": (group_metrics, 1), "startup": (group_startup, 1),
    "sweep": (group_sweep, 1), "aggregate": (group_aggregate, 1),
}


# --- the table --------------------------------------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def fmt_figure(row: dict) -> str:
    if row["figure"] is None:
        return "—"
    lo, hi = row["figure_range"]
    if row["kind"] == "share":
        return f"**{row['figure']:.1%}** ({lo:.1%} to {hi:.1%})"
    return f"**{row['figure']:.3g}×** ({lo:.3g} to {hi:.3g})"


def fmt_goal(goal: Goal) -> str:
    return f"{'≥' if goal[0] == '>=' else '≤'} {goal[1]:g}"


def verdict(row: dict) -> str:
    if row["status"] != "measured":
        return row["status"]
    if row["goal"] is None:
        return ""
    op, value = row["goal"]
    return "met" if OPERATORS[op](row["figure"], value) else "**missed**"


def markdown(data: dict) -> str:
    rows = sorted(data["rows"].values(),
                  key=lambda r: (DEVICES.index(r["kind_of_device"]), int(r["id"].split(".")[0]), r["order"]))
    lines = [
        "# Benchmarks: the harness against hand-written loops",
        "",
        "Each row times the harness (end to end through `dynamics_bench.run`, its rate from `summary.json`) and a "
        "hand-written PyTorch reference in one process, interleaved R times with the order rotating, both arms "
        "of a row with the torch thread count in its threads column; the figure is the median of the per-round "
        "ratios harness ÷ reference (range in brackets), or for the metric rows the share of the run's wall time "
        "that the grid costs. Goals are the issue's; a missed goal has a profile below. "
        "`python scripts/benchmark.py --help` says what each group runs; the notes say what each row's arms did.",
        "",
        "| row | what | machine | threads | harness | reference | unit | figure | goal | |",
        "|---|---|---|---:|---:|---:|---|---|---|---|",
    ]
    device = None
    for r in rows:
        if r["kind_of_device"] != device:
            device = r["kind_of_device"]
            lines.append(f"| **{device.upper()}** | | | | | | | | | |")
        goal = "" if r["goal"] is None else fmt_goal(r["goal"])
        quick = " (quick)" if r["quick"] else ""
        lines.append(f"| {r['id']}{quick} | {r['what']} | {r['machine']} | {r['threads']} | {fmt(r['harness'])} | "
                     f"{fmt(r['reference'])} | {r['unit']} | {fmt_figure(r)} | {goal} | {verdict(r)} |")
    lines += ["", "## Notes", ""]
    lines += [f"- `{r['device']}:{r['id']}` (run `{r['run']}`): reference: {r['reference_name']}. {r['notes']}"
              for r in rows]
    lines += metric_tables(rows) + profiles(rows) + runs(data, rows)
    return "\n".join(lines) + "\n"


def metric_tables(rows: list[dict]) -> list[str]:
    out = []
    for r in (r for r in rows if "metric_seconds" in r["extra"]):
        n = r["extra"]["rows_per_run"]
        out += ["", f"## Metric time per row: `{r['device']}:{r['id']}`", "", f"{r['what']}; median of "
                f"{len(r['extra']['rounds'])} runs, {n} rows each; share of the run's wall time "
                f"({r['harness']:.3f} s).", "", "| metric | µs per row | share of the wall |", "|---|---:|---:|"]
        out += [f"| {name} | {1e6 * s / n:.0f} | {s / r['harness']:.1%} |"
                for name, s in r["extra"]["metric_seconds"].items()]
    return out


def profiles(rows: list[dict]) -> list[str]:
    out = []
    for r in (r for r in rows if r["profile"]):
        out += ["", f"## Where the time goes: `{r['device']}:{r['id']}` ({fmt_figure(r)}, goal "
                f"{fmt_goal(r['goal'])})", "", "```", *r["profile"], "```"]
    return out


def runs(data: dict, rows: list[dict]) -> list[str]:
    out = ["", "## Runs", ""]
    for run_id in sorted({r["run"] for r in rows}):
        m = data["runs"][run_id]
        out.append(f"- `{run_id}`: {m['name']}; torch {m['torch']}, Python {m['python']}, torchdiffeq "
                   f"{m['torchdiffeq']}; load average {m['load_average_start']} at the "
                   f"start, {m['load_average_end']} at the end; git {m['git_revision']}; {m['seconds']:.0f} s; "
                   f"`{m['command']}`")
    return out


def save(rows: list[Row], b: Bench, info: dict, out: Path) -> Path:
    """Merge the rows into <out>/benchmarks.json (same device and row: replaced) and render benchmarks.md."""
    path = out / "benchmarks.json"
    data = json.loads(path.read_text()) if path.exists() else {"rows": {}, "runs": {}}
    run_id = f"{b.kind}-{info['date']}"
    data["runs"][run_id] = info
    for order, row in enumerate(rows):
        data["rows"][f"{b.device}:{row.id}"] = {**asdict(row), "device": b.device, "kind_of_device": b.kind,
                                                "machine": info["name"], "quick": b.quick,
                                                "run": run_id, "order": order}
    used = {r["run"] for r in data["rows"].values()}
    data["runs"] = {k: v for k, v in data["runs"].items() if k in used}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out / "benchmarks.md").write_text(markdown(data))
    return path


def select(only: str | None) -> list[str]:
    """Group names from --only: names or numbers, comma-separated."""
    if only is None:
        return list(GROUPS)
    names = list(GROUPS)
    picked = [names[int(g) - 1] if g.isdigit() and 1 <= int(g) <= len(names) else g for g in only.split(",")]
    bad = [g for g in picked if g not in GROUPS]
    if bad:
        raise SystemExit(f"--only {only}: unknown group {bad[0]!r}; groups are 1-{len(names)} or "
                         + ", ".join(names))
    return [g for g in names if g in picked]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=DEVICES, default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer steps, rounds and sizes (CPU ~2-3 min, CUDA < 4 min)")
    ap.add_argument("--only", default=None, help="comma-separated groups, by number or name: " + ", ".join(
        f"{i} {name}" for i, name in enumerate(GROUPS, 1)))
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default: 5, --quick 3 on CPU, 2 "
                    "on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every arm of every group (default: "
                    f"1, and {TORCH_THREADS} (torch's default) for ensemble and wide)")
    ap.add_argument("--out", type=Path, default=ROOT / "results",
                    help="folder of benchmarks.json (rows merged by device and row) and benchmarks.md")
    args = ap.parse_args(argv)
    groups = select(args.only)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    plan = PLANS[(args.device, args.quick)]
    b = Bench(args.device, plan, args.repeats or plan.repeats, args.quick, threads_key="threads" in compose())
    info = {**machine("torchdiffeq", "hydra-core"), "name": short_name(args.device),
            "command": " ".join(["python scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])])}
    print(f"{info['name']}, torch {info['torch']}, {b.repeats} rounds, groups {', '.join(groups)}", flush=True)
    start, rows, failed = time.perf_counter(), [], []
    for name in groups:
        group, threads = GROUPS[name]
        b.threads = args.threads or threads
        torch.set_num_threads(b.threads)
        print(f"[{name}] {b.threads} thread(s)", flush=True)
        try:
            done = group(b)
        except Exception:  # the other groups still run, and what was measured is kept
            traceback.print_exc()
            failed.append(name)
            continue
        rows += [replace(r, threads=b.threads if r.threads is None else r.threads) for r in done]
        info.update(load_average_end=load_average(), seconds=time.perf_counter() - start)
        path = save(rows, b, info, args.out)  # after every group: a run cut short keeps what it measured
    for r in rows:
        print(f"{r.id:<18} {fmt_figure(asdict(r)):<32} {r.unit:<15} harness {fmt(r.harness)} reference "
              f"{fmt(r.reference)} {r.status if r.status != 'measured' else ''}", flush=True)
    if rows:
        print(f"wrote {path} and {path.with_suffix('.md')} ({info['seconds']:.0f} s)")
    if failed:
        print(f"groups that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
