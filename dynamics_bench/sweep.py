"""Sweep -> tables and figures: ``dynamics-bench-aggregate SWEEP_DIR`` writes SWEEP_DIR/sweep.csv, one row per run
and member (the run's Hydra overrides as columns, then its summary fields and the member's final metrics), and
prints its override columns, status, final loss and time to target. ``--plot METRIC`` draws METRIC against t (or
step) for every run and member, one colour per override combination, as SWEEP_DIR/METRIC.png. ``--fit METRIC``
fits the late-time power-law slope and exponential rate of METRIC against t per run and member (and, with
``--reach LEVEL``, the time METRIC reaches LEVEL), prints them and writes SWEEP_DIR/fit_METRIC.csv.

A run with ``ensemble.vary`` is a sweep inside one run: its members' varied values are override columns of their
own, named as a multirun's (``trainer.lr``) and placed where ensemble.vary was given; a row's run fields are its
combination's (summary.json's ``combinations``) and its ``member`` is its index within the combination
(``run_member``: its index in the batch, metrics.csv's member), so a varied run and the multirun it replaces read
alike.

Every job of a sweep is in the table, whatever became of it (its ``status``): ``failed`` (summary.json says so, with
the reason), ``interrupted`` (a signal stopped it: summary.json says how to resume), ``killed`` (metrics.csv or
Hydra's record but no summary.json: killed, or still running; its rows are metrics.csv's last per member) and
``missing`` (the sweep's multirun.yaml asks for it, by Hydra's basic sweeper's product of its overrides, and no run
directory has its overrides). The command line prints a report of them under the table."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from dynamics_bench.status import FAILED, INTERRUPTED, read_summary
from dynamics_bench.theory.fits import exponential, fit_window, power_law, time_to_reach

RUN_FIELDS = ["status", "steps", "t", "final_loss", "time_to_target", "invariant_drift_max", "wall_seconds",
              "steps_per_second", "iterations", "rejected_steps", "grad_evals", "device", "dtype"]
# the run's outcome, under ensemble.vary its combination's (as that multirun job states it); the other run fields
# are the process's (its seconds, iterations, batched gradient evaluations), shared by every combination in it
COMBINATION_FIELDS = {"status", "steps", "t", "final_loss", "time_to_target", "invariant_drift_max", "rejected_steps"}
MEMBER_FIELDS = ["steps", "t", "rejected_steps", "grad_evals"]  # as member_<field>: a member's own count
COUNTS = {"steps", "iterations", "rejected_steps", "grad_evals", "member", "run_member", "member_seed", "stop_step",
          *(f"member_{k}" for k in MEMBER_FIELDS if k != "t")}  # Int64 even where every run lacks them
CONSOLE_FIELDS = ["member", "status", "final_loss", "time_to_target"]  # after run and the override columns
CURVE_COLUMNS = {"step", "t", "member"}  # metrics.csv columns that are not metrics
SCALES = {"loglog": ("log", "log"), "semilogy": ("linear", "log"), "linear": ("linear", "linear")}
POOLED = {"seed"}  # runs differing only in these overrides are members of one combination
CURVE = ["run", "member"]  # what names a curve (a member of a run) in the tables below
VARY = "ensemble.vary"  # an override whose values become each member's own columns
UNMATCHED = {"resume"}  # overrides that do not tell jobs apart (a rerun with resume=auto is the same sweep)
FINISHED, KILLED, MISSING = "finished", "killed", "missing"  # besides status.FAILED and status.INTERRUPTED
STATES = [FINISHED, FAILED, INTERRUPTED, KILLED, MISSING]  # a job's state, in the report's order
UNFINISHED = {FAILED, INTERRUPTED}  # summary.json statuses that are no outcome (converged, max_steps, ...)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # whose jobs multirun.yaml spells out
MEMBER_WIDTH, MEDIAN_WIDTH, SINGLE_WIDTH = 0.7, 2.4, 1.6
# Hydra's record files are read by libyaml's parser where PyYAML has it (10x faster on 1,000 runs); an override's
# value by PyYAML's own, as before: libyaml refuses Hydra's unquoted flow mappings ({trainer.lr:[0.1,0.2]})
FILE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _natural(path: Path) -> list[Any]:
    # Hydra numbers jobs 0, 1, …, 10: order them as numbers, not as text (0, 1, 10, 2)
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _is_run(dirnames: list[str], filenames: list[str]) -> bool:
    # what a job leaves, earliest last: Hydra's record before the run starts, metrics.csv as it goes, summary.json
    return "summary.json" in filenames or "metrics.csv" in filenames or ".hydra" in dirnames


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """The run directories under root (root itself if it is one; none inside another run's), and the sweep
    directories (holding Hydra's multirun.yaml)."""
    runs, sweeps = [], []
    for folder, dirnames, filenames in os.walk(root):
        if "multirun.yaml" in filenames:
            sweeps.append(Path(folder))
        if _is_run(dirnames, filenames):
            runs.append(Path(folder))
            dirnames.clear()  # tb/, params/ and a run's own records hold no other run
    return sorted(runs, key=_natural), sorted(sweeps, key=_natural)


def _run_dirs(path: Path) -> list[Path]:
    return _walk(path)[0]


def _name(run_dir: Path, root: Path) -> str:
    return str(run_dir.relative_to(root)) or "."


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=FILE_LOADER)


def _items(run_dir: Path) -> tuple[str, ...]:
    """Hydra's .hydra/overrides.yaml as given on the command line (resume left out), if present."""
    file = run_dir / ".hydra" / "overrides.yaml"
    return _matched(_yaml(file.read_text()) or []) if file.exists() else ()


def _key(item: str) -> str:
    return item.partition("=")[0].lstrip("+~")


def _matched(items: list[str]) -> tuple[str, ...]:
    return tuple(item for item in items if _key(item) not in UNMATCHED)


def _parsed(items: tuple[str, ...]) -> dict[str, Any]:
    """Overrides as key -> value (YAML-typed), in command-line order."""
    out = {}
    for item in items:
        _, _, value = item.partition("=")
        out[_key(item)] = _value(value) if value else None
    return out


@lru_cache(maxsize=4096)
def _value(text: str) -> Any:
    """An override's value as YAML reads it (a sweep's jobs repeat most values: each is parsed once)."""
    return yaml.safe_load(text)


@dataclass
class Run:
    """A run directory as the tables read it, each file once: summary.json (None: the run wrote none), Hydra's
    overrides as given (resume left out: it does not tell jobs apart), and the config (summary.json's, else
    Hydra's .hydra/config.yaml: a run killed before its summary)."""

    dir: Path
    summary: dict[str, Any] | None
    items: tuple[str, ...]
    config: dict[str, Any]

    @classmethod
    def read(cls, run_dir: Path) -> Run:
        summary = read_summary(run_dir)  # None: killed, or still running
        config, file = (summary or {}).get("config"), run_dir / ".hydra" / "config.yaml"
        if config is None and file.exists():
            config = _yaml(file.read_text())
        return cls(run_dir, summary, _items(run_dir), config or {})

    @cached_property
    def given(self) -> dict[str, Any]:
        """The overrides as key -> value, in command-line order."""
        return _parsed(self.items)

    @property
    def overrides(self) -> dict[str, Any]:
        """The command-line overrides but ensemble.vary, whose values are the members' own (see varied)."""
        return {k: v for k, v in self.given.items() if k != VARY}

    @property
    def varied(self) -> list[str]:
        """The keys the run's ensemble.vary varies (columns of its metrics.csv and members)."""
        return list((self.config.get("ensemble") or {}).get("vary") or {})

    @property
    def keys(self) -> list[str]:
        """The run's override columns in command-line order, ensemble.vary's place taken by the keys it varies
        (at the end for a run Hydra did not record): where the multirun it replaces has its override columns."""
        keys = [k for key in self.given for k in (self.varied if key == VARY else [key])]
        return list(dict.fromkeys(keys + self.varied))

    @property
    def size(self) -> int:
        size = (self.config.get("ensemble") or {}).get("size")
        return size if isinstance(size, int) and size >= 1 else 1

    @property
    def state(self) -> str:
        """finished (an outcome in summary.json), failed, interrupted, or killed (no summary.json)."""
        if self.summary is None:
            return KILLED
        status = self.summary.get("status")
        return status if status in UNFINISHED else FINISHED


def _runs(root: Path) -> list[Run]:
    return [Run.read(run_dir) for run_dir in _run_dirs(root)]


def _read_metrics(run_dir: Path) -> pd.DataFrame | None:
    """The run's metrics.csv (None if it has none, or not even its header: killed at once)."""
    try:
        return pd.read_csv(run_dir / "metrics.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def _header(run_dir: Path) -> list[str]:
    """metrics.csv's column names (none if it has no header yet)."""
    try:
        with open(run_dir / "metrics.csv", newline="") as file:
            return next(csv.reader(file), [])
    except FileNotFoundError:
        return []


def _cell(value: Any) -> Any:
    return str(value) if isinstance(value, (list, dict)) else value


def _number(value: Any) -> Any:
    # summary.json stores non-finite floats as the strings "inf", "-inf", "nan" (JSON has no such numbers)
    if isinstance(value, str) and value.lower() in ("inf", "-inf", "+inf", "nan", "infinity", "-infinity"):
        return float(value)
    return value


def combination_of(summary: dict[str, Any]) -> dict[int, tuple[int, dict[str, Any]]]:
    """Member index (metrics.csv's member) -> its index within its combination and the combination's entry in
    summary.json (a summary written before combinations existed: the run's own fields, one combination)."""
    members = [m["member"] for m in summary.get("members", [])]  # none in a failed run's
    entries = summary.get("combinations") or [{**summary, "members": members}]
    return {e: (k, entry) for entry in entries for k, e in enumerate(entry["members"])}


def _run_fields(summary: dict[str, Any], combination: dict[str, Any]) -> dict[str, Any]:
    """RUN_FIELDS as sweep.csv names them (run_status, ...): the outcome the combination's, the rest the run's."""
    return {f"run_{k}" if k in ("final_loss", "time_to_target", "status") else k:
            _number((combination if k in COMBINATION_FIELDS else summary).get(k)) for k in RUN_FIELDS}


@dataclass(frozen=True)
class Job:
    """A job of a sweep (or a run): its run (None where it has no directory: missing), what became of it, and
    its overrides as on the command line."""

    run: Run | None
    state: str
    given: tuple[str, ...]

    def name(self, root: Path) -> str:
        return "-" if self.run is None else _name(self.run.dir, root)


def expected_jobs(sweep_dir: Path) -> list[tuple[str, ...]] | None:
    """The jobs the sweep directory's multirun.yaml asks for (its last invocation's), each its overrides: Hydra's
    basic sweeper's product of hydra.sweeper.params and the task overrides, parsed by Hydra's own parser. None
    where another sweeper ran it or the overrides need the config to expand (glob)."""
    hydra_cfg = (yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}).get("hydra") or {}
    sweeper = hydra_cfg.get("sweeper") or {}
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    arguments += (hydra_cfg.get("overrides") or {}).get("task") or []
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        return [_matched(job) for job in BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]]
    except Exception:  # noqa: BLE001 - whatever Hydra cannot expand without the config: no expectation
        return None


def _signature(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The overrides as sorted (key, value) pairs, values compared as YAML reads them (False and false alike)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in _parsed(items).items()))


def _absent(expected: list[tuple[str, ...]], present: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The expected jobs no present job matches by its overrides (in any order; each present job matches once)."""
    left = Counter(map(_signature, present))
    out = []
    for items in expected:
        key = _signature(items)
        if left[key]:
            left[key] -= 1
        else:
            out.append(items)
    return out


def jobs(path: str | Path) -> list[Job]:
    """Every run under `path` with its state, then every job a sweep directory's multirun.yaml asks for that no
    run directory under it matches (missing)."""
    root = Path(path)
    run_dirs, sweeps = _walk(root)
    found = [Job(run, run.state, run.items) for run in map(Run.read, run_dirs)]
    missing = []
    for sweep in sweeps:
        present = [job.given for job in found if sweep in job.run.dir.parents]
        missing += [Job(None, MISSING, items) for items in _absent(expected_jobs(sweep) or [], present)]
    return found + missing


def _failed_rows(job: Job, root: Path) -> list[dict[str, Any]]:
    summary = job.run.summary
    return [{"run": job.name(root), **job.run.overrides, **_run_fields(summary, summary), "status": FAILED,
             "reason": summary.get("reason")}]


def _last_rows(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.csv's last row of each member, in member order."""
    frame = _read_metrics(run_dir)
    return [] if frame is None or frame.empty else frame.groupby("member").tail(1).sort_values("member").to_dict(
        "records")


def _partial_rows(job: Job, root: Path) -> list[dict[str, Any]]:
    """A run stopped before its summary (killed, interrupted): a row per member, from metrics.csv's last row of
    it (member_steps, member_t, final_loss, final_<metric>); one row with its overrides if it logged nothing."""
    run = job.run
    summary, given, varied = run.summary or {}, run.overrides, set(run.varied)
    base = {"run": job.name(root), **{k: given.get(k) for k in run.keys}, **_run_fields(summary, summary),
            "run_status": job.state}
    size, rows = run.size, []
    for last in _last_rows(run.dir):
        metrics = {k: v for k, v in last.items() if k not in CURVE_COLUMNS | varied}
        loss = metrics.pop("loss", None)
        rows.append({**base, **{k: _cell(last[k]) for k in varied if k in last}, "member": last["member"] % size,
                     "run_member": last["member"], "status": job.state, "final_loss": loss,
                     "member_steps": last["step"], "member_t": last["t"],
                     **{f"final_{k}": v for k, v in metrics.items()}})
    return rows or [{**base, "status": job.state}]


def _missing_rows(job: Job, root: Path) -> list[dict[str, Any]]:
    given = {k: _cell(v) for k, v in _parsed(job.given).items() if k != VARY}
    return [{"run": None, **given, "run_status": MISSING, "status": MISSING}]


def _finished_rows(job: Job, root: Path) -> list[dict[str, Any]]:
    summary, given = job.run.summary, job.run.overrides
    rows, keys, varied, member_of = [], job.run.keys, set(job.run.varied), combination_of(summary)
    for m in summary["members"]:
        m = {k: _number(v) for k, v in m.items()}
        within, combination = member_of[m["member"]]
        row = {"run": job.name(root), **{k: _cell(m[k]) if k in varied else given[k] for k in keys},
               **_run_fields(summary, combination), "member": within, "run_member": m["member"],
               "member_seed": m["seed"], "status": m["status"],
               "stop_step": m["stop_step"], "final_loss": m["final_loss"], "time_to_target": m["time_to_target"]}
        row.update({f"member_{k}": m.get(k) for k in MEMBER_FIELDS})
        row.update({f"final_{k}": _number(v) for k, v in m["final"].items() if k != "loss"})
        rows.append(row)
    return rows


ROWS: dict[str, Callable[[Job, Path], list[dict[str, Any]]]] = {  # a job's sweep.csv rows, by its state
    FINISHED: _finished_rows, FAILED: _failed_rows, INTERRUPTED: _partial_rows, KILLED: _partial_rows,
    MISSING: _missing_rows}


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _column(values: list[Any], integer: bool = False) -> pd.Series:
    """A column whose integers stay integers (nullable Int64 where some are missing; integer=True: also where
    all are) and whose missing values are NaN (pd.NA in an Int64 column) whatever the other values are."""
    present = [v for v in values if not _missing(v)]
    if not present and not integer:
        return pd.Series([math.nan] * len(values), dtype=float)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in present):
        return pd.Series([pd.NA if _missing(v) else int(v) for v in values], dtype="Int64")
    return pd.Series([math.nan if _missing(v) else v for v in values])


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame, columns in order of first appearance, each built by _column."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pd.DataFrame({c: _column([row.get(c) for row in rows], c in COUNTS) for c in columns},
                        index=range(len(rows)))


def aggregate(path: str | Path, write: bool = True) -> pd.DataFrame:
    """Read every run under `path` (a multirun directory or one run directory) into a DataFrame, one row
    per run and member (failed, killed and interrupted runs too), then a row per missing job (see :func:`jobs`);
    with write=True also save it as path/sweep.csv (missing values empty)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    return _table(root, jobs(root), write)


def _table(root: Path, found: list[Job], write: bool) -> pd.DataFrame:
    table = _frame([row for job in found for row in ROWS[job.state](job, root)])
    if write:
        table.to_csv(root / "sweep.csv", index=False)
    return table


def _run_table(root: Path, runs: list[Run]) -> pd.DataFrame:
    """One row per run: its name (column run) and its overrides (lists and dicts as text)."""
    return _frame([{"run": _name(run.dir, root), **{k: _cell(v) for k, v in run.overrides.items()}} for run in runs])


def load_metrics(path: str | Path) -> pd.DataFrame:
    """Every run's metrics.csv under `path` (a killed or interrupted run's rows too), concatenated, with the run
    and its overrides as columns (a member's varied values are its metrics.csv's own)."""
    root = Path(path)
    frames = []
    for run in _runs(root):
        if (frame := _read_metrics(run.dir)) is not None:
            for key, value in {"run": _name(run.dir, root), **run.overrides}.items():
                if key not in frame:  # a varied value is the member's, not the run's
                    frame[key] = _cell(value)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _key_order(runs: list[Run]) -> list[str]:
    """Every override column of the runs, ensemble.vary's keys included, in order (Run.keys)."""
    return list(dict.fromkeys(k for run in runs for k in run.keys))


def _within(root: Path, runs: list[Run]) -> dict[str, Callable[[int], int]]:
    """run -> (metrics.csv's member -> the member's index within its combination: sweep.csv's member); a run
    without a summary naming its members: the member's index modulo the ensemble size."""
    def within(run: Run) -> Callable[[int], int]:
        index = {e: k for e, (k, _) in combination_of(run.summary or {}).items()}
        return lambda e: index.get(e, e % run.size)
    return {_name(run.dir, root): within(run) for run in runs}


def _all_varied(runs: list[Run]) -> list[str]:
    """Every key some run varies inside itself (ensemble.vary), in order of first appearance."""
    return list(dict.fromkeys(k for run in runs for k in run.varied))


def metric_names(path: str | Path) -> list[str]:
    """The metrics any run under `path` recorded (metrics.csv columns other than step, t, member and the
    varied values)."""
    runs = _runs(Path(path))
    names = dict.fromkeys(name for run in runs for name in _header(run.dir))
    settings = CURVE_COLUMNS | set(_all_varied(runs))
    return [n for n in names if n not in settings]


def _curves(root: Path, data: pd.DataFrame) -> pd.DataFrame:
    """One row per curve (run and member) in data: the run's overrides and the member's varied values (data's
    column: the member's own, or its run's override), in sweep.csv's order."""
    runs = _runs(root)
    varied = [k for k in _all_varied(runs) if k in data]
    table = _run_table(root, runs)
    table = table.drop(columns=[k for k in varied if k in table])
    curves = data[CURVE + varied].drop_duplicates(CURVE).merge(table, on="run", how="left")
    return curves[CURVE + [k for k in _key_order(runs) if k in curves]]


def _check(path: Path, metrics: list[str]) -> None:
    """Raise KeyError naming every metric in `metrics` no run recorded, and the ones they did."""
    available = metric_names(path)
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise KeyError(f"no metric{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} in the runs' "
                       f"metrics.csv; available: {', '.join(available) or 'none'}")


def _varying(curves: pd.DataFrame) -> list[str]:
    """The override columns whose value is not the same in every curve (missing counts as a value)."""
    return [c for c in curves.columns if c not in CURVE and curves[c].astype(str).nunique() > 1]


def _sort_key(column: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")  # widths 8, 16, 128 in numeric order
    return numbers if numbers.notna().all() else column.astype(str)


def default_scale(values: pd.Series) -> str:
    """loglog for a metric that is never negative and positive in at least half its finite values (a power law
    that starts at 0 included), linear otherwise."""
    finite = values[np.isfinite(values.to_numpy(dtype=float))]
    return "loglog" if len(finite) and (finite >= 0).all() and (finite > 0).mean() >= 0.5 else "linear"


def _points(mask: pd.Series) -> str:
    n = int(mask.sum())
    return f"{n} point{'s' * (n != 1)}"


def _drawable(curves: pd.DataFrame, metric: str, x: str, scale: str) -> tuple[pd.DataFrame, str]:
    """The points that can be drawn on these axes, and a note saying which were left out and why."""
    x_log, y_log = (axis == "log" for axis in SCALES[scale])
    notes, keep = [], np.isfinite(curves[metric].to_numpy(dtype=float))
    if (~keep & curves[metric].notna()).any():
        notes.append(f"{_points(~keep & curves[metric].notna())} with non-finite {metric}")
    if x_log and ((bad := keep & (curves[x] <= 0)).any()):
        zero = (curves.loc[bad, x] == 0).all()
        notes.append(f"{_points(bad)} at {x} = 0" if zero else f"{_points(bad)} with {x} ≤ 0")
        keep &= ~bad
    if y_log and ((bad := keep & (curves[metric] <= 0)).any()):
        notes.append(f"{_points(bad)} with {metric} ≤ 0")
        keep &= ~bad
    note = ("left out (log axes): " if x_log or y_log else "left out: ") + "; ".join(notes) if notes else ""
    return curves[keep], note


def _median(lines: list[pd.Series]) -> pd.Series:
    """The pointwise median of curves (indexed by x), each interpolated onto the others' x inside its own
    range: members of an adaptive run need not share their x."""
    table = pd.concat(lines, axis=1).sort_index()
    return table.interpolate(method="index", limit_area="inside").median(axis=1)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, n)]


def _label(values: pd.Series) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _curve_name(curves: pd.DataFrame, varying: list[str], run: str, member: int) -> str:
    """'member i', after what tells the runs of one combination apart: the pooled overrides, else the run."""
    pooled = [k for k in varying if k in POOLED]
    if pooled:
        return f"{_label(curves.set_index(CURVE).loc[(run, member), pooled])}, member {member}"
    return f"{run}, member {member}" if curves["run"].nunique() > 1 else f"member {member}"


def _title(root: Path, metric: str, curves: pd.DataFrame, varying: list[str]) -> str:
    sweep = "/".join(root.resolve().parts[-2:])
    fixed = ", ".join(f"{k}={curves[k].iloc[0]}" for k in curves.columns  # column by column: Int64 stays integer
                      if k not in (*CURVE, *varying) and not _missing(curves[k].iloc[0]))
    fixed = fixed if len(fixed) <= 100 else fixed[:99] + "…"
    return f"{metric}: {sweep}" + (f"\n{fixed}" if fixed else "")


def figure(path: str | Path, metric: str, x: str = "t", scale: str | None = None,
           data: pd.DataFrame | None = None):
    """METRIC against x ('t' or 'step') for every run and member under `path` as a matplotlib Figure: one colour
    per combination of the varying overrides (runs differing only in seed pooled; a member's varied values are
    overrides of its own), its members thin and their
    median bold, a legend by combination, the sweep in the title. scale is loglog, semilogy or linear (None:
    default_scale); points a log axis cannot show are left out and counted in a note under the axes. A single
    combination's curves get a colour each, labelled 'member i'. data: load_metrics(path) if already loaded."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    from matplotlib.lines import Line2D

    root = Path(path)
    _check(root, [metric])
    data = load_metrics(root) if data is None else data
    runs = _curves(root, data)  # one row per curve: run, member, its overrides
    varying = _varying(runs)
    keys = [k for k in varying if k not in POOLED]
    curves = data.loc[data[metric].notna(), ["run", "member", x, metric]]
    scale = scale or default_scale(curves[metric])
    curves, note = _drawable(curves, metric, x, scale)
    runs = runs.sort_values(keys, key=_sort_key, kind="stable") if keys else runs
    by_run = not varying  # no recorded overrides tell the runs apart (runs made through the Python API): one each
    combo_of = {(row["run"], row["member"]): row["run"] if by_run else ", ".join(map(str, row[keys]))  # keys:
                for _, row in runs.iterrows()}  # the legend's title
    combos = list(dict.fromkeys(combo_of.values()))
    single = len(combos) == 1

    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    colours = dict(zip(combos, _colours(len(combos))))
    members: dict[str, list[pd.Series]] = {c: [] for c in combos}
    for (run, member), group in curves.groupby(["run", "member"], sort=False):
        line = group.drop_duplicates(x, keep="last").set_index(x)[metric]
        members[combo_of[(run, member)]].append(line.rename(_curve_name(runs, varying, run, member)))
    if single:
        lines = members[combos[0]]
        for line, colour in zip(lines, _colours(len(lines))):
            ax.plot(line.index, line.to_numpy(), color=colour, lw=SINGLE_WIDTH * 0.8, label=line.name)
        if len(lines) > 1:
            median = _median(lines)
            ax.plot(median.index, median.to_numpy(), color="black", lw=MEDIAN_WIDTH, label="median")
    else:
        for combo, lines in members.items():
            many = len(lines) > 1
            for line in lines if many else []:
                ax.plot(line.index, line.to_numpy(), color=colours[combo], lw=MEMBER_WIDTH, alpha=0.6)
            median = _median(lines) if lines else pd.Series(dtype=float)
            ax.plot(median.index, median.to_numpy(), color=colours[combo], lw=MEDIAN_WIDTH if many else SINGLE_WIDTH,
                    label=combo)
    handles, labels = ax.get_legend_handles_labels()
    if not single and any(len(lines) > 1 for lines in members.values()):
        handles += [Line2D([], [], color="grey", lw=MEMBER_WIDTH), Line2D([], [], color="grey", lw=MEDIAN_WIDTH)]
        labels += ["thin: members", "bold: their median"]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), ncol=1 + len(labels) // 25,
              title=None if single else "run" if by_run else ", ".join(keys), title_fontsize=7)
    ax.set_xscale(SCALES[scale][0])
    ax.set_yscale(SCALES[scale][1])
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(_title(root, metric, runs, varying), fontsize=9)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="dimgrey")
    return fig


def plot(path: str | Path, metric: str, x: str = "t", scale: str | None = None,
         data: pd.DataFrame | None = None) -> Path:
    """figure(path, metric, x, scale) saved as path/METRIC.png ('/' in METRIC as '_'); returns its path."""
    fig = figure(path, metric, x, scale, data)
    out = Path(path) / f"{metric.replace('/', '_')}.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


def reach_time(t: np.ndarray, y: np.ndarray, level: float) -> float:
    """The first t where y reaches level in the direction the curve moves (down if its last finite value is
    below its first, up otherwise); NaN if it never does."""
    finite = y[np.isfinite(y)]
    rising = len(finite) > 1 and finite[-1] > finite[0]
    return time_to_reach(t, y, level, rising=rising)


def _fit_row(t: np.ndarray, y: np.ndarray, window: float, reach: float | None) -> dict[str, Any]:
    used_t, _ = fit_window(t, y, window)
    slope, rate = power_law(t, y, window), exponential(t, y, window)
    row = {"points": slope.points, "t_from": used_t.min() if len(used_t) else math.nan,
           "t_to": used_t.max() if len(used_t) else math.nan,
           "slope": slope.slope, "slope_r2": slope.r2, "rate": rate.slope, "rate_r2": rate.r2}
    if reach is not None:
        row[f"t_reach_{reach:g}"] = reach_time(t, y, reach)
    return row


def fit(path: str | Path, metric: str, window: float = 1.0, reach: float | None = None, write: bool = True,
        data: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per run and member under `path` (member and run_member as in sweep.csv): the power-law slope of METRIC
    against t (log METRIC on log t) and its exponential rate (log METRIC on t, METRIC ≈ C·e^{rate·t}), each with
    R², over the points with t in the last `window` decades of t (and METRIC > 0); with `reach`, the first t METRIC
    reaches that level (column t_reach_<level>). With write=True also saved as path/fit_METRIC.csv. data:
    load_metrics(path) if loaded."""
    root = Path(path)
    _check(root, [metric])
    data = load_metrics(root) if data is None else data
    curves, within = _curves(root, data).set_index(CURVE), _within(root, _runs(root))
    rows = []
    for (run, member), group in data.groupby(["run", "member"], sort=False):
        group = group.sort_values("t", kind="stable")
        t, y = group["t"].to_numpy(dtype=float), group[metric].to_numpy(dtype=float)
        rows.append({"run": run, **curves.loc[(run, member)].to_dict(),
                     "member": within[run](int(member)),
                     "run_member": int(member), **_fit_row(t, y, window, reach)})
    table = _frame(rows)
    if write:
        table.to_csv(root / f"fit_{metric.replace('/', '_')}.csv", index=False)
    return table


def _text(value: Any) -> str:
    if _missing(value):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def show(table: pd.DataFrame) -> str:
    """The table as aligned text: floats to 4 significant digits, integers as integers, missing as '-'."""
    return table.map(_text).to_string(index=False)


def _console(table: pd.DataFrame, found: list[Job]) -> pd.DataFrame:
    """The columns of sweep.csv the console shows: run, overrides, member, status, final loss, time to target
    (and why a run failed, if one did)."""
    keys = dict.fromkeys(k for job in found for k in (_parsed(job.given) if job.run is None else job.run.keys))
    extra = ["reason"] if "reason" in table and table["reason"].notna().any() else []
    return table[[c for c in ["run", *keys, *CONSOLE_FIELDS, *extra] if c in table]]


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamics-bench-aggregate", description=__doc__)
    parser.add_argument("sweep_dir", help="a multirun directory or one run directory")
    parser.add_argument("--plot", action="append", default=[], metavar="METRIC",
                        help="plot this metric against --x for every run and member (repeatable)")
    parser.add_argument("--x", choices=["t", "step"], default="t", help="the x axis of --plot (default t)")
    parser.add_argument("--scale", choices=list(SCALES), default=None,
                        help="axis scales of --plot (default: loglog for a non-negative metric, else linear)")
    parser.add_argument("--fit", action="append", default=[], metavar="METRIC",
                        help="fit the late-time power-law slope and exponential rate of METRIC against t "
                             "(repeatable); writes fit_METRIC.csv")
    parser.add_argument("--window", type=_positive, default=1.0, metavar="DECADES",
                        help="--fit uses the last DECADES decades of t (default 1)")
    parser.add_argument("--reach", type=float, default=None, metavar="LEVEL",
                        help="--fit also reports the first t each curve reaches LEVEL")
    return parser


def _failed_note(job: Job) -> str:
    return str(job.run.summary.get("reason"))


def _interrupted_note(job: Job) -> str:
    summary = job.run.summary
    return f"signal {summary.get('signal')}; resume: {summary.get('resume')}"


def _killed_note(job: Job) -> str:
    last = _last_rows(job.run.dir)
    logged = (f"metrics.csv up to step {max(r['step'] for r in last)}, t {max(r['t'] for r in last):.6g}" if last
              else "no metrics.csv rows")
    return f"{logged}, no summary.json (killed, or still running)"


NOTES: dict[str, Callable[[Job], str]] = {  # the report's line on a job that did not finish, by its state
    FAILED: _failed_note, INTERRUPTED: _interrupted_note, KILLED: _killed_note,
    MISSING: lambda job: "in the sweep's multirun.yaml, no run directory has its overrides"}


def report(path: str | Path) -> list[str]:
    """What became of every job under `path`: a line counting them by state, then a line per job that did not
    finish (failed, interrupted, killed, missing) with its overrides and why."""
    return _report(Path(path), jobs(path))


def _report(root: Path, found: list[Job]) -> list[str]:
    counts = Counter(job.state for job in found)
    lines = [f"{len(found)} job{'s' * (len(found) != 1)}: "
             + ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])]
    lines += [f"  {job.state} {job.name(root)} [{' '.join(job.given)}]: {NOTES[job.state](job)}"
              for job in found if job.state in NOTES]
    return lines


def _fail(message: str) -> None:
    print(f"dynamics-bench-aggregate: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    root = Path(args.sweep_dir)
    if not root.is_dir():
        _fail(f"{root} is not a directory")
    if not _run_dirs(root):
        _fail(f"no runs under {root} (no summary.json, metrics.csv or .hydra/ in it or below)")
    try:  # every name before any output: a typo in the last --plot must not cost the others' time
        if args.plot or args.fit:
            _check(root, [*args.plot, *args.fit])
    except KeyError as exc:
        _fail(exc.args[0])
    found = jobs(root)
    table = _table(root, found, write=True)
    print(show(_console(table, found)))
    print(f"\nwrote {root / 'sweep.csv'} ({len(table)} rows, {len(table.columns)} columns)")
    print("\n" + "\n".join(_report(root, found)))
    data = load_metrics(root) if args.plot or args.fit else None
    for metric in args.plot:
        print(f"wrote {plot(root, metric, args.x, args.scale, data)}")
    for metric in args.fit:
        fits = fit(root, metric, args.window, args.reach, data=data)
        reach = "" if args.reach is None else f"; t_reach: the first t {metric} reaches {args.reach:g}"
        print(f"\n{metric}: slope of log {metric} on log t, rate of log {metric} on t, over the last "
              f"{args.window:g} decade(s) of t{reach}")
        print(show(fits))
        print(f"wrote {root / ('fit_' + metric.replace('/', '_') + '.csv')}")


if __name__ == "__main__":
    main()
