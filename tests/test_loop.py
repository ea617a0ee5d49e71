"""The fixed-step loop reads stops once per window of steps, not per step: it must record exactly what a loop that
checked every step records (statuses and stop steps, times to target, rows, frozen parameters, evaluation counts)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from dynamics_bench import trainer
from tests.conftest import run_overrides

STOPS = {  # members stop at different steps, most inside a window (rows only every 100 steps)
    "gd": ("ensemble.size=6", "trainer.lr=0.3", "trainer.steps=300", "trainer.target_loss=0.02",
           "trainer.divergence_threshold=5", "model.init_scale=2", "metrics.every=100"),
    "sgd": ("trainer=sgd", "ensemble.size=6", "trainer.lr=0.6", "trainer.steps=400", "trainer.batch_size=4",
            "trainer.target_loss=0.05", "trainer.divergence_threshold=3", "metrics.every=100"),
    "rk4": ("trainer=gradient_flow", "trainer.method=rk4", "ensemble.size=4", "trainer.h=0.1", "trainer.t_max=10",
            "trainer.target_loss=0.05", "model.init_scale=2", "trainer.divergence_threshold=5", "metrics.every=100",
            "task.n=100"),
    # adaptive steps: convergence located on the dense output, and a member out of budget, between 5 rows
    "dopri5": ("experiment=seed_paper_prop7", "ensemble.size=4", "trainer.t_max=20", "trainer.max_steps=118",
               "metrics.points=5"),
}


def _outputs(path):
    summary = json.loads((path / "summary.json").read_text())
    members = [{k: m[k] for k in ("status", "stop_step", "time_to_target", "steps", "t", "grad_evals", "final",
                                  "rejected_steps")} for m in summary["members"]]
    members.append({k: summary[k] for k in ("iterations", "grad_evals", "rejected_steps", "invariant_drift_max",
                                            "combinations")})
    return members, pd.read_csv(path / "metrics.csv"), torch.load(path / "final_params.pt"), _tensorboard(path)


def _tensorboard(path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of tb/ (the root run): (step, value) per tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("case", sorted(STOPS))
def test_windows_record_what_a_per_step_check_records(tmp_path, monkeypatch, case):
    """metrics.csv, summary.json (drift included), final_params and TensorBoard: a member stopped inside a window
    is logged with the others where a step-by-step loop logs them (an ensemble goes back, then freezes)."""
    common = (*STOPS[case], "metrics.names=[loss,grad_norm,param_norm,imbalance]")
    run_overrides(tmp_path, *common, name="window")
    monkeypatch.setattr(trainer, "WINDOW", 1)  # the host reads every step
    run_overrides(tmp_path, *common, name="step")
    (window, rows_w, params_w, tb_w), (step, rows_s, params_s, tb_s) = (_outputs(tmp_path / name)
                                                                        for name in ("window", "step"))
    stops = {m["stop_step"] for m in step[:-1] if m["stop_step"] is not None}
    assert len(stops) >= 2 and any(s % 100 not in (0, 1) for s in stops), stops  # stops inside windows
    assert len({m["status"] for m in step[:-1]}) == 2  # both kinds of stop
    assert window == step
    pd.testing.assert_frame_equal(rows_w, rows_s, check_exact=True)
    for key in params_s:
        assert torch.equal(params_w[key].nan_to_num(), params_s[key].nan_to_num()), key  # frozen bit for bit
    assert tb_w == tb_s


def test_a_stopped_member_is_frozen_where_it_stopped(tmp_path):
    """A diverged member's parameters are those at its stop step: a GD run cut at that step has them."""
    common = ("ensemble.size=6", "trainer.lr=0.3", "trainer.target_loss=0.02", "trainer.divergence_threshold=5",
              "model.init_scale=2", "metrics.names=[loss]", "logger.tensorboard=false")
    whole = run_overrides(tmp_path, *common, "trainer.steps=300", "metrics.every=100", name="whole")
    member = next(m for m in whole["members"] if m["status"] == "converged")
    k = member["stop_step"]
    run_overrides(tmp_path, *common, f"trainer.steps={k}", "trainer.target_loss=null", name="cut")
    frozen = torch.load(tmp_path / "whole" / "final_params.pt")
    cut = torch.load(tmp_path / "cut" / "final_params.pt")
    i = member["member"]
    for key in frozen:
        assert torch.equal(frozen[key][i], cut[key][i]), key


def test_members_stopping_at_scattered_steps_cost_few_repeated_steps(tmp_path, monkeypatch):
    """Seeds reaching a target one by one: after its first go-back the ensemble freezes stopping members on the
    device, so the loop takes few steps beyond those it counts (it took 8.6x as many when every stop went back)."""
    calls = []
    real = trainer.rk_step
    monkeypatch.setattr(trainer, "rk_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    summary = run_overrides(tmp_path, "ensemble.size=32", "trainer.lr=0.05", "trainer.steps=2000",
                            "trainer.target_loss=0.01", "metrics.points=3", "metrics.names=[loss]", "task.n=100",
                            "model.width=10", "logger.tensorboard=false")
    stops = {m["stop_step"] for m in summary["members"]}
    assert None not in stops and len(stops) >= 20
    assert len(calls) <= 1.25 * summary["iterations"] + 2 * trainer.WINDOW, (len(calls), summary["iterations"])


def test_params_snapshots_hold_every_member_at_the_rows_step(tmp_path, monkeypatch):
    """metrics.save_params: params/ holds every member at each logged row's step, so the ensemble goes back to
    each stop rather than freezing members (which would leave the others past it)."""
    common = (*STOPS["gd"], "metrics.names=[loss]", "metrics.save_params=true", "logger.tensorboard=false")
    run_overrides(tmp_path, *common, name="window")
    monkeypatch.setattr(trainer, "WINDOW", 1)
    run_overrides(tmp_path, *common, name="step")
    files = sorted(p.name for p in (tmp_path / "step" / "params").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "window" / "params").iterdir())
    for name in files:
        a, b = (torch.load(tmp_path / run / "params" / name) for run in ("window", "step"))
        assert (a["steps"], a["t"]) == (b["steps"], b["t"]), name
        assert all(torch.equal(a["params"][k].nan_to_num(), b["params"][k].nan_to_num()) for k in a["params"])


def test_rules_compare_float32_losses_with_the_levels_as_written():
    """divergence_threshold and target_loss are the config's float64 numbers: a float32 loss just past them
    counts (in float32 the levels would round onto it)."""
    from types import SimpleNamespace

    level = 1.00000007  # float32 rounds it to 1.0000001192..., the loss below
    loss = torch.tensor([1.00000012, 0.5], dtype=torch.float32)
    rules = trainer._Rules(SimpleNamespace(target_loss=None, divergence_threshold=level), loss)
    assert rules.judge(loss)[0].tolist() == [True, False]
    rules = trainer._Rules(SimpleNamespace(target_loss=1.00000013, divergence_threshold=1e10), loss)
    assert rules.judge(loss)[1].tolist() == [True, True]
