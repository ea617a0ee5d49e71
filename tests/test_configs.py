"""Smoke test of every config in conf/, found by glob: every option of every group and every experiment preset
composes, builds (validation + model/task construction) and runs a few capped steps in-process, writing a
summary with a sane status and metrics.csv rows for step 0 and the last step. A new YAML file in any group folder
or in conf/experiment/ is picked up without touching this file."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from dynamics_bench import CONF_DIR
from dynamics_bench.experiment import build, run
from dynamics_bench.integrators import INTEGRATORS
from tests.conftest import QUIET, make_cfg, options

# Every group folder of conf/ (a new group is picked up too); experiment/ holds presets, tested on their own.
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml")) and p.name != "experiment")
CAP_STEPS = 3
ADAPTIVE = {name for name, method in INTEGRATORS.items() if method.adaptive}

# Options that cannot run with the defaults of the other groups, and the companion overrides that make them run.
COMPANIONS: dict[str, list[str]] = {
    "loss=logistic": ["task=classification"],  # binary classification loss: task.num_classes=2 (the default)
    "loss=cross_entropy": ["task=classification"],
    "task=classification": ["loss=cross_entropy"],  # a classification task needs a classification loss
}

DATASET = "task=dataset"  # reads a user's file: task.path has no default, so the tests write one (data_file)

CASES = [f"{group}={option}" for group in GROUPS for option in options(group)]
EXPERIMENTS = [f"experiment={option}" for option in options("experiment")]


def test_every_group_has_options():
    """The glob finds the config folders (a broken CONF_DIR would otherwise silently parametrize nothing)."""
    assert {"model", "task", "loss", "trainer", "metrics", "logger"} <= set(GROUPS), GROUPS
    assert (CONF_DIR / "experiment").is_dir()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    """A small regression data set for task=dataset: x (8, 3), y (8, 2)."""
    path = tmp_path_factory.mktemp("dataset") / "data.pt"
    gen = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randn(8, 3, generator=gen), "y": torch.randn(8, 2, generator=gen)}, path)
    return str(path)


def with_companions(choice: str, data_file: str) -> list[str]:
    path = [f"task.path={data_file}"] if choice == DATASET else []
    return [choice, *COMPANIONS.get(choice, []), *path]


def capped(*overrides: str) -> list[str]:
    """overrides plus the cap on the work, chosen from the trainer the composed config ends up with (an
    experiment may pick any trainer)."""
    cfg = make_cfg(*overrides)
    name = cfg.trainer.name
    if name in ("gd", "sgd"):
        cap = [f"trainer.steps={CAP_STEPS}"]
    elif name == "gradient_flow" and INTEGRATORS[cfg.trainer.method].adaptive:  # steps of its own choosing
        cap = [f"trainer.t_max={CAP_STEPS * float(cfg.trainer.h)!r}", f"trainer.max_steps={CAP_STEPS}"]
    elif name == "gradient_flow":
        cap = [f"trainer.t_max={CAP_STEPS * float(cfg.trainer.h)!r}"]
    else:
        pytest.fail(f"trainer.name={name!r}: teach tests/test_configs.py::capped how to cap this trainer's work")
    return [*overrides, *cap]


EXPECT_DIVERGED = "# expect: diverged"  # a preset's line saying it is meant to diverge (claim p1_9's GD caveat)


def meant_to_diverge(choice: str) -> bool:
    group, option = choice.split("=")
    return EXPECT_DIVERGED in (CONF_DIR / group / f"{option}.yaml").read_text().splitlines()


def check_run(tmp_path, overrides: list[str], diverges: bool = False) -> None:
    cfg = make_cfg(*overrides)
    summary = run(cfg, tmp_path / "run")
    adaptive = summary["config"]["trainer"].get("method") in ADAPTIVE
    allowed = {"diverged"} if diverges else {"max_steps", "converged"} | ({"step_budget"} if adaptive else set())
    assert summary["status"] in allowed, summary.get("status")
    last = summary["steps"]
    assert 0 <= last <= CAP_STEPS, f"the cap did not hold: {last} steps"
    if summary["status"] == "max_steps" and not adaptive:
        assert last == CAP_STEPS
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert sorted(metrics["member"].unique()) == list(range(summary["ensemble_size"]))
    for member, rows in metrics.groupby("member"):  # from step 0 to the member's own last step
        assert rows["step"].iloc[0] == 0 and rows["step"].iloc[-1] == summary["members"][member]["steps"]
        assert rows["loss"].notna().all()
    assert metrics["step"].max() == last
    check_summary_file(tmp_path / "run", cfg, summary, metrics)


NOT_RECORDED = {"resume"}  # top-level keys that say how to run, not what: never in summary.json's config


def check_summary_file(out, cfg, summary: dict, metrics: pd.DataFrame) -> None:
    """summary.json on disk is what ran: the composed config (resolved) and what run() returned, and each member's
    outcome is its last metrics.csv row."""
    written = json.loads((out / "summary.json").read_text())
    composed = OmegaConf.to_container(cfg, resolve=True)
    assert written["config"] == {k: v for k, v in composed.items() if k not in NOT_RECORDED}
    for key in ("status", "steps", "t", "iterations", "grad_evals", "ensemble_size", "members"):
        assert written[key] == json.loads(json.dumps(summary[key])), key  # JSON writes NaN/inf as null or text
    for member, rows in metrics.groupby("member"):
        entry, last = written["members"][member], rows.iloc[-1]
        assert (entry["steps"], entry["t"]) == (last["step"], pytest.approx(last["t"], rel=1e-15, abs=0))
        if entry["final_loss"] is not None:
            assert entry["final_loss"] == pytest.approx(last["loss"], rel=1e-15)


@pytest.mark.parametrize("choice", CASES)
def test_option_builds(choice, data_file):
    """Every option composes and builds with the defaults (plus its companion, if it needs one), and what was
    built is the option's file: each of its literal values reached the experiment's config."""
    overrides = with_companions(choice, data_file)
    exp = build(make_cfg(*overrides))
    group, option = choice.split("=")
    values = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
    overridden = {item.split("=")[0] for item in [*QUIET, *overrides]}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("${") or f"{group}.{key}" in overridden:
            continue  # an interpolation resolves to another key; the test helpers override a few keys
        assert exp.config[group][key] == value, f"{group}.{key}"


@pytest.mark.parametrize("choice", CASES)
def test_option_runs(tmp_path, choice, data_file):
    check_run(tmp_path, capped(*with_companions(choice, data_file)))


def leaves(tree: dict, prefix: tuple[str, ...] = ()):
    """(key path, value) of every non-mapping value of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@pytest.mark.parametrize("choice", EXPERIMENTS)
def test_experiment_builds(choice):
    """The preset applies: each `override /group: option` of its defaults list picked that option, and each literal
    value it sets reached the built experiment's config (a preset composed before the root config's own values,
    `_self_` after `experiment` in the defaults list, would lose its root keys silently)."""
    exp = build(make_cfg(choice))
    preset = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / f"{choice.split('=')[1]}.yaml"))
    for entry in preset.pop("defaults", []):
        for key, option in entry.items():
            assert exp.config[key.removeprefix("override /")]["name"] == option, key
    preset.pop("hydra", None)  # Hydra's own settings (output dirs) are not the experiment's
    for path, value in leaves(preset):
        if isinstance(value, str) and value.startswith("${"):
            continue  # an interpolation resolves to another key
        got = exp.config
        for key in path:
            got = got[key]
        assert got == value, ".".join(path)


@pytest.mark.parametrize("choice", EXPERIMENTS)
def test_experiment_runs(tmp_path, choice):
    """Every preset, in subfolders too, runs capped; one marked `# expect: diverged` must diverge (within the cap)."""
    check_run(tmp_path, capped(choice), diverges=meant_to_diverge(choice))


def test_experiment_glob_is_recursive():
    """The claims' presets in conf/experiment/claims/ are found (a flat glob would silently skip them)."""
    assert any(name.startswith("claims/") for name in options("experiment")), options("experiment")


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
