#!/usr/bin/env python
"""Side-by-side speed of the harness's GD loop and a hand-written PyTorch loop on the same problem.

Problem: two-layer ReLU teacher-student, d=50 inputs, r=5 teacher neurons, m=20 student neurons, n=2000
samples, float32 on the CPU, full-batch GD with the gd trainer's learning rate.

* harness: the real config, composed as a user would (``dynamics_bench.compose``), run end to end by
  ``dynamics_bench.experiment.run`` into a temporary directory with the DEFAULT metrics (``names=auto`` on the
  100-point log grid) and logger (metrics.csv + TensorBoard). Its steps/s is summary["steps_per_second"]:
  the training loop's own wall time, metric logging included. The end-to-end wall time (build, init,
  loop, final_params.pt, summary.json, TensorBoard hparams) is reported separately.
* hand-written: plain PyTorch on the identical data (the harness task's x, y) from the identical initial
  parameters (the harness's init_params, as plain (m, d) and (1, m) tensors): forward relu(x Wᵀ) aᵀ,
  loss ½·mean(residual²), autograd.grad, in-place SGD update under no_grad; nothing else is read per step.

Both run in this one process with the same thread count, interleaved R times (the order alternates pair by
pair); the result is the median of the per-pair ratios harness/hand, which is robust to a noisy machine.
Target (the issue): ratio >= 0.9. The exit code is 0 whatever the ratio; PASS/FAIL is printed.

    python scripts/benchmark.py [--steps N] [--repeats R] [--threads T] [--out results/benchmark.json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dynamics_bench import compose
from dynamics_bench.experiment import build, init_params, run

TARGET = 0.9
ROOT = Path(__file__).resolve().parent.parent
PROBLEM = {"model": "two_layer", "activation": "relu", "input_dim": 50, "teacher_width": 5, "width": 20,
           "n": 2000, "dtype": "float32", "device": "cpu", "trainer": "gd"}
# Final losses of the two loops must agree: same data, same init, same update; only the summation order of
# float32 kernels (einsum/bmm vs matmul) differs, which GD on a contracting problem does not amplify much.
LOSS_RTOL = 1e-3


def overrides(steps: int) -> list[str]:
    p = PROBLEM
    return [f"model={p['model']}", f"model.width={p['width']}", f"model.activation={p['activation']}",
            "task=teacher", f"task.input_dim={p['input_dim']}", f"task.teacher_width={p['teacher_width']}",
            f"task.n={p['n']}", f"dtype={p['dtype']}", f"device={p['device']}", f"trainer={p['trainer']}",
            f"trainer.steps={steps}", "logger.progress=false"]


def run_harness(cfg) -> dict:
    """One end-to-end run through dynamics_bench.experiment.run with the default metrics and logger."""
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
    """The hand-written loop: N GD steps, then L(θ_N), like the harness (which also evaluates θ_N)."""
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


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return rev.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "git_revision": git_revision(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def median(values: list[float]) -> float:
    return statistics.median(values)


def markdown(res: dict) -> str:
    m, s = res["machine"], res["summary"]
    lines = [
        "# Benchmark: harness GD loop vs hand-written PyTorch loop",
        "",
        f"Two-layer ReLU teacher-student (d={PROBLEM['input_dim']}, r={PROBLEM['teacher_width']}, "
        f"m={PROBLEM['width']}, n={PROBLEM['n']}, float32, CPU), full-batch GD, N={res['steps']} steps, "
        f"{res['repeats']} interleaved pairs in one process, {m['threads']} thread(s). The harness runs end to "
        "end through `dynamics_bench.experiment.run` with the default metrics (every applicable metric on the "
        "100-point log grid) and logger (metrics.csv + TensorBoard); its steps/s is the training loop's wall "
        "time (metrics included), the hand-written loop is plain autograd + in-place SGD on the same data "
        "and initial parameters.",
        "",
        "| pair | order | hand steps/s | harness steps/s | ratio | harness end-to-end s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for i, p in enumerate(res["pairs"]):
        lines.append(f"| {i} | {p['order']} | {p['hand']['steps_per_second']:.1f} | "
                     f"{p['harness']['steps_per_second']:.1f} | {p['ratio']:.3f} | "
                     f"{p['harness']['end_to_end_seconds']:.2f} |")
    lines += [
        f"| **median** | | **{s['hand_steps_per_second']:.1f}** | **{s['harness_steps_per_second']:.1f}** | "
        f"**{s['ratio_median']:.3f}** | **{s['harness_end_to_end_seconds']:.2f}** |",
        "",
        f"Median ratio harness/hand = {s['ratio_median']:.3f} (min {s['ratio_min']:.3f}, max "
        f"{s['ratio_max']:.3f}); target >= {TARGET}: **{'PASS' if s['pass'] else 'FAIL'}**. "
        f"Final losses agree: {s['final_loss_agree']} (hand {s['hand_final_loss']:.6g}, harness "
        f"{s['harness_final_loss']:.6g}, rel. diff {s['final_loss_rel_diff']:.2e}, tolerance {LOSS_RTOL}).",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} CPUs, load average at start {m['load_average']}), "
        f"torch {m['torch']}, Python {m['python']}, {m['date']}, git {m['git_revision']}.",
        "",
        f"Reproduce: `python scripts/benchmark.py --steps {res['steps']} --repeats {res['repeats']}"
        + (f" --threads {m['threads']}" if res.get("threads_set") else "") + "`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="GD steps per run (default 2000)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved hand/harness pairs (default 5)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both loops (default: torch's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark.json",
                    help="JSON output; the Markdown table goes next to it with suffix .md")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cfg = compose(*overrides(args.steps))
    prob = hand_problem(cfg)
    info = machine()
    print(f"N={args.steps} steps, {args.repeats} pairs, {info['threads']} thread(s), torch {info['torch']}, "
          f"{info['cpu_model']}", flush=True)

    # warm-up (not recorded): first-call costs (imports, TensorBoard, autograd/kernels) hit neither side
    warm_steps = min(args.steps, 50)
    run_harness(compose(*overrides(warm_steps)))
    run_hand(dict(prob, steps=warm_steps))

    pairs = []
    print(f"{'pair':>4} {'order':<13} {'hand/s':>9} {'harness/s':>10} {'ratio':>6} {'e2e s':>7}", flush=True)
    for i in range(args.repeats):
        order = ("hand", "harness") if i % 2 == 0 else ("harness", "hand")
        out = {}
        for side in order:
            out[side] = run_hand(prob) if side == "hand" else run_harness(cfg)
        ratio = out["harness"]["steps_per_second"] / out["hand"]["steps_per_second"]
        pairs.append({"order": ",".join(order), **out, "ratio": ratio})
        print(f"{i:>4} {','.join(order):<13} {out['hand']['steps_per_second']:>9.1f} "
              f"{out['harness']['steps_per_second']:>10.1f} {ratio:>6.3f} "
              f"{out['harness']['end_to_end_seconds']:>7.2f}", flush=True)

    ratios = [p["ratio"] for p in pairs]
    hand_loss, harness_loss = pairs[-1]["hand"]["final_loss"], pairs[-1]["harness"]["final_loss"]
    rel = abs(hand_loss - harness_loss) / max(abs(hand_loss), abs(harness_loss), 1e-30)
    summary = {
        "hand_steps_per_second": median([p["hand"]["steps_per_second"] for p in pairs]),
        "harness_steps_per_second": median([p["harness"]["steps_per_second"] for p in pairs]),
        "harness_end_to_end_seconds": median([p["harness"]["end_to_end_seconds"] for p in pairs]),
        "harness_loop_seconds": median([p["harness"]["loop_seconds"] for p in pairs]),
        "hand_loop_seconds": median([p["hand"]["loop_seconds"] for p in pairs]),
        "ratio_median": median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "target": TARGET, "pass": median(ratios) >= TARGET,
        "hand_final_loss": hand_loss, "harness_final_loss": harness_loss, "final_loss_rel_diff": rel,
        "final_loss_rtol": LOSS_RTOL, "final_loss_agree": rel <= LOSS_RTOL,
    }
    info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    res = {"what": "harness GD loop (dynamics_bench.experiment.run, default metrics and logger) vs hand-written "
                   "PyTorch GD loop, same data/init/dtype/threads, interleaved in one process",
           "problem": PROBLEM, "lr": prob["lr"], "steps": args.steps, "repeats": args.repeats,
           "threads_set": args.threads is not None, "overrides": overrides(args.steps),
           "machine": info, "summary": summary, "pairs": pairs}

    verdict = "PASS" if summary["pass"] else "FAIL"
    print(f"median: hand {summary['hand_steps_per_second']:.1f} steps/s, harness "
          f"{summary['harness_steps_per_second']:.1f} steps/s (loop; end to end "
          f"{summary['harness_end_to_end_seconds']:.2f} s for {args.steps} steps)")
    print(f"ratio harness/hand: median {summary['ratio_median']:.3f} (min {summary['ratio_min']:.3f}, max "
          f"{summary['ratio_max']:.3f}) vs target {TARGET}: {verdict}")
    print(f"final loss: hand {hand_loss:.6g}, harness {harness_loss:.6g}, rel. diff {rel:.2e} "
          f"({'agree' if summary['final_loss_agree'] else 'DISAGREE'} at rtol {LOSS_RTOL})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
