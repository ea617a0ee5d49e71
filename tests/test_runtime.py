"""threads, matmul_precision and peak_memory_bytes (dynamics_bench.runtime), and what start-up imports."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dynamics_bench import runtime
from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build
from dynamics_bench.runtime import (SMALL_WORK, Launcher, Runtime, apply_runtime, job_cores, parse_runtime,
                                    resolve_threads)
from tests.conftest import make_cfg, run_overrides

# A step's work well above SMALL_WORK: (50·100 + 100) parameters × 2000 samples ≈ 1e7
WIDE = ["task.input_dim=50", "model.width=100", "task.n=2000", "trainer.steps=1", "metrics.points=2",
        "logger.tensorboard=false"]


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """Runs set torch's threads and matmul precision process-wide: put back what the other tests expect."""
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    yield
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(precision)


@pytest.mark.parametrize("cores, n_jobs, cpus_per_task, share", [
    (8, None, None, 8),  # no launcher: every core
    (8, 4, None, 2),  # joblib, 4 jobs at once
    (8, 3, None, 2),
    (8, -1, None, 1),  # joblib's -1: one job per core
    (8, -3, None, 1),  # -3: cores + 1 - 3 = 6 jobs
    (16, -13, None, 4),  # 4 jobs
    (2, 4, None, 1),  # more jobs than cores: still one thread each
    (8, None, 3, 3),  # submitit's cpus_per_task
    (8, 2, 3, 3),
    (8, 4, 3, 2),
])
def test_job_cores(cores, n_jobs, cpus_per_task, share):
    assert job_cores(cores, n_jobs, cpus_per_task) == share


def test_resolve_threads():
    big = 100 * SMALL_WORK
    assert resolve_threads(3, work=big, cores=1, default=8) == 3, "a number always wins"
    assert resolve_threads(5, work=1, cores=16, default=2) == 5
    assert resolve_threads(None, work=SMALL_WORK - 1, cores=16, default=8) == 1, "auto: one thread when small"
    assert resolve_threads(None, work=SMALL_WORK, cores=16, default=8) == 8, "auto: torch's default when large"
    assert resolve_threads(None, work=big, cores=2, default=8) == 2, "auto: at most the job's share"


def test_launcher_from_hydra():
    from omegaconf import OmegaConf

    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                               "n_jobs": 4, "backend": None})
    assert Launcher.from_hydra(joblib) == Launcher(n_jobs=4)
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "cpus_per_task": 6}
    assert Launcher.from_hydra(slurm) == Launcher(cpus_per_task=6)
    assert Launcher.from_hydra({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}) == Launcher()


def test_apply_runtime_keeps_to_the_share(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    monkeypatch.setattr(runtime, "TORCH_DEFAULT_THREADS", 8)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    auto, cpu = Runtime(), torch.device("cpu")
    big = 10 * SMALL_WORK
    assert apply_runtime(auto, work=big, launcher=Launcher(), device=cpu) == 8 == torch.get_num_threads()
    assert apply_runtime(auto, work=big, launcher=Launcher(n_jobs=4), device=cpu) == 2 == torch.get_num_threads()
    assert apply_runtime(auto, work=big, launcher=Launcher(cpus_per_task=3), device=cpu) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert apply_runtime(auto, work=big, launcher=Launcher(), device=cpu) == 5
    assert apply_runtime(auto, work=1, launcher=Launcher(), device=cpu) == 1 == torch.get_num_threads()
    assert apply_runtime(Runtime(threads=7), work=1, launcher=Launcher(n_jobs=8), device=cpu) == 7


@pytest.mark.parametrize("mode, launcher", [("MULTIRUN", Launcher(n_jobs=4)), ("RUN", Launcher())])
def test_cli_passes_the_launcher(monkeypatch, tmp_path, mode, launcher):
    """The Hydra entry hands the multirun launcher's settings to run_experiment (a single run has no launcher)."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from dynamics_bench import cli

    hydra_cfg = OmegaConf.create({"runtime": {"output_dir": str(tmp_path)}, "launcher": {"n_jobs": 4},
                                  "overrides": {"task": ["trainer.steps=1"]}, "output_subdir": None})
    hydra_cfg.mode = RunMode[mode]
    monkeypatch.setattr(cli.HydraConfig, "get", staticmethod(lambda: hydra_cfg))
    passed = []

    def run_experiment(experiment, out_dir, launcher, **kwargs):
        passed.append(launcher)
        raise KeyboardInterrupt  # stop here: only the hand-over is under test

    monkeypatch.setattr(cli, "run_experiment", run_experiment)
    with pytest.raises(KeyboardInterrupt):
        cli._hydra_entry.__wrapped__(make_cfg("trainer.steps=1"))
    assert passed == [launcher]


@pytest.mark.parametrize("value", [0, -2, 1.5, "many", True])
def test_bad_threads(value):
    with pytest.raises(ConfigError) as err:
        parse_runtime({"threads": value})
    assert err.value.key == "threads" and "auto" in err.value.allowed


def test_bad_values_refused_by_build():
    with pytest.raises(ConfigError) as err:
        build(make_cfg("threads=0"))
    assert err.value.key == "threads"
    with pytest.raises(ConfigError) as err:
        build(make_cfg("matmul_precision=tf32"))
    assert err.value.key == "matmul_precision" and err.value.value == "tf32"
    assert all(name in err.value.allowed for name in ("highest", "high", "medium"))


def test_build_keeps_the_settings_and_sets_nothing():
    torch.set_num_threads(2)
    exp = build(make_cfg("threads=3", "matmul_precision=high"))
    assert exp.runtime == Runtime(threads=3, matmul_precision="high")
    assert torch.get_num_threads() == 2 and torch.get_float32_matmul_precision() == "highest", "build set them"
    assert build(make_cfg()).runtime == Runtime(threads=None, matmul_precision="highest")


def test_run_applies_threads_and_precision(tmp_path, monkeypatch):
    precisions = []  # what the run set (it puts the caller's setting back when it ends)
    set_precision = torch.set_float32_matmul_precision
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda p: precisions.append(p) or set_precision(p))
    summary = run_overrides(tmp_path, "trainer.steps=2", "threads=3", "matmul_precision=high", name="number")
    assert summary["threads"] == 3 and precisions[0] == "high"
    assert summary["config"]["matmul_precision"] == "high"
    assert run_overrides(tmp_path, "trainer.steps=2", name="small")["threads"] == 1, "the default run is small"
    assert precisions[-2] == "highest"
    cores = min(runtime.TORCH_DEFAULT_THREADS, runtime.available_cores())
    assert run_overrides(tmp_path, *WIDE, name="wide")["threads"] == cores, "auto above SMALL_WORK"


def test_peak_memory_in_summary(tmp_path):
    run_overrides(tmp_path, "trainer.steps=2")
    peak = json.loads((tmp_path / "run" / "summary.json").read_text())["peak_memory_bytes"]
    assert isinstance(peak, int) and not isinstance(peak, bool)
    assert 50e6 <= peak <= 1e12, f"{peak}: a process that imported torch holds >= 50 MB, counted in bytes"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_memory_on_cuda_is_the_runs(tmp_path):
    big = torch.empty(2**28, device="cuda")  # 1 GiB held before the run: not the run's
    del big
    summary = run_overrides(tmp_path, "device=cuda", "trainer.steps=2", "metrics.points=2")
    assert 0 < summary["peak_memory_bytes"] < 2**28


HEAVY = ("pandas", "scipy", "matplotlib", "tensorboard", "sympy")


def test_startup_imports_nothing_heavy():
    """Importing the CLI and building the default run import none of HEAVY (each costs ~0.1-0.4 s at start-up);
    the default run's TensorBoard events skip torch.utils.tensorboard and tensorboard.summary."""
    code = ("import sys\nimport dynamics_bench.cli\nfrom dynamics_bench import compose\n"
            "from dynamics_bench.experiment import build, run_experiment\n"
            f"heavy = {HEAVY!r}\n"
            "exp = build(compose('trainer.steps=1', 'logger.progress=false'))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
            "import tempfile\n"
            "with tempfile.TemporaryDirectory() as out:\n"
            "    run_experiment(exp, out)\n"
            "print(sorted(m for m in ('torch.utils.tensorboard', 'tensorboard.summary') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    built, ran = out.strip().splitlines()[-2:]
    assert built == "[]", f"imported at start-up: {built}"
    assert ran == "[]", f"imported by the default run: {ran}"


def test_a_run_leaves_the_callers_torch_settings_as_it_found_them(tmp_path):
    """threads and matmul_precision hold for the run only: a script that runs experiments keeps its own."""
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    other = 1 if threads != 1 else 2
    summary = run_overrides(tmp_path, f"threads={other}", "matmul_precision=medium", "trainer.steps=2",
                            "logger.tensorboard=false")
    assert summary["threads"] == other
    assert torch.get_num_threads() == threads and torch.get_float32_matmul_precision() == precision
