"""Command line: ``dynamics-bench [overrides]`` / ``python -m dynamics_bench``; ``-m`` for a Hydra multirun.

The Hydra entry only resolves the output directory and hands over to :func:`dynamics_bench.experiment.run_experiment`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build, run_experiment, write_failed
from dynamics_bench.runtime import Launcher


def one_line(summary: dict[str, Any], out_dir: str) -> str:
    loss = summary["final_loss"]
    parts = [f"dynamics-bench: {summary['status']}", f"steps {summary['steps']}", f"t {summary['t']:.6g}",
             f"final_loss {loss:.3e}" if loss is not None else "final_loss n/a"]
    if summary["time_to_target"] is not None:
        parts.append(f"time_to_target {summary['time_to_target']:.6g}")
    parts.append(f"{summary['wall_seconds']:.2f}s")
    return ", ".join(parts) + f" -> {out_dir}"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    try:
        experiment = build(cfg)
    except ConfigError as exc:
        print(f"dynamics-bench: config error: {exc}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # record this job as failed and let the sweep go on
            write_failed(out_dir, exc, OmegaConf.to_container(cfg, resolve=False))
            return
        sys.exit(2)
    print(f"dynamics-bench: writing to {Path(out_dir).resolve()}", flush=True)
    # a multirun's launcher may run jobs side by side: threads=auto keeps to this job's share of the cores
    launcher = Launcher.from_hydra(hydra_cfg.launcher) if hydra_cfg.mode == RunMode.MULTIRUN else Launcher()
    summary = run_experiment(experiment, out_dir, launcher)
    print(one_line(summary, str(Path(out_dir).resolve())), flush=True)


def main() -> None:
    _hydra_entry()
