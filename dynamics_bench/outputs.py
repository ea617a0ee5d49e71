"""Everything a run writes, in one place: the rows as they are logged (metrics.csv, tb/, params/: appended and
flushed per row, so a killed run keeps what it computed) and the run's files (summary.json, task.pt,
final_params.pt, checkpoint.pt), each of the latter written atomically (a temporary file in the same directory,
then a rename: a reader or a killed run sees the old file or the new one, never half of one); and what a resume
cuts back (metrics.csv to the checkpoint's rows, TensorBoard by a purge step).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from dynamics_bench.config import ConfigError, require
from dynamics_bench.status import FAILED

TB_MEMBERS, TB_COMBINATIONS = 4, 64  # tb_members' defaults: members, or ensemble.vary's combinations


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    # members (with ensemble.vary: combinations) written to TensorBoard as runs of their own (all are summarized);
    # null: TB_MEMBERS members, or TB_COMBINATIONS combinations
    tb_members: int | None = None
    progress: bool = True  # progress bar, shown only on an interactive terminal

    def __post_init__(self) -> None:
        require(self.tb_members is None or self.tb_members >= 0, "logger.tb_members", self.tb_members,
                "must be >= 0 or null")

    def tb_runs(self, varied: bool) -> int:
        """How many members (varied: combinations) get a TensorBoard run of their own."""
        if self.tb_members is not None:
            return self.tb_members
        return TB_COMBINATIONS if varied else TB_MEMBERS


Rows = list[dict[str, float]]  # one dict of metric values per member


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def _setting(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


class CSVSink:
    """metrics.csv: step, t, member, the metric columns fixed by the first row, then what each member was set
    to (`settings`, one dict per member with the same keys: ensemble.vary's values, as trainer.lr, ...)."""

    def __init__(self, path: Path, settings: list[dict[str, Any]] | None = None, columns: list[str] | None = None):
        """`columns`: those of the rows already in `path` (a resumed run appends to them), else None."""
        self.path, self.file, self.writer, self.columns = path, None, None, columns
        self.settings = [_fixed(s) for s in settings] if settings else None
        if columns is not None:
            self.file = open(path, "a", newline="")
            self.writer = csv.writer(self.file)

    def state_dict(self) -> dict[str, Any]:
        """The columns and the bytes written: a resume cuts the file back there."""
        return {"columns": self.columns, "bytes": self.file.tell() if self.file is not None else 0}

    def write(self, steps: list[int], t: list[float], rows: Rows, members: list[bool] | None = None) -> None:
        """Member e's row at its own step count steps[e] and flow time t[e] (only where members[e], if given)."""
        if self.writer is None:
            self.columns = list(rows[0])
            self.file = open(self.path, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(["step", "t", "member", *self.columns, *(self.settings[0] if self.settings else [])])
        for member, row in enumerate(rows):
            if members is not None and not members[member]:
                continue
            fixed = self.settings[member].values() if self.settings else []
            self.writer.writerow([steps[member], repr(t[member]), member, *(_cell(row[c]) for c in self.columns),
                                  *fixed])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _fixed(values: dict[str, Any]) -> dict[str, str]:
    return {k: _setting(v) for k, v in values.items()}


def member_runs(ensemble_size: int, shown: int) -> dict[str, list[int]]:
    """TensorBoard runs of one member each, tb/member_<i>, for the first `shown` members (none for E = 1)."""
    return {f"member_{i}": [i] for i in range(min(ensemble_size, shown))} if ensemble_size > 1 else {}


class TensorBoardSink:
    """tb/: the ensemble mean under each metric's own tag (min and max under ensemble/), and `runs` (name ->
    members: tb/member_<i> each member, or with ensemble.vary each combination's seeds) as runs of their own,
    written as the root is (a run of several members: their mean, min and max), so TensorBoard overlays them on
    the mean's chart. TensorBoard's step is the loop's iteration (= the step for fixed-step trainers); flow time
    is the tag `t` (a run's furthest member's)."""

    def __init__(self, path: Path, runs: dict[str, list[int]], purge_step: int | None = None):
        """`purge_step`: a resumed run's first step; readers drop what the interrupted run logged from there on."""
        from tensorboard.compat.proto.summary_pb2 import Summary  # imported here: optional per run
        from dynamics_bench.tb_events import EventWriter

        self._summary = Summary
        self.root = EventWriter(path, purge_step)
        self.runs = {name: EventWriter(path / name, purge_step) for name in runs}
        self.groups = list(runs.values())

    def _scalars(self, t: list[float], rows: Rows) -> list:
        """The mean of each metric over the rows' finite values (and min, max over several rows), and t."""
        Summary, out = self._summary, []
        for name in rows[0]:
            finite = [v for v in (r[name] for r in rows) if math.isfinite(v)]
            if not finite:
                continue
            out.append(Summary.Value(tag=name, simple_value=math.fsum(finite) / len(finite)))
            if len(rows) > 1:
                out.append(Summary.Value(tag=f"ensemble/{name}_min", simple_value=min(finite)))
                out.append(Summary.Value(tag=f"ensemble/{name}_max", simple_value=max(finite)))
        out.append(Summary.Value(tag="t", simple_value=max(t)))
        return out

    def write(self, iteration: int, t: list[float], rows: Rows, only: list[bool] | None = None) -> None:
        """The rows at `iteration`; `only`: the members to write (None: all), the others' runs get nothing."""
        # The values add_scalar writes (simple_value), but one event per writer and step holding all of them:
        # each event is a record written and flushed, most of the cost of logging a step.
        chosen = range(len(rows)) if only is None else [e for e, keep in enumerate(only) if keep]
        if chosen:
            self.root.add_summary(self._summary(value=self._scalars([t[e] for e in chosen],
                                                                    [rows[e] for e in chosen])), iteration)
        for writer, members in zip(self.runs.values(), self.groups):
            members = [e for e in members if e in chosen]
            if members:
                scalars = self._scalars([t[e] for e in members], [rows[e] for e in members])
                writer.add_summary(self._summary(value=scalars), iteration)

    def write_hparams(self, hparams: dict[str, Any], final: dict[str, float], run: str | None = None) -> None:
        """Hyperparameters with final metrics, in the root's run or `run`'s."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        finals = {f"final/{k}": v for k, v in final.items() if v is not None and math.isfinite(v)}
        (self.root if run is None else self.runs[run]).add_hparams(clean, finals)

    def close(self) -> None:
        for writer in [self.root, *self.runs.values()]:
            writer.close()


class ParamsSink:
    """params/<iteration>.pt: the parameters (E, ...), each member's step count and t at every logged
    iteration (= step for fixed-step trainers), for phase portraits."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(exist_ok=True)

    def save(self, iteration: int, steps: list[int], t: list[float], params: dict[str, torch.Tensor]) -> None:
        torch.save({"iteration": iteration, "steps": steps, "t": t,
                    "params": {k: v.detach().cpu() for k, v in params.items()}}, self.path / f"{iteration:09d}.pt")


CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "dynamics_bench.checkpoint", 1
# what a run writes: a fresh start in a directory that held another attempt removes these first
OUTPUTS = ("metrics.csv", "summary.json", "final_params.pt", "task.pt", "checkpoint.pt", "tb", "params")


def json_safe(value: Any) -> Any:
    """Non-finite floats (a config may say inf) as the strings "inf"/"-inf"/"nan": summary.json stays JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def temporary(path: Path) -> Path:
    """Where write_atomic writes `path` before the rename (left behind by a process killed in between)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` through `write(file)` into a temporary file beside it, flushed to disk, then renamed over it."""
    tmp = temporary(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def save_torch(path: Path, obj: Any) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


class RunFiles:
    """The files of the run in `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.summary, self.checkpoint = self.root / "summary.json", self.root / "checkpoint.pt"
        self.metrics = self.root / "metrics.csv"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Remove an earlier attempt's outputs (a failed or killed run started afresh); Hydra's files stay."""
        for name in OUTPUTS:
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
                temporary(path).unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary, summary)

    def write_task(self, state: dict[str, Any]) -> None:
        save_torch(self.root / "task.pt", state)

    def write_final_params(self, params: dict[str, torch.Tensor]) -> None:
        save_torch(self.root / "final_params.pt", {k: v.detach().cpu() for k, v in params.items()})

    def write_failed(self, exc: BaseException, config: dict[str, Any], extra: dict[str, Any]) -> None:
        """summary.json of a run that raised: status failed, the reason, and what is needed to reproduce it."""
        self.create()
        self.write_summary({"status": FAILED, "reason": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(), **extra, "config": config})

    def save_checkpoint(self, payload: dict[str, Any], before_rename: Callable[[bytes], None] | None = None) -> None:
        """checkpoint.pt, atomically. `before_rename(data)`: a test's hook into the write (it may kill the process
        half-way)."""
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}, buffer)
        data = buffer.getvalue()

        def write(f: io.BufferedWriter) -> None:
            if before_rename is not None:
                f.write(data[: len(data) // 2])
                f.flush()
                before_rename(data)
            f.write(data[f.tell():])
        write_atomic(self.checkpoint, write)

    def load_checkpoint(self, device: torch.device | str = "cpu", key: str = "resume") -> dict[str, Any]:
        """The checkpoint's payload; a missing, unreadable or foreign file is a ConfigError naming `key`."""
        value = str(self.root)
        if not self.checkpoint.is_file():
            raise ConfigError(key, value, "holds no checkpoint.pt to resume from (a finished run deletes its "
                                          "checkpoint unless checkpoint.keep=true)")
        try:
            payload = torch.load(self.checkpoint, map_location=device, weights_only=True)
        except Exception as exc:  # torch raises many kinds for a damaged file
            raise ConfigError(key, value, f"its checkpoint.pt cannot be read ({type(exc).__name__}: "
                                          f"{str(exc).splitlines()[0] if str(exc) else ''}): it is damaged") from None
        if not (isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT):
            raise ConfigError(key, value, "its checkpoint.pt is not a dynamics_bench checkpoint")
        if payload.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(key, value, f"its checkpoint.pt has format version {payload.get('version')}; this "
                                          f"dynamics_bench reads version {CHECKPOINT_VERSION}")
        return payload

    def delete_checkpoint(self) -> None:
        self.checkpoint.unlink(missing_ok=True)
        temporary(self.checkpoint).unlink(missing_ok=True)

    def cut_back(self, metrics_bytes: int) -> None:
        """Back to a checkpoint: metrics.csv keeps its first `metrics_bytes` bytes (the rows then written).
        TensorBoard purges on its own (TensorBoardSink's purge_step); params/ snapshots past the checkpoint are
        rewritten as they were (the same iterations, the same state)."""
        with open(self.metrics, "r+b") as f:
            f.truncate(metrics_bytes)
