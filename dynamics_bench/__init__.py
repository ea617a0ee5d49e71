"""dynamics_bench: run, sweep and measure the training dynamics of over-parameterized networks.

Python API::

    from dynamics_bench import compose, run, resume, aggregate
    cfg = compose("model=deep_linear", "task=matrix_cost", "trainer=gradient_flow")
    summary = run(cfg, "outputs/my_run")        # writes metrics.csv, summary.json, tb/, ...
    summary = resume("outputs/my_run")          # an interrupted run, from its checkpoint
    table = aggregate("multirun/2026-11-23/12-00-00-000000")
"""
from __future__ import annotations

from pathlib import Path

from dynamics_bench.config import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose(*overrides: str, config_name: str = "config"):
    """The composed config for these Hydra overrides (as on the command line), without running anything."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def run(cfg, out_dir):
    """Validate, train and write outputs to out_dir; returns the summary. See dynamics_bench.experiment.run."""
    from dynamics_bench.experiment import run as _run

    return _run(cfg, out_dir)


def resume(run_dir):
    """Go on with an interrupted run from its checkpoint; see dynamics_bench.plans.resume."""
    from dynamics_bench.plans import resume as _resume

    return _resume(run_dir)


def aggregate(path):
    """One row per run and member of a sweep (or one run) directory; see dynamics_bench.sweep.aggregate."""
    from dynamics_bench.sweep import aggregate as _aggregate

    return _aggregate(path)


__all__ = ["CONF_DIR", "ConfigError", "aggregate", "compose", "resume", "run"]
__version__ = "0.1.0"
