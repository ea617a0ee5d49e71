"""Sweeps through Hydra's launcher plugins (the `launchers` extra), end to end through the command line: a joblib
sweep and a submitit_local sweep, each job's threads=auto capped at its share of the cores and an explicit threads
kept; a submitit job preempted mid-run, requeued by submitit and resumed from its checkpoint to the uninterrupted
run's result; and a multirun whose every job failed exits non-zero. Skipped without the plugins."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dynamics_bench.callbacks import ALL_FAILED_EXIT, SweepOutcome
from dynamics_bench.runtime import available_cores, job_cores

TIMEOUT = 120
TINY = ["model.width=4", "task.n=32", "logger.tensorboard=false"]
# a step's work above runtime.SMALL_WORK ((50·100 + 100) parameters × 2000 samples ≈ 1e7), so threads=auto would
# take torch's default (here OMP_NUM_THREADS=MANY) were it not for the job's share; one step
WIDE = ["task.input_dim=50", "model.width=100", "task.n=2000", "trainer.steps=1", "metrics.points=2",
        "logger.tensorboard=false"]
MANY = 8  # torch's default threads in the jobs: more than any share of this machine's cores
MACHINE_FIELDS = {"wall_seconds", "steps_per_second", "compile_seconds", "metric_seconds", "peak_memory_bytes"}


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynamics_bench", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, **env})


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def summaries(sweep: Path) -> dict[str, dict]:
    """Each job's summary.json, by job directory."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))}


def by_threads_key(sweep: Path) -> dict:
    """Each job's summary by the `threads` its config asked for (auto, or a number)."""
    return {s["config"]["threads"]: s for s in summaries(sweep).values()}


@pytest.fixture
def joblib_launcher():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the launchers extra is not installed")


@pytest.fixture
def submitit_launcher():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the launchers extra is not installed")


def test_joblib_sweep_caps_threads_at_each_jobs_share(tmp_path, joblib_launcher):
    """Two jobs at once on this machine's cores: auto takes cores // 2 (not torch's MANY), threads=3 is kept,
    and a job refused for its config (threads=0) is recorded as failed while the sweep goes on and exits 0."""
    sweep = tmp_path / "joblib"
    ok(cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *WIDE, "threads=auto,3,0",
           f"hydra.sweep.dir={sweep}", OMP_NUM_THREADS=str(MANY)))
    jobs = by_threads_key(sweep)
    assert jobs["auto"]["threads"] == job_cores(available_cores(), n_jobs=2) < MANY
    assert jobs[3]["threads"] == 3, "an explicit thread count wins"
    assert jobs[0]["status"] == "failed" and "threads" in jobs[0]["reason"]
    for job in (jobs["auto"], jobs[3]):
        assert (job["status"], job["steps"]) == ("max_steps", 1)


def test_submitit_local_sweep_caps_threads_at_cpus_per_task(tmp_path, submitit_launcher):
    sweep = tmp_path / "submitit"
    ok(cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=2",
           *WIDE, "threads=auto,3", f"hydra.sweep.dir={sweep}", OMP_NUM_THREADS=str(MANY)))
    jobs = by_threads_key(sweep)
    assert jobs["auto"]["threads"] == 1, "auto keeps to the job's cpus_per_task"
    assert jobs[3]["threads"] == 3, "an explicit thread count wins"
    assert all((job["status"], job["steps"]) == ("max_steps", 1) for job in jobs.values())
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.out"))
    assert logs.count("dynamics-bench: writing to") == 2, "the jobs ran as submitit jobs"


# ---------------------------------------------------------------------------------------------------------------
# Preemption: submitit's signal mid-run, the job requeued, resumed from its own directory's checkpoint.
LONG = [*TINY, "trainer.steps=3000", "threads=1", "checkpoint.every_seconds=null"]  # ~2 s of training here


def submitit_processes(folder: Path, module: str = "submitit.core._submit") -> list[int]:
    """The processes running `module` (submitit's job: python -m submitit.core._submit FOLDER; its local
    controller: submitit.local._local) on a folder under `folder`; Linux's /proc."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:
            continue
        if module.encode() in command and any(str(folder).encode() in part for part in command):
            pids.append(int(proc.name))
    return pids


def stop(processes: list[subprocess.Popen], folder: Path) -> None:
    """Whatever is left of a failed test: the commands it started and the submitit jobs under `folder` (a
    submitit_local job outlives the command that launched it)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for module in ("submitit.local._local", "submitit.core._submit"):
        for pid in submitit_processes(folder, module):
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, what: str, timeout: float = 60.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


def rows(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in MACHINE_FIELDS}


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the job's process through /proc")
def test_a_preempted_submitit_job_is_requeued_and_resumes_to_the_same_result(tmp_path, submitit_launcher):
    """submitit's preemption signal (SIGUSR2, or $SUBMITIT_PREEMPT_SIGNAL) reaches the job mid-run: the run saves
    a checkpoint and hands the signal to submitit's handler, which requeues the job through the launcher's
    checkpoint(); the requeued job finds the checkpoint in its own directory and resumes, with no resume
    override, to the same metrics.csv, final_params.pt and summary.json as the same job run through (the
    reference, a plain multirun beside it, machine-dependent fields apart)."""
    sweep, reference = tmp_path / "preempted", tmp_path / "reference"
    command = [sys.executable, "-m", "dynamics_bench", "-m", *LONG]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    # timeout_min: long enough that submitit reads the signal as a preemption, not as the job's time running out
    preempted = subprocess.Popen([*command, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=60",
                                  f"hydra.sweep.dir={sweep}"], **pipes)
    plain = subprocess.Popen([*command, f"hydra.sweep.dir={reference}"], **pipes)
    try:
        metrics = sweep / "0" / "metrics.csv"
        wait_for(lambda: rows(metrics) > 3, "the job's first metrics rows")  # training, its handlers in place
        job = wait_for(lambda: submitit_processes(sweep), "the submitit job's process")
        os.kill(job[0], signal.SIGUSR2)
        out_preempted, _ = preempted.communicate(timeout=TIMEOUT)
        out_plain, _ = plain.communicate(timeout=TIMEOUT)
    finally:
        stop([preempted, plain], sweep)
    assert preempted.returncode == 0, out_preempted[-3000:]
    assert plain.returncode == 0, out_plain[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "this job is preempted" in logs and "Requeued" in logs, \
        "submitit requeued the preempted job (if the run ended before the signal: lengthen LONG)"
    assert "resuming" in logs and logs.count("dynamics-bench: writing to") == 1, "the requeued job resumed"
    assert not (sweep / "0" / "checkpoint.pt").exists(), "the finished run deleted its checkpoint"

    job, ref = sweep / "0", reference / "0"
    assert (job / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes()
    final, final_ref = (torch.load(d / "final_params.pt", weights_only=True) for d in (job, ref))
    assert final.keys() == final_ref.keys() and all(torch.equal(final[k], final_ref[k]) for k in final)
    summary, summary_ref = (json.loads((d / "summary.json").read_text()) for d in (job, ref))
    assert (summary["status"], summary["steps"]) == ("max_steps", 3000)
    assert comparable(summary) == comparable(summary_ref)


# ---------------------------------------------------------------------------------------------------------------
# A multirun whose every job failed.
def test_a_multirun_whose_every_job_failed_exits_non_zero(tmp_path):
    sweep = tmp_path / "failed"
    proc = cli("-m", "model.width=0,-1", "trainer.steps=2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == ALL_FAILED_EXIT != 0 and "Traceback" not in proc.stderr
    assert f"every job of the sweep failed (2 of 2); each job's summary.json says why: " \
           f"dynamics-bench-aggregate {sweep}" in proc.stderr
    assert [s["status"] for s in summaries(sweep).values()] == ["failed", "failed"]


def test_the_sweep_outcome_callback_reads_the_jobs_summaries(tmp_path):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SweepOutcome().on_multirun_end(config)  # no job at all (the sweep never started one): nothing to say
    for job, status in (("0", "failed"), ("1", "failed")):
        (tmp_path / job).mkdir()
        (tmp_path / job / "summary.json").write_text(json.dumps({"status": status}))
    with pytest.raises(SystemExit) as exit_:
        SweepOutcome().on_multirun_end(config)
    assert exit_.value.code == ALL_FAILED_EXIT
    (tmp_path / "1" / "summary.json").write_text(json.dumps({"status": "max_steps"}))
    SweepOutcome().on_multirun_end(config)  # one job finished: the sweep succeeded
