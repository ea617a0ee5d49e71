"""What a run's summary.json says of it, read without torch (the aggregate and Hydra's end-of-sweep callback need
it at start-up): its status, and which statuses are a run's outcome."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUTCOMES = ("converged", "diverged", "max_steps", "step_budget")  # a run that reached its end
FAILED = "failed"  # it raised, or its config was refused (in a sweep)
INTERRUPTED = "interrupted"  # a signal stopped it; its checkpoint, if any, resumes it


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """run_dir's summary.json, or None where it has none it could finish writing, or it is not a JSON object."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None
