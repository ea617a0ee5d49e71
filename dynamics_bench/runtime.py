"""Process-wide settings of a run and what it cost: `threads` (torch's CPU threads), `matmul_precision` (float32
matmuls in full precision or TF32), and the peak memory that summary.json reports.

threads=auto takes one thread for a small problem, where handing each small kernel to a second thread costs more
than it saves (and on a busy machine a second thread waits for a core), and torch's default above; either way never
more than this job's share of the cores when a launcher runs several jobs at once. The size is the work of one
step, parameters × samples × members. SMALL_WORK comes from scripts/benchmark_threads.py (results/threads.md; a
2-core EPYC, three quiet runs): from work 8e6 up, torch's two threads ran 1.2-2.0x one thread in every run; at
2e6-4e6 0.9-1.36x, not always a gain; at 2e5 and below 0.88-1.03x; and with one core busy with other work, two
threads lost at every size (0.01-0.64x). So auto keeps one thread up to where the gain is sure. A number always wins.
"""
from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from dynamics_bench.config import choice, require

AUTO = "auto"
SMALL_WORK = 5_000_000  # parameters × samples × members of one step below which auto takes one thread
MATMUL_PRECISIONS = {  # torch.set_float32_matmul_precision's settings: what a float32 matmul may compute in
    "highest": "float32 throughout",
    "high": "TF32 (10-bit mantissa) where the hardware has it, e.g. NVIDIA Ampere and later",
    "medium": "bfloat16 where the hardware has it",
}
TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice (OMP_NUM_THREADS, else the cores), at import
RSS_BYTES = 1 if sys.platform == "darwin" else 1024  # ru_maxrss's unit: bytes on macOS, kilobytes on Linux


@dataclass(frozen=True)
class Runtime:
    """The top-level keys `threads` (None: auto) and `matmul_precision`, validated."""

    threads: int | None = None
    matmul_precision: str = "highest"


@dataclass(frozen=True)
class Launcher:
    """How Hydra's launcher runs this job beside others: joblib's n_jobs (jobs at once on this machine's cores) or
    submitit's cpus_per_task (the cores a scheduler gave it); None where the launcher has no such setting."""

    n_jobs: int | None = None
    cpus_per_task: int | None = None

    @classmethod
    def from_hydra(cls, launcher: Mapping[str, Any]) -> Launcher:
        """From the job's hydra.launcher config (any launcher: the keys it lacks stay None)."""
        return cls(n_jobs=launcher.get("n_jobs"), cpus_per_task=launcher.get("cpus_per_task"))


def parse_runtime(config: Mapping[str, Any]) -> Runtime:
    """The runtime keys of a plain top-level config; ConfigError naming the key otherwise."""
    threads = config.get("threads", AUTO)
    require(threads == AUTO or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1),
            "threads", threads, "must be auto or an integer >= 1")
    precision = choice("matmul_precision", config.get("matmul_precision", "highest"), MATMUL_PRECISIONS)
    return Runtime(threads=None if threads == AUTO else threads, matmul_precision=precision)


def job_cores(cores: int, n_jobs: int | None = None, cpus_per_task: int | None = None) -> int:
    """The cores one job may use: `cores` divided among joblib's n_jobs jobs running at once (-1: one job per core,
    -k: cores + 1 - k jobs, joblib's reading), and at most the cpus_per_task a scheduler gave it; at least 1."""
    share = cores
    if n_jobs is not None and n_jobs != 0:
        share //= n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)
    if cpus_per_task is not None:
        share = min(share, cpus_per_task)
    return max(share, 1)


def resolve_threads(threads: int | None, *, work: int, cores: int, default: int) -> int:
    """The threads a run uses: `threads` if set; else (auto) one for work below SMALL_WORK, and torch's
    `default` above, at most the job's `cores`."""
    if threads is not None:
        return threads
    return 1 if work < SMALL_WORK else max(1, min(default, cores))


def step_work(parameters: int, samples: int, members: int) -> int:
    """The size threads=auto goes by: trainable parameters per member × samples per step × members."""
    return parameters * samples * members


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, which taskset and cgroup cpusets narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _slurm_cpus(environ: Mapping[str, str]) -> int | None:
    value = environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() else None


def apply_runtime(runtime: Runtime, *, work: int, launcher: Launcher, device: torch.device) -> int:
    """Set torch's threads and float32 matmul precision for this process (both process-wide) and start counting
    the device's peak memory afresh; returns the threads set. Inter-op threads are left alone: torch accepts
    them only once, before any parallel work, which a second run in the same process could not honour."""
    cpus_per_task = launcher.cpus_per_task or _slurm_cpus(os.environ)
    cores = job_cores(available_cores(), launcher.n_jobs, cpus_per_task)
    threads = resolve_threads(runtime.threads, work=work, cores=cores, default=TORCH_DEFAULT_THREADS)
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(runtime.matmul_precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return threads


def torch_settings() -> Callable[[], None]:
    """A function that puts torch's thread count and float32 matmul precision back as they are now: a run sets
    both for itself and leaves the caller's process as it found it."""
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)
    return restore


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the most memory torch's allocator held on `device` since apply_runtime (this run's tensors).
    CPU: the process's peak resident set (torch itself included, and any earlier run in the same process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_BYTES
