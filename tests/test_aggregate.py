"""dynamics-bench-aggregate beyond the sweep table test_cli.py checks end to end: the console table and sweep.csv's
types, --plot figures (colours, widths, legend, title, scales, left-out points), name validation, and --fit on
fake sweeps whose metrics.csv hold known power laws and exponentials (plus one real tiny run, cross-checked
against the harness's own loss_slope/loss_rate). The fits' building blocks (dynamics_bench.theory.fits) too. Jobs
that did not finish (failed, interrupted, killed, missing from the sweep's multirun.yaml) in the table, in
load_metrics and in the report; an empty directory refused."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dynamics_bench.sweep import (BASIC_SWEEPER, aggregate, expected_jobs, figure, fit, load_metrics, main, plot,
                                  report)
from dynamics_bench.theory.fits import exponential, power_law, time_to_reach
from tests.conftest import run_overrides

T = np.concatenate([[0.0], np.logspace(-2, 3, 201)])  # t = 0, then 5 decades


def write_run(run_dir: Path, overrides: list[str], curves: list[dict[str, np.ndarray]], t: np.ndarray = T,
              **summary) -> None:
    """A run directory as the harness leaves it: .hydra/overrides.yaml, metrics.csv (one curve dict per member,
    metric -> values at t) and summary.json (fields the aggregate reads; summary overrides them)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    frames = [pd.DataFrame({"step": np.arange(len(t)), "t": t, "member": e, **curve}) for e, curve in enumerate(curves)]
    pd.concat(frames).sort_values(["step", "member"]).to_csv(run_dir / "metrics.csv", index=False)
    members = [{"member": e, "seed": 10 + e, "status": "max_steps", "stop_step": None, "final_loss": 0.5,
                "time_to_target": None, "steps": len(t) - 1, "t": float(t[-1]), "rejected_steps": 0,
                "grad_evals": len(t), "final": {k: float(v[-1]) for k, v in curve.items()}}
               for e, curve in enumerate(curves)]
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "max_steps", "steps": len(t) - 1, "t": float(t[-1]), "final_loss": 0.5, "time_to_target": None,
        "wall_seconds": 0.1, "members": members, **summary}))


def sweep_of(root: Path, grid: dict[str, list], curves) -> Path:
    """One run per point of the grid (key -> values, Hydra's job order), curves(point) giving its members."""
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for i, point in enumerate(points):
        write_run(root / str(i), [f"{k}={v}" for k, v in point.items()], curves(point))
    return root


# ---------------------------------------------------------------------------------------------------------------
# --fit on known curves.
def broken_power_law(t: np.ndarray) -> np.ndarray:
    """t⁻¹ up to t = 10, 10·t⁻² after: the last decade of 1e-2…1e3 sees slope −2, five decades a mixture."""
    with np.errstate(divide="ignore"):
        return np.where(t <= 10, 1 / t, 10 / t ** 2)


def known(point: dict) -> list[dict[str, np.ndarray]]:
    """Member 0: a power law 3·t^(−p) (∞ at t = 0), member 1: 2·e^(−p·t/10), member 2: the broken power law;
    m2 rises from 0 as 0.1·t^0.5 in every member."""
    p = point["decay"]
    with np.errstate(divide="ignore"):
        law = 3 * T ** -p
    rise = 0.1 * np.sqrt(T)
    return [{"m": law, "m2": rise}, {"m": 2 * np.exp(-p * T / 10), "m2": rise},
            {"m": broken_power_law(T), "m2": rise}]


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return sweep_of(tmp_path / "sweep", {"decay": [1.5, 1.0]}, known)


def test_fit_recovers_known_slopes_rates_and_reach_times(fake, capsys):
    main([str(fake), "--fit", "m", "--reach", "0.05"])
    table = pd.read_csv(fake / "fit_m.csv")
    assert len(table) == 6 and list(table["decay"]) == [1.5] * 3 + [1.0] * 3
    assert list(table["member"]) == [0, 1, 2] * 2
    law, exp_, broken = (table[table["member"] == e].set_index("decay") for e in range(3))
    for p in (1.5, 1.0):
        assert law.loc[p, "slope"] == pytest.approx(-p, abs=1e-9) and law.loc[p, "slope_r2"] == pytest.approx(1)
        assert exp_.loc[p, "rate"] == pytest.approx(-p / 10, abs=1e-9) and exp_.loc[p, "rate_r2"] == pytest.approx(1)
        assert law.loc[p, "rate_r2"] < 0.99 and exp_.loc[p, "slope_r2"] < 0.99, "the wrong law must fit worse"
        assert law.loc[p, "t_reach_0.05"] == pytest.approx(60 ** (1 / p), rel=1e-3)
        assert exp_.loc[p, "t_reach_0.05"] == pytest.approx(10 * math.log(40) / p, rel=1e-6)
    assert np.allclose(broken["slope"], -2, rtol=0, atol=1e-9), "the default window is the last decade"
    window = T[T >= 100]
    assert np.allclose(table["t_from"], window[0]) and np.allclose(table["t_to"], 1000)
    assert (table["points"] == len(window)).all()
    out = capsys.readouterr().out
    assert "fit_m.csv" in out and "slope" in out and "rate_r2" in out and "t_reach_0.05" in out


def test_fit_window_and_rising_reach(fake):
    wide = fit(fake, "m", window=5)
    broken = wide[wide["member"] == 2]
    assert (broken["slope"] > -1.9).all() and (broken["slope"] < -1.1).all() and (broken["slope_r2"] < 0.99).all()
    assert np.allclose(wide["t_from"], T[1]), "five decades reach back to the first t > 0"
    rising = fit(fake, "m2", reach=1.0, write=False)
    assert not (fake / "fit_m2.csv").exists()
    assert np.allclose(rising["slope"], 0.5, rtol=0, atol=1e-9), "the 0 at t = 0 is left out, not a failure"
    assert np.allclose(rising["t_reach_1"], 100, rtol=1e-3), "a rising curve reaches a level upwards"
    assert pd.api.types.is_integer_dtype(rising["member"]) and pd.api.types.is_integer_dtype(rising["points"])


def test_time_to_reach_and_fits_on_edge_cases():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    assert time_to_reach(t, [8.0, 4.0, 2.0, 1.0], 2.0) == 2.0
    assert time_to_reach(t, [8.0, 4.0, 2.0, 1.0], math.sqrt(8)) == pytest.approx(1.5), "interpolated in log y"
    assert time_to_reach(t, [8.0, 4.0, 2.0, 1.0], 9.0) == 0.0, "already there at the first sample"
    assert math.isnan(time_to_reach(t, [8.0, 4.0, 2.0, 1.0], 0.5))
    assert time_to_reach(t, [0.0, 2.0, 4.0, 8.0], 1.0, rising=True) == pytest.approx(0.5), "linear from y = 0"
    assert time_to_reach(t, [0.0, 2.0, 4.0, 8.0], 5.0, rising=True) == pytest.approx(2 + math.log(5 / 4) / math.log(2))
    assert math.isnan(time_to_reach(t, [0.0, 2.0, 4.0, 8.0], 9.0, rising=True))
    assert math.isnan(power_law([1.0], [1.0]).slope) and power_law([1.0], [1.0]).points == 1
    assert exponential([0.0, 1.0, 2.0], [1.0, math.e, -1.0]).slope == pytest.approx(1), "y ≤ 0 left out"


def test_fit_on_a_real_run_matches_the_harness_own_slope_and_rate(tmp_path):
    """The loss_slope/loss_rate the harness records are two-point versions of what --fit computes: over a window
    holding the last two rows they must agree."""
    for name in ("a", "b"):
        run_overrides(tmp_path / "sweep", "trainer.steps=12", "ensemble.size=2", "logger.tensorboard=false",
                      "metrics.names=[loss,lojasiewicz]", name=name)
    data = load_metrics(tmp_path / "sweep")
    last = data.groupby(["run", "member"]).tail(1).set_index(["run", "member"])
    t = np.sort(data["t"].unique())
    fits = fit(tmp_path / "sweep", "loss", window=math.log10(t[-1] / t[-2]) + 1e-9).set_index(["run", "member"])
    assert len(fits) == 4 and (fits["points"] == 2).all()
    assert fits["slope"].to_numpy() == pytest.approx(last.loc[fits.index, "loss_slope"].to_numpy(), rel=1e-6)
    assert fits["rate"].to_numpy() == pytest.approx(-last.loc[fits.index, "loss_rate"].to_numpy(), rel=1e-6)
    legend = figure(tmp_path / "sweep", "loss").axes[0].get_legend()  # runs no override tells apart: one each,
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "thin: members", "bold: their median"]  # no
    assert legend.get_title().get_text() == "run"  # median of two different experiments


# ---------------------------------------------------------------------------------------------------------------
# The console table and sweep.csv.
def test_tables_keep_integers_and_one_kind_of_missing(tmp_path, capsys):
    rise = {"loss": np.linspace(1, 0.1, len(T))}
    write_run(tmp_path / "0", ["model.width=8", "trainer.lr=0.1"], [rise, rise])
    write_run(tmp_path / "1", ["model.width=16", "trainer.lr=0.1"], [rise], final_loss="inf")
    failed = tmp_path / "2" / ".hydra"
    failed.mkdir(parents=True)
    (failed / "overrides.yaml").write_text(yaml.safe_dump(["model.width=32", "trainer.lr=0.1"]))
    (tmp_path / "2" / "summary.json").write_text(json.dumps({"status": "failed", "reason": "ValueError: boom"}))
    main([str(tmp_path)])
    table = aggregate(tmp_path, write=False)
    for column in ("model.width", "member", "run_member", "member_seed", "steps", "stop_step", "member_steps",
                   "grad_evals"):
        assert str(table[column].dtype) == "Int64", column
    assert list(table["model.width"]) == [8, 8, 16, 32] and table["stop_step"].isna().all()
    assert table["time_to_target"].dtype == float and table["time_to_target"].isna().all()
    assert table["run_final_loss"].dtype == float and table.loc[2, "run_final_loss"] == math.inf
    assert list(table["status"]) == ["max_steps"] * 3 + ["failed"]
    assert table.loc[3, "reason"] == "ValueError: boom" and table["reason"].isna().sum() == 3
    text = (tmp_path / "sweep.csv").read_text()
    for token in ("None", "<NA>", "nan", "NaN", ",201.0,"):
        assert token not in text, token
    assert ",201," in text, "step counts stay integers"
    assert text == table.to_csv(index=False)

    out = capsys.readouterr().out
    header, *rows = out.split("\n\nwrote")[0].splitlines()
    assert header.split() == ["run", "model.width", "trainer.lr", "member", "status", "final_loss",
                              "time_to_target", "reason"]
    assert len(rows) == 4 and rows[0].split() == ["0", "8", "0.1", "0", "max_steps", "0.5", "-", "-"]
    assert rows[3].split()[:5] == ["2", "32", "0.1", "-", "failed"] and rows[3].endswith("ValueError: boom")
    assert "sweep.csv (4 rows" in out


def test_every_name_is_validated_before_anything_is_written(fake, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(fake), "--plot", "m", "--plot", "nope", "--fit", "also_nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "'also_nope'" in err and "available: m, m2" in err and "Traceback" not in err
    assert not list(fake.glob("*.png")) and not (fake / "sweep.csv").exists()
    with pytest.raises(KeyError, match="available: m, m2"):
        plot(fake, "nope")


# ---------------------------------------------------------------------------------------------------------------
# --plot figures.
def lines_of(fig) -> list:
    return [line for line in fig.axes[0].get_lines()]


def test_a_colour_per_combination_members_thin_median_bold(tmp_path):
    grid = {"model.width": [8, 16, 32, 64], "trainer.lr": [0.1, 0.2, 0.4]}  # 12 combinations: past tab10's 10

    def members(point):
        base = point["model.width"] * point["trainer.lr"] * np.exp(-T / 100)
        return [{"loss": base * s} for s in (1.0, 2.0, 4.0)]

    root = sweep_of(tmp_path / "s", grid, members)
    fig = figure(root, "loss", scale="semilogy")
    ax, lines = fig.axes[0], lines_of(fig)
    bold = [line for line in lines if line.get_linewidth() > 2]
    thin = [line for line in lines if line.get_linewidth() < 1]
    assert len(bold) == 12 and len(thin) == 36
    assert len({line.get_color() for line in bold}) == 12, "each combination its own colour"
    for median in bold:
        mine = [line for line in thin if line.get_color() == median.get_color()]
        assert len(mine) == 3
        assert median.get_ydata() == pytest.approx(mine[1].get_ydata()), "the median is the middle member"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[:3] == ["8, 0.1", "8, 0.2", "8, 0.4"] and legend[-2:] == ["thin: members", "bold: their median"]
    assert len(legend) == 14 and ax.get_legend().get_title().get_text() == "model.width, trainer.lr"
    assert ax.get_title().startswith(f"loss: {tmp_path.name}/s")
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "log")


def test_log_axes_leave_out_what_they_cannot_show_and_say_so(tmp_path):
    offsets = {"task.offset": [0.0, 1.0, 2.0, 3.0]}  # four single-member runs: still a legend

    def curve(point):
        return [{"weight_change_rel": point["task.offset"] + 0.1 * np.sqrt(T), "imbalance": np.sin(T) - 0.5}]

    root = sweep_of(tmp_path / "s", offsets, curve)
    fig = figure(root, "weight_change_rel")  # 0 at t = 0 in the first run: still log-log
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0.0", "1.0", "2.0", "3.0"]
    for line in lines_of(fig):
        assert (line.get_xdata() > 0).all() and (line.get_ydata() > 0).all()
        assert len(line.get_xdata()) == len(T) - 1, "only the t = 0 point is left out"
    assert [t.get_text() for t in fig.texts] == ["left out (log axes): 4 points at t = 0"]

    fig = figure(root, "weight_change_rel", scale="semilogy", x="step")
    assert fig.axes[0].get_xlabel() == "step" and fig.axes[0].get_xscale() == "linear"
    assert [t.get_text() for t in fig.texts] == ["left out (log axes): 1 point with weight_change_rel ≤ 0"]
    assert len(lines_of(fig)[0].get_xdata()) == len(T) - 1 and len(lines_of(fig)[1].get_xdata()) == len(T)

    fig = figure(root, "imbalance")  # signed: linear, nothing left out
    assert (fig.axes[0].get_xscale(), fig.axes[0].get_yscale()) == ("linear", "linear") and not fig.texts


def test_a_single_run_labels_its_members_and_seeds_pool(tmp_path):
    root = sweep_of(tmp_path / "s", {"seed": [0, 1], "model.width": [8, 16]},
                    lambda point: [{"loss": np.exp(-T / 100) * (1 + point["seed"])}])
    fig = figure(root, "loss")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "8", "16", "thin: members", "bold: their median"], "runs differing only in seed are one combination"
    assert len(lines_of(fig)) == 6

    write_run(tmp_path / "one", ["trainer.lr=0.1"], [{"loss": np.exp(-T / 100)}, {"loss": 2 * np.exp(-T / 100)}])
    out = plot(tmp_path / "one", "loss")
    assert out == tmp_path / "one" / "loss.png" and out.read_bytes()[:4] == b"\x89PNG"
    fig = figure(tmp_path / "one", "loss")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["member 0", "member 1", "median"]
    assert "trainer.lr=0.1" in ax.get_title()


# ---------------------------------------------------------------------------------------------------------------
# Jobs that did not finish: in the table, in load_metrics and in the report.
def write_multirun(sweep: Path, task: list[str], params: dict | None = None,
                   sweeper: str = BASIC_SWEEPER) -> None:
    """The parts of Hydra's multirun.yaml the aggregate reads: the sweeper and the task overrides."""
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": sweeper, "max_batch_size": None, "params": params},
        "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task}}}))


def write_partial(run_dir: Path, overrides: list[str], size: int, losses: list[list[float]],
                  summary: dict | None = None, lrs: list[float] | None = None) -> None:
    """A run stopped before its summary: Hydra's record (overrides, config with ensemble.size and, with lrs,
    ensemble.vary of trainer.lr), metrics.csv with losses[row][member] (none: not even a header; member e's
    trainer.lr lrs[e // size]), and a summary.json only if given (interrupted)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    vary = {"trainer.lr": lrs} if lrs else None
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "ensemble": {"size": size,
                                                                                             "vary": vary}}))
    if losses:
        rows = [{"step": i, "t": 0.5 * i, "member": e, "loss": loss, "grad_norm": 10 * loss,
                 **({"trainer.lr": lrs[e // size]} if lrs else {})}
                for i, row in enumerate(losses) for e, loss in enumerate(row)]
        pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """model.width=8,16,32 × seed=range(0,2), rerun with resume=auto: one job of each fate."""
    sweep = tmp_path / "broken"
    write_multirun(sweep, ["model.width=8,16,32", "seed=range(0,2)", "resume=auto"])
    write_run(sweep / "0", ["model.width=8", "seed=0"], [{"loss": np.exp(-T)}])
    (sweep / "1" / ".hydra").mkdir(parents=True)
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model.width=8", "seed=1",
                                                                           "resume=auto"]))
    (sweep / "1" / "summary.json").write_text(json.dumps({"status": "failed", "reason": "ValueError: boom"}))
    write_partial(sweep / "2", ["seed=0", "model.width=16"], 2, [[1, 2, 3, 4], [0.5, 1.5, 2.5, 3.5],
                                                                  [0.25, 1.25, 2.25, 3.25]], lrs=[0.1, 0.2])
    write_partial(sweep / "3", ["model.width=16", "seed=1"], 1, [[3.0], [2.0]], summary={
        "status": "interrupted", "signal": "SIGTERM", "resume": "dynamics-bench resume=broken/3", "steps": 1})
    write_partial(sweep / "4", ["model.width=32", "seed=0"], 1, [])
    return sweep


def test_failed_interrupted_killed_and_missing_jobs_are_in_the_table(broken):
    table = aggregate(broken, write=False)
    assert list(table["status"]) == ["max_steps", "failed", *["killed"] * 4, "interrupted", "killed", "missing"]
    assert list(table["run"].fillna("-")) == ["0", "1", "2", "2", "2", "2", "3", "4", "-"]
    assert list(table["model.width"]) == [8, 8, 16, 16, 16, 16, 16, 32, 32]
    assert list(table["seed"]) == [0, 1, 0, 0, 0, 0, 1, 0, 1]
    assert "resume" not in table, "resume=auto does not tell jobs apart"
    killed = table[table["run"] == "2"]  # ensemble.size=2 × two varied learning rates
    assert list(killed["member"]) == [0, 1, 0, 1] and list(killed["run_member"]) == [0, 1, 2, 3]
    assert list(killed["trainer.lr"]) == [0.1, 0.1, 0.2, 0.2]
    assert list(killed["member_steps"]) == [2] * 4 and list(killed["member_t"]) == [1.0] * 4
    assert list(killed["final_loss"]) == [0.25, 1.25, 2.25, 3.25]
    assert list(killed["final_grad_norm"]) == [2.5, 12.5, 22.5, 32.5] and "final_trainer.lr" not in table
    assert set(killed["run_status"]) == {"killed"}
    interrupted = table[table["run"] == "3"].iloc[0]
    assert (interrupted["final_loss"], interrupted["member_steps"], interrupted["steps"]) == (2.0, 1, 1)
    nothing = table[table["run"] == "4"].iloc[0]
    assert pd.isna(nothing["member"]) and pd.isna(nothing["final_loss"])
    assert table.iloc[-1]["run_status"] == "missing" and pd.isna(table.iloc[-1]["member"])
    for column in ("member", "run_member", "member_steps", "steps"):
        assert str(table[column].dtype) == "Int64", column

    data = load_metrics(broken)
    assert data.groupby("run").size().to_dict() == {"0": len(T), "2": 12, "3": 2}, "killed runs' rows are kept"
    assert list(data.loc[data["run"] == "2", "model.width"].unique()) == [16]


def test_the_report_names_every_job_that_did_not_finish(broken, capsys):
    lines = report(broken)
    assert lines[0] == "6 jobs: 1 finished, 1 failed, 1 interrupted, 2 killed, 1 missing"
    assert lines[1:] == [
        "  failed 1 [model.width=8 seed=1]: ValueError: boom",
        "  killed 2 [seed=0 model.width=16]: metrics.csv up to step 2, t 1, no summary.json (killed, or still running)",
        "  interrupted 3 [model.width=16 seed=1]: signal SIGTERM; resume: dynamics-bench resume=broken/3",
        "  killed 4 [model.width=32 seed=0]: no metrics.csv rows, no summary.json (killed, or still running)",
        "  missing - [model.width=32 seed=1]: in the sweep's multirun.yaml, no run directory has its overrides"]
    main([str(broken)])
    out = capsys.readouterr().out
    assert out.endswith("\n".join(lines) + "\n") and "sweep.csv (9 rows" in out
    rows = out.split("\n\nwrote")[0].splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["0", "1", "2", "2", "2", "2", "3", "4", "-"]
    assert rows[-1].split()[:6] == ["-", "32", "1", "-", "-", "missing"], "run, width, seed, lr, member, status"


def test_expected_jobs_follow_hydras_basic_sweeper(tmp_path):
    write_multirun(tmp_path / "a", ["seed=range(1,3)", "trainer.steps=5", "resume=auto"],
                   params={"trainer.lr": "0.1,0.2"})
    assert expected_jobs(tmp_path / "a") == [
        ("trainer.lr=0.1", "seed=1", "trainer.steps=5"), ("trainer.lr=0.1", "seed=2", "trainer.steps=5"),
        ("trainer.lr=0.2", "seed=1", "trainer.steps=5"), ("trainer.lr=0.2", "seed=2", "trainer.steps=5")]
    write_multirun(tmp_path / "b", ["trainer.lr=interval(0.1,1)"], sweeper="hydra_plugins.optuna.Sweeper")
    assert expected_jobs(tmp_path / "b") is None, "another sweeper's jobs are not spelled out"
    sweep_of(tmp_path / "b", {"trainer.lr": [0.5]}, lambda point: [{"loss": np.exp(-T)}])
    assert report(tmp_path / "b") == ["1 job: 1 finished"]

    write_multirun(tmp_path / "c", ["logger.tensorboard=false", "seed=0,1"])
    write_run(tmp_path / "c" / "0", ["logger.tensorboard=False", "seed=0"], [{"loss": np.exp(-T)}])
    write_run(tmp_path / "c" / "1", ["seed=1", "logger.tensorboard=false"], [{"loss": np.exp(-T)}])
    assert report(tmp_path / "c") == ["2 jobs: 2 finished"], "jobs match by their overrides' values, any order"


def test_an_empty_or_absent_directory_is_a_clear_error(tmp_path, capsys):
    for path, message in ((tmp_path, f"no runs under {tmp_path} (no summary.json, metrics.csv or .hydra/"),
                          (tmp_path / "nope", f"{tmp_path / 'nope'} is not a directory")):
        with pytest.raises(SystemExit) as exit_:
            main([str(path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir()), "nothing written"
