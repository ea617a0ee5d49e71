"""The memory a run will need, against what its device has, checked before anything large is allocated: a config
error naming the key that makes the run large (model.width, task.n, trainer.batch_size, ensemble.size), with each
part's size and how it was counted."""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from dynamics_bench.config import require

# per sample and hidden unit: z and σ(z) kept by the forward, and one gradient at a time in the backward (a
# two-layer ReLU net of width 10⁵ measured exactly this: tests/test_bad_input.py)
ACTIVATION_COPIES = 3
# /proc/meminfo's estimate, and a cgroup's limit less its usage (a container's, or a scheduler's job's), v2 then v1
MEMINFO = Path("/proc/meminfo")
CGROUP_LIMITS = ((Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
                 (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                  Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")))
UNITS = ("bytes", "kB", "MB", "GB", "TB", "PB", "EB")


@dataclass(frozen=True)
class Factor:
    """One factor of a memory need: a count, how the message shows it, and the config key that sets it (None: a
    fixed property such as bytes per number)."""

    count: int
    label: str
    key: str | None = None


@dataclass(frozen=True)
class Need:
    """Memory one part of a run takes: the product of its factors' counts, in bytes."""

    what: str
    factors: tuple[Factor, ...]

    @property
    def bytes(self) -> int:
        return math.prod(f.count for f in self.factors)

    def __str__(self) -> str:
        return f"{self.what} {format_bytes(self.bytes)} = " + " × ".join(f.label for f in self.factors)

    @property
    def blamed(self) -> str | None:
        """The config key of its largest keyed factor: what made this part large."""
        keyed = [f for f in self.factors if f.key is not None]
        return max(keyed, key=lambda f: f.count).key if keyed else None


def format_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    unit = 0
    while n >= 1000 and unit < len(UNITS) - 1:
        n, unit = n / 1000, unit + 1
    return f"{n:.0f} {UNITS[unit]}" if unit == 0 else f"{n:.1f} {UNITS[unit]}"


def count(n: int, what: str, key: str | None = None) -> Factor:
    """A factor shown as '1.0e+08 units' (plain below 10⁶)."""
    shown = f"{n}" if n < 10**6 else f"{n:.1e}"
    return Factor(n, f"{shown} {what}", key)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def meminfo_available() -> int | None:
    """The kernel's MemAvailable in bytes (Linux), or None where there is no /proc/meminfo."""
    try:
        lines = MEMINFO.read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    value = fields.get("MemAvailable", "").split()
    return int(value[0]) * 1024 if value and value[0].isdigit() else None  # kB


def _cgroup_room() -> int | None:
    for limit, usage in CGROUP_LIMITS:
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None:
            return max(cap - used, 0)
    return None


def available_memory(device: torch.device) -> int:
    """Bytes a run may still allocate on `device`. CUDA: the device's free memory plus what torch's allocator
    holds unused. CPU: the kernel's MemAvailable (Linux), within a cgroup's limit less its usage; the free pages
    where there is no /proc (sys.maxsize where even that is unknown: no check)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    known = [v for v in (meminfo_available(), _cgroup_room()) if v is not None]
    if not known and hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        known = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    return min(known, default=sys.maxsize)


def require_memory(key: str, value: Any, needs: list[Need], device: torch.device) -> None:
    """ConfigError on `key`=`value` when the needs add up to more than `device` has available; the message
    states the total, each part as a product of its factors, and what is available."""
    total, available = sum(n.bytes for n in needs), available_memory(device)
    where = "this machine has" if device.type == "cpu" else f"{device} has"
    require(total <= available, key, value,
            f"the run needs {format_bytes(total)} of memory on {device.type} ({'; '.join(map(str, needs))}) "
            f"but {where} {format_bytes(available)} available: make {key} smaller")


def run_needs(*, members: int, parameters: int, trainable: int, units: int, samples: int, data_entries: int,
              stages: int, itemsize: int, anchored: bool = False, kernel_pairs: int = 0,
              samples_key: str | None = "task.n") -> list[Need]:
    """What a run holds on its device at its peak, per part:
    - parameters: θ_0, θ and the window's start (the loop goes back to it), all `parameters` per member;
    - gradients: over the `trainable` parameters, the integrator's `stages` gradients, the step's direction and
      the point the next stage is evaluated at; a method of several stages also a product and a partial sum
      while it combines them (Euler's direction is the gradient itself);
    - activations: one forward and backward over `samples` inputs (the data set, or a larger minibatch), each
      keeping ACTIVATION_COPIES numbers per hidden unit (`units`: the rows of every weight matrix); twice that for
      a lazy or linearized model (f(θ_0) and the tangents ride along);
    - kernel: the population loss's Gaussian-kernel Gram matrix over `kernel_pairs` neuron pairs (forward and
      backward);
    - data: the fixed data set's `data_entries` numbers.
    Every part is per member but the data; `itemsize`: bytes per number of the run's dtype."""
    e, size = Factor(members, f"E={members}", "ensemble.size"), Factor(itemsize, f"{itemsize} bytes")
    width = "model.width"
    activations = ACTIVATION_COPIES * (2 if anchored else 1)
    needs = [Need("parameters", (e, count(parameters, "parameters", width), size,
                                 Factor(3, "3 (θ_0, θ, window start)"))),
             Need("gradients", (e, count(trainable, "trainable", width), size, _gradient_copies(stages))),
             Need("activations", (e, count(samples, "samples", samples_key), count(units, "units", width), size,
                                  Factor(activations, f"{activations} (kept by the forward, a gradient)"))),
             Need("data", (count(data_entries, "numbers", samples_key), size))]
    if kernel_pairs:
        needs.append(Need("kernel", (e, count(kernel_pairs, "neuron pairs", width), size, Factor(3, "3"))))
    return needs


def _gradient_copies(stages: int) -> Factor:
    if stages == 1:
        return Factor(3, "3 (gradient, direction, stage point)")
    return Factor(stages + 4, f"{stages + 4} ({stages} stages, direction, stage point, their sum's 2 temporaries)")


def blame(needs: list[Need]) -> str:
    """The config key whose parts weigh most: each part is put on its largest keyed factor."""
    weight: dict[str, int] = {}
    for need in needs:
        if need.blamed is not None:
            weight[need.blamed] = weight.get(need.blamed, 0) + need.bytes
    return max(weight, key=weight.__getitem__)


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """config["a"]["b"] for key "a.b" (None where absent)."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def check_memory(config: Mapping[str, Any], *, objective: Any, task: Any, schedule: Any, members: int,
                 dtype: torch.dtype, device: torch.device) -> None:
    """ConfigError before any work when the run would not fit in `device`'s memory, naming the key that makes it
    large (model.width, task.n, trainer.batch_size or ensemble.size) with its value in `config` (the plain
    config). objective: the built Objective; task: the built Task (its data is drawn: tasks check their own draw);
    schedule: the trainer's Schedule (its method's stages, its batch size); members: every member, E."""
    x, y = task.data()
    shapes = objective.model.param_shapes
    n, batch = x.shape[0], schedule.batch_size or 0
    teacher = task.teacher.weights.shape[0] if getattr(task, "teacher", None) is not None else 0
    units = sum(shape[0] for shape in shapes.values() if len(shape) == 2)
    needs = run_needs(members=members, parameters=objective.model.num_params, trainable=objective.num_params,
                      units=units, samples=max(n, batch), data_entries=x.numel() + y.numel(),
                      stages=schedule.method.stages, itemsize=torch.finfo(dtype).bits // 8,
                      anchored=objective.config.anchored, kernel_pairs=(units + teacher) ** 2 if task.population else 0,
                      samples_key="trainer.batch_size" if batch > n else "task.n" if "n" in config["task"] else None)
    key = blame(needs)
    require_memory(key, config_value(config, key), needs, device)
