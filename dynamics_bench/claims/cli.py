"""``dynamics-bench-claims [ID ...] [--fast] [--out DIR] [--list] [--device DEV]``: run the selected claims (all by
default; an ID selects every claim whose id starts with it in whole `_`-separated parts: p1_1 is P1.1, not P1.10;
p2 is paper (2)), print a row per claim as it finishes, and merge the rows into DIR/claims.md, claims.json,
figures/<id>.png and overview.png. --fast runs small sizes in seconds and never writes to ./results/claims/."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dynamics_bench.claims import PREDICTIONS, select
from dynamics_bench.claims.base import Context, Prediction
from dynamics_bench.claims.report import ERROR, PASS, error_rows, prediction_rows, write_cache, write_report

DEFAULT_OUT = Path("results") / "claims"


def _figures(prediction: Prediction, drawn: Any, out: Path) -> dict[str, str]:
    """Save the figure(s) `draw` returned as figures/<id>.png; {id: path relative to out}."""
    figures = drawn if isinstance(drawn, dict) else {prediction.id: drawn}
    if prediction.id not in figures:
        raise ValueError(f"{prediction.id}: draw returned no figure for the prediction itself")
    saved = {}
    for ident, fig in figures.items():
        path = out / "figures" / f"{ident}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        saved[ident] = str(path.relative_to(out))
    return saved


def run_prediction(prediction: Prediction, out: Path, fast: bool, device: str,
                   on_run: Any = None) -> list[dict[str, Any]]:
    """Measure, judge and draw one prediction; cache its rows (and data) under out/cache. A harness or judging
    error becomes an ERROR row with the exception, not a crash of the suite."""
    work = out / "runs" / prediction.id
    shutil.rmtree(work, ignore_errors=True)
    ctx = Context(work, fast=fast, device=device, on_run=on_run)
    command = "dynamics-bench-claims " + prediction.id + (" --fast" if fast else "") + (
        f" --device {device}" if device != "cpu" else "")
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git_revision": _revision(),
            "command": command, "sizes": "fast" if fast else f"full ({device})", "device": device,
            "setting": prediction.setting}
    started = time.perf_counter()
    data: dict[str, Any] = {}
    try:
        data = prediction.measure(ctx)
        checks = prediction.judge(data)
        figures = _figures(prediction, prediction.draw(data, checks), out)
        rows = prediction_rows(prediction, checks, {**meta, "figures": figures, "runs": ctx.commands,
                                                    "wall_seconds": time.perf_counter() - started})
    except Exception as exc:  # a broken claim is reported, and the others still run
        traceback.print_exc(file=sys.stderr)
        rows = error_rows(prediction, f"{type(exc).__name__}: {exc}",
                          {**meta, "runs": ctx.commands, "wall_seconds": time.perf_counter() - started})
    write_cache(out, prediction, rows, data)
    return rows


def _revision() -> str | None:
    from dynamics_bench.experiment import git_revision

    return git_revision()


def line(row: dict[str, Any]) -> str:
    measured = row["measured"]
    measured = f"{measured:.4g}" if isinstance(measured, float) else str(measured)
    indent = "  " if row["id"] != row["prediction"] else ""
    return (f"{row['verdict']:5s} {indent}{row['id']}: {row['quantity'] or 'error'} {measured} "
            f"(predicted {row['predicted'] or 'n/a'}, margin {row['margin']:+.3g}) {row['wall_seconds']:.1f}s"
            + (f" — {row['note']}" if row["verdict"] == ERROR else ""))


def list_claims() -> None:
    for p in PREDICTIONS.values():
        print(f"{p.id}  [{p.paper}] {p.statement}")
        for s in p.subclaims:
            print(f"  {s}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dynamics-bench-claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", metavar="ID", help="claims to run (default: all); see --list")
    parser.add_argument("--fast", action="store_true", help="small sizes, seconds per claim; not for results/")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output directory (default {DEFAULT_OUT}; with --fast a new temporary directory)")
    parser.add_argument("--list", action="store_true", help="list every claim and sub-claim id, and exit")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:<index>: runs the stated sizes "
                        "that a CPU cannot")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch's intra-op CPU threads (default 1: most claims train tiny nets, where more "
                             "threads only contend on a busy machine; 0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads {args.threads}: must be >= 0")
    if args.list:
        list_claims()
        return
    try:
        chosen = select(args.ids)
    except KeyError as exc:
        parser.error(f"no claim id starts with {exc.args[0]!r} (in whole _-separated parts); see --list")
    if args.device != "cpu":
        from dynamics_bench.config import ConfigError
        from dynamics_bench.experiment import resolve_device

        try:
            resolve_device(args.device)
        except ConfigError as exc:
            parser.error(f"--device {args.device}: {exc}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="dynamics_bench_claims_")) if args.fast else DEFAULT_OUT
    elif args.fast and out.resolve().is_relative_to(DEFAULT_OUT.resolve()):
        parser.error(f"--fast never writes to {DEFAULT_OUT} (it records full runs only): pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    print(f"dynamics-bench-claims: {len(chosen)} prediction(s){' (fast sizes)' if args.fast else ''} -> {out}",
          flush=True)
    rows: list[dict[str, Any]] = []
    with tqdm(chosen, unit="claim", leave=False, disable=not sys.stderr.isatty()) as bar:
        for prediction in bar:
            bar.set_description(prediction.id)
            done = run_prediction(prediction, out, args.fast, args.device,
                                  on_run=lambda name: bar.set_postfix_str(name, refresh=True))
            for row in done:
                tqdm.write(line(row))
            rows.extend(done)
            write_report(out, list(PREDICTIONS))
    heads = [r for r in rows if r["id"] == r["prediction"]]
    print(f"dynamics-bench-claims: {sum(r['verdict'] == PASS for r in heads)} of {len(heads)} predictions pass; "
          f"wrote {out / 'claims.md'}, {out / 'claims.json'}, {out / 'overview.png'}", flush=True)
    if any(r["verdict"] == ERROR for r in rows):
        sys.exit(1)

