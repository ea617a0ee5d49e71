"""Command line: ``dynamics-bench [overrides]`` / ``python -m dynamics_bench``; ``-m`` for a Hydra multirun.

The Hydra entry reads what is asked (:func:`dynamics_bench.plans.plan`: a fresh run, a resume, a skip) and hands
over to :func:`dynamics_bench.experiment.run_experiment`. What it prints also goes to the run's
dynamics_bench.log, with every warning.
"""
from __future__ import annotations

import logging
import os
import signal
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dynamics_bench.checkpoints import RunInterrupted
from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import resume_command, run_experiment, write_failed
from dynamics_bench.outputs import RunFiles
from dynamics_bench.plans import RECORDS_ON_RESUME, Plan, hydra_run_dir, job_run_dir, plan, record_job
from dynamics_bench.runtime import Launcher

LOG = logging.getLogger("dynamics_bench")
DEFAULT_DIRS = {"hydra.run.dir": "outputs", "hydra.sweep.dir": "multirun"}  # conf/config.yaml's, below the cwd
# Hydra writes its records (config.yaml, overrides.yaml, ...) before the app runs: conf/config.yaml has them
# written to PENDING and the app moves them into place once the config is accepted, so a refused command line
# overwrites no earlier run's .hydra/
PENDING = ".hydra-pending"
# conf/config.yaml's hydra.run.dir asks this: a resume logs into the run it resumes
OmegaConf.register_new_resolver("dynamics_bench.run_dir", hydra_run_dir, replace=True)


def one_line(summary: dict[str, Any], out_dir: str) -> str:
    loss = summary["final_loss"]
    parts = [f"dynamics-bench: {summary['status']}", f"steps {summary['steps']}", f"t {summary['t']:.6g}",
             f"final_loss {loss:.3e}" if loss is not None else "final_loss n/a"]
    if summary["time_to_target"] is not None:
        parts.append(f"time_to_target {summary['time_to_target']:.6g}")
    parts.append(f"{summary['wall_seconds']:.2f}s")
    return ", ".join(parts) + f" -> {out_dir}"


def _say(message: str, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)
    LOG.log(logging.WARNING if error else logging.INFO, message)


def _settle_records(job_dir: Path, todo: Plan | Path, records: str | None) -> None:
    """Hydra's records of an accepted command line from job_dir to the run's directory: .hydra/, or
    RECORDS_ON_RESUME where the run was there already (its first records stay); a user's own hydra.output_subdir
    is left alone. `todo`: the plan, or the directory of a job refused in a sweep."""
    pending = job_dir / PENDING
    if records != PENDING or not pending.is_dir():
        return
    run_dir = todo if isinstance(todo, Path) else todo.run_dir
    target = run_dir / (RECORDS_ON_RESUME if isinstance(todo, Plan) and todo.continues else ".hydra")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    pending.rename(target)
    if job_dir != run_dir and not any(job_dir.iterdir()):  # Hydra made it for a job that runs elsewhere
        job_dir.rmdir()


def _log_into(job_dir: Path, run_dir: Path) -> None:
    """Point the run's log file from Hydra's job directory to the run's (resume=auto found the job elsewhere),
    before anything is logged (the handlers open their file at the first record)."""
    for handler in {h for name in ("", "py.warnings") for h in logging.getLogger(name).handlers}:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == job_dir:
            handler.close()
            handler.baseFilename = str(run_dir / Path(handler.baseFilename).name)


def _discard(out_dir: Path) -> None:
    """Remove what Hydra made for a run refused before any work: its records, and out_dir itself if that leaves
    it empty (a directory that held anything before keeps it), with the empty folders above it below the cwd."""
    shutil.rmtree(out_dir / PENDING, ignore_errors=True)
    log = out_dir / f"{HydraConfig.get().job.name}.log"
    if log.is_file() and log.stat().st_size == 0:
        log.unlink()
    cwd = Path.cwd()
    for path in [out_dir, *out_dir.parents]:  # and the dated folders above it that it alone was in
        if cwd not in path.parents or not path.is_dir() or any(path.iterdir()):
            break
        path.rmdir()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    job_dir, multirun = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [o for o in hydra_cfg.overrides.task if o.partition("=")[0] != "resume"]
    directory = job_run_dir(cfg.get("resume"), job_dir, overrides, multirun)  # by its overrides under resume=auto
    _log_into(job_dir, directory)
    logging.captureWarnings(True)
    try:
        try:
            todo = plan(cfg, job_dir, list(overrides), multirun)
        except ConfigError as exc:
            if not multirun:
                print(f"dynamics-bench: config error: {exc}", file=sys.stderr)
                _discard(job_dir)
                sys.exit(2)
            _record_failed(exc, cfg, job_dir, directory, overrides, hydra_cfg.output_subdir)
            return
        _log_into(job_dir, todo.run_dir)  # a sweep job beside another config's checkpoint
        _settle_records(job_dir, todo, hydra_cfg.output_subdir)
        _run(todo, hydra_cfg, multirun)
    finally:
        logging.captureWarnings(False)


def _record_failed(exc: ConfigError, cfg: DictConfig, job_dir: Path, directory: Path, overrides: list[str],
                   records: str | None) -> None:
    """A sweep job refused for its config: recorded as failed in its own directory, and the sweep goes on."""
    _settle_records(job_dir, directory, records)
    _say(f"dynamics-bench: config error: {exc}", error=True)
    record_job(directory, overrides)
    config = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "resume"}
    write_failed(directory, exc, config, overrides=overrides)


def _run(todo: Plan, hydra_cfg: DictConfig, multirun: bool) -> None:
    run_dir = todo.run_dir.resolve()
    if todo.experiment is None:
        _say(f"dynamics-bench: skipped: {run_dir} holds a finished run ({todo.finished}; resume=auto)")
        return
    if todo.checkpoint is None:
        record_job(run_dir, todo.overrides)
        _say(f"dynamics-bench: writing to {run_dir}")
    else:
        _say(f"dynamics-bench: resuming {run_dir} from its checkpoint at iteration {todo.checkpoint['iteration']}")
    # a multirun's launcher may run jobs side by side: threads=auto keeps to this job's share of the cores
    launcher = Launcher.from_hydra(hydra_cfg.launcher) if multirun else Launcher()
    try:
        summary = run_experiment(todo.experiment, run_dir, launcher, resume=todo.checkpoint, overrides=todo.overrides)
    except RunInterrupted as stop:
        hint = (f"checkpoint saved; resume with: {resume_command(run_dir)}" if RunFiles(run_dir).checkpoint.is_file()
                else "no checkpoint was saved: nothing to resume")
        _say(f"dynamics-bench: {stop}; {hint}", error=True)
        sys.exit(128 + stop.signum)
    _say(one_line(summary, str(run_dir)))


def _check_output_dir(argv: list[str]) -> None:
    """An output directory that cannot be made (a path under a regular file, a read-only parent) is refused here,
    before Hydra makes it and fails with a traceback: the run's (hydra.run.dir), or with -m the sweep's."""
    if any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in argv):  # --help, --cfg, ...: no run
        return
    key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) else "hydra.run.dir"
    given = [arg.partition("=")[2] for arg in argv if arg.partition("=")[0] == key]
    if key == "hydra.run.dir" and any(arg.startswith("resume=") for arg in argv):
        return  # a resume runs in its run's directory (checked when the config is read)
    for value in given[-1:] or [DEFAULT_DIRS[key]]:
        path = Path(value.split("${")[0] or ".").absolute()
        while not path.exists():
            path = path.parent
        if not path.is_dir():
            _refuse(key, value, f"cannot be created: {path} is a file, not a directory")
        elif not os.access(path, os.W_OK):
            _refuse(key, value, f"cannot be created: {path} is not writable")


def _refuse(key: str, value: str, allowed: str) -> None:
    print(f"dynamics-bench: config error: {ConfigError(key, value, allowed)}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    try:
        _check_output_dir(sys.argv[1:])
        _hydra_entry()
    except KeyboardInterrupt:  # Ctrl-C outside training (during training a checkpoint is saved instead)
        print("dynamics-bench: interrupted outside training (starting up, or writing the final outputs)",
              file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
