"""The claims suite's machinery: every prediction of docs/theory.md §8 is registered once with well-formed ids,
selection by whole id parts, the margins and verdicts of checks, merging runs by id, the command line — and each
prediction's --fast run, which must run the harness and write its rows and figure (its verdict is not asserted
here: each group's test file checks its judge on synthetic data that must pass and data that must fail)."""
from __future__ import annotations

import json
import math
import re

import pytest
from matplotlib.figure import Figure

from dynamics_bench import CONF_DIR
from dynamics_bench.claims import PREDICTIONS, matches, select
from dynamics_bench.claims.base import Check, Prediction, at_least, at_most, in_range, within
from dynamics_bench.claims.cli import main, run_prediction
from dynamics_bench.claims.report import ERROR, FAIL, PASS, write_report

# Every prediction of docs/theory.md §8 (= ../shared/theory.md §7).
NUMBERS = [f"p1_{i}" for i in range(1, 12)] + [f"p2_{i}" for i in range(1, 6)] + [f"p3_{i}" for i in range(1, 7)]
ID = re.compile(r"^p[123]_\d+_[a-z0-9_]+$")


def test_every_prediction_is_registered_once():
    numbers = [p.number for p in PREDICTIONS.values()]
    assert sorted(numbers) == sorted(NUMBERS), set(NUMBERS) ^ set(numbers)


@pytest.mark.parametrize("prediction", PREDICTIONS.values(), ids=lambda p: p.id)
def test_ids_are_well_formed(prediction):
    assert ID.match(prediction.id), prediction.id
    sub = re.compile(rf"^{prediction.number}_[a-z]_[a-z0-9_]+$")
    for ident in prediction.subclaims:
        assert sub.match(ident), ident
    letters = [s.split("_")[2] for s in prediction.subclaims]
    assert letters == [chr(ord("a") + i) for i in range(len(letters))], letters
    assert prediction.statement and prediction.setting and prediction.paper


def test_ids_are_unique():
    every = [i for p in PREDICTIONS.values() for i in (p.id, *p.subclaims)]
    assert len(every) == len(set(every))


def test_selection_by_whole_parts():
    assert matches("p1_1", "p1_1_invariant") and not matches("p1_1", "p1_10_deep_scalar")
    assert [p.number for p in select(["p1_1"])] == ["p1_1"]
    assert {p.number for p in select(["p2"])} == {n for n in NUMBERS if n.startswith("p2_")}
    assert len(select([])) == len(PREDICTIONS)
    with pytest.raises(KeyError):
        select(["p9"])
    with pytest.raises(KeyError):
        select(["p1_5_imbalance_orderin"])  # a part must match whole


def test_a_subclaim_id_selects_its_prediction():
    parent = next(p for p in PREDICTIONS.values() if p.subclaims)
    assert select([parent.subclaims[-1]]) == [parent]
    assert select([parent.number]) == [parent]


@pytest.mark.parametrize("check, margin, passed", [
    (at_most("x", "s", "q", 0.5e-8, 1e-8), 0.5, True),
    (at_most("x", "s", "q", 2e-8, 1e-8), -1.0, False),
    (at_most("x", "s", "q", 0, 0), 0.0, True),  # zero violations of "none"
    (at_most("x", "s", "q", 2, 0), -2.0, False),
    (at_least("x", "s", "q", 0.995, 0.99, 0.01), 0.5, True),
    (at_least("x", "s", "q", 0.98, 0.99, 0.01), -1.0, False),
    (within("x", "s", "q", -0.45, -0.5, 0.1), 0.5, True),
    (within("x", "s", "q", -0.75, -0.5, 0.1), -1.5, False),
    (in_range("x", "s", "q", -2.5, -3.5, -2.0), 1 - 0.25 / 0.75, True),
    (in_range("x", "s", "q", -1.9, -3.5, -2.0), 1 - 0.85 / 0.75, False),
    (at_most("x", "s", "q", math.nan, 1.0), -math.inf, False),  # a number that is not one never passes
])
def test_margin_and_verdict(check, margin, passed):
    assert check.margin == pytest.approx(margin)
    assert check.passed is passed


def test_check_rejects_bad_sense_and_tolerance():
    with pytest.raises(ValueError, match="sense"):
        Check("x", "s", "q", 1.0, "lt", 0.0, 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        Check("x", "s", "q", 1.0, "le", 0.0, 0.0)


def _toy(ident: str, values: list[float], raises: bool = False) -> Prediction:
    """A prediction that runs nothing: sub-claims a, b with the given measured values against ≤ 1."""

    def measure(ctx):
        if raises:
            raise RuntimeError("the harness broke")
        return {"values": values}

    def judge(data):
        return [at_most(f"{ident}_{letter}_part", "part", "value", v, 1.0) for letter, v in zip("ab", data["values"])]

    def draw(data, checks):
        fig = Figure()
        fig.subplots().plot(data["values"])
        return fig
    return Prediction(ident + "_toy", "(9) toy", "toy statement", "nothing", measure, judge, draw,
                      subclaims=(f"{ident}_a_part", f"{ident}_b_part"))


def test_rows_merge_by_id(tmp_path):
    """A subset run replaces its own rows and keeps the others'; the prediction row passes only if all its
    sub-claims do, with the smallest margin."""
    order = ["p8_1_toy", "p8_2_toy"]
    run_prediction(_toy("p8_1", [0.5, 0.2]), tmp_path, fast=True, device="cpu")
    run_prediction(_toy("p8_2", [0.5, 3.0]), tmp_path, fast=True, device="cpu")
    rows = write_report(tmp_path, order)
    assert [r["id"] for r in rows] == ["p8_1_toy", "p8_1_a_part", "p8_1_b_part", "p8_2_toy", "p8_2_a_part",
                                       "p8_2_b_part"]
    verdicts = {r["id"]: r["verdict"] for r in rows}
    assert verdicts["p8_1_toy"] == PASS and verdicts["p8_2_toy"] == FAIL and verdicts["p8_2_b_part"] == FAIL
    assert {r["id"]: r["margin"] for r in rows}["p8_2_toy"] == pytest.approx(-2.0)
    run_prediction(_toy("p8_2", [0.5, 0.9]), tmp_path, fast=True, device="cpu")  # rerun one: replaced, not added
    rows = write_report(tmp_path, order)
    assert len(rows) == 6 and all(r["verdict"] == PASS for r in rows)
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert [r["id"] for r in saved] == [r["id"] for r in rows]
    text = (tmp_path / "claims.md").read_text()
    assert "**2 of 2 predictions pass**" in text and "figures/p8_1_toy.png" in text
    assert (tmp_path / "overview.png").stat().st_size > 0 and (tmp_path / "figures" / "p8_2_toy.png").exists()


def test_a_broken_claim_is_an_error_row(tmp_path):
    rows = run_prediction(_toy("p8_3", [0.0, 0.0], raises=True), tmp_path, fast=True, device="cpu")
    assert [r["verdict"] for r in rows] == [ERROR] and "the harness broke" in rows[0]["note"]
    assert write_report(tmp_path, [])[0]["verdict"] == ERROR


def test_list_and_bad_ids(capsys):
    main(["--list"])
    listed = capsys.readouterr().out
    for p in PREDICTIONS.values():
        assert p.id in listed and all(s in listed for s in p.subclaims)
    with pytest.raises(SystemExit) as exc:
        main(["p1_99"])
    assert exc.value.code == 2 and "p1_99" in capsys.readouterr().err


def test_fast_never_writes_to_results(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["p1_5", "--fast", "--out", "results/claims/sub"])
    assert exc.value.code == 2 and "--fast never writes" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_presets_are_named_after_their_claims():
    presets = sorted(p.stem for p in (CONF_DIR / "experiment" / "claims").glob("*.yaml"))
    numbers = {"_".join(name.split("_")[:2]) for name in presets}
    assert numbers <= set(NUMBERS), numbers - set(NUMBERS)


@pytest.mark.parametrize("prediction", PREDICTIONS.values(), ids=lambda p: p.id)
def test_fast_run_writes_rows_and_figure(tmp_path, prediction, one_thread):
    """--fast runs the claim through the harness and writes its rows (one per sub-claim, declared ids in order)
    and its figure; the verdict itself is each group's judge tests' business."""
    rows = run_prediction(prediction, tmp_path, fast=True, device="cpu")
    assert rows[0]["verdict"] != ERROR, rows[0]["note"]
    expected = [prediction.id, *prediction.subclaims]
    assert [r["id"] for r in rows] == expected
    assert all(r["verdict"] in (PASS, FAIL) for r in rows)
    assert (tmp_path / rows[0]["figure"]).stat().st_size > 0
    assert rows[0]["runs"], "the dynamics come from harness runs"
    assert (tmp_path / "cache" / f"{prediction.id}.json").exists()
