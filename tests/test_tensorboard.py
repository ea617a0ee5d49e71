"""TensorBoard write/read round trip: what tb/ holds, read back with TensorBoard's own EventAccumulator, against
metrics.csv and summary.json of the same run. The root run holds the ensemble mean (and min/max under
ensemble/), tb/member_<i> each member, and the hparams (with the final metrics) sit in the root run itself."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_overrides

STEPS = 12


def load(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def plugin_tags(acc: EventAccumulator, plugin: str) -> dict[str, bytes]:
    try:
        return acc.PluginTagToContent(plugin)
    except KeyError:  # the run holds no data of this plugin
        return {}


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    assert tag in acc.Tags()["scalars"], f"no scalar tag {tag!r}; tags: {acc.Tags()['scalars']}"
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), f"tag {tag!r} has repeated steps {steps}"
    return {e.step: e.value for e in events}


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tb")
    summary = run_overrides(tmp, "ensemble.size=2", "logger.tb_members=2", f"trainer.steps={STEPS}", "seed=1")
    out = tmp / "run"
    return out, summary, pd.read_csv(out / "metrics.csv")


def test_layout(tb_run):
    out, _, _ = tb_run
    subdirs = sorted(p.name for p in (out / "tb").iterdir() if p.is_dir())
    assert subdirs == ["member_0", "member_1"], "tb/ holds one sub-run per member and nothing else"


def test_root_loss_is_member_mean(tb_run):
    out, _, metrics = tb_run
    assert sorted(metrics["member"].unique()) == [0, 1]
    expected = metrics.groupby("step")["loss"].mean()
    got = scalars(load(out / "tb"), "loss")
    assert sorted(got) == sorted(expected.index.tolist()) and max(got) == STEPS
    for step, value in expected.items():
        assert got[step] == pytest.approx(value, rel=1e-5, abs=1e-12), step  # TensorBoard stores float32


def test_root_ensemble_min_max(tb_run):
    out, _, metrics = tb_run
    acc = load(out / "tb")
    lo, hi = scalars(acc, "ensemble/loss_min"), scalars(acc, "ensemble/loss_max")
    by_step = metrics.groupby("step")["loss"]
    for step, value in by_step.min().items():
        assert lo[step] == pytest.approx(value, rel=1e-5)
    for step, value in by_step.max().items():
        assert hi[step] == pytest.approx(value, rel=1e-5)
    t = scalars(acc, "t")
    for step, value in metrics.groupby("step")["t"].first().items():
        assert t[step] == pytest.approx(value, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("member", [0, 1])
def test_member_runs_match_csv(tb_run, member):
    out, _, metrics = tb_run
    rows = metrics[metrics["member"] == member].set_index("step")
    got = scalars(load(out / "tb" / f"member_{member}"), "loss")
    assert sorted(got) == sorted(rows.index.tolist())
    for step, value in rows["loss"].items():
        assert got[step] == pytest.approx(value, rel=1e-5, abs=1e-12), step
    # the members differ, so a mix-up of member folders would show
    other = metrics[metrics["member"] == 1 - member].set_index("step")["loss"]
    assert any(got[s] != pytest.approx(other[s], rel=1e-5) for s in got if s > 0)


def test_hparams_in_root_run(tb_run):
    out, summary, _ = tb_run
    acc = load(out / "tb")
    hparams = plugin_tags(acc, "hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams, sorted(hparams)
    for member in (0, 1):
        assert not plugin_tags(load(out / "tb" / f"member_{member}"), "hparams"), "hparams in a sub-run"

    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["trainer.steps"].number_value == STEPS
    assert start.hparams["ensemble.size"].number_value == 2
    assert start.hparams["model.name"].string_value == json.loads((out / "summary.json").read_text())[
        "config"]["model"]["name"]
    # the final metrics the hparams table shows are scalars of the root run
    final = scalars(acc, "final/loss")
    assert list(final.values()) == [pytest.approx(summary["final_loss"], rel=1e-5)]
