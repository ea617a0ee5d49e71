"""The command line end to end, in subprocesses started from a scratch directory (never the repository):
``python -m dynamics_bench`` and the console scripts ``dynamics-bench`` / ``dynamics-bench-aggregate``.

Single runs and their outputs, a multirun sweep aggregated into sweep.csv (and the same table from the Python
API), config errors (exit status, a message naming key and value, no traceback; also in-process as ConfigError),
concurrent runs getting their own directories, --help / --cfg job, a SIGKILLed run keeping complete CSV rows, and
a non-editable install (conf/ ships in the wheel)."""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import dynamics_bench
from dynamics_bench import ConfigError
from dynamics_bench.experiment import build
from tests.conftest import make_cfg, options

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = 180
WRITING = re.compile(r"^dynamics-bench: writing to (.+)$", re.M)


PACKAGE_ROOT = Path(dynamics_bench.__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: it imports the dynamics_bench this test process imported (unless extra
    sets PYTHONPATH), with unbuffered output."""
    return {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
            **extra}


def script(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"console script {name} is not installed next to {sys.executable}"
    return str(path)


def bench(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynamics_bench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env())


def run_dir_from(stdout: str) -> Path:
    found = WRITING.findall(stdout)
    assert len(found) == 1, f"expected one 'writing to' line in stdout:\n{stdout}"
    return Path(found[0])


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# ---------------------------------------------------------------------------------------------------------------
# A single run and its outputs.
def test_single_run_outputs(tmp_path):
    proc = ok(bench("trainer.steps=20", "seed=3", cwd=tmp_path))
    out = run_dir_from(proc.stdout)
    assert out.is_absolute() and out.is_dir()
    assert out.is_relative_to(tmp_path.resolve()), "the run dir must be under the working directory"
    assert str(out) in proc.stdout.strip().splitlines()[-1], "the final line says where the outputs are"

    metrics = pd.read_csv(out / "metrics.csv")
    assert {"step", "t", "member", "loss"} <= set(metrics.columns)
    assert metrics["step"].min() == 0 and metrics["step"].max() == 20

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "max_steps" and summary["steps"] == 20
    assert summary["config"]["trainer"]["steps"] == 20 and summary["config"]["seed"] == 3
    assert summary["final_loss"] == pytest.approx(metrics.loc[metrics["step"] == 20, "loss"].item())

    params = torch.load(out / "final_params.pt", weights_only=True)
    assert params and all(isinstance(v, torch.Tensor) and v.shape[0] == 1 for v in params.values())
    exp = build(make_cfg("trainer.steps=20", "seed=3"))  # the θ saved is the one reached: its loss is the last row's
    x, y = exp.task.data()
    assert exp.objective.loss(params, x[None], y[None]).item() == pytest.approx(summary["final_loss"], rel=1e-12)
    assert summary["final_loss"] < metrics.loc[metrics["step"] == 0, "loss"].item()  # GD moved: not θ_0's

    assert any((out / "tb").glob("events.out.tfevents.*")), "tb/ holds no event file"
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (out / ".hydra" / name).exists(), name


# ---------------------------------------------------------------------------------------------------------------
# Multirun sweeps and aggregation.
def multirun(cwd: Path, *args: str) -> Path:
    cwd.mkdir()
    ok(subprocess.run([script("dynamics-bench"), "-m", *args], cwd=cwd, capture_output=True, text=True,
                      timeout=TIMEOUT, env=env()))
    sweeps = list((cwd / "multirun").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def aggregate_cli(sweep: Path, *args: str) -> subprocess.CompletedProcess:
    return ok(subprocess.run([script("dynamics-bench-aggregate"), str(sweep), *args], cwd=sweep.parent,
                             capture_output=True, text=True, timeout=TIMEOUT, env=env()))


def test_multirun_aggregate(tmp_path):
    sweep = multirun(tmp_path / "a", "trainer.lr=0.01,0.02", "trainer.steps=10")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    proc = aggregate_cli(sweep, "--plot", "loss")
    assert "sweep.csv" in proc.stdout

    text = (sweep / "sweep.csv").read_text()
    table = pd.read_csv(sweep / "sweep.csv")
    assert len(table) == 2
    assert sorted(table["trainer.lr"]) == [0.01, 0.02]
    assert (table["trainer.steps"] == 10).all()
    for column in ("final_loss", "status", "run_final_loss", "run_status", "steps", "t", "member", "member_seed",
                   "wall_seconds"):
        assert column in table.columns, column
    assert set(table["status"]) == {"max_steps"} and (table["steps"] == 10).all()
    assert table["t"].tolist() == pytest.approx((table["trainer.lr"] * 10).tolist())
    assert table["final_loss"].notna().all() and (table["final_loss"] > 0).all()
    for _, row in table.iterrows():  # each row holds its own run's summary
        summary = json.loads((sweep / str(row["run"]) / "summary.json").read_text())
        assert summary["config"]["trainer"]["lr"] == row["trainer.lr"]
        assert summary["final_loss"] == pytest.approx(row["final_loss"])

    png = sweep / "loss.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The Python API returns the table the command line wrote, also once the submodule of the same name is loaded.
    importlib.import_module("dynamics_bench.sweep")
    frame = dynamics_bench.aggregate(sweep)
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_csv(index=False) == text


def test_multirun_aggregate_ensemble(tmp_path):
    sweep = multirun(tmp_path / "e", "trainer.lr=0.01,0.02", "trainer.steps=10", "ensemble.size=2")
    aggregate_cli(sweep)
    table = pd.read_csv(sweep / "sweep.csv")
    assert len(table) == 4
    assert sorted(table["trainer.lr"]) == [0.01, 0.01, 0.02, 0.02]
    for _, group in table.groupby("trainer.lr"):
        assert sorted(group["member"]) == [0, 1]
        assert group["member_seed"].nunique() == 2
        assert group["final_loss"].nunique() == 2, "members start from different inits"
        assert group["run_final_loss"].iloc[0] == pytest.approx(group["final_loss"].mean())
    assert dynamics_bench.aggregate(sweep).to_csv(index=False) == (sweep / "sweep.csv").read_text()


def test_api_functions_survive_submodule_imports(tmp_path):
    """dynamics_bench.run / .aggregate stay the API functions however often they are called and whatever
    submodules were imported before."""
    importlib.import_module("dynamics_bench.experiment")
    importlib.import_module("dynamics_bench.sweep")
    for i in range(2):
        summary = dynamics_bench.run(make_cfg("trainer.steps=2", "logger.tensorboard=false"), tmp_path / f"r{i}")
        assert summary["steps"] == 2
    from dynamics_bench import aggregate, run

    assert callable(run) and callable(aggregate)
    assert len(aggregate(tmp_path)) == 2 and len(dynamics_bench.aggregate(tmp_path / "r0")) == 1


def test_aggregate_without_runs_fails(tmp_path):
    proc = subprocess.run([script("dynamics-bench-aggregate"), str(tmp_path)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(tmp_path) in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# Config errors: non-zero exit, a message naming key and value, no traceback, nothing computed.
ERRORS = {  # id: (overrides, key, value as it must appear in the message)
    "width0": (["model.width=0"], "model.width", "0"),
    "depth0": (["model=deep_linear", "model.depth=0"], "model.depth", "0"),
    "lr_negative": (["trainer.lr=-1"], "trainer.lr", "-1"),
    "activation": (["model.activation=swish"], "model.activation", "swish"),
    "unknown_key": (["+model.foo=1"], "model.foo", "1"),
    "init_values_shape": (["model.init=explicit", "model.init_values=[[[1.0,2.0]],[[1.0]]]"],
                          "model.init_values", "1x2"),
    "cuda": (["device=cuda"], "device", "cuda"),
    "float16": (["dtype=float16"], "dtype", "float16"),
    "steps_mistyped": (["trainer.steps=abc"], "trainer.steps", "abc"),
    "lr_inf": (["trainer.lr=inf"], "trainer.lr", "inf"),
    "t_max_inf": (["trainer=gradient_flow", "trainer.t_max=inf"], "trainer.t_max", "inf"),
    "teacher_norms_inf": (["task.teacher_norms=inf"], "task.teacher_norms", "inf"),
    "batch_too_large": (["trainer=sgd", "trainer.batch_size=500", "task.n=100"], "trainer.batch_size", "500"),
}


def names_key_and_value(message: str, key: str, value: str) -> bool:
    """key and value on one line of message, the value after the key (as in 'key=value is invalid')."""
    return any(key in line and value in line.split(key, 1)[1] for line in message.splitlines())


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
    """Every error case as a CLI run, all started at once (each is mostly interpreter start-up)."""
    procs = {}
    for case, (overrides, _, _) in ERRORS.items():
        cwd = tmp_path_factory.mktemp(case)
        procs[case] = (cwd, subprocess.Popen([sys.executable, "-m", "dynamics_bench", *overrides], cwd=cwd,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()))
    results = {}
    for case, (cwd, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        results[case] = (cwd, proc.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("case", ERRORS)
def test_config_error_cli(case, error_runs):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: device=cuda is valid here")
    _, key, value = ERRORS[case]
    cwd, returncode, stdout, stderr = error_runs[case]
    assert returncode != 0
    assert "Traceback" not in stderr, stderr
    assert names_key_and_value(stderr, key, value), f"stderr does not name {key} and {value!r}:\n{stderr}"
    assert not list(cwd.rglob("metrics.csv")), "a config error must stop the run before any work"


@pytest.mark.parametrize("case", ERRORS)
def test_config_error_in_process(case, cpu_only):
    overrides, key, value = ERRORS[case]
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*overrides))
    assert names_key_and_value(str(info.value), key, value), str(info.value)
    assert info.value.key.startswith(key)


# ---------------------------------------------------------------------------------------------------------------
def test_multirun_records_an_invalid_job_and_goes_on(tmp_path):
    ok(bench("-m", "model.width=0,3", "trainer.steps=5", "logger.tensorboard=false", cwd=tmp_path))
    summaries = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "multirun").rglob("summary.json")}
    assert summaries["0"]["status"] == "failed" and "model.width=0" in summaries["0"]["reason"]
    assert summaries["1"]["status"] == "max_steps"


def test_infinite_threshold_is_valid_json(tmp_path):
    """A config may say inf (only stop on NaN/inf): summary.json stays strict JSON, with the value as a string."""
    out = run_dir_from(ok(bench("trainer.divergence_threshold=inf", "trainer.steps=5", cwd=tmp_path)).stdout)
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["status"] == "max_steps" and summary["config"]["trainer"]["divergence_threshold"] == "inf"


def test_concurrent_runs_get_their_own_directories(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "dynamics_bench", "trainer.steps=5", "logger.tensorboard=false"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
             for _ in range(2)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, stderr
        outs.append(run_dir_from(stdout))
    assert outs[0] != outs[1]
    for out in outs:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "max_steps" and summary["steps"] == 5
        assert pd.read_csv(out / "metrics.csv")["step"].max() == 5


def test_help_and_cfg_from_any_directory(tmp_path):
    help_text = ok(bench("--help", cwd=tmp_path)).stdout
    for group in ("model", "task", "loss", "trainer", "metrics", "logger"):
        assert re.search(rf"^{group}: .*{options(group)[0]}", help_text, re.M), f"--help lacks group {group}"

    cfg_text = ok(bench("--cfg", "job", "trainer.lr=0.123", cwd=tmp_path)).stdout
    for key in ("model:", "task:", "loss:", "trainer:", "metrics:", "logger:", "ensemble:", "seed:", "dtype:"):
        assert re.search(rf"^{key}", cfg_text, re.M), f"--cfg job lacks {key}"
    assert "name: two_layer" in cfg_text and "lr: 0.123" in cfg_text
    assert not (tmp_path / "outputs").exists(), "--help/--cfg must not start a run"


def test_killed_run_keeps_complete_rows(tmp_path):
    """SIGKILL mid-run: metrics.csv holds every row logged so far as complete lines (rows are flushed as they
    are logged, so they show up one by one rather than a buffer-full at a time)."""
    every = 100
    args = ["trainer.steps=10000000", f"metrics.every={every}"]
    proc = subprocess.Popen([sys.executable, "-m", "dynamics_bench", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())
    first_seen = None  # data rows the first time metrics.csv had any
    try:
        line = proc.stdout.readline()
        match = WRITING.match(line.rstrip("\n"))
        assert match, f"first line: {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        csv = Path(match.group(1)) / "metrics.csv"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = csv.read_text().count("\n") - 1 if csv.exists() else -1
            if first_seen is None and rows > 0:
                first_seen = rows
            if rows >= 3:
                break
            assert proc.poll() is None, "the run ended before it was killed"
            time.sleep(0.02)
        else:
            pytest.fail("metrics.csv did not get 3 rows in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert first_seen <= 5, f"metrics.csv first appeared with {first_seen} rows: rows are not flushed as logged"
    text = csv.read_text()
    assert text.endswith("\n"), "the last row is incomplete"
    lines = text.splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["step", "t", "member", "loss"]
    assert all(len(line.split(",")) == len(header) for line in lines), "a row has the wrong number of cells"
    table = pd.read_csv(csv)
    assert len(table) >= 3
    assert table["step"].tolist() == list(range(0, every * len(table), every))
    assert table["loss"].notna().all()
    assert not (csv.parent / "summary.json").exists()


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_non_editable_install(tmp_path):
    """Build the package from a copy of the source (the checkout itself stays untouched), install it
    non-editable into a target folder, and run from there: conf/ must ship inside the package."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(REPO / "dynamics_bench", src / "dynamics_bench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--no-compile", "--quiet", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=TIMEOUT, env=env(PIP_NO_INPUT="1"))
    assert pip.returncode == 0, pip.stdout + pip.stderr

    def yamls(conf: Path) -> set[Path]:
        return {p.relative_to(conf) for p in conf.rglob("*.yaml")}

    shipped, in_repo = yamls(site / "dynamics_bench" / "conf"), yamls(REPO / "dynamics_bench" / "conf")
    assert shipped == in_repo, f"missing from the install: {sorted(map(str, in_repo - shipped))}"

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    site_env = env(PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import dynamics_bench; print(dynamics_bench.__file__)"],
                           cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=site_env)
    assert Path(where.stdout.strip()).is_relative_to(site), f"imported from {where.stdout!r}, not the install"
    proc = subprocess.run([sys.executable, "-m", "dynamics_bench", "trainer.steps=5"], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT, env=site_env)
    ok(proc)
    out = run_dir_from(proc.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "max_steps" and summary["steps"] == 5
