"""Time keeping for the training loop: where each member is in flow time, what step it takes next, and when a
metrics row is due.

FixedClock: every member takes the same step h, and step k is at t = k·h exactly (a flow's last step is shortened
to land on t_max). AdaptiveClock: each member
has its own step size, chosen by its own error estimate (a member's error or NaN never changes another
member's steps), and steps exactly onto the metric grid. Members that reach the next grid point wait there
until every running member has, so a row holds every member at the same t; waiting changes no member's
trajectory, so a member alone and in an ensemble take the same steps up to round-off in the error estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dynamics_bench.config import require
from dynamics_bench.integrators import Step, StepSize
from dynamics_bench.trainers import Schedule

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0  # step-size controller (Hairer–Wanner II.4)
MIN_STEP = 1e-14  # relative to max(t, 1): a rejected step below it stalls the member (NaN/inf vector field)


@dataclass(frozen=True)
class GridSpec:
    """When to write metrics rows: `points` log-spaced in t, every k accepted steps, or at given times."""

    points: int = 100
    every: int | None = None
    times: list[float] | None = None


def log_steps(steps: int, points: int) -> set[int]:
    """`points` steps log-spaced in t (uniform steps make t ∝ step), 0 and the last included; the low end is
    dense where spacing falls below one step."""
    if steps + 1 <= points:
        return set(range(steps + 1))
    n = points - 2
    while True:  # rounding merges the densest low steps; ask for more until `points` distinct remain
        grid = {0, steps} | set(np.round(np.geomspace(1, steps, n)).astype(int).tolist())
        if len(grid) >= points or n > 10 * points:
            return grid
        n += 1


def log_times(h: float, t_max: float, points: int) -> list[float]:
    """0 and `points` − 1 times log-spaced from h to t_max (the fixed-step grid, before rounding to steps)."""
    if t_max <= h:
        return sorted({0.0, t_max})
    inner = np.geomspace(h, t_max, points - 1).tolist()
    return sorted({0.0, *inner[:-1], t_max})  # t_max exactly, not geomspace's rounding of it


def check_grid(spec: GridSpec, schedule: Schedule) -> None:
    """metrics.times must lie in [0, t_max], and for fixed steps be reachable: a multiple of h, or t_max."""
    for i, t in enumerate(spec.times or []):
        require(0 <= t <= schedule.t_max * (1 + 1e-12), f"metrics.times[{i}]", t,
                f"must lie in [0, t_max = {schedule.t_max:g}] (the trainer's horizon)")
        k = t / schedule.h
        require(schedule.adaptive or abs(k - round(k)) <= 1e-9 * max(k, 1.0) or t == schedule.t_max,
                f"metrics.times[{i}]", t, f"must be a multiple of the step {schedule.h:g} (trainer.lr or trainer.h) or "
                "t_max: fixed steps land only there (trainer=gradient_flow trainer.method=dopri5 lands on any time)")


class FixedClock:
    """All running members step together; step k is at t = k·h exactly. A stopped member is frozen: its step
    count and t stay where it stopped."""

    def __init__(self, schedule: Schedule, spec: GridSpec, size: int):
        self.h, self.total, self.size, self.k = schedule.h, schedule.steps, size, 0
        self.t_max = schedule.t_max  # = steps·h for GD/SGD; a flow's last step may be shorter than h
        exact = self.total * self.h == self.t_max
        self.last_h = self.h if exact else self.t_max - (self.total - 1) * self.h
        self.member_steps = [0] * size
        self.rejected = [0] * size  # a fixed step is never rejected
        if spec.every is not None:
            self.grid = set(range(0, self.total + 1, spec.every)) | {self.total}
        elif spec.times is not None:
            self.grid = {self.total if t >= self.t_max else round(t / self.h) for t in spec.times} | {0, self.total}
        else:
            self.grid = log_steps(self.total, spec.points)

    def times(self) -> list[float]:
        return [self.t_max if k == self.total else k * self.h for k in self.member_steps]

    def steps(self) -> list[int]:
        return list(self.member_steps)

    def due(self, running: list[bool]) -> bool:
        return self.k in self.grid

    def logged(self) -> None:
        """Rows are due at fixed steps: nothing to advance."""

    def finished(self, running: list[bool]) -> bool:
        return self.k >= self.total

    def out_of_budget(self) -> list[int]:
        return []

    def stalled(self) -> list[int]:
        return []

    def step_size(self, running: list[bool], like: Tensor) -> tuple[StepSize, Tensor | None]:
        """The step for every member, and which members move (None: all); `like` sets the device."""
        h = self.h if self.k < self.total - 1 else self.last_h  # the last step lands on t_max
        return h, None if all(running) else torch.tensor(running, device=like.device)

    def commit(self, step: Step, moving: Tensor | None) -> Tensor | None:
        self.k += 1
        moves = [True] * self.size if moving is None else moving.tolist()
        self.member_steps = [k + m for k, m in zip(self.member_steps, moves)]
        return moving


class AdaptiveClock:
    """Per-member steps under error control, stepping exactly onto the grid times (or, with `every`, syncing
    rows every k accepted steps, at each member's own t). A member that has attempted schedule.max_steps steps
    (accepted + rejected; waiting at a grid time does not count) is out of budget."""

    def __init__(self, schedule: Schedule, spec: GridSpec, size: int):
        self.schedule, self.size = schedule, size
        self.t_max = schedule.t_max
        self.t = [0.0] * size
        self.h = [min(schedule.h, self.t_max)] * size if self.t_max > 0 else [schedule.h] * size
        self.accepted, self.rejected = [0] * size, [0] * size
        self.last_rejected = [False] * size  # after a rejection the step may not grow (Hairer–Wanner II.4)
        self.exponent = 1.0 / (schedule.method.error_order + 1)
        self.every = spec.every
        if spec.times is not None:
            self.grid = sorted({0.0, self.t_max, *spec.times})
        else:
            self.grid = log_times(schedule.h, self.t_max, spec.points)
        self.next = 0  # index of the next grid time (or, with `every`, of the next multiple of every)

    def times(self) -> list[float]:
        return list(self.t)

    def steps(self) -> list[int]:
        return list(self.accepted)

    def _stop(self) -> float:
        """Where a member's next step must end at the latest."""
        return self.t_max if self.every is not None else self.grid[self.next]

    def _waiting(self, e: int) -> bool:
        if self.t[e] >= self.t_max:
            return True
        if self.every is not None:
            return self.accepted[e] >= self.next * self.every
        return self.t[e] >= self.grid[self.next]

    def due(self, running: list[bool]) -> bool:
        if self.every is None and self.next >= len(self.grid):
            return False
        return all(self._waiting(e) for e in range(self.size) if running[e])

    def logged(self) -> None:
        self.next += 1

    def finished(self, running: list[bool]) -> bool:
        return all(self.t[e] >= self.t_max for e in range(self.size) if running[e])

    def out_of_budget(self) -> list[int]:
        """Members short of t_max that have used up their attempts."""
        return [e for e in range(self.size) if self.t[e] < self.t_max
                and self.accepted[e] + self.rejected[e] >= self.schedule.max_steps]

    def stalled(self) -> list[int]:
        """Members whose last step was rejected and whose step size fell below MIN_STEP·max(t, 1)."""
        return [e for e in range(self.size)
                if self.last_rejected[e] and self.h[e] < MIN_STEP * max(self.t[e], 1.0)]

    def step_size(self, running: list[bool], like: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's step, clipped to its next stop (0 while it waits), and which members move."""
        moving = [running[e] and not self._waiting(e) for e in range(self.size)]
        h = [min(self.h[e], self._stop() - self.t[e]) if moving[e] else 0.0 for e in range(self.size)]
        self._taken = h
        return (torch.tensor(h, dtype=like.dtype, device=like.device),
                torch.tensor(moving, device=like.device))

    def commit(self, step: Step, moving: Tensor) -> Tensor:
        """Accept or reject each moving member's step by its own error; update its t and next step size."""
        errors, moves = step.error.tolist(), moving.tolist()
        accepted = [False] * self.size
        for e in range(self.size):
            if not moves[e]:
                continue
            err, taken = errors[e], self._taken[e]
            ok = math.isfinite(err) and err <= 1.0
            if not math.isfinite(err):
                factor = MIN_FACTOR
            elif err == 0.0:
                factor = MAX_FACTOR
            else:
                factor = min(MAX_FACTOR, max(MIN_FACTOR, SAFETY * err ** -self.exponent))
            if ok:
                stop, clipped = self._stop(), taken < self.h[e]
                self.t[e] = stop if taken >= stop - self.t[e] else self.t[e] + taken  # exactly on the grid
                self.accepted[e] += 1
                if self.last_rejected[e]:
                    factor = min(factor, 1.0)
                # a step shortened to reach the grid says little about the step size that fits: keep the
                # proposal unless the shortened step's own error asks for less
                self.h[e] = max(self.h[e], taken * factor) if clipped and factor >= 1.0 else taken * factor
            else:
                self.rejected[e] += 1
                self.h[e] = taken * min(factor, 1.0)
            self.last_rejected[e] = not ok
            accepted[e] = ok
        return torch.tensor(accepted, device=moving.device)


def make_clock(schedule: Schedule, spec: GridSpec, size: int) -> FixedClock | AdaptiveClock:
    if schedule.adaptive:
        return AdaptiveClock(schedule, spec, size)
    return FixedClock(schedule, spec, size)
