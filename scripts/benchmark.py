#!/usr/bin/env python
"""Side-by-side speed of the harness's GD loop and a hand-written PyTorch loop on the same problem.

Problem (the issue's): two-layer ReLU teacher-student, d=50 inputs, r=5 teacher neurons, m=20 student
neurons, n=2000 samples, float32 on the CPU, full-batch GD at the gd trainer's learning rate, N steps.

* harness: the real config, composed as a user would (``dynamics_bench.compose``), run end to end by
  ``dynamics_bench.experiment.run`` into a temporary directory with the DEFAULT metrics (``names=auto``: every
  metric that applies, on the 100-point log grid) and logger (metrics.csv + TensorBoard). Its steps/s is
  summary["steps_per_second"]: N over the training loop's own wall time, metric logging included. The
  end-to-end wall time (build, init, loop, final_params.pt, summary.json, TensorBoard hparams) is reported
  separately.
* hand-written: plain PyTorch on the identical data (the harness task's x, y) from the identical initial
  parameters (the harness's init_params, as plain (m, d) and (1, m) tensors): forward relu(x Wᵀ) aᵀ, loss
  ½·mean(residual²), autograd.grad, in-place SGD update under no_grad; nothing else is read per step. Like
  the harness it ends with L(θ_N), and its wall time covers the loop only.
* diagnostic (not part of the target): the harness again with logging off (metrics.points=2: only steps 0
  and N; logger.tensorboard=false), which splits the gap into loop overhead and logging.

All arms run in this one process with the same torch thread count, interleaved R times (the order rotates
pair by pair). The figure is the median of the per-pair ratios harness/hand: machines are noisy, so only
ratios taken side by side mean anything. Target (the issue): >= 0.9. The exit code is 0 whatever the ratio;
PASS/FAIL is printed. Results go to results/benchmark.json and results/benchmark.md.

    python scripts/benchmark.py [--steps N] [--repeats R] [--threads T] [--out results/benchmark.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dynamics_bench import compose
from dynamics_bench.experiment import build, init_params, run
from machine import load_average, machine

TARGET = 0.9
ROOT = Path(__file__).resolve().parent.parent
PROBLEM = {"model": "two_layer", "activation": "relu", "input_dim": 50, "teacher_width": 5, "width": 20,
           "n": 2000, "dtype": "float32", "device": "cpu", "trainer": "gd"}
NO_LOGGING = ["metrics.points=2", "logger.tensorboard=false"]
# The final losses must agree: same data, same init, same update. Only the order of float32 sums may differ
# between the two codes, which GD on this problem does not amplify much.
LOSS_RTOL = 1e-3
ARMS = ("hand", "harness", "harness_nolog")


def overrides(steps: int) -> list[str]:
    p = PROBLEM
    return [f"model={p['model']}", f"model.width={p['width']}", f"model.activation={p['activation']}",
            "task=teacher", f"task.input_dim={p['input_dim']}", f"task.teacher_width={p['teacher_width']}",
            f"task.n={p['n']}", f"dtype={p['dtype']}", f"device={p['device']}", f"trainer={p['trainer']}",
            f"trainer.steps={steps}", "logger.progress=false"]


def run_harness(cfg) -> dict:
    """One end-to-end run through dynamics_bench.experiment.run into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="dynbench_bench_") as out:
        start = time.perf_counter()
        summary = run(cfg, out)
        end_to_end = time.perf_counter() - start
    return {"steps": summary["steps"], "loop_seconds": summary["wall_seconds"],
            "steps_per_second": summary["steps_per_second"], "end_to_end_seconds": end_to_end,
            "final_loss": summary["final_loss"], "status": summary["status"]}


def hand_problem(cfg) -> dict:
    """The harness's data, initial parameters and step size, as plain tensors."""
    exp = build(cfg)
    assert exp.ensemble_size == 1 and exp.objective.model.output_layer == "trainable"
    x, y = exp.task.data()  # (n, d), (n, 1)
    p0 = init_params(exp)  # w (1, m, d), a (1, 1, m)
    return {"x": x.contiguous(), "y": y.contiguous(), "w": p0["w"][0].clone(), "a": p0["a"][0].clone(),
            "lr": exp.schedule.h, "steps": exp.schedule.steps}


def run_hand(prob: dict) -> dict:
    """The hand-written loop: N GD steps, then L(θ_N) (the harness also evaluates θ_N)."""
    x, y, lr, steps = prob["x"], prob["y"], prob["lr"], prob["steps"]
    w = prob["w"].clone().requires_grad_(True)
    a = prob["a"].clone().requires_grad_(True)
    start = time.perf_counter()
    for _ in range(steps):
        loss = 0.5 * (torch.relu(x @ w.T) @ a.T - y).pow(2).mean()
        gw, ga = torch.autograd.grad(loss, [w, a])
        with torch.no_grad():
            w.sub_(gw, alpha=lr)
            a.sub_(ga, alpha=lr)
    with torch.no_grad():
        final = 0.5 * (torch.relu(x @ w.T) @ a.T - y).pow(2).mean()
    final_loss = final.item()
    seconds = time.perf_counter() - start
    return {"steps": steps, "loop_seconds": seconds, "steps_per_second": steps / seconds,
            "final_loss": final_loss}


def markdown(res: dict) -> str:
    m, s = res["machine"], res["summary"]
    lines = [
        "# Benchmark: harness GD loop vs hand-written PyTorch loop",
        "",
        f"Measured: steps per second of full-batch GD on the two-layer ReLU teacher-student problem "
        f"(d={PROBLEM['input_dim']}, r={PROBLEM['teacher_width']}, m={PROBLEM['width']}, n={PROBLEM['n']}, "
        f"float32, CPU, {m['threads']} thread(s)), N={res['steps']} steps, for the harness run end to end "
        "through `dynamics_bench.experiment.run` with the default metrics and logger (every applicable metric "
        "on the 100-point log grid, metrics.csv and TensorBoard; steps/s = N / the training loop's wall time) "
        "and for a hand-written autograd + in-place SGD loop on the same data and initial parameters, "
        f"interleaved {res['repeats']} times in one process; the figure is the median of the per-pair ratios.",
        "",
        "| pair | order | hand steps/s | harness steps/s | ratio | harness, no logging, steps/s | ratio "
        "| harness end-to-end s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, p in enumerate(res["pairs"]):
        lines.append(f"| {i} | {p['order']} | {p['hand']['steps_per_second']:.0f} | "
                     f"{p['harness']['steps_per_second']:.0f} | {p['ratio']:.3f} | "
                     f"{p['harness_nolog']['steps_per_second']:.0f} | {p['ratio_nolog']:.3f} | "
                     f"{p['harness']['end_to_end_seconds']:.2f} |")
    lines += [
        f"| **median** | | **{s['hand_steps_per_second']:.0f}** | **{s['harness_steps_per_second']:.0f}** | "
        f"**{s['ratio_median']:.3f}** | {s['harness_nolog_steps_per_second']:.0f} | {s['ratio_nolog_median']:.3f} "
        f"| {s['harness_end_to_end_seconds']:.2f} |",
        "",
        f"Harness/hand, default metrics and logger: median **{s['ratio_median']:.3f}** (pairs "
        f"{s['ratio_min']:.3f} to {s['ratio_max']:.3f}); target >= {TARGET}: **{'PASS' if s['pass'] else 'FAIL'}**. "
        f"With logging off (diagnostic only): {s['ratio_nolog_median']:.3f}. Final losses agree: "
        f"{s['final_loss_agree']} (hand {s['hand_final_loss']:.6g}, harness {s['harness_final_loss']:.6g}, "
        f"relative difference {s['final_loss_rel_diff']:.1e}, tolerance {LOSS_RTOL}).",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} CPUs; load average {m['load_average_start']} at the start, "
        f"{m['load_average_end']} at the end), torch {m['torch']}, Python {m['python']}, {m['date']}, "
        f"git {m['git_revision']}.",
        "",
        f"Reproduce: `python scripts/benchmark.py --steps {res['steps']} --repeats {res['repeats']} "
        f"--threads {res['threads_arg']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6000,
                    help="GD steps per run (default 6000: about 2 s per run on a 2-core AMD EPYC VM)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the arms (default 5)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every arm (default 1: this problem is too small to gain from "
                         "intra-op threads, and on a shared machine their synchronisation swamps the timing); "
                         "0 keeps torch's default")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark.json",
                    help="JSON output; the Markdown table goes next to it with suffix .md")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cfgs = {"harness": compose(*overrides(args.steps)), "harness_nolog": compose(*overrides(args.steps), *NO_LOGGING)}
    prob = hand_problem(cfgs["harness"])
    info = machine()
    print(f"N={args.steps} steps, {args.repeats} rounds, {info['threads']} thread(s), torch {info['torch']}, "
          f"{info['cpu_model']}", flush=True)

    # warm-up, not recorded: first-call costs (imports, TensorBoard, kernels) hit no arm
    warm = min(args.steps, 50)
    run_harness(compose(*overrides(warm)))
    run_hand(dict(prob, steps=warm))

    def run_arm(arm: str) -> dict:
        return run_hand(prob) if arm == "hand" else run_harness(cfgs[arm])

    pairs = []
    print(f"{'pair':>4} {'order':<28} {'hand/s':>8} {'harness/s':>10} {'ratio':>6} {'nolog/s':>8} {'ratio':>6} "
          f"{'e2e s':>6}", flush=True)
    for i in range(args.repeats):
        order = ARMS[i % len(ARMS):] + ARMS[:i % len(ARMS)]
        out = {arm: run_arm(arm) for arm in order}
        hand = out["hand"]["steps_per_second"]
        pair = {"order": ",".join(order), **out, "ratio": out["harness"]["steps_per_second"] / hand,
                "ratio_nolog": out["harness_nolog"]["steps_per_second"] / hand}
        pairs.append(pair)
        print(f"{i:>4} {pair['order']:<28} {hand:>8.0f} {out['harness']['steps_per_second']:>10.0f} "
              f"{pair['ratio']:>6.3f} {out['harness_nolog']['steps_per_second']:>8.0f} {pair['ratio_nolog']:>6.3f} "
              f"{out['harness']['end_to_end_seconds']:>6.2f}", flush=True)

    def med(arm: str, key: str) -> float:
        return statistics.median(p[arm][key] for p in pairs)

    ratios = [p["ratio"] for p in pairs]
    hand_loss, harness_loss = pairs[-1]["hand"]["final_loss"], pairs[-1]["harness"]["final_loss"]
    rel = abs(hand_loss - harness_loss) / max(abs(hand_loss), abs(harness_loss), 1e-30)
    summary = {
        "hand_steps_per_second": med("hand", "steps_per_second"),
        "harness_steps_per_second": med("harness", "steps_per_second"),
        "harness_nolog_steps_per_second": med("harness_nolog", "steps_per_second"),
        "hand_loop_seconds": med("hand", "loop_seconds"),
        "harness_loop_seconds": med("harness", "loop_seconds"),
        "harness_end_to_end_seconds": med("harness", "end_to_end_seconds"),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ratio_nolog_median": statistics.median(p["ratio_nolog"] for p in pairs),
        "target": TARGET, "pass": statistics.median(ratios) >= TARGET,
        "hand_final_loss": hand_loss, "harness_final_loss": harness_loss, "final_loss_rel_diff": rel,
        "final_loss_rtol": LOSS_RTOL, "final_loss_agree": rel <= LOSS_RTOL,
    }
    info["load_average_end"] = load_average()
    res = {"what": "steps/s of the harness GD loop (dynamics_bench.experiment.run, default metrics and logger) "
                   "vs a hand-written PyTorch GD loop, same data, init, dtype and threads, interleaved in one "
                   "process; ratio = harness / hand per round, median over rounds",
           "problem": PROBLEM, "lr": prob["lr"], "steps": args.steps, "repeats": args.repeats,
           "threads_arg": args.threads, "overrides": overrides(args.steps), "diagnostic_overrides": NO_LOGGING,
           "machine": info, "summary": summary, "pairs": pairs}

    verdict = "PASS" if summary["pass"] else "FAIL"
    print(f"median steps/s: hand {summary['hand_steps_per_second']:.0f}, harness "
          f"{summary['harness_steps_per_second']:.0f} (loop; end to end {summary['harness_end_to_end_seconds']:.2f} s "
          f"for {args.steps} steps), harness without logging {summary['harness_nolog_steps_per_second']:.0f}")
    print(f"ratio harness/hand (default metrics and logger, N={args.steps}): median {summary['ratio_median']:.3f} "
          f"(min {summary['ratio_min']:.3f}, max {summary['ratio_max']:.3f}) vs target {TARGET}: {verdict}; "
          f"without logging {summary['ratio_nolog_median']:.3f}")
    print(f"final loss: hand {hand_loss:.6g}, harness {harness_loss:.6g}, rel. diff {rel:.1e} "
          f"({'agree' if summary['final_loss_agree'] else 'DISAGREE'} at rtol {LOSS_RTOL})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
