"""When a run saves its state, and what stops it: checkpoints every `checkpoint.every_seconds` /
`checkpoint.every_steps` and on a signal (SIGTERM, SIGINT, the scheduler's preemption signal).

A signal only marks the run; the loop saves at its next window boundary (a consistent state: a handler could
arrive in the middle of a parameter update), then the run stops with :class:`RunInterrupted`. The preemption
signal's earlier handler (submitit's: it requeues the job) is chained to, never replaced.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from dynamics_bench.config import require
from dynamics_bench.outputs import RunFiles
from dynamics_bench.trainer import LoopState, MemberState

# tests only: <signal>@N (sigterm@N, sigusr2@N: the process signals itself), kill@N (SIGKILL; both at the first
# window boundary at iteration >= N), kill-in-checkpoint@K (SIGKILL half-way through writing the K-th checkpoint)
TEST_HOOK = "DYNAMICS_BENCH_TEST_HOOK"


@dataclass(frozen=True)
class CheckpointConfig:
    every_seconds: float | None = 300.0  # wall seconds between checkpoints (null: only on a signal)
    every_steps: int | None = None  # iterations between checkpoints, at the first window boundary past each
    keep: bool = False  # keep the last checkpoint when the run finishes (else deleted: sweeps would fill disks)

    def __post_init__(self) -> None:
        require(self.every_seconds is None or self.every_seconds > 0, "checkpoint.every_seconds", self.every_seconds,
                "must be a number of seconds > 0, or null (checkpoints on a signal only)")
        require(self.every_steps is None or self.every_steps >= 1, "checkpoint.every_steps", self.every_steps,
                "must be an integer >= 1 or null")


class RunInterrupted(Exception):
    """The run stopped on a signal (its last checkpoint, if any, is in the run directory)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def preemption_signal() -> int:
    """The scheduler's warning before it preempts: $SUBMITIT_PREEMPT_SIGNAL (a name or number), else SIGUSR2."""
    value = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "SIGUSR2")
    if value.isdigit():
        return int(value)
    return int(getattr(signal.Signals, value if value.startswith("SIG") else "SIG" + value, signal.SIGUSR2))


class Signals:
    """Marks the run on SIGTERM, SIGINT and the preemption signal while in its `with` block (main thread only:
    Python runs handlers there); the handlers before are back afterwards. A second signal stops at once."""

    def __init__(self) -> None:
        self.caught = list(dict.fromkeys([signal.SIGTERM, signal.SIGINT, preemption_signal()]))
        self.previous: dict[int, Any] = {}
        self.received: int | None = None

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.caught}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise RunInterrupted(signum)
        self.received = signum

    def chain(self) -> None:
        """Call the handler the received signal had before ours, if it had one of its own (submitit's requeue)."""
        handler = self.previous.get(self.received)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)


@dataclass(frozen=True)
class TestHook:
    """A test's seeded interruption (DYNAMICS_BENCH_TEST_HOOK): `action` at the first boundary with iteration >=
    `at`, or (kill-in-checkpoint) during the `at`-th checkpoint write."""

    action: str
    at: int

    @classmethod
    def from_env(cls) -> TestHook | None:
        value = os.environ.get(TEST_HOOK)
        if not value:
            return None
        action, at = value.split("@")
        return cls(action, int(at))


class Checkpointer:
    """The trainer's `pause`: saves the run's state when one is due (time, steps, a signal) and stops the run
    after a signal. `extra()` adds what the loop does not hold (θ_0, the recorder's state, the config)."""

    def __init__(self, config: CheckpointConfig, files: RunFiles, signals: Signals,
                 extra: Callable[[], dict[str, Any]], iteration: int = 0):
        self.config, self.files, self.signals, self.extra = config, files, signals, extra
        self.last_iteration, self.last_time = iteration, time.monotonic()
        self.saved = 0  # checkpoints this process wrote
        self.hook = TestHook.from_env()

    def __call__(self, iteration: int, state: Callable[[], LoopState]) -> None:
        self._test_hook(iteration)
        every_steps, every_seconds = self.config.every_steps, self.config.every_seconds
        due = (self.signals.received is not None
               or (every_steps is not None and iteration - self.last_iteration >= every_steps)
               or (every_seconds is not None and time.monotonic() - self.last_time >= every_seconds))
        if due:
            self.save(iteration, state())
        if self.signals.received is not None:
            raise RunInterrupted(self.signals.received)

    def save(self, iteration: int, state: LoopState) -> None:
        self.saved += 1
        kill = self.hook is not None and self.hook.action == "kill-in-checkpoint" and self.hook.at == self.saved
        self.files.save_checkpoint({"iteration": iteration, "loop": loop_payload(state), **self.extra()},
                                   before_rename=(lambda data: os.kill(os.getpid(), signal.SIGKILL)) if kill else None)
        self.last_iteration, self.last_time = iteration, time.monotonic()

    def _test_hook(self, iteration: int) -> None:
        if self.hook is None or iteration < self.hook.at:
            return
        if self.hook.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hook.action.upper() in signal.Signals.__members__:
            signal.raise_signal(signal.Signals[self.hook.action.upper()])
            self.hook = None


def loop_payload(state: LoopState) -> dict[str, Any]:
    """The loop's state as plain containers and tensors (checkpoints are read with weights_only=True)."""
    return {"params": state.params, "x": state.x, "y": state.y, "loss": state.loss, "grad": state.grad,
            "clock": state.clock, "counters": state.counters, "batches": state.batches,
            "last_logged": state.last_logged, "members": [asdict(m) for m in state.members]}


def loop_state(payload: dict[str, Any]) -> LoopState:
    """loop_payload's inverse (the generators' states back on the CPU, where the generators are)."""
    return LoopState(payload["params"], payload["x"], payload["y"], payload["loss"], payload["grad"],
                     payload["clock"], [MemberState(**m) for m in payload["members"]], payload["counters"],
                     [b.cpu() for b in payload["batches"]], payload["last_logged"])
