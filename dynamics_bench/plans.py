"""What a command line asks for, read before any work: a fresh run, the rest of an interrupted one, or (in a
sweep rerun with ``resume=auto``) nothing at all; and where it runs.

- ``resume=PATH``: PATH's run from its checkpoint, with PATH's recorded config (no other override allowed).
- ``resume=auto`` (a multirun): the job runs in the sweep's directory whose recorded overrides (job.json) are the
  job's, whatever its number; a finished run there is skipped, a checkpoint resumed, anything else (nothing, a
  failed run, a killed run without a checkpoint) started afresh.
- no ``resume`` in a multirun: a job whose own directory holds a checkpoint of the same config resumes from it
  (a job that the scheduler preempted and the launcher requeued with the same arguments); a checkpoint of
  another config is left where it is and the job starts in a new directory beside it. A single run never
  starts over a checkpoint: it is refused (resume it, or pick another directory).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dynamics_bench.config import ConfigError, require
from dynamics_bench.experiment import Experiment, build, provenance, run_experiment, to_plain
from dynamics_bench.outputs import RunFiles, write_json
from dynamics_bench.status import OUTCOMES, read_summary

JOB_RECORD = "job.json"  # the overrides a run was started with: how resume=auto finds a job's directory
RECORDS_ON_RESUME = ".hydra-resume"  # Hydra's records of a command that continues a run (the first run's stay)


@dataclass
class Plan:
    """What to do: run `experiment` in `run_dir` (from `checkpoint` if given), or skip (`finished`: its status)."""

    run_dir: Path
    overrides: list[str] | None  # the command line's, recorded (None: a run started from Python)
    experiment: Experiment | None = None
    checkpoint: dict[str, Any] | None = None
    finished: str | None = None

    @property
    def continues(self) -> bool:
        """Whether run_dir holds this run already (resumed or skipped): its first records stay."""
        return self.checkpoint is not None or self.finished is not None


def hydra_run_dir(resume: str | None, default: str) -> str:
    """hydra.run.dir: a resume=PATH of an existing directory logs into it (its dynamics_bench.log, Hydra's records
    under RECORDS_ON_RESUME), anything else gets the default."""
    return resume if isinstance(resume, str) and resume not in ("", "auto") and Path(resume).is_dir() else default


def job_run_dir(resume: Any, job_dir: Path, overrides: list[str], multirun: bool) -> Path:
    """Where the job runs, known before its config is built (a refused job is recorded there): under
    resume=auto the sweep's directory recorded with its overrides, else Hydra's job directory."""
    return _job_dir(job_dir, overrides) if resume == "auto" and multirun else job_dir


def plan(cfg: DictConfig | dict, job_dir: Path, overrides: list[str], multirun: bool) -> Plan:
    """The plan for a composed config whose Hydra output directory is job_dir; `overrides`: the job's task
    overrides (resume=... left out). Raises ConfigError before any work."""
    plain = to_plain(cfg)
    resume = plain.pop("resume", None)
    if resume is None:
        return _fresh(build(plain), job_dir, overrides, multirun)
    if resume == "auto":
        require(multirun, "resume", resume, "is for sweeps (-m, rerun with the same hydra.sweep.dir); a single run "
                                            "starts in a new directory: resume=PATH continues the run in PATH")
        return _auto(plain, job_run_dir(resume, job_dir, overrides, multirun), overrides)
    require(isinstance(resume, str) and resume.strip() != "", "resume", resume,
            "must be a run directory (PATH) or auto")
    if overrides:
        key, _, value = overrides[0].partition("=")
        raise ConfigError(key, value, f"resume={resume} continues that run with its recorded config: no other "
                                      "override is allowed")
    return _path(Path(resume))


def _fresh(experiment: Experiment, job_dir: Path, overrides: list[str], multirun: bool) -> Plan:
    files = RunFiles(job_dir)
    if not files.checkpoint.is_file():
        return Plan(job_dir, overrides, experiment)
    require(multirun, "hydra.run.dir", str(job_dir), f"holds an interrupted run's checkpoint.pt: continue it with "
                                                     f"resume={job_dir}, or choose another directory")
    checkpoint = _checked(files.load_checkpoint(experiment.device, key="hydra.sweep.dir"))
    if checkpoint["config"] == experiment.config:  # requeued
        return Plan(job_dir, overrides, experiment, checkpoint)
    return Plan(_beside(job_dir), overrides, experiment)


def _path(path: Path) -> Plan:
    require(path.is_dir(), "resume", str(path), "no such run directory")
    status = (read_summary(path) or {}).get("status")
    require(status not in OUTCOMES, "resume", str(path), f"holds a finished run (status {status}): nothing to "
                                                         "resume")
    files = RunFiles(path)
    checkpoint = files.load_checkpoint()
    experiment = build(checkpoint["config"])
    if experiment.device.type != "cpu":
        checkpoint = files.load_checkpoint(experiment.device)
    return Plan(path, checkpoint.get("overrides"), experiment, _checked(checkpoint))


def _auto(plain: dict[str, Any], run_dir: Path, overrides: list[str]) -> Plan:
    summary = read_summary(run_dir) or {}
    if summary.get("status") in OUTCOMES:
        return Plan(run_dir, overrides, finished=summary["status"])
    experiment = build(plain)
    files = RunFiles(run_dir)
    checkpoint = files.load_checkpoint(experiment.device) if files.checkpoint.is_file() else None
    require(checkpoint is None or checkpoint["config"] == experiment.config, "resume", "auto",
            f"{run_dir}'s checkpoint was taken with another config than this job's (same overrides: were the "
            "defaults changed?); move it away to start afresh")
    return Plan(run_dir, overrides, experiment, None if checkpoint is None else _checked(checkpoint))


def _checked(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint, with a warning if another version of the code (or of torch, ...) wrote it: the resumed run
    would mix two versions, and summary.json names only the last."""
    then = {**checkpoint.get("versions", {}), "git_revision": checkpoint.get("git_revision")}
    written_by = provenance()
    now = {**written_by["versions"], "git_revision": written_by["git_revision"]}
    changed = {k: (then.get(k), v) for k, v in now.items() if then.get(k) != v}
    if changed:
        warnings.warn("resuming a checkpoint written by other versions: " + ", ".join(
            f"{k} {a} -> {b}" for k, (a, b) in changed.items()), stacklevel=2)
    return checkpoint


def _job_dir(job_dir: Path, overrides: list[str]) -> Path:
    """The sweep's directory recorded with these overrides (in any order); else job_dir if no other job's run is
    there, else a new one beside it."""
    wanted = sorted(overrides)
    recorded = {path.parent: _recorded(path) for path in sorted(job_dir.parent.glob(f"*/{JOB_RECORD}"))}
    for directory, given in recorded.items():
        if given == wanted:
            return directory
    return job_dir if recorded.get(job_dir) is None else _beside(job_dir)


def _beside(job_dir: Path) -> Path:
    """A new directory next to job_dir (<name>-1, -2, ...), for a job whose own holds another job's run."""
    k = 1
    while (job_dir.parent / f"{job_dir.name}-{k}").exists():
        k += 1
    return job_dir.parent / f"{job_dir.name}-{k}"


def _recorded(path: Path) -> list[str] | None:
    try:
        return sorted(json.loads(path.read_text())["overrides"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_job(run_dir: Path, overrides: list[str]) -> None:
    """job.json: the overrides this run was started with."""
    RunFiles(run_dir).create()
    write_json(run_dir / JOB_RECORD, {"overrides": overrides})


def resume(path: str | Path) -> dict[str, Any]:
    """Go on with the run in `path` from its checkpoint, with its recorded config, to the end it would have
    reached; returns the summary. Raises ConfigError (naming `resume`) if it holds no readable checkpoint."""
    todo = _path(Path(path))
    return run_experiment(todo.experiment, todo.run_dir, resume=todo.checkpoint, overrides=todo.overrides)
