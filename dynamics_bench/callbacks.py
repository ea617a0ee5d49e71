"""Hydra callbacks (registered in conf/config.yaml under hydra.callbacks).

A multirun goes on past a job whose config is invalid (the job records itself as failed and returns), so Hydra
would end a sweep in which every job failed with exit code 0: :class:`SweepOutcome` makes it exit non-zero. This
module is imported at every start-up (single runs too): it imports nothing heavy.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dynamics_bench.status import FAILED, read_summary

ALL_FAILED_EXIT = 1  # Hydra's own exit code for a failed multirun


def job_statuses(sweep_dir: Path) -> list[str | None]:
    """The status in every summary.json under the sweep directory (None where one cannot be read)."""
    return [(read_summary(path.parent) or {}).get("status") for path in sorted(sweep_dir.rglob("summary.json"))]


class SweepOutcome(Callback):
    """At the end of a multirun: exit with ALL_FAILED_EXIT, saying so on stderr, when the sweep directory holds
    jobs and every one of them failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        statuses = job_statuses(sweep_dir)
        if statuses and all(status == FAILED for status in statuses):
            print(f"dynamics-bench: every job of the sweep failed ({len(statuses)} of {len(statuses)}); "
                  f"each job's summary.json says why: dynamics-bench-aggregate {sweep_dir}", file=sys.stderr)
            sys.exit(ALL_FAILED_EXIT)
