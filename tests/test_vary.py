"""ensemble.vary: a sweep inside one batched run. The oracle is the multirun it replaces: member c·E + k of a
varied run must be member k of the job whose overrides are combination c (separate `run` calls), to round-off
for fixed steps and to the tolerance for adaptive ones; its outputs (metrics.csv, summary.json, sweep.csv,
TensorBoard) must name the varied values as a multirun names its overrides. Bad vary input is a ConfigError
naming ensemble.vary or ensemble.vary.<key> before any work."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dynamics_bench import ConfigError
from dynamics_bench.experiment import build
from dynamics_bench.outputs import LoggerConfig
from dynamics_bench.sweep import aggregate, figure, fit, metric_names
from dynamics_bench.vary import parse_vary
from tests.conftest import make_cfg, run_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ("trainer.steps=12", "metrics.points=5", "logger.tensorboard=false")
OUTCOME = ["status", "steps", "t", "final_loss", "time_to_target", "rejected_steps", "invariant_drift_max"]
FLOOR_METRICS = "metrics.names=[loss,grad_norm,weight_change,lojasiewicz]"


def vary(values: dict[str, list]) -> str:
    """The override as typed on a command line: ensemble.vary={model.init_scale:[0.5,1.0],...}."""
    inner = ",".join(f"{k}:[{','.join('null' if v is None else str(v) for v in vs)}]" for k, vs in values.items())
    return f"ensemble.vary={{{inner}}}"


def jobs(values: dict[str, list]) -> list[dict]:
    """The multirun's jobs, in Hydra's order (the first key slowest)."""
    return [dict(zip(values, point)) for point in itertools.product(*values.values())]


def run_recorded(root: Path, name: str, *overrides: str) -> Path:
    """A run as Hydra leaves it: its outputs and .hydra/overrides.yaml listing the overrides as typed."""
    run_overrides(root, *overrides, name=name)
    (root / name / ".hydra").mkdir()
    (root / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return root / name


def sweep_pair(root: Path, values: dict[str, list], *common: str, seeds: int = 2) -> tuple[Path, list[Path]]:
    """One varied run (root/varied) and its multirun jobs (root/multirun/<i>), typed alike: the common overrides,
    then ensemble.vary or the job's values, then ensemble.size."""
    varied = run_recorded(root, "varied", *common, vary(values), f"ensemble.size={seeds}")
    dirs = [run_recorded(root / "multirun", str(i), *common,
                         *(f"{k}={'null' if v is None else v}" for k, v in job.items()), f"ensemble.size={seeds}")
            for i, job in enumerate(jobs(values))]
    return varied, dirs


def as_varied(job_dirs: list[Path], seeds: int) -> pd.DataFrame:
    """The jobs' metrics.csv rows renumbered as members of the varied run: job c's member k is c·E + k."""
    frames = []
    for c, job in enumerate(job_dirs):
        frame = pd.read_csv(job / "metrics.csv")
        frame["member"] += c * seeds
        frames.append(frame)
    return pd.concat(frames).sort_values(["step", "member"], kind="stable").reset_index(drop=True)


def assert_same_curves(varied: Path, job_dirs: list[Path], seeds: int, rtol: float, atol: float) -> pd.DataFrame:
    got = pd.read_csv(varied / "metrics.csv").sort_values(["step", "member"], kind="stable").reset_index(drop=True)
    want = as_varied(job_dirs, seeds)
    assert len(got) == len(want)
    for column in want.columns:
        assert np.allclose(got[column], want[column], rtol=rtol, atol=atol, equal_nan=True), column
    return got


PER_PROCESS = ["run", "run_member", "wall_seconds", "steps_per_second", "iterations", "grad_evals"]


def near(value):
    """What equals `value` to round-off: a number within 1e-12 (relative); anything else (null, a status) exactly."""
    return pytest.approx(value, rel=1e-12) if isinstance(value, (int, float)) else value


def assert_same_table(varied: Path, job_dirs: list[Path]) -> pd.DataFrame:
    """The varied run's sweep.csv is its multirun's, column by column (in the same order) and row by row, but for
    the run's name, the member's index in the batch and what the process measured."""
    inside, outside = aggregate(varied), aggregate(job_dirs[0].parent)
    assert list(inside.columns) == list(outside.columns)
    assert inside["run_member"].tolist() == list(range(len(inside))), "metrics.csv's member: c·E + k"
    pd.testing.assert_frame_equal(inside.drop(columns=PER_PROCESS), outside.drop(columns=PER_PROCESS),
                                  check_exact=False, rtol=1e-12, atol=1e-15)
    return outside


def assert_same_params(varied: Path, job_dirs: list[Path], rtol: float, atol: float) -> None:
    got = torch.load(varied / "final_params.pt", weights_only=True)
    want = [torch.load(job / "final_params.pt", weights_only=True) for job in job_dirs]
    for name, value in got.items():
        torch.testing.assert_close(value, torch.cat([w[name] for w in want]), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------------------------
# Members: the product and the seeds.
def test_product_first_key_slowest_and_member_seeds():
    sweep = parse_vary({"trainer.lr": [0.1, 0.2], "model.init_scale": [1, 2, 3]}, seeds=2)
    assert sweep.combinations == [{"trainer.lr": a, "model.init_scale": b} for a in (0.1, 0.2) for b in (1, 2, 3)]
    assert sweep.size == 12 and list(sweep.members(4)) == [8, 9]
    assert sweep.member_seeds(3) == [6, 7] * 6, "member k of every combination is seed·E + k, E the seeds"
    assert sweep.member_values()[9] == {"trainer.lr": 0.2, "model.init_scale": 2}
    assert sweep.name(5) == "trainer.lr=0.2,model.init_scale=3"
    alone = parse_vary(None, seeds=3)
    assert alone.combinations == [{}] and alone.size == 3 and alone.member_seeds(1) == [3, 4, 5]


def test_hydra_accepts_the_override_and_members_are_the_product_times_seeds():
    exp = build(make_cfg("ensemble.size=3", "ensemble.vary={trainer.lr:[0.01,0.05],model.init_scale:[0.1,1]}"))
    assert exp.ensemble_size == 12 and exp.sweep.seeds == 3
    assert exp.member_seeds == [0, 1, 2] * 4
    assert exp.schedule.h == (0.01,) * 6 + (0.05,) * 6, "trainer.lr is the slower key"
    assert exp.schedule.t_max == tuple(exp.schedule.steps * h for h in exp.schedule.h)
    assert [m.init_scale for m in exp.init_models] == [0.1, 1.0, 0.1, 1.0]
    assert exp.init_models[0] is exp.init_models[2] is exp.objective.model, "the first's model section: shared"
    assert exp.config["ensemble"]["vary"] == {"trainer.lr": [0.01, 0.05], "model.init_scale": [0.1, 1]}
    assert build(make_cfg()).sweep.keys == [], "vary is declared null: no sweep"


def test_tb_members_default_depends_on_vary_and_an_explicit_value_wins():
    assert LoggerConfig().tb_runs(varied=False) == 4 and LoggerConfig().tb_runs(varied=True) == 64
    assert LoggerConfig(tb_members=2).tb_runs(varied=True) == 2
    assert build(make_cfg()).logger.tb_members is None


# ---------------------------------------------------------------------------------------------------------------
# A varied run equals its multirun.
@pytest.fixture(scope="module")
def init_sweep(tmp_path_factory) -> tuple[Path, list[Path], dict]:
    """model.init_scale and metrics.loss_floor varied (2 × 2 combinations × 2 seeds) under GD."""
    values = {"model.init_scale": [0.5, 1.5], "metrics.loss_floor": [0.0, 0.01]}
    varied, job_dirs = sweep_pair(tmp_path_factory.mktemp("init"), values, *QUICK, FLOOR_METRICS)
    return varied, job_dirs, values


def test_varied_init_and_floor_equal_the_multirun_jobs(init_sweep):
    varied, job_dirs, values = init_sweep
    got = assert_same_curves(varied, job_dirs, seeds=2, rtol=1e-12, atol=1e-15)
    assert_same_params(varied, job_dirs, rtol=1e-12, atol=1e-15)
    assert list(got.columns[-2:]) == list(values), "the varied values are metrics.csv's last columns"
    for c, job in enumerate(jobs(values)):
        rows = got[got["member"] // 2 == c]
        assert all((rows[k] == v).all() for k, v in job.items())
    pl = got.set_index(["step", "member"])["pl_ratio"]
    assert not np.allclose(pl.xs(2, level="member"), pl.xs(4, level="member")), "same start, floors apart"
    summary = json.loads((varied / "summary.json").read_text())
    for c, job_dir in enumerate(job_dirs):
        alone = json.loads((job_dir / "summary.json").read_text())["members"]
        for k, member in enumerate(alone):
            mine = summary["members"][2 * c + k]
            assert mine["seed"] == member["seed"] and mine["status"] == member["status"]
            assert mine["final_loss"] == pytest.approx(member["final_loss"], rel=1e-12)
            assert {key: mine[key] for key in values} == jobs(values)[c]


def test_aggregate_reads_the_varied_run_as_its_multirun(init_sweep, lr_sweep):
    """sweep.csv: the varied values where the multirun's override columns are, each row's run fields (status, steps,
    t, final loss, time to target) its combination's and its member the index within it; fit_METRIC.csv too."""
    lr_varied, lr_jobs, _ = lr_sweep
    outside = assert_same_table(lr_varied, lr_jobs)
    assert outside["t"].tolist() == pytest.approx([0.24] * 4 + [0.6] * 4), "t = trainer.steps · the job's lr"
    assert outside["run_final_loss"].nunique() == 3, "a job's mean; lr 0.02 never reaches 0.45: one twice"
    assert outside["member"].tolist() == [0, 1] * 4
    assert outside["run_time_to_target"].isna().all() and outside["time_to_target"].notna().sum() == 1

    varied, job_dirs, values = init_sweep
    outside, keys = assert_same_table(varied, job_dirs), list(values)
    assert list(outside.columns[1:5]) == ["trainer.steps", "metrics.points", "logger.tensorboard", "metrics.names"]
    assert list(outside.columns[5:8]) == [*keys, "ensemble.size"]
    assert "model.init_scale" not in metric_names(varied) and "pl_ratio" in metric_names(varied)
    fits = fit(varied, "loss", write=False)
    assert fits[keys + ["member"]].to_dict("list") == outside[keys + ["member"]].to_dict("list")
    assert fits["run_member"].tolist() == list(range(8))
    legend = figure(varied, "loss").axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:4] == ["0.5, 0.0", "0.5, 0.01", "1.5, 0.0", "1.5, 0.01"], labels
    assert legend.get_title().get_text() == "model.init_scale, metrics.loss_floor"
    assert labels == [t.get_text() for t in figure(job_dirs[0].parent, "loss").axes[0].get_legend().get_texts()]


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory) -> tuple[Path, list[Path], dict]:
    """trainer.lr and trainer.target_loss varied (2 × 2 combinations × 2 seeds) under GD."""
    values = {"trainer.lr": [0.02, 0.05], "trainer.target_loss": [None, 0.45]}
    varied, job_dirs = sweep_pair(tmp_path_factory.mktemp("lr"), values, *QUICK,
                                  "metrics.names=[loss,grad_norm,hessian,imbalance]")  # drift: per combination
    return varied, job_dirs, values


def test_varied_lr_and_target_equal_the_multirun_jobs(lr_sweep):
    """Every member takes its own lr for trainer.steps steps (t = step·lr) and stops at its own target; the
    hessian's sharpness_lr uses the member's lr. summary.json's combinations state what each job's summary does."""
    varied, job_dirs, values = lr_sweep
    got = assert_same_curves(varied, job_dirs, seeds=2, rtol=1e-12, atol=1e-15)
    assert_same_params(varied, job_dirs, rtol=1e-12, atol=1e-15)
    assert np.allclose(got["t"], got["step"] * got["trainer.lr"], rtol=1e-12)
    assert got["sharpness_lr"].notna().any()
    members = json.loads((varied / "summary.json").read_text())["members"]
    alone = [m for job in job_dirs for m in json.loads((job / "summary.json").read_text())["members"]]
    assert [m["status"] for m in members] == [m["status"] for m in alone]
    assert [m["time_to_target"] for m in members] == [near(m["time_to_target"]) for m in alone]
    assert [m["status"] for m in members] == ["max_steps"] * 6 + ["converged", "max_steps"], "only lr 0.05 gets there"
    assert [m["steps"] for m in members[:6]] == [12] * 6, "every lr takes trainer.steps steps"
    combinations = json.loads((varied / "summary.json").read_text())["combinations"]
    for c, (job, combination) in enumerate(zip(job_dirs, combinations)):
        alone = json.loads((job / "summary.json").read_text())
        assert combination == {**jobs(values)[c], "members": [2 * c, 2 * c + 1],
                               **{k: near(alone[k]) for k in OUTCOME}}
        assert alone["combinations"] == [{"members": [0, 1], **{k: alone[k] for k in OUTCOME}}]


def test_adaptive_varied_init_equals_the_multirun_jobs_to_tolerance(tmp_path):
    vector = ("model=deep_linear", "model.width=3", "task=matrix_cost", "model.init=imbalanced",
              "model.init_product=0.1", "trainer=gradient_flow", "trainer.method=dopri5", "trainer.t_max=3",
              "trainer.rtol=1e-9", "trainer.atol=1e-12", "metrics.points=6", "metrics.names=[loss]",
              "logger.tensorboard=false")
    varied, job_dirs = sweep_pair(tmp_path, {"model.init_imbalance": [0.0, 4.0]}, *vector)
    got = assert_same_curves(varied, job_dirs, seeds=2, rtol=1e-7, atol=1e-12)
    assert_same_params(varied, job_dirs, rtol=1e-7, atol=1e-10)
    first = got[got["t"] == got["t"].max()].set_index("member")["loss"]
    assert first[0] != pytest.approx(first[2], rel=1e-3), "imbalance moves the flow in time"


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard: a run per combination, with its hparams.
def test_tensorboard_writes_each_combination_as_a_run_with_its_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    def load(path: Path) -> EventAccumulator:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        return acc

    run_overrides(tmp_path, "trainer.steps=6", "metrics.points=3", "ensemble.size=2",
                  "ensemble.vary={model.init_scale:[0.5,1.0,2.0]}")
    out = tmp_path / "run"
    names = ["model.init_scale=0.5", "model.init_scale=1.0", "model.init_scale=2.0"]
    assert sorted(p.name for p in (out / "tb").iterdir() if p.is_dir()) == names
    metrics = pd.read_csv(out / "metrics.csv")
    summary = json.loads((out / "summary.json").read_text())
    for c, name in enumerate(names):
        acc = load(out / "tb" / name)
        mean = metrics[metrics["member"] // 2 == c].groupby("step")["loss"].mean()
        got = {e.step: e.value for e in acc.Scalars("loss")}
        assert got == pytest.approx(mean.to_dict(), rel=1e-5)
        hparams = acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
        assert start.session_start_info.hparams["model.init_scale"].number_value == [0.5, 1.0, 2.0][c]
        losses = [m["final_loss"] for m in summary["members"][2 * c: 2 * c + 2]]
        assert [e.value for e in acc.Scalars("final/loss")] == [pytest.approx(sum(losses) / 2, rel=1e-5)]
    with pytest.raises(KeyError):
        load(out / "tb").PluginTagToContent("hparams")  # the root's config is no combination's: not a row
    run_overrides(tmp_path, "trainer.steps=2", "ensemble.vary={model.init_scale:[0.5,1.0,2.0]}",
                  "logger.tb_members=1", name="one")
    assert [p.name for p in (tmp_path / "one" / "tb").iterdir() if p.is_dir()] == names[:1]


# ---------------------------------------------------------------------------------------------------------------
# Bad input.
@pytest.mark.parametrize("overrides, key, says", [
    (["ensemble.vary={model.width:[4,8]}"], "ensemble.vary.model.width",
     "takes only trainer.lr (trainer=gd or sgd), model.init_scale"),
    (["ensemble.vary={trainer.lr:[]}"], "ensemble.vary.trainer.lr", "non-empty list"),
    (["ensemble.vary={trainer.lr:0.1}"], "ensemble.vary.trainer.lr", "non-empty list"),
    (["ensemble.vary={trainer.lr:[0.1,0.1]}"], "ensemble.vary.trainer.lr", "twice"),
    (["ensemble.vary=[1]"], "ensemble.vary", "mapping"),
    (["ensemble.vary={model.init_scale:[abc]}"], "ensemble.vary.model.init_scale", "must be a number"),
    (["ensemble.vary={model.init_scale:[1,-1]}"], "ensemble.vary.model.init_scale", "> 0"),
    (["ensemble.vary={trainer.lr:[0.1,-1]}"], "ensemble.vary.trainer.lr", "> 0"),
    (["trainer=gradient_flow", "ensemble.vary={trainer.lr:[0.1,0.2]}"], "ensemble.vary.trainer.lr", "unknown key"),
    (["ensemble.vary={model.init_product:[0.1]}"], "ensemble.vary.model.init_product", "unknown key"),
    (["model=deep_linear", "task=matrix_cost", "ensemble.vary={model.init_product:[0.1]}"],
     "ensemble.vary.model.init_product", "unless model.init=imbalanced"),
    (["ensemble.vary={trainer.target_loss:[0.1,-1]}"], "ensemble.vary.trainer.target_loss", ">= 0"),
    (["ensemble.vary={metrics.loss_floor:[x]}"], "ensemble.vary.metrics.loss_floor", "must be a number"),
    (["ensemble.vary={trainer.lr:[0.1,0.2]}", "metrics.times=[0.2]"], "metrics.times", "trainer.lr"),
])
def test_bad_vary_is_a_config_error_naming_it(overrides, key, says):
    with pytest.raises(ConfigError) as err:
        build(make_cfg(*overrides))
    assert err.value.key == key and says in str(err.value), str(err.value)
