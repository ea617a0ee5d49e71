#!/usr/bin/env python
"""What the metrics cost: the metrics `auto` adds to the default run, and every metric on the default grid.

(A) The default run (`dynamics-bench` with no overrides: two-layer ReLU teacher-student, GD, 1000 steps, the
    100-point log grid, metrics.csv and TensorBoard) with `metrics.names=auto` against the same run with the
    metric set `auto` chose before the instruments (OLD_SET), interleaved R times in this one process (the order
    alternates pair by pair). Per pair: the added cost = Σ metric_seconds(auto) − Σ metric_seconds(old), as a
    fraction of the old run's wall_seconds (the training loop, logging included: what the CLI prints), and of its
    end-to-end run() time; and the wall-time ratio auto/old, which also holds the sinks' cost of the extra columns.
    The figure is the median over pairs; the target is <= TARGET.
    (A') The same pairs as separate CLI processes (`python -m dynamics_bench`), so each run also pays the
    first-call costs a real run pays (and (A)'s warm-up hides).
(B) Each metric's own cost at the default grid (every row; heavy metrics too, heavy_every = 1) on the default run
    and on `experiment=ntk_lazy`, every applicable metric named (`[auto, ntk, hessian, layer_change_spec]`):
    metric_seconds per run, per row, and as a share of that run's wall time; median over the repeats.

Machines are noisy: only the ratios and shares taken side by side mean anything. The exit code is 0 whatever
the figures; PASS/FAIL is printed. Results: <out>.json and <out>.md.

    python scripts/benchmark_metrics.py [--repeats R] [--process-repeats C] [--heavy-repeats H] [--threads T]
                                        [--out results/metrics_cost]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dynamics_bench import compose, run
from machine import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.02
OLD_SET = ["loss", "grad_norm", "param_norm", "weight_change", "imbalance", "alignment"]  # auto before the issue
NEW_IN_AUTO = ["lojasiewicz", "teacher", "layer_change", "activation_flips"]
EVERY_METRIC = "metrics.names=[auto,ntk,hessian,layer_change_spec]"
QUIET = ["logger.progress=false"]


def run_once(*overrides: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="dynbench_metrics_") as out:
        start = time.perf_counter()
        summary = run(compose(*QUIET, *overrides), out)
        end_to_end = time.perf_counter() - start
        with open(Path(out) / "metrics.csv") as f:
            rows = sum(1 for _ in csv.DictReader(f))
    return {"wall_seconds": summary["wall_seconds"], "end_to_end_seconds": end_to_end, "rows": rows,
            "metric_seconds": summary["metric_seconds"], "final_loss": summary["final_loss"]}


def added_cost(repeats: int) -> dict:
    """(A): auto against OLD_SET on the default run, interleaved."""
    arms = {"old": [f"metrics.names=[{','.join(OLD_SET)}]"], "auto": []}
    run_once(*arms["auto"])  # warm-up, not recorded: first-call costs hit neither arm
    pairs = []
    for i in range(repeats):
        order = ["old", "auto"] if i % 2 == 0 else ["auto", "old"]
        out = {arm: run_once(*arms[arm]) for arm in order}
        old, new = out["old"], out["auto"]
        added = sum(new["metric_seconds"].values()) - sum(old["metric_seconds"].values())
        pairs.append({"order": ",".join(order), **out, "added_seconds": added,
                      "added_share_of_wall": added / old["wall_seconds"],
                      "added_share_of_end_to_end": added / old["end_to_end_seconds"],
                      "new_metrics_seconds": sum(new["metric_seconds"][k] for k in NEW_IN_AUTO),
                      "wall_ratio": new["wall_seconds"] / old["wall_seconds"]})
        p = pairs[-1]
        print(f"  pair {i} ({p['order']}): old wall {old['wall_seconds']:.3f} s, auto wall {new['wall_seconds']:.3f} s, "
              f"added metric time {1e3 * added:.1f} ms = {100 * p['added_share_of_wall']:.2f}% of the wall", flush=True)
    med = lambda key: statistics.median(p[key] for p in pairs)  # noqa: E731
    per_metric = {name: statistics.median(p["auto"]["metric_seconds"][name] for p in pairs)
                  for name in pairs[0]["auto"]["metric_seconds"]}
    return {"pairs": pairs, "rows": pairs[0]["auto"]["rows"],
            "old_wall_seconds": statistics.median(p["old"]["wall_seconds"] for p in pairs),
            "old_end_to_end_seconds": statistics.median(p["old"]["end_to_end_seconds"] for p in pairs),
            "added_seconds": med("added_seconds"), "added_share_of_wall": med("added_share_of_wall"),
            "added_share_of_end_to_end": med("added_share_of_end_to_end"),
            "new_metrics_seconds": med("new_metrics_seconds"), "wall_ratio": med("wall_ratio"),
            "auto_metric_seconds": per_metric, "pass": med("added_share_of_wall") <= TARGET}


def added_cost_cold(repeats: int) -> dict:
    """(A'): the pairs of (A) as separate processes, every first-call cost included."""
    arms = {"old": [f"metrics.names=[{','.join(OLD_SET)}]"], "auto": []}
    pairs = []
    for i in range(repeats):
        order = ["old", "auto"] if i % 2 == 0 else ["auto", "old"]
        out = {}
        for arm in order:
            with tempfile.TemporaryDirectory(prefix="dynbench_metrics_cli_") as run_dir:
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "dynamics_bench", f"hydra.run.dir={run_dir}", *QUIET,
                                *arms[arm]], check=True, capture_output=True)
                command = time.perf_counter() - start
                summary = json.loads((Path(run_dir) / "summary.json").read_text())
            out[arm] = {"wall_seconds": summary["wall_seconds"], "command_seconds": command,
                        "metric_seconds": summary["metric_seconds"]}
        added = sum(out["auto"]["metric_seconds"].values()) - sum(out["old"]["metric_seconds"].values())
        pairs.append({"order": ",".join(order), **out, "added_seconds": added,
                      "added_share_of_wall": added / out["old"]["wall_seconds"],
                      "added_share_of_command": added / out["old"]["command_seconds"],
                      "wall_ratio": out["auto"]["wall_seconds"] / out["old"]["wall_seconds"]})
        print(f"  process pair {i}: added {1e3 * added:.1f} ms = {100 * pairs[-1]['added_share_of_wall']:.2f}% of "
              f"the wall, {100 * pairs[-1]['added_share_of_command']:.2f}% of the command", flush=True)
    med = lambda key: statistics.median(p[key] for p in pairs)  # noqa: E731
    return {"pairs": pairs, "added_seconds": med("added_seconds"), "added_share_of_wall": med("added_share_of_wall"),
            "added_share_of_command": med("added_share_of_command"), "wall_ratio": med("wall_ratio"),
            "old_command_seconds": statistics.median(p["old"]["command_seconds"] for p in pairs)}


def every_metric(repeats: int, *overrides: str) -> dict:
    """(B): every applicable metric at the default grid, heavy ones on every row."""
    runs = [run_once(*overrides, EVERY_METRIC) for _ in range(repeats)]
    names = list(runs[0]["metric_seconds"])
    seconds = {k: statistics.median(r["metric_seconds"][k] for r in runs) for k in names}
    wall = statistics.median(r["wall_seconds"] for r in runs)
    rows = runs[0]["rows"]
    return {"overrides": list(overrides), "repeats": repeats, "rows": rows, "wall_seconds": wall,
            "metrics": {k: {"seconds": s, "per_row_ms": 1e3 * s / rows, "share_of_wall": s / wall}
                        for k, s in seconds.items()}, "runs": runs}


def markdown(res: dict) -> str:
    a, m = res["added"], res["machine"]
    verdict = "PASS" if a["pass"] else "FAIL"
    lines = [
        "# What the metrics cost",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} CPUs; load average {m['load_average_start']} at the start, "
        f"{m['load_average_end']} at the end), torch {m['torch']} with {m['threads']} thread(s), Python "
        f"{m['python']}, {m['date']}, git {m['git_revision']}. Every run goes through `dynamics_bench.run` in one "
        "process; `metric_seconds` is summary.json's per-metric time.",
        "",
        "## (A) What `auto` adds to the default run",
        "",
        f"The default run (two-layer ReLU teacher-student, GD, 1000 steps, {a['rows']} rows on the 100-point log "
        f"grid, metrics.csv and TensorBoard) with `metrics.names=auto` against the same run with the set auto chose "
        f"before this issue ({', '.join(OLD_SET)}), interleaved {len(a['pairs'])} times. Added cost = Σ metric_seconds "
        "(auto) − Σ metric_seconds (old set), per pair; medians over pairs.",
        "",
        "| pair | order | old wall s | auto wall s | added metric ms | of the wall | of run() end to end | wall ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, p in enumerate(a["pairs"]):
        lines.append(f"| {i} | {p['order']} | {p['old']['wall_seconds']:.3f} | {p['auto']['wall_seconds']:.3f} | "
                     f"{1e3 * p['added_seconds']:.1f} | {100 * p['added_share_of_wall']:.2f}% | "
                     f"{100 * p['added_share_of_end_to_end']:.2f}% | {p['wall_ratio']:.3f} |")
    lines += [
        f"| **median** | | {a['old_wall_seconds']:.3f} | | **{1e3 * a['added_seconds']:.1f}** | "
        f"**{100 * a['added_share_of_wall']:.2f}%** | {100 * a['added_share_of_end_to_end']:.2f}% | "
        f"{a['wall_ratio']:.3f} |",
        "",
        f"Added by auto: **{100 * a['added_share_of_wall']:.2f}%** of the default run's wall time (target <= "
        f"{100 * TARGET:g}%): **{verdict}**; {100 * a['added_share_of_end_to_end']:.2f}% of run() end to end. "
        f"The wall-time ratio auto/old, {a['wall_ratio']:.3f}, also holds the sinks' cost of the "
        f"{len(NEW_IN_AUTO)} metrics' extra columns (CSV cells, TensorBoard scalars).",
        "",
        f"As separate processes ({len(res['cold']['pairs'])} pairs, every first-call cost included): auto adds "
        f"**{100 * res['cold']['added_share_of_wall']:.2f}%** of the wall ({1e3 * res['cold']['added_seconds']:.1f} "
        f"ms), wall ratio {res['cold']['wall_ratio']:.3f}; of the whole `python -m dynamics_bench` command "
        f"({res['cold']['old_command_seconds']:.2f} s, Python, torch and Hydra start-up included) that is "
        f"{100 * res['cold']['added_share_of_command']:.2f}%.",
        "",
        "Per metric in the auto run (median ms per run, µs per row):",
        "",
        "| metric | ms per run | µs per row | of the wall |",
        "|---|---:|---:|---:|",
    ]
    for name, s in a["auto_metric_seconds"].items():
        new = " (new)" if name in NEW_IN_AUTO else ""
        lines.append(f"| {name}{new} | {1e3 * s:.2f} | {1e6 * s / a['rows']:.0f} | "
                     f"{100 * s / a['old_wall_seconds']:.2f}% |")
    lines += ["", "## (B) Every metric at the default grid (heavy ones on every row)", ""]
    for label, b in res["every"].items():
        lines += [f"### {label}: `{' '.join(b['overrides'] + [EVERY_METRIC])}`", "",
                  f"{b['rows']} rows, wall {b['wall_seconds']:.2f} s (median of {b['repeats']}).", "",
                  "| metric | s per run | ms per row | of the wall |", "|---|---:|---:|---:|"]
        for name, v in b["metrics"].items():
            lines.append(f"| {name} | {v['seconds']:.4f} | {v['per_row_ms']:.3f} | {100 * v['share_of_wall']:.1f}% |")
        lines.append("")
    lines += [f"Reproduce: `python scripts/benchmark_metrics.py --repeats {res['repeats']} --process-repeats "
              f"{res['process_repeats']} --heavy-repeats {res['heavy_repeats']} --threads {res['threads_arg']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=11, help="interleaved pairs for (A) (default 11)")
    ap.add_argument("--process-repeats", type=int, default=6, help="pairs of processes for (A') (default 6)")
    ap.add_argument("--heavy-repeats", type=int, default=3, help="runs per problem for (B) (default 3)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default 0: torch's default, as a plain `dynamics-bench` run gets)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "metrics_cost",
                    help="output stem: <out>.json and <out>.md")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    info = machine()
    print(f"{info['threads']} thread(s), torch {info['torch']}, {info['cpu_model']}", flush=True)
    print("(A) auto against the old metric set on the default run", flush=True)
    added = added_cost(args.repeats)
    print("(A') the same as separate processes", flush=True)
    cold = added_cost_cold(args.process_repeats)
    every = {}
    for label, overrides in (("default run", []), ("ntk_lazy", ["experiment=ntk_lazy"])):
        print(f"(B) every metric on the {label}", flush=True)
        every[label] = every_metric(args.heavy_repeats, *overrides)
    info["load_average_end"] = load_average()
    res = {"what": __doc__.split("\n\n")[0], "target": TARGET, "old_set": OLD_SET, "repeats": args.repeats,
           "heavy_repeats": args.heavy_repeats, "process_repeats": args.process_repeats, "threads_arg": args.threads,
           "machine": info, "added": added, "cold": cold, "every": every}
    print(f"auto adds {100 * added['added_share_of_wall']:.2f}% of the default run's wall time "
          f"({1e3 * added['added_seconds']:.1f} ms of {added['old_wall_seconds']:.3f} s; target <= {100 * TARGET:g}%): "
          f"{'PASS' if added['pass'] else 'FAIL'}; wall ratio auto/old {added['wall_ratio']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
