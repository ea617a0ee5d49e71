#!/usr/bin/env python
"""One thread or torch's default: where a second thread starts to pay, the basis of `threads=auto`.

(A) Steps per second of two-layer ReLU teacher-student GD (float64, as the default run) at problem sizes from the
    default run's to a wide one, each run through `dynamics_bench.run` with `threads=1` and with `threads=<torch's
    default>`, interleaved R times in this one process (the order alternates repeat by repeat). Logging is light
    (metrics.names=[loss], metrics.points=2, no TensorBoard), so the figure is the step's. Each size's step count
    is set by a short calibration run so that a run lasts about --seconds. The size is the work of one step,
    parameters × samples × members (dynamics_bench.runtime.step_work); the figure per size is the median over the
    repeats of the ratio default/one thread. `threads=auto` takes one thread below runtime.SMALL_WORK: the table
    says where the ratio crosses 1 on this machine, and whether SMALL_WORK sits there.
(A') The same with one core kept busy by another process (a Python loop spinning), as on a shared machine:
    --busy-repeats pairs per size, runs of about half --seconds.
Start-up is group 6 of scripts/benchmark.py (results/benchmarks.md).

Machines are noisy: only ratios taken side by side mean anything. The exit code is 0 whatever the figures.
Results: <out>.json and <out>.md.

    python scripts/benchmark_threads.py [--repeats R] [--busy-repeats B] [--seconds S] [--out results/threads]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dynamics_bench import compose, run
from dynamics_bench.runtime import SMALL_WORK, TORCH_DEFAULT_THREADS, step_work
from machine import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
LIGHT = ["metrics.names=[loss]", "metrics.points=2", "logger.tensorboard=false", "logger.progress=false"]
SIZES = [  # (d, m, n, E): the default run, then growing width, samples and members
    (5, 8, 200, 1),
    (50, 20, 200, 1),
    (50, 20, 2000, 1),  # the benchmark problem (there in float32)
    (50, 40, 2000, 1),
    (50, 80, 2000, 1),
    (50, 320, 200, 1),  # about the work of (50, 40, 2000): does the size predict the ratio across n?
    (50, 320, 2000, 1),
    (50, 1280, 2000, 1),
    (50, 20, 2000, 8),
    (50, 20, 2000, 64),
]


def size_overrides(d: int, m: int, n: int, members: int) -> list[str]:
    return ["model=two_layer", f"model.width={m}", "task=teacher", f"task.input_dim={d}", "task.teacher_width=5",
            f"task.n={n}", f"ensemble.size={members}", "trainer=gd", *LIGHT]


def steps_per_second(overrides: list[str], threads: int, steps: int) -> float:
    with tempfile.TemporaryDirectory(prefix="dynbench_threads_") as out:
        summary = run(compose(*overrides, f"threads={threads}", f"trainer.steps={steps}"), out)
    assert summary["threads"] == threads, summary["threads"]
    return summary["steps_per_second"]


def calibrated_steps(overrides: list[str], seconds: float) -> int:
    """Steps for a run of about `seconds` at the default threads, from a 10-step run (its first step included)."""
    rate = steps_per_second(overrides, TORCH_DEFAULT_THREADS, 10)
    return int(min(max(rate * seconds, 20), 20000))


def measure_size(size: tuple[int, int, int, int], repeats: int, seconds: float) -> dict:
    d, m, n, members = size
    overrides = size_overrides(*size)
    parameters = m * d + m  # w (m, d) and a (1, m)
    steps = calibrated_steps(overrides, seconds)
    one, default = [], []
    for r in range(repeats):
        order = [(1, one), (TORCH_DEFAULT_THREADS, default)]
        for threads, rates in order if r % 2 == 0 else order[::-1]:
            rates.append(steps_per_second(overrides, threads, steps))
    ratios = [b / a for a, b in zip(one, default)]
    return {"d": d, "m": m, "n": n, "members": members, "work": step_work(parameters, n, members), "steps": steps,
            "one_thread": statistics.median(one), "default_threads": statistics.median(default),
            "ratio": statistics.median(ratios), "ratios": ratios}


def crossover(rows: list[dict]) -> tuple[int | None, int | None]:
    """(the largest work where one thread is at least as fast, the smallest where the default is faster), over
    the rows sorted by work; a clean crossover has the first below the second."""
    slower = [r["work"] for r in rows if r["ratio"] <= 1.0]
    faster = [r["work"] for r in rows if r["ratio"] > 1.0]
    return (max(slower) if slower else None), (min(faster) if faster else None)


def measure_sizes(repeats: int, seconds: float) -> list[dict]:
    rows = []
    for size in SIZES:
        rows.append(measure_size(size, repeats, seconds))
        r = rows[-1]
        print(f"  d={r['d']} m={r['m']} n={r['n']} E={r['members']} work {r['work']:.3g}: {r['one_thread']:.1f} "
              f"steps/s on one thread, {r['default_threads']:.1f} on {TORCH_DEFAULT_THREADS}, ratio {r['ratio']:.2f}",
              flush=True)
    return sorted(rows, key=lambda r: r["work"])


@contextlib.contextmanager
def one_core_busy():
    """Another process spinning on one core while the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def size_table(rows: list[dict]) -> list[str]:
    lines = ["| d | m | n | E | work | steps | steps/s, 1 thread | steps/s, default | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['d']} | {r['m']} | {r['n']} | {r['members']} | {r['work']:.3g} | {r['steps']} | "
                     f"{r['one_thread']:.1f} | {r['default_threads']:.1f} | **{r['ratio']:.2f}** |")
    return lines


def _work(value: int | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def markdown(res: dict) -> str:
    m = res["machine"]
    below, above = res["crossover"]
    lines = [
        "# Threads: one or torch's default",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} CPUs; load average {m['load_average_start']} at the start, "
        f"{m['load_average_end']} at the end), torch {m['torch']} (default threads {TORCH_DEFAULT_THREADS}), "
        f"Python {m['python']}, {m['date']}, git {m['git_revision']}.",
        "",
        "## (A) Steps per second, one thread against torch's default",
        "",
        "Two-layer ReLU teacher-student GD, float64, light logging (`" + " ".join(LIGHT) + "`), each run through "
        f"`dynamics_bench.run`, the two thread counts interleaved {res['repeats']} times; work = parameters × "
        "samples × members of one step; ratio = default / one thread (median over the repeats).",
        "",
        *size_table(res["sizes"]),
        "",
        f"One thread is at least as fast up to work {_work(below)}; the default is faster "
        f"{'at no size' if above is None else f'from {above:.3g}'}. "
        f"`threads=auto` takes one thread below SMALL_WORK = {SMALL_WORK:.3g}: where the default's gain is small "
        "or unsure in a quiet machine's runs, and (A') shows what it risks on a busy one (the reasoning, with the "
        "runs behind it, is dynamics_bench/runtime.py's docstring).",
        "",
    ]
    if res["busy"]:
        lines += [
            "## (A') The same with one core busy",
            "",
            f"Another process spins on one core throughout; {res['busy_repeats']} interleaved pairs per size.",
            "",
            *size_table(res["busy"]),
            "",
            f"One thread is faster at {sum(r['ratio'] < 1 for r in res['busy'])} of {len(res['busy'])} sizes: with "
            "a core taken, torch's threads wait for each other at every kernel, so on a busy machine `threads=1` "
            "is the setting, whatever the size.",
            "",
        ]
    lines += [
        f"Reproduce: `python scripts/benchmark_threads.py --repeats {res['repeats']} --busy-repeats "
        f"{res['busy_repeats']} --seconds {res['seconds']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved pairs per size (default 5)")
    ap.add_argument("--busy-repeats", type=int, default=3, help="pairs per size with a core busy (0: skip; default 3)")
    ap.add_argument("--seconds", type=float, default=0.4, help="about how long one run lasts (default 0.4)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "threads",
                    help="output stem: <out>.json and <out>.md")
    args = ap.parse_args(argv)
    info = machine()
    print(f"torch's default threads {TORCH_DEFAULT_THREADS}, {info['cpu_model']}", flush=True)
    print("(A) one thread against the default", flush=True)
    rows = measure_sizes(args.repeats, args.seconds)
    busy = []
    if args.busy_repeats > 0:
        print("(A') the same with one core busy", flush=True)
        with one_core_busy():
            busy = measure_sizes(args.busy_repeats, args.seconds / 2)
    info["load_average_end"] = load_average()
    res = {"what": __doc__.split("\n\n")[0], "machine": info, "repeats": args.repeats, "seconds": args.seconds,
           "busy_repeats": args.busy_repeats,
           "default_threads": TORCH_DEFAULT_THREADS, "small_work": SMALL_WORK, "sizes": rows,
           "crossover": crossover(rows), "busy": busy}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
