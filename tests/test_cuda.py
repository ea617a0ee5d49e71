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
