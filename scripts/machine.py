"""What a benchmark ran on: CPU, load, versions and revision, recorded next to its figures."""
from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from dynamics_bench.experiment import git_revision


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def short_name(device: str) -> str:
    """What a benchmark row ran on, in a few words: the GPU's name, or the CPU model and its core count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_model() or 'unknown CPU'}, {os.cpu_count()} cores"


def load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine(*packages: str) -> dict:
    """Machine facts, torch's threads and the versions of `packages`; load_average_start is taken now."""
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            **{name: version(name) for name in packages}, "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "load_average_start": load_average(), "git_revision": git_revision(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
