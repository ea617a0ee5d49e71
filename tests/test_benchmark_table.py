"""scripts/benchmark.py's table: rows merge by device and row, goals are judged, groups are picked by number or name.
Nothing here is timed (speed is measured by the script itself, never in tests)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import benchmark  # noqa: E402


def _bench(device: str) -> benchmark.Bench:
    return benchmark.Bench(device, benchmark.PLANS[(device, True)], repeats=2, quick=True, threads_key=False)


def _info(date: str, name: str) -> dict:
    return {"date": date, "name": name, "torch": "x", "python": "3", "torchdiffeq": "0.2", "git_revision": "abc",
            "load_average_start": None, "load_average_end": None, "seconds": 1.0, "command": "benchmark.py"}


def _row(figure: float, goal: benchmark.Goal | None = (">=", 0.95)) -> benchmark.Row:
    return benchmark.Row("1.eager", "benchmark problem", "steps/s", harness=figure, reference=1.0,
                         reference_name="hand", figure=figure, figure_range=[figure, figure], goal=goal, threads=1)


def test_a_cuda_run_keeps_the_cpu_rows_and_a_rerun_replaces_its_own(tmp_path):
    benchmark.save([_row(0.7)], _bench("cpu"), _info("d1", "AMD EPYC, 2 cores"), tmp_path)
    benchmark.save([_row(0.96)], _bench("cuda"), _info("d2", "NVIDIA H200"), tmp_path)
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert {k: r["figure"] for k, r in data["rows"].items()} == {"cpu:1.eager": 0.7, "cuda:1.eager": 0.96}
    md = (tmp_path / "benchmarks.md").read_text()
    assert md.index("**CPU**") < md.index("AMD EPYC") < md.index("**CUDA**") < md.index("NVIDIA H200")
    assert md.count("**missed**") == 1 and md.count("| met |") == 1
    benchmark.save([_row(0.99)], _bench("cpu"), _info("d3", "AMD EPYC, 2 cores"), tmp_path)
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert data["rows"]["cpu:1.eager"]["figure"] == 0.99 and data["rows"]["cuda:1.eager"]["figure"] == 0.96
    assert set(data["runs"]) == {"cuda-d2", "cpu-d3"}  # the replaced run is no longer listed


@pytest.mark.parametrize("goal, figure, missed", [((">=", 0.95), 0.94, True), ((">=", 0.95), 0.95, False),
                                                  (("<=", 1.5), 1.6, True), (("<=", 1.5), 1.2, False),
                                                  (None, 0.1, False)])
def test_a_goal_is_judged_by_its_direction(goal, figure, missed):
    assert _row(figure, goal).missed is missed


def test_groups_by_number_or_name():
    assert benchmark.select("1,flow") == ["problem", "flow"]
    assert benchmark.select(None) == list(benchmark.GROUPS)
    with pytest.raises(SystemExit, match="unknown group 'fast'"):
        benchmark.select("fast")
