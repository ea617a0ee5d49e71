"""Smoke test of every config in conf/, found by glob: every option of every group and every experiment preset
composes, builds (validation + model/task construction) and runs a few capped steps in-process, writing a
summary with a sane status and metrics.csv rows for step 0 and the last step. A new YAML file in any group folder
or in conf/experiment/ is picked up without touching this file."""
from __future__ import annotations

import pandas as pd
import pytest

from dynamics_bench import CONF_DIR
from dynamics_bench.run import build, run
from tests.conftest import make_cfg, options

GROUPS = ("model", "task", "loss", "trainer", "metrics", "logger")
CAP_STEPS = 3

# Options that cannot run with the defaults of the other groups, and the companion overrides that make them run.
COMPANIONS: dict[str, list[str]] = {
    "loss=logistic": ["task=classification"],  # binary classification loss: task.num_classes=2 (the default)
    "loss=cross_entropy": ["task=classification"],
    "task=classification": ["loss=cross_entropy"],  # a classification task needs a classification loss
}

CASES = [f"{group}={option}" for group in GROUPS for option in options(group)]
EXPERIMENTS = [f"experiment={option}" for option in options("experiment")]


def test_every_group_has_options():
    """The glob finds the config folders (a broken CONF_DIR would otherwise silently parametrize nothing)."""
    for group in GROUPS:
        assert options(group), f"no options found for group {group!r} under {CONF_DIR / group}"
    assert (CONF_DIR / "experiment").is_dir()


def with_companions(choice: str) -> list[str]:
    return [choice, *COMPANIONS.get(choice, [])]


def capped(*overrides: str) -> list[str]:
    """overrides plus the cap on the work, chosen from the trainer the composed config ends up with (an
    experiment may pick any trainer)."""
    cfg = make_cfg(*overrides)
    name = cfg.trainer.name
    if name in ("gd", "sgd"):
        cap = [f"trainer.steps={CAP_STEPS}"]
    elif name == "gradient_flow":
        cap = [f"trainer.t_max={CAP_STEPS * float(cfg.trainer.h)!r}"]
    else:
        pytest.fail(f"trainer.name={name!r}: teach tests/test_configs.py::capped how to cap this trainer's work")
    return [*overrides, *cap]


def check_run(tmp_path, overrides: list[str]) -> None:
    cfg = make_cfg(*overrides)
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] in {"max_steps", "converged"}, summary.get("status")
    last = summary["steps"]
    assert 0 <= last <= CAP_STEPS, f"the cap did not hold: {last} steps"
    if summary["status"] == "max_steps":
        assert last == CAP_STEPS
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    size = summary["ensemble_size"]
    for step in (0, last):
        rows = metrics[metrics["step"] == step]
        assert sorted(rows["member"]) == list(range(size)), f"metrics.csv lacks rows for step {step}"
        assert rows["loss"].notna().all()
    assert metrics["step"].max() == last
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("choice", CASES)
def test_option_builds(choice):
    """Every option composes and builds with the defaults (plus its companion, if it needs one)."""
    exp = build(make_cfg(*with_companions(choice)))
    group, option = choice.split("=")
    assert exp.config[group] is not None
    if group in ("model", "task", "loss", "trainer"):
        # the option's own name reached the built experiment
        assert exp.config[group]["name"] == make_cfg(*with_companions(choice))[group]["name"]


@pytest.mark.parametrize("choice", CASES)
def test_option_runs(tmp_path, choice):
    check_run(tmp_path, capped(*with_companions(choice)))


@pytest.mark.parametrize("choice", EXPERIMENTS)
def test_experiment_builds(choice):
    build(make_cfg(choice))


@pytest.mark.parametrize("choice", EXPERIMENTS)
def test_experiment_runs(tmp_path, choice):
    check_run(tmp_path, capped(choice))


def test_default_config_runs(tmp_path):
    """The default config, unmodified apart from a shorter horizon (the load of a shared CI machine makes the
    full 1000 steps slow), trains: the loss goes down."""
    summary = run(make_cfg("trainer.steps=100"), tmp_path / "run")
    assert summary["status"] == "max_steps"
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    first = metrics.loc[metrics["step"] == 0, "loss"].item()
    assert summary["final_loss"] < first


def test_default_config_builds():
    exp = build(make_cfg())
    assert exp.config["model"]["name"] == "two_layer" and exp.config["trainer"]["name"] == "gd"
