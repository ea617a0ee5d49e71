"""The bad-input catalogue (issue 11): every config group, types, NaN/inf, wrong shapes, contradictions, disks,
memory, checkpoints and resumes; each refused before any work with a message naming the key, the value and what
is allowed, exit code 2, no traceback, and nothing already on disk lost or overwritten.

The cases that need a process of their own (what is on disk, Hydra's own errors, the aggregate command) and one
per config group go through the real command line, `python -m dynamics_bench` in a scratch directory; the rest
are checked in-process, where build() raises the ConfigError that the command line turns into exit code 2 (a
subprocess is ~2 s of interpreter and torch start-up each). Errors Hydra raises before the app runs (an unknown
option, a key without +, a malformed override) keep Hydra's exit code 1 and message: their ids start `hydra_`.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import dynamics_bench
from dynamics_bench import ConfigError
from dynamics_bench.experiment import build
from dynamics_bench.memory import blame, format_bytes, run_needs
from tests.conftest import make_cfg

PACKAGE_ROOT = Path(dynamics_bench.__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = 120
REFUSAL_TIMEOUT = 60
CONFIG_ERROR, HYDRA_ERROR = 2, 1
MEMORY = r"needs [\d.]+ [kMGTPE]?B .*but this machine has [\d.]+ [kMGTPE]?B available"


@dataclass(frozen=True)
class Case:
    """A bad input: its overrides ({files} is a directory of prepared files, {cwd} the case's scratch directory),
    the key and value the message must name, a regex for what it says is allowed, and how it is run: "cli" (the
    command line), "build" (in-process) or "hydra" (the command line, refused by Hydra itself)."""

    overrides: tuple[str, ...]
    key: str
    value: str
    allowed: str
    via: str = "build"
    command: str = "bench"  # or "aggregate": dynamics-bench-aggregate <the first override>


def case(*overrides: str, key: str, value: str, allowed: str, via: str = "build", command: str = "bench") -> Case:
    return Case(overrides, key, value, allowed, via, command)


CASES = {
    # model
    "width_zero": case("model.width=0", key="model.width", value="0", allowed="integer >= 1"),
    "width_float": case("model.width=2.5", key="model.width", value="2.5", allowed="must be an integer"),
    "depth_zero": case("model=deep_linear", "model.depth=0", key="model.depth", value="0", allowed=">= 1"),
    "activation": case("model.activation=swish", key="model.activation", value="swish",
                       allowed="one of relu, abs"),
    "init_scale_nan": case("model.init_scale=nan", key="model.init_scale", value="nan", allowed="> 0|finite"),
    "explicit_shape": case("model.init=explicit", "model.init_values=[[[1.0,2.0]],[[1.0]]]",
                           key="model.init_values[0]", value="1x2", allowed="shape 8x5", via="cli"),
    "file_shape": case("model.init=file", "model.init_path={files}/wrong_shape.pt", key="model.init_path",
                       value="wrong_shape.pt", allowed=r"w has shape \(1, 3, 5\); this model needs \(E, 8, 5\)",
                       via="cli"),
    "init_values_without_explicit": case("model.init_values=[[[1.0]]]", key="model.init_values", value="1 matrices",
                                         allowed="null unless model.init=explicit"),
    "train_layers_unknown": case("model.train_layers=[W9]", key="model.train_layers[0]", value="W9",
                                 allowed="one of this model's parameters: w, a"),
    "lazy_alpha_negative": case("model.lazy_alpha=-1", key="model.lazy_alpha", value="-1", allowed="> 0"),
    "lazy_alpha_inf": case("model.lazy_alpha=inf", key="model.lazy_alpha", value="inf", allowed="finite"),
    "linearize_type": case("model.linearize=maybe", key="model.linearize", value="maybe", allowed="true or false"),
    "symmetric_odd_width": case("model=mlp", "model.init=symmetric", "model.width=3", key="model.width",
                                value="3", allowed="even"),
    "imbalance_negative": case("model=deep_linear", "task=matrix_cost", "model.width=1", "model.init=imbalanced",
                               "model.init_product=0.5", "model.init_imbalance=-1", key="model.init_imbalance",
                               value="-1", allowed=">= 0"),
    "near_teacher_off_teacher": case("model.init=near_teacher", "task=linear_regression",
                                     key="model.init", value="near_teacher", allowed="needs a teacher task"),
    # task
    "n_zero": case("task.n=0", key="task.n", value="0", allowed="> 0"),
    "noise_nan": case("task.noise=nan", key="task.noise", value="nan", allowed="finite"),
    "teacher_norms_length": case("task.teacher_norms=[1.0,2.0,3.0]", key="task.teacher_norms", value="[1.0, 2.0, 3.0]",
                                 allowed="list of teacher_width=2 numbers"),
    "population_noise": case("task.population=true", "task.noise=0.1", key="task.noise", value="0.1",
                             allowed="0 with task.population=true"),
    "population_sgd": case("task.population=true", "trainer=sgd", key="trainer", value="sgd", allowed="gd"),
    "dataset_missing": case("task=dataset", "task.path={cwd}/missing.csv", key="task.path", value="missing.csv",
                            allowed="no such file"),
    "data_too_large": case("task.n=10000000000", key="task.n", value="10000000000", allowed=MEMORY, via="cli"),
    # loss
    "reduction": case("loss.reduction=median", key="loss.reduction", value="median", allowed="mean, sum"),
    "classification_loss_on_regression": case("loss=logistic", key="loss.name", value="logistic",
                                              allowed="regression task"),
    # trainer
    "lr_negative": case("trainer.lr=-1", key="trainer.lr", value="-1", allowed="> 0", via="cli"),
    "lr_inf": case("trainer.lr=inf", key="trainer.lr", value="inf", allowed="finite"),
    "steps_type": case("trainer.steps=abc", key="trainer.steps", value="abc", allowed="must be an integer"),
    "compile_type": case("trainer.compile=maybe", key="trainer.compile", value="maybe", allowed="true or false"),
    "method": case("trainer=gradient_flow", "trainer.method=rk5", key="trainer.method", value="rk5",
                   allowed="one of .*rk4.*dopri5"),
    "rtol_fixed_step": case("trainer=gradient_flow", "trainer.rtol=1e-6", key="trainer.rtol", value="1e-06",
                            allowed="null"),
    "adaptive_online": case("trainer=gradient_flow", "trainer.method=dopri5", "task.online=true",
                            key="trainer.method", value="dopri5", allowed="fixed data set"),
    "batch_too_large": case("trainer=sgd", "trainer.batch_size=500", key="trainer.batch_size", value="500",
                            allowed="200"),
    "threshold_nan": case("trainer.divergence_threshold=nan", key="trainer.divergence_threshold", value="nan",
                          allowed="> 0|finite"),
    # metrics
    "metric_name": case("metrics.names=[loss,nope]", key="metrics.names[1]", value="nope", allowed="one of auto"),
    "points_one": case("metrics.points=1", key="metrics.points", value="1", allowed=">= 2", via="cli"),
    "every_and_times": case("metrics.every=5", "metrics.times=[1.0]", key="metrics.times", value="[1.0]",
                            allowed="null when metrics.every is set"),
    "times_off_grid": case("metrics.times=[0.033]", key="metrics.times[0]", value="0.033", allowed="multiple"),
    "probe_too_large": case("metrics.probe=1000", key="metrics.probe", value="1000", allowed="<= the task's 200"),
    "imbalance_frozen_layer": case("metrics.names=[imbalance]", "model.train_layers=[w]", key="metrics.names[0]",
                                   value="imbalance", allowed="every"),
    "loss_floor_inf": case("metrics.loss_floor=inf", key="metrics.loss_floor", value="inf", allowed="finite"),
    # logger
    "tb_members_negative": case("logger.tb_members=-1", key="logger.tb_members", value="-1", allowed=">= 0",
                                via="cli"),
    "tensorboard_type": case("logger.tensorboard=sometimes", key="logger.tensorboard", value="sometimes",
                             allowed="true or false"),
    # ensemble
    "ensemble_zero": case("ensemble.size=0", key="ensemble.size", value="0", allowed="integer >= 1", via="cli"),
    "vary_shared_key": case("ensemble.vary={model.width:[4,8]}", key="ensemble.vary.model.width", value="[4, 8]",
                            allowed="cannot vary inside a run"),
    "vary_empty": case("ensemble.vary={trainer.lr:[]}", key="ensemble.vary.trainer.lr", value="[]",
                       allowed="non-empty|empty"),
    "vary_bad_value": case("ensemble.vary={trainer.lr:[0.1,-1]}", key="ensemble.vary.trainer.lr", value="-1",
                           allowed="> 0"),
    "vary_lr_with_times": case("ensemble.vary={trainer.lr:[0.1,0.2]}", "metrics.times=[0.5]", key="metrics.times",
                               value="[0.5]", allowed="must be null when ensemble.vary varies trainer.lr"),
    # top level
    "seed_negative": case("seed=-1", key="seed", value="-1", allowed="integer >= 0"),
    "device": case("device=tpu", key="device", value="tpu", allowed="cpu, cuda", via="cli"),
    "dtype": case("dtype=float16", key="dtype", value="float16", allowed="float64, float32"),
    "threads_zero": case("threads=0", key="threads", value="0", allowed="auto or an integer >= 1"),
    "matmul_precision": case("matmul_precision=max", key="matmul_precision", value="max",
                             allowed="highest, high, medium"),
    "top_level_unknown": case("+bogus=1", key="bogus", value="1", allowed="unknown top-level key"),
    # too large for memory
    "model_too_large": case("model.width=100000000", key="model.width", value="100000000", allowed=MEMORY,
                            via="cli"),
    # checkpoints and resume
    "checkpoint_every_seconds": case("checkpoint.every_seconds=-1", key="checkpoint.every_seconds", value="-1",
                                     allowed="> 0", via="cli"),
    "checkpoint_every_steps": case("checkpoint.every_steps=0", key="checkpoint.every_steps", value="0",
                                   allowed=">= 1|> 0"),
    "checkpoint_keep": case("checkpoint.keep=maybe", key="checkpoint.keep", value="maybe", allowed="true or false"),
    "resume_missing": case("resume=/nonexistent/dir", key="resume", value="/nonexistent/dir",
                           allowed="exist|no such|not a run", via="cli"),
    "resume_corrupt": case("resume={cwd}/prev_corrupt", key="resume", value="prev_corrupt",
                           allowed="checkpoint.pt", via="cli"),
    "resume_foreign": case("resume={cwd}/prev_foreign", key="resume", value="prev_foreign",
                           allowed="checkpoint.pt", via="cli"),
    "resume_with_override": case("resume={cwd}/prev", "model.width=3", key="model.width", value="3",
                                 allowed="resume", via="cli"),
    "resume_finished": case("resume={cwd}/outputs/earlier", key="resume", value="earlier", allowed="finished",
                            via="cli"),
    "resume_empty": case("resume=", key="resume", value="''", allowed="run directory", via="cli"),
    "fresh_run_over_a_checkpoint": case("hydra.run.dir={cwd}/prev", key="hydra.run.dir", value="prev",
                                        allowed="resume=", via="cli"),
    # the disk and the aggregate
    "output_under_a_file": case("hydra.run.dir={cwd}/keep.txt/run", key="hydra.run.dir", value="keep.txt/run",
                                allowed="director", via="cli"),
    "aggregate_empty": case("{cwd}/empty", key="dynamics-bench-aggregate", value="empty", allowed="no runs",
                            via="cli", command="aggregate"),
    # refused by Hydra before the app runs: Hydra's exit code and message
    "hydra_unknown_option": case("model=nope", key="model/nope", value="", allowed="Could not find 'model/nope'",
                                 via="hydra"),
    "hydra_key_without_plus": case("foo=1", key="foo", value="", allowed=r"append to your config use \+foo=1",
                                   via="hydra"),
    "hydra_malformed_override": case("trainer.lr=[0.1", key="at input", value="[0.1", allowed="override_grammar",
                                     via="hydra"),
}
CLI_CASES = [name for name, c in CASES.items() if c.via != "build"]
BUILD_CASES = [name for name, c in CASES.items() if c.via == "build"]


def names_key_and_value(message: str, key: str, value: str) -> bool:
    """key and value on one line of message, the value after the key (as in 'key=value is invalid')."""
    return any(key in line and value in line.split(key, 1)[1] for line in message.splitlines())


def env() -> dict[str, str]:
    """A subprocess imports the dynamics_bench this test process imported."""
    return {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def fill(text: str, files: Path, cwd: Path) -> str:
    return text.replace("{files}", str(files)).replace("{cwd}", str(cwd))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Prepared inputs: an init file of the wrong shapes for the default two_layer (width 8, 5 inputs), and an
    interrupted run with its checkpoint (the lead's test hook sends SIGTERM at iteration 1), to resume."""
    folder = tmp_path_factory.mktemp("files")
    torch.save({"w": torch.zeros(1, 3, 5), "a": torch.zeros(1, 1, 3)}, folder / "wrong_shape.pt")
    subprocess.run([sys.executable, "-m", "dynamics_bench", "trainer.steps=200", "checkpoint.keep=true",
                    "logger.tensorboard=false", f"hydra.run.dir={folder / 'interrupted'}"], cwd=folder,
                   capture_output=True, timeout=TIMEOUT, env={**env(), "DYNAMICS_BENCH_TEST_HOOK": "sigterm@1"})
    return folder


def prepare(cwd: Path, files: Path) -> None:
    """What is on disk before a bad command: a file, an earlier run, and runs to resume (one as it was left, one
    with random bytes for a checkpoint, one with a foreign checkpoint)."""
    (cwd / "keep.txt").write_text("not to be touched\n")
    earlier = cwd / "outputs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "metrics.csv").write_text("step,t,member,loss\n0,0,0,1.0\n")
    (earlier / "summary.json").write_text('{"status": "converged"}\n')
    (cwd / "empty").mkdir()
    if (files / "interrupted").is_dir():
        for name in ("prev", "prev_corrupt", "prev_foreign"):
            shutil.copytree(files / "interrupted", cwd / name)
        (cwd / "prev_corrupt" / "checkpoint.pt").write_bytes(random.Random(0).randbytes(4096))
        torch.save({"a": 1}, cwd / "prev_foreign" / "checkpoint.pt")


def command(c: Case, files: Path, cwd: Path) -> list[str]:
    args = [fill(o, files, cwd) for o in c.overrides]
    if c.command == "aggregate":
        return [str(BIN / "dynamics-bench-aggregate"), *args]
    run_dir = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={cwd / 'run'}"]
    return [sys.executable, "-m", "dynamics_bench", *args, *run_dir]


@pytest.fixture(scope="module")
def cli_runs(files, tmp_path_factory) -> dict[str, tuple[Path, dict[str, bytes], subprocess.CompletedProcess]]:
    """Every command-line case, two at a time (each is mostly start-up): its directory, what was on disk
    before, and the finished process."""
    def one(name: str) -> tuple[Path, dict[str, bytes], subprocess.CompletedProcess]:
        cwd = tmp_path_factory.mktemp(name)
        prepare(cwd, files)
        before = snapshot(cwd)
        args = command(CASES[name], files, cwd)
        try:  # a refusal takes seconds; one that runs instead (a missing check) fails its case alone
            proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=REFUSAL_TIMEOUT, env=env())
        except subprocess.TimeoutExpired as err:
            proc = subprocess.CompletedProcess(args, None, str(err.stdout), f"ran {REFUSAL_TIMEOUT} s: not refused")
        return cwd, before, proc
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CLI_CASES, pool.map(one, CLI_CASES)))


@pytest.mark.parametrize("name", CLI_CASES)
def test_refused_on_the_command_line(name, cli_runs, files):
    c = CASES[name]
    cwd, before, proc = cli_runs[name]
    shown = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == (HYDRA_ERROR if c.via == "hydra" else CONFIG_ERROR), shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    assert names_key_and_value(proc.stderr, c.key, fill(c.value, files, cwd)), shown
    assert re.search(c.allowed, proc.stderr), f"stderr does not say what is allowed ({c.allowed}):\n{shown}"
    after = snapshot(cwd)
    lost = [path for path in before if after.get(path) != before[path]]
    assert not lost, f"files lost or changed: {lost}"
    assert not [path for path in after if path not in before and path.endswith("metrics.csv")], "no work"


@pytest.mark.parametrize("name", [n for n in CLI_CASES if CASES[n].via == "cli" and CASES[n].command == "bench"])
def test_refused_run_leaves_no_directory(name, cli_runs):
    """A refused single run leaves no (empty) output directory behind."""
    cwd, _, _ = cli_runs[name]
    assert not (cwd / "run").exists(), sorted(p.name for p in (cwd / "run").rglob("*"))


@pytest.mark.parametrize("name", BUILD_CASES)
def test_refused_by_build(name, tmp_path, cpu_only):
    c = CASES[name]
    overrides = [fill(o, tmp_path, tmp_path) for o in c.overrides]
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*overrides))
    message = str(info.value)
    assert names_key_and_value(message, c.key, fill(c.value, tmp_path, tmp_path)), message
    assert info.value.key.startswith(c.key), info.value.key
    assert re.search(c.allowed, info.value.allowed), message


def test_the_catalogue_is_large():
    assert len(CASES) >= 40 and len(CLI_CASES) >= 12


# ---------------------------------------------------------------------------------------------------------------
# The memory estimate against a real run's peak.
MEASURE = textwrap.dedent("""
    import json, resource, sys, tempfile, torch
    from dynamics_bench import compose
    from dynamics_bench.experiment import build, run_experiment
    torch.set_num_threads(1)
    exp = build(compose("logger.tensorboard=false", "logger.progress=false", "metrics.names=[loss]", *sys.argv[1:]))
    before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
    with tempfile.TemporaryDirectory() as out:
        run_experiment(exp, out)
    print(json.dumps({"measured": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before,
                      "parameters": exp.objective.model.num_params, "samples": exp.task.data()[0].shape[0]}))
""")
MEASURED = {  # overrides, the rows of the weight matrices (units), numbers in the data set
    "activations": (("model.width=60000", "ensemble.size=2", "trainer.steps=3"), 60_001, 200 * 6),
    "parameters": (("model=deep_linear", "task=linear_regression", "model.width=3000", "model.depth=3",
                    "trainer=gradient_flow", "trainer.method=rk4", "trainer.t_max=0.03"), 6005, 100 * 11),
}


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
@pytest.mark.parametrize("name", MEASURED)
def test_memory_estimate_matches_a_run(name, tmp_path):
    """run_needs against the peak resident set a run adds (~0.6-0.8 GB, against which the interpreter's own noise is
    small): within a factor 1.5 either way (measured 1.00 and 1.00 here; 1.24 for a standard-parameterized mlp,
    whose scaled weights are one more copy the estimate leaves out). A missed member axis, dtype size or stage
    count would be off by 2 or more."""
    overrides, units, data_entries = MEASURED[name]
    proc = subprocess.run([sys.executable, "-c", MEASURE, *overrides], cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT, env=env())
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    members = 2 if "ensemble.size=2" in overrides else 1
    stages = 4 if "trainer.method=rk4" in overrides else 1
    needs = run_needs(members=members, parameters=got["parameters"], trainable=got["parameters"], units=units,
                      samples=got["samples"], data_entries=data_entries, stages=stages, itemsize=8)
    estimate = sum(n.bytes for n in needs)
    ratio = got["measured"] / estimate
    assert 1 / 1.5 <= ratio <= 1.5, f"measured {format_bytes(got['measured'])}, estimated {format_bytes(estimate)}"


def test_memory_message_names_each_part():
    needs = run_needs(members=2, parameters=10**6, trainable=10**6, units=1000, samples=50, data_entries=300,
                      stages=4, itemsize=8)
    assert [n.bytes for n in needs] == [2 * 10**6 * 8 * 3, 2 * 10**6 * 8 * 8, 2 * 50 * 1000 * 8 * 3, 300 * 8]
    assert str(needs[1]) == ("gradients 128.0 MB = E=2 × 1.0e+06 trainable × 8 bytes × 8 (4 stages, direction, "
                             "stage point, their sum's 2 temporaries)")
    assert format_bytes(2.4e12) == "2.4 TB" and format_bytes(999) == "999 bytes"
    assert blame(needs) == "model.width"  # parameters and activations, each on its widest factor
    wide_data = run_needs(members=1, parameters=10, trainable=10, units=10, samples=10**9, data_entries=6 * 10**9,
                          stages=1, itemsize=8)
    assert blame(wide_data) == "task.n"
