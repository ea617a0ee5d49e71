"""Shared test helpers: compose the real config with overrides, list a group's options by glob."""
from __future__ import annotations

from pathlib import Path

import pytest

from dynamics_bench import CONF_DIR, compose
from dynamics_bench.experiment import run

QUIET = ["logger.progress=false"]


def options(group: str) -> list[str]:
    """Every option of a config group, found by a recursive glob (a new YAML file, also in a subfolder such as
    experiment/claims/, is picked up automatically), named as on the command line: claims/p2_3_rates."""
    folder = CONF_DIR / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def make_cfg(*overrides: str):
    return compose(*QUIET, *overrides)


def run_overrides(tmp_path: Path, *overrides: str, name: str = "run") -> dict:
    """Compose with overrides, run in-process into tmp_path/name, return the summary."""
    return run(make_cfg(*overrides), tmp_path / name)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and thrash on a busy 2-core machine)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def cpu_only(monkeypatch):
    """Pretend no GPU is present (for device=cuda error tests on GPU machines)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
