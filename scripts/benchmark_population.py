#!/usr/bin/env python
"""What the closed-form population loss costs against the sample loss it replaces.

For a two-layer student of width m (no bias, norm-tied output as in Zhou–Ge–Jin) on a teacher task (d inputs,
r = 5 teachers), one loss-and-gradient of the harness's objective (`task.population=true`: the Gaussian kernels on
all (m + r)² neuron pairs) against the same on the task's n = 2000 samples (`task.population=false`), interleaved
R times in one process, for each activation and width. The figure is the median ratio population/sample of the
per-call time; below 1 the exact expectation is also the cheaper one. Two regimes: students spread out (Gaussian
init: pairs take the Gram-matrix angle) and students on the teachers (near_teacher at angle 0: every pair in a
group is nearly parallel and takes the d-wide atan2 angle).

    python scripts/benchmark_population.py [--repeats R] [--threads T] [--out results/population_cost]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dynamics_bench import compose
from dynamics_bench.experiment import build, init_params
from machine import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
WIDTHS, D, N = (8, 64, 512), 50, 2000
ACTIVATIONS = ("relu", "erf")
CALLS = 5  # gradients per timing, to lift a small net's call above the timer's noise


def seconds_per_call(activation: str, width: int, population: bool, init: str) -> float:
    cfg = compose("model=two_layer", f"model.width={width}", f"model.activation={activation}",
                  "model.output_layer=norm", f"model.init={init}", "task=teacher", f"task.input_dim={D}",
                  "task.teacher_width=5", f"task.teacher_activation={activation}", f"task.n={N}",
                  f"task.population={str(population).lower()}", "logger.progress=false")
    exp = build(cfg)
    params = init_params(exp)
    x, y = exp.task.data()
    x, y = x[None], y[None]
    exp.objective.loss_and_grad(params, x, y)  # warm-up
    start = time.perf_counter()
    for _ in range(CALLS):
        exp.objective.loss_and_grad(params, x, y)
    return (time.perf_counter() - start) / CALLS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "results" / "population_cost"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = load_average()
    rows = []
    for activation in ACTIVATIONS:
        for width in WIDTHS:
            for init in ("gaussian", "near_teacher") if activation == "relu" else ("gaussian",):
                pop, sample = [], []
                for i in range(args.repeats):  # interleaved, order alternating
                    arms = [(True, pop), (False, sample)][:: 1 if i % 2 == 0 else -1]
                    for population, times in arms:
                        times.append(seconds_per_call(activation, width, population, init))
                ratios = [p / s for p, s in zip(pop, sample)]
                rows.append({"activation": activation, "width": width, "init": init,
                             "population_ms": 1e3 * statistics.median(pop), "sample_ms": 1e3 * statistics.median(sample),
                             "ratio": statistics.median(ratios)})
                print(rows[-1], flush=True)
    out = Path(args.out)
    meta = {"machine": machine(), "load_average": [load_start, load_average()], "threads": args.threads,
            "repeats": args.repeats, "d": D, "r": 5, "n": N, "calls_per_timing": CALLS}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Population loss vs sample loss: one loss-and-gradient", "",
             f"Two-layer student (norm-tied output, no bias), teacher task d = {D}, r = 5; the sample loss on n = {N} "
             f"samples. Median over {args.repeats} interleaved repeats of {CALLS} calls, {args.threads} thread(s), "
             "float64. ratio = population/sample (below 1: the exact expectation is also cheaper).", "",
             "| activation | m | students | population ms | sample ms | ratio |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['activation']} | {r['width']} | {r['init']} | {r['population_ms']:.2f} | "
                     f"{r['sample_ms']:.2f} | {r['ratio']:.2f} |")
    lines += ["", f"Machine: {meta['machine']}; load average {meta['load_average']}.", "",
              f"Reproduce: `python scripts/benchmark_population.py --repeats {args.repeats} --threads {args.threads}`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
