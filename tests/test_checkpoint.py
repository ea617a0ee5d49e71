"""Checkpoints and resume: a run stopped by a signal, or killed outright, and resumed ends exactly where the same
run uninterrupted ends (metrics.csv, final_params.pt, summary.json but for the machine's fields, TensorBoard);
the same config twice gives identical outputs; resume=auto reruns a sweep without redoing finished jobs."""
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
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dynamics_bench import compose, run
from dynamics_bench.checkpoints import TEST_HOOK, RunInterrupted
from dynamics_bench.plans import resume

# the fields README lists as machine-dependent
MACHINE = {"wall_seconds", "steps_per_second", "compile_seconds", "metric_seconds", "peak_memory_bytes"}
SMALL = ["model.width=6", "task.n=48", "logger.progress=false", "threads=1"]
TRAINERS = {  # every trainer, with ensembles, stops at scattered steps and ensemble.vary
    "gd": ["trainer.steps=240", "ensemble.size=3", "trainer.target_loss=0.02"],
    "sgd": ["trainer=sgd", "trainer.steps=240", "trainer.batch_size=12", "ensemble.size=2"],
    "online_sgd": ["trainer=sgd", "task.online=true", "trainer.steps=240", "trainer.batch_size=12",
                   "ensemble.size=2"],
    "rk4": ["model=deep_linear", "task=linear_regression", "trainer=gradient_flow", "trainer.t_max=6",
            "ensemble.size=3", "trainer.target_loss=0.5"],
    "dopri5": ["model=deep_linear", "task=linear_regression", "trainer=gradient_flow", "trainer.method=dopri5",
               "trainer.t_max=20", "ensemble.size=3", "trainer.target_loss=0.3"],
    "vary": ["trainer.steps=240", "ensemble.size=2", "ensemble.vary={trainer.lr:[0.02,0.06]}",
             "trainer.target_loss=0.05"],
}


def _outputs(run_dir: Path) -> tuple[str, dict, dict, list]:
    """What must match: metrics.csv, final_params.pt, summary.json (machine fields out), TensorBoard's loss."""
    summary = json.loads((run_dir / "summary.json").read_text())
    params = torch.load(run_dir / "final_params.pt")
    return ((run_dir / "metrics.csv").read_text(), params, {k: v for k, v in summary.items() if k not in MACHINE},
            _tb_loss(run_dir))


def _tb_loss(run_dir: Path) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("loss")]


def _assert_same(a: Path, b: Path) -> None:
    csv_a, params_a, summary_a, tb_a = _outputs(a)
    csv_b, params_b, summary_b, tb_b = _outputs(b)
    assert csv_a == csv_b
    assert params_a.keys() == params_b.keys() and all(torch.equal(params_a[k], params_b[k]) for k in params_a)
    assert summary_a == summary_b
    assert tb_a == tb_b and len({s for s, _ in tb_b}) == len(tb_b)  # every scalar once


@pytest.mark.parametrize("name", TRAINERS)
def test_resumed_run_is_the_uninterrupted_run(name, tmp_path, monkeypatch):
    cfg = compose(*SMALL, *TRAINERS[name], "checkpoint.every_steps=25")
    whole = run(cfg, tmp_path / "whole")
    assert whole["iterations"] > 90  # the interruption below falls inside the run
    monkeypatch.setenv(TEST_HOOK, "sigterm@90")
    with pytest.raises(RunInterrupted):
        run(cfg, tmp_path / "cut")
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert summary["resume"] == f"dynamics-bench resume={(tmp_path / 'cut').resolve()}"
    monkeypatch.delenv(TEST_HOOK)
    resume(tmp_path / "cut")
    _assert_same(tmp_path / "whole", tmp_path / "cut")
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()  # deleted at the end (checkpoint.keep=false)


@pytest.mark.parametrize("name", ["gd", "sgd", "online_sgd", "rk4", "dopri5"])
def test_same_config_twice_gives_identical_outputs(name, tmp_path):
    cfg = compose(*SMALL, *TRAINERS[name])
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    _assert_same(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "task.pt").read_bytes() == (tmp_path / "b" / "task.pt").read_bytes()


def test_checkpoint_kept_on_request_and_saved_on_schedule(tmp_path, monkeypatch):
    cfg = compose(*SMALL, "trainer.steps=100", "checkpoint.every_steps=30", "checkpoint.keep=true")
    saved = []
    original = torch.save

    def counting(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("format") == "dynamics_bench.checkpoint":
            saved.append(obj["iteration"])
        return original(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", counting)
    run(cfg, tmp_path)
    assert saved and all(b - a >= 30 for a, b in zip([0, *saved], saved))  # every 30 steps, at window ends
    assert saved[0] < 60 and (tmp_path / "checkpoint.pt").is_file()


def _cli(*args: str, cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynamics_bench", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, **kw)


KILLED = {  # kill -9 at a seeded step; half-way through writing the third checkpoint
    "kill@150": [*SMALL, *TRAINERS["sgd"], "checkpoint.every_steps=40"],
    "kill-in-checkpoint@3": [*SMALL, *TRAINERS["dopri5"], "checkpoint.every_steps=20"],
}


@pytest.mark.parametrize("hook", KILLED)
def test_killed_run_resumes_to_the_identical_result(hook, tmp_path):
    """kill -9 at a seeded step, or half-way through writing a checkpoint: resuming loses only the work since the
    last complete checkpoint, and TensorBoard drops the rows the killed run wrote after it."""
    whole = _cli(*KILLED[hook], f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    killed = _cli(*KILLED[hook], f"hydra.run.dir={tmp_path / 'cut'}", cwd=tmp_path, env={TEST_HOOK: hook})
    assert killed.returncode == -signal.SIGKILL
    cut = tmp_path / "cut"
    assert (cut / "checkpoint.pt").is_file() and not (cut / "summary.json").exists()
    if hook.startswith("kill-in"):
        assert (cut / ".checkpoint.pt.tmp").is_file()  # the write it was killed in never replaced the last one
    else:  # rows past the checkpoint were written (and flushed) before the kill: the resume must drop them
        iteration = torch.load(cut / "checkpoint.pt", weights_only=True)["iteration"]
        assert max(int(line.split(",")[0]) for line in (cut / "metrics.csv").read_text().splitlines()[1:]) > iteration
        assert max(step for step, _ in _tb_loss(cut)) > iteration
    resumed = _cli(f"resume={cut}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    _assert_same(tmp_path / "whole", cut)
    assert (cut / ".hydra" / "overrides.yaml").read_text() == (tmp_path / "whole" / ".hydra" /
                                                               "overrides.yaml").read_text()  # the first run's kept
    assert "resume=" in (cut / ".hydra-resume" / "overrides.yaml").read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_exits_with_128_plus_signum(signum, tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "dynamics_bench", *SMALL, "trainer.steps=200000",
                                "metrics.every=1000", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run_dir / "metrics.csv").is_file() or len((run_dir / "metrics.csv").read_text().splitlines()) < 3:
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"dynamics-bench: interrupted by {signal.Signals(signum).name}; checkpoint saved; "
        f"resume with: dynamics-bench resume={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and (run_dir / "checkpoint.pt").is_file()
    assert f"interrupted by {signal.Signals(signum).name}" in (run_dir / "dynamics_bench.log").read_text()


def test_preemption_signal_chains_to_the_handler_before(tmp_path, monkeypatch):
    """SIGUSR2 (submitit's preemption signal) saves a checkpoint, then calls the handler installed before ours."""
    called = []

    def before(signum, frame):  # what submitit's handler would see: the checkpoint and the summary written
        status = json.loads((tmp_path / "summary.json").read_text())["status"]
        called.append((signum, (tmp_path / "checkpoint.pt").is_file(), status))
    previous = signal.signal(signal.SIGUSR2, before)
    try:
        monkeypatch.setenv(TEST_HOOK, "sigusr2@100")
        cfg = compose(*SMALL, "trainer.steps=300")
        with pytest.raises(RunInterrupted):
            run(cfg, tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert called == [(signal.SIGUSR2, True, "interrupted")]


def test_resume_auto_skips_finished_jobs_and_resumes_interrupted_ones(tmp_path):
    """A sweep stopped in its first job (SIGTERM) reruns with resume=auto: that job resumes, the others start;
    rerun again (values in another order) every job is found by its overrides and skipped."""
    sweep = tmp_path / "sweep"
    common = ["-m", *SMALL, "trainer.steps=200", "checkpoint.every_steps=50", f"hydra.sweep.dir={sweep}"]
    first = _cli(*common, "trainer.lr=0.02,0.04,0.06", cwd=tmp_path, env={TEST_HOOK: "sigterm@100"})
    assert first.returncode == 128 + signal.SIGTERM
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "interrupted"
    second = _cli(*common, "trainer.lr=0.02,0.04,0.06", "resume=auto", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("resuming") == 1 and second.stdout.count("writing to") == 2
    for job in ("0", "1", "2"):  # Hydra's records of the first command where each job ran, the rerun's beside
        assert (sweep / job / ".hydra" / "overrides.yaml").is_file()
    assert (sweep / "0" / ".hydra-resume").is_dir() and not (sweep / "1" / ".hydra-resume").exists()
    third = _cli(*common, "trainer.lr=0.06,0.02,0.04", "resume=auto", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    skipped = [line for line in third.stdout.splitlines() if "skipped" in line]
    assert [line.split(" holds")[0].rsplit("/", 1)[1] for line in skipped] == ["2", "0", "1"]
    whole = _cli(*SMALL, "trainer.steps=200", "checkpoint.every_steps=50", "trainer.lr=0.02",
                 f"hydra.run.dir={tmp_path / 'whole'}",
                 cwd=tmp_path)
    assert whole.returncode == 0
    csv_whole, params_whole, summary_whole, _ = _outputs(tmp_path / "whole")
    csv_job, params_job, summary_job, _ = _outputs(sweep / "0")
    assert csv_whole == csv_job and all(torch.equal(params_whole[k], params_job[k]) for k in params_whole)
    assert {k: v for k, v in summary_whole.items() if k != "overrides"} == \
        {k: v for k, v in summary_job.items() if k != "overrides"}
    assert "resume" not in summary_job["config"]
    # the job's own overrides (as Hydra spells them), resume=auto left out
    assert [o.lower() for o in summary_job["overrides"]] == [*common[1:-1], "trainer.lr=0.02"]


def test_resume_auto_records_a_refused_job_in_its_own_directory(tmp_path):
    """Rerun with the values in another order, a job refused for its config is recorded failed in its own directory
    (found by its overrides), never over another job's finished run, which is skipped."""
    sweep = tmp_path / "sweep"
    common = ["-m", *SMALL, "trainer.steps=20", f"hydra.sweep.dir={sweep}"]
    assert _cli(*common, "trainer.lr=0.05,-1", cwd=tmp_path).returncode == 0
    again = _cli(*common, "trainer.lr=-1,0.05", "resume=auto", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("skipped") == 1
    outcome = {json.loads((d / "job.json").read_text())["overrides"][-1]:
               json.loads((d / "summary.json").read_text())["status"] for d in sweep.iterdir() if d.is_dir()}
    assert outcome == {"trainer.lr=0.05": "max_steps", "trainer.lr=-1": "failed"}


def test_sweep_job_beside_another_configs_checkpoint(tmp_path):
    """A sweep rerun (no resume) whose job directory holds another config's checkpoint leaves that run as it is
    and runs beside it, with its own log and records; the same config's checkpoint would be resumed (requeue)."""
    sweep = tmp_path / "sweep"
    common = ["-m", *SMALL, "trainer.steps=200", "checkpoint.every_steps=50", f"hydra.sweep.dir={sweep}"]
    first = _cli(*common, "trainer.lr=0.02", cwd=tmp_path, env={TEST_HOOK: "sigterm@100"})
    assert first.returncode == 128 + signal.SIGTERM
    before = {p: p.read_bytes() for p in (sweep / "0").rglob("*") if p.is_file()}
    second = _cli(*common, "trainer.lr=0.04", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert {p: p.read_bytes() for p in (sweep / "0").rglob("*") if p.is_file()} == before
    beside = sweep / "0-1"
    assert json.loads((beside / "summary.json").read_text())["status"] == "max_steps"
    assert "writing to" in (beside / "dynamics_bench.log").read_text() and (beside / ".hydra").is_dir()
