"""The suite's outputs in an output directory: cache/<prediction>.json per prediction run (its rows and data), and
from all of them — so a subset run merges into what is there, by id — claims.md, claims.json and overview.png."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynamics_bench.claims.base import Check, Prediction

PASS, FAIL, ERROR = "PASS", "FAIL", "ERROR"
MARGIN_CLIP = 3.0  # the overview draws margins beyond ±3 at the edge, with their value


def jsonable(value: Any) -> Any:
    """Plain JSON: arrays and tensors as lists, numpy scalars as Python numbers, non-finite floats as strings."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def check_row(check: Check, prediction: Prediction) -> dict[str, Any]:
    return {"id": check.id, "prediction": prediction.id, "paper": prediction.paper, "statement": check.statement,
            "quantity": check.quantity, "measured": check.measured, "predicted": check.predicted,
            "sense": check.sense, "bound": check.bound, "tolerance": check.tolerance, "margin": check.margin,
            "verdict": PASS if check.passed else FAIL, "note": check.note, "numbers": check.numbers}


def prediction_rows(prediction: Prediction, checks: list[Check], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check; with sub-claims, a first row for the prediction: PASS only if every sub-claim passes,
    its margin the smallest of theirs."""
    rows = [check_row(c, prediction) for c in checks]
    if not (len(checks) == 1 and checks[0].id == prediction.id):
        passed = sum(c.passed for c in checks)
        rows.insert(0, {"id": prediction.id, "prediction": prediction.id, "paper": prediction.paper,
                        "statement": prediction.statement, "quantity": "sub-claims passing", "measured": passed,
                        "predicted": f"all {len(checks)}", "sense": "ge", "bound": len(checks), "tolerance": 1.0,
                        "margin": min(c.margin for c in checks),
                        "verdict": PASS if passed == len(checks) else FAIL, "note": "", "numbers": {}})
    for row in rows:
        row.update(meta, figure=meta["figures"].get(row["id"], meta["figures"][prediction.id]))
        row.pop("figures")
    return rows


def error_rows(prediction: Prediction, error: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    row = {"id": prediction.id, "prediction": prediction.id, "paper": prediction.paper,
           "statement": prediction.statement, "quantity": "", "measured": math.nan, "predicted": "", "sense": "ge",
           "bound": math.nan, "tolerance": 1.0, "margin": -math.inf, "verdict": ERROR, "note": error, "numbers": {},
           **{k: v for k, v in meta.items() if k != "figures"}, "figure": None}
    return [row]


def _write_text(path: Path, text: str) -> None:
    """Atomically: two suites finishing together never leave a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; results are for everyone to read
    os.replace(tmp, path)


def write_cache(out: Path, prediction: Prediction, rows: list[dict[str, Any]], data: dict[str, Any]) -> None:
    _write_text(out / "cache" / f"{prediction.id}.json",
                json.dumps(jsonable({"rows": rows, "data": data}), indent=1, allow_nan=False) + "\n")


def read_rows(out: Path, order: list[str]) -> list[dict[str, Any]]:
    """Every cached prediction's rows, predictions in registry order (unknown ones last, by name)."""
    cached = {p.stem: p for p in (out / "cache").glob("*.json")}
    names = [n for n in order if n in cached] + sorted(set(cached) - set(order))
    rows = []
    for name in names:
        rows.extend(json.loads(cached[name].read_text())["rows"])
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[dict[str, Any]]) -> str:
    predictions = [r for r in rows if r["id"] == r["prediction"]]
    passed = sum(r["verdict"] == PASS for r in predictions)
    lines = [
        "# Claims", "",
        "Written by `dynamics-bench-claims` (dynamics_bench/claims/; the settings are presets under "
        "conf/experiment/claims/, the predictions and tolerances docs/theory.md §8). Regenerate a row with its "
        "command; `dynamics-bench-claims --list` lists them all.", "",
        f"**{passed} of {len(predictions)} predictions pass** "
        f"({sum(r['verdict'] == PASS for r in rows)} of {len(rows)} rows, sub-claims included; "
        f"{sum(r['verdict'] == FAIL for r in rows)} FAIL, {sum(r['verdict'] == ERROR for r in rows)} ERROR).", "",
        "![every row's normalized margin](overview.png)", "",
        "| id | paper | statement | measured | predicted | verdict | margin | wall s | sizes | date | revision | "
        "command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ident = f"[`{r['id']}`]({r['figure']})" if r.get("figure") else f"`{r['id']}`"
        if r["id"] != r["prediction"]:
            ident = "↳ " + ident
        quantity = f"{r['quantity']}: " if r["quantity"] else ""
        lines.append("| " + " | ".join(_cell(c) for c in [
            ident, r["paper"], r["statement"], quantity + _fmt(r["measured"]), r["predicted"],
            f"**{r['verdict']}**", _fmt(r["margin"]), f"{r['wall_seconds']:.1f}", r["sizes"], r["date"],
            (r["git_revision"] or "")[:12], f"`{r['command']}`"]) + " |")
    lines += ["", "## Notes", "", "Substitutions, tolerances fixed before the run, and why a claim fails.", ""]
    lines += [f"- **{r['id']}**: {_cell(r['note'])}" for r in rows if r["note"]]
    lines += ["", "## Settings", "",
              "Each claim's setting and the harness runs it made (`$RUNS` is `runs/<id>/` beside this file, where the "
              "claim writes the init grids and data sets its runs read; rerunning the claim recreates them).", ""]
    for r in predictions:
        lines.append(f"- **{r['id']}** ({r['paper']}): {_cell(r['setting'])}")
        lines += [f"  - `{c}`" for c in r["runs"][:6]]
        if len(r["runs"]) > 6:
            lines.append(f"  - … {len(r['runs']) - 6} more runs (claims.json lists them)")
    return "\n".join(lines) + "\n"


def overview(rows: list[dict[str, Any]], path: Path) -> None:
    """Every row's normalized margin (≥ 0 passes) against the pass band, clipped at ±MARGIN_CLIP."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 1.2 + 0.19 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    margins = np.array([float(r["margin"]) for r in rows])  # "-inf" strings from claims.json read back
    shown = np.clip(np.nan_to_num(margins, nan=-MARGIN_CLIP, neginf=-MARGIN_CLIP, posinf=MARGIN_CLIP),
                    -MARGIN_CLIP, MARGIN_CLIP)
    colors = ["tab:green" if r["verdict"] == PASS else "tab:red" if r["verdict"] == FAIL else "tab:gray"
              for r in rows]
    ax.axvspan(0, MARGIN_CLIP * 1.1, color="tab:green", alpha=0.08, label="passes (margin ≥ 0)")
    ax.axvspan(-MARGIN_CLIP * 1.1, 0, color="tab:red", alpha=0.06, label="fails")
    ax.axvline(0, color="k", lw=0.8)
    sizes = np.array([40 if r["id"] == r["prediction"] else 18 for r in rows])
    counts = np.array([r["sense"] == "le" and r["bound"] == 0 for r in rows])  # "no violations": 0 passes at margin 0
    colors = np.array(colors)
    ax.scatter(shown[~counts], y[~counts], c=colors[~counts], s=sizes[~counts], zorder=3)
    ax.scatter(shown[counts], y[counts], c=colors[counts], s=sizes[counts], marker="D", zorder=3,
               label="count of violations (none: margin 0)")
    for yi, m, s in zip(y, margins, shown):
        if not abs(s) < MARGIN_CLIP:
            ax.annotate(f"{m:.3g}", (s, yi), xytext=(-4 if s > 0 else 4, 0), textcoords="offset points",
                        ha="right" if s > 0 else "left", va="center", fontsize=6)
    ax.set_yticks(y)
    ax.set_yticklabels([r["id"] if r["id"] == r["prediction"] else "  " + r["id"] for r in rows], fontsize=6)
    ax.set_xlim(-MARGIN_CLIP * 1.1, MARGIN_CLIP * 1.1)
    ax.set_ylim(-1, len(rows))
    ax.set_xlabel("normalized margin (measured − bound)/tolerance, signed so that ≥ 0 passes (clipped at ±3)")
    heads = [r for r in rows if r["id"] == r["prediction"]]
    ax.set_title(f"dynamics_bench claims: {sum(r['verdict'] == PASS for r in heads)} of {len(heads)} predictions "
                 f"pass ({sum(r['verdict'] == PASS for r in rows)} of {len(rows)} rows)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def write_report(out: Path, order: list[str]) -> list[dict[str, Any]]:
    """claims.md, claims.json and overview.png from every cached prediction under out; returns the rows."""
    rows = read_rows(out, order)
    _write_text(out / "claims.md", markdown(rows))
    _write_text(out / "claims.json", json.dumps(jsonable(rows), indent=1, allow_nan=False) + "\n")
    if rows:
        overview(rows, out / "overview.png")
    return rows
