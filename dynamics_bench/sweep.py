"""Sweep -> table: ``dynamics-bench-aggregate SWEEP_DIR`` writes SWEEP_DIR/sweep.csv, one row per run and
member (the run's Hydra overrides as columns, then its summary fields and the member's final metrics), and
prints it. ``--plot METRIC`` also draws METRIC against t for every run and member (SWEEP_DIR/METRIC.png)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

RUN_FIELDS = ["status", "steps", "t", "final_loss", "time_to_target", "invariant_drift_max", "wall_seconds",
              "steps_per_second", "iterations", "rejected_steps", "grad_evals", "device", "dtype"]
MEMBER_FIELDS = ["steps", "t", "rejected_steps", "grad_evals"]  # as member_<field>: a member's own count


def _run_dirs(path: Path) -> list[Path]:
    return sorted(p.parent for p in path.rglob("summary.json"))


def overrides(run_dir: Path) -> dict[str, Any]:
    """The run's command-line overrides (key -> value), from Hydra's .hydra/overrides.yaml if present."""
    file = run_dir / ".hydra" / "overrides.yaml"
    if not file.exists():
        return {}
    out = {}
    for item in yaml.safe_load(file.read_text()) or []:
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = yaml.safe_load(value) if value else None
    return out


def _rows(run_dir: Path, root: Path) -> list[dict[str, Any]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    base = {"run": str(run_dir.relative_to(root)) or ".", **overrides(run_dir)}
    base.update({f"run_{k}" if k in ("final_loss", "time_to_target", "status") else k: summary.get(k)
                 for k in RUN_FIELDS})
    if summary.get("status") == "failed":
        return [{**base, "reason": summary.get("reason")}]
    rows = []
    for m in summary["members"]:
        row = {**base, "member": m["member"], "member_seed": m["seed"], "status": m["status"],
               "stop_step": m["stop_step"], "final_loss": m["final_loss"], "time_to_target": m["time_to_target"]}
        row.update({f"member_{k}": m.get(k) for k in MEMBER_FIELDS})
        row.update({f"final_{k}": v for k, v in m["final"].items() if k != "loss"})
        rows.append(row)
    return rows


def aggregate(path: str | Path, write: bool = True) -> pd.DataFrame:
    """Read every run under `path` (a multirun directory or one run directory) into a DataFrame, one row
    per run and member; with write=True also save it as path/sweep.csv."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    rows = [row for run_dir in _run_dirs(root) for row in _rows(run_dir, root)]
    table = pd.DataFrame(rows)
    if write:
        table.to_csv(root / "sweep.csv", index=False)
    return table


def load_metrics(path: str | Path) -> pd.DataFrame:
    """Every run's metrics.csv under `path`, concatenated, with the run and its overrides as columns."""
    root = Path(path)
    frames = []
    for run_dir in _run_dirs(root):
        if (run_dir / "metrics.csv").exists():
            frame = pd.read_csv(run_dir / "metrics.csv")
            for key, value in {"run": str(run_dir.relative_to(root)) or ".", **overrides(run_dir)}.items():
                frame[key] = str(value) if isinstance(value, (list, dict)) else value
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot(path: str | Path, metric: str) -> Path:
    """METRIC against t (log-log where positive) for every run and member; saved as path/METRIC.png."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    root = Path(path)
    data = load_metrics(root)
    if metric not in data:
        raise KeyError(f"no column {metric!r} in the runs' metrics.csv; columns: {', '.join(data.columns)}")
    fixed = {"run", "step", "t", "member", *pd.read_csv(next(root.rglob("metrics.csv")), nrows=0).columns}
    varying = [c for c in data.columns if c not in fixed and data[c].nunique(dropna=False) > 1]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for (run, member), group in data.groupby(["run", "member"]):
        label = ", ".join(f"{k}={group[k].iloc[0]}" for k in varying) or run
        ax.plot(group["t"], group[metric], label=f"{label} [member {member}]" if data["member"].max() else label)
    positive = (data["t"] > 0).any() and (data[metric].dropna() > 0).all()
    if positive:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel(metric)
    if data["run"].nunique() * (data["member"].max() + 1) <= 12:
        ax.legend(fontsize=7)
    out = root / f"{metric.replace('/', '_')}.png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dynamics-bench-aggregate", description=__doc__)
    parser.add_argument("sweep_dir", help="a multirun directory or one run directory")
    parser.add_argument("--plot", action="append", default=[], metavar="METRIC",
                        help="also plot this metric against t (repeatable)")
    args = parser.parse_args(argv)
    root = Path(args.sweep_dir)
    if not root.is_dir() or not _run_dirs(root):
        print(f"dynamics-bench-aggregate: no runs (summary.json) under {root}", file=sys.stderr)
        sys.exit(2)
    table = aggregate(root)
    with pd.option_context("display.max_rows", 200, "display.max_columns", 30, "display.width", 200):
        print(table.to_string(index=False))
    print(f"\nwrote {root / 'sweep.csv'} ({len(table)} rows)")
    for metric in args.plot:
        try:
            print(f"wrote {plot(root, metric)}")
        except KeyError as exc:
            print(f"dynamics-bench-aggregate: {exc.args[0]}", file=sys.stderr)
            sys.exit(2)
