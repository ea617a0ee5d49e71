"""The CUDA path gives the CPU's numbers (float64, to round-off). Skipped without a GPU."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.conftest import run_overrides

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("trainer", ["trainer=gd", "trainer=sgd", "trainer=gradient_flow"])
def test_cuda_matches_cpu(tmp_path, trainer):
    common = [trainer, "ensemble.size=3", "trainer.steps=50" if trainer != "trainer=gradient_flow"
              else "trainer.t_max=0.5", "logger.tensorboard=false"]
    cpu = run_overrides(tmp_path, "device=cpu", *common, name="cpu")
    gpu = run_overrides(tmp_path, "device=cuda", *common, name="cuda")
    assert gpu["device"].startswith("cuda") and cpu["status"] == gpu["status"]
    a = pd.read_csv(tmp_path / "cpu" / "metrics.csv")
    b = pd.read_csv(tmp_path / "cuda" / "metrics.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    # Same init (drawn on the CPU) and data; only reduction order differs: float64 round-off over 50 steps.
    pd.testing.assert_frame_equal(a, b, rtol=1e-9, atol=1e-12)


def test_auto_device_picks_cuda(tmp_path):
    summary = run_overrides(tmp_path, "device=auto", "trainer.steps=3", "logger.tensorboard=false")
    assert summary["device"].startswith("cuda")


def test_cuda_adaptive_flow_matches_cpu_to_the_tolerance(tmp_path):
    """dopri5 with per-member step control and event location on CUDA: accept/reject decisions may flip on
    round-off, so CPU and CUDA agree to the tolerance (rtol 1e-10 over t ≤ 3), not bitwise."""
    common = ["experiment=seed_paper_prop7", "ensemble.size=3", "trainer.t_max=3", "metrics.times=[0.5,1,2]",
              "logger.tensorboard=false"]
    cpu = run_overrides(tmp_path, "device=cpu", *common, name="cpu")
    gpu = run_overrides(tmp_path, "device=cuda", *common, name="cuda")
    assert cpu["status"] == gpu["status"] == "converged"
    assert gpu["time_to_target"] == pytest.approx(cpu["time_to_target"], rel=1e-8)
    a = pd.read_csv(tmp_path / "cpu" / "metrics.csv").set_index(["member", "t"])
    b = pd.read_csv(tmp_path / "cuda" / "metrics.csv").set_index(["member", "t"])
    grid = [(m, t) for m in range(3) for t in (0.0, 0.5, 1.0, 2.0)]
    pd.testing.assert_series_equal(a.loc[grid, "loss"], b.loc[grid, "loss"], rtol=1e-7, atol=1e-12)


def test_cuda_instruments_match_cpu(tmp_path):
    """Every instrument, heavy ones included (NTK, dense Hessian, Lanczos, spectral norms), on CUDA gives the CPU's
    numbers: float64, the same init and data; only reduction order differs."""
    common = ["model=mlp", "model.width=12", "model.depth=3", "task.n=40", "ensemble.size=2", "trainer.steps=20",
              "metrics.names=[auto,ntk,hessian,layer_change_spec]", "metrics.heavy_every=3",
              "metrics.hessian_dense_max=0", "logger.tensorboard=false"]
    cpu = run_overrides(tmp_path, "device=cpu", *common, name="cpu")
    gpu = run_overrides(tmp_path, "device=cuda", *common, name="cuda")
    assert set(gpu["metric_seconds"]) == set(cpu["metric_seconds"])
    a = pd.read_csv(tmp_path / "cpu" / "metrics.csv")
    b = pd.read_csv(tmp_path / "cuda" / "metrics.csv")
    assert list(a.columns) == list(b.columns) and a["ntk_lambda_max"].notna().sum() > 2
    # Lanczos from the same start vector; eigen-solvers differ by round-off on well-separated extremes
    pd.testing.assert_frame_equal(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("trainer", [
    ("ensemble.size=6", "trainer.lr=0.3", "trainer.steps=300", "trainer.target_loss=0.02",
     "trainer.divergence_threshold=5", "model.init_scale=2", "metrics.every=100"),
    ("experiment=seed_paper_prop7", "ensemble.size=4", "trainer.t_max=20", "trainer.max_steps=118",
     "metrics.points=5"),
], ids=["gd", "dopri5"])
def test_cuda_windows_stop_members_where_the_cpu_does(tmp_path, trainer):
    """Stops inside the loop's windows (read by the host once per window) on CUDA: the same statuses and stop
    steps as the CPU, and peak_memory_bytes from the CUDA allocator."""
    common = [*trainer, "metrics.names=[loss]", "logger.tensorboard=false"]
    cpu = run_overrides(tmp_path, "device=cpu", *common, name="cpu")
    gpu = run_overrides(tmp_path, "device=cuda", *common, name="cuda")
    assert [(m["status"], m["stop_step"]) for m in gpu["members"]] == \
        [(m["status"], m["stop_step"]) for m in cpu["members"]]
    assert len({m["status"] for m in cpu["members"]}) == 2
    assert 0 < gpu["peak_memory_bytes"] < torch.cuda.get_device_properties(0).total_memory


@pytest.mark.parametrize("trainer", [["trainer=sgd", "trainer.steps=200"],
                                     ["trainer=gradient_flow", "trainer.method=dopri5", "trainer.t_max=2"]])
def test_cuda_resumed_run_is_the_uninterrupted_run(tmp_path, monkeypatch, trainer):
    """A checkpoint on CUDA (tensors saved on the device, generators' states on the CPU) resumes bit for bit."""
    from dynamics_bench import compose, run
    from dynamics_bench.checkpoints import TEST_HOOK, RunInterrupted
    from dynamics_bench.plans import resume

    cfg = compose("device=cuda", "ensemble.size=3", *trainer, "checkpoint.every_steps=30", "logger.tensorboard=false")
    run(cfg, tmp_path / "whole")
    monkeypatch.setenv(TEST_HOOK, "sigterm@60")
    with pytest.raises(RunInterrupted):
        run(cfg, tmp_path / "cut")
    monkeypatch.delenv(TEST_HOOK)
    resume(tmp_path / "cut")
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()
