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

import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynamics_bench.config import require
from dynamics_bench.integrators import Step, StepSize
from dynamics_bench.trainers import Schedule, member_value

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
    """All running members step together; step k is at t = k·h exactly (h per member under a varied trainer.lr).
    A stopped member is frozen: its step count and t stay where it stopped. The loop takes steps in windows that
    end at the next row of the grid (:meth:`window`), then moves the clock (:meth:`advance`)."""

    def __init__(self, schedule: Schedule, spec: GridSpec, size: int):
        self.h, self.total, self.size, self.k = schedule.h, schedule.steps, size, 0
        self.t_max = schedule.t_max  # = steps·h for GD/SGD; a flow's last step may be shorter than h
        if isinstance(self.h, tuple):  # GD/SGD with one lr per member: steps·lr is t_max exactly
            self.last_h = self.h
        else:
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
        self._rows = sorted(self.grid)

    def _time(self, e: int, k: int) -> float:
        return member_value(self.t_max, e) if k == self.total else k * member_value(self.h, e)

    def step_at(self, k: int, h: StepSize) -> StepSize:
        """The step from step k, given this clock's h as the loop holds it (a float, or a per-member tensor): the
        last one is shortened to land on t_max (a tuple of lrs lands there exactly)."""
        return self.last_h if k == self.total - 1 and isinstance(h, float) else h

    def times_at(self, k: int) -> list[float]:
        """Each member's t after k steps."""
        return [self._time(e, k) for e in range(self.size)]

    def times(self) -> list[float]:
        return [self._time(e, k) for e, k in enumerate(self.member_steps)]

    def steps(self) -> list[int]:
        return list(self.member_steps)

    def due(self) -> bool:
        return self.k in self.grid

    def finished(self) -> bool:
        return self.k >= self.total

    def window(self, limit: int) -> int:
        """Steps from here to the next row of the grid, at most `limit`."""
        following = self._rows[bisect.bisect_right(self._rows, self.k)]
        return min(following - self.k, limit)

    def advance(self, steps: int, taken: list[int]) -> None:
        """The loop took `steps` steps; member e moved in taken[e] of them (a stopped one in none or fewer)."""
        self.k += steps
        self.member_steps = [k + n for k, n in zip(self.member_steps, taken)]

    def state_dict(self) -> dict[str, Any]:
        """Where the clock is (a checkpoint's part): the rest follows from the schedule."""
        return {"k": self.k, "member_steps": list(self.member_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k, self.member_steps = state["k"], list(state["member_steps"])


class AdaptiveClock:
    """Per-member steps under error control, stepping exactly onto the grid times (or, with `every`, syncing
    rows every k accepted steps, at each member's own t). A member that has attempted schedule.max_steps steps
    (accepted + rejected; waiting at a grid time does not count) is out of budget.

    The bookkeeping (t, step sizes, accept/reject counts) is (E,) tensors on the parameters' device, so a step
    never waits for the host; the host reads it where the loop decides (:meth:`due`, :meth:`times`, ...)."""

    def __init__(self, schedule: Schedule, spec: GridSpec, size: int, like: Tensor | None = None):
        self.schedule, self.size = schedule, size
        self.t_max = schedule.t_max
        like = torch.zeros((), dtype=torch.float64) if like is None else like
        self.dtype = like.dtype  # of the steps handed out; the clock itself keeps t and h in float64
        zeros = lambda dtype: torch.zeros(size, dtype=dtype, device=like.device)  # noqa: E731
        self.t = zeros(torch.float64)
        self.h = torch.full_like(self.t, min(schedule.h, self.t_max) if self.t_max > 0 else schedule.h)
        self.accepted, self.rejected = zeros(torch.long), zeros(torch.long)
        self.last_rejected = zeros(torch.bool)  # after a rejection the step may not grow (Hairer–Wanner II.4)
        self.exponent = 1.0 / (schedule.method.error_order + 1)
        self.every = spec.every
        if spec.times is not None:
            self.grid = sorted({0.0, self.t_max, *spec.times})
        else:
            self.grid = log_times(schedule.h, self.t_max, spec.points)
        self.next = 0  # index of the next grid time (or, with `every`, of the next multiple of every)

    STATE = ("t", "h", "accepted", "rejected", "last_rejected")

    def state(self) -> list[Tensor]:
        """A copy of the bookkeeping: load() returns the clock there (the loop goes back to find a stop)."""
        return [getattr(self, name).clone() for name in self.STATE]

    def load(self, state: list[Tensor]) -> None:
        for name, value in zip(self.STATE, state):
            getattr(self, name).copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """Where the clock is (a checkpoint's part): the bookkeeping and the next row."""
        return {**dict(zip(self.STATE, self.state())), "next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load([state[name].to(self.t.device) for name in self.STATE])
        self.next = state["next"]

    def times(self) -> list[float]:
        return self.t.tolist()

    def steps(self) -> list[int]:
        return self.accepted.tolist()

    def _stop(self) -> float:
        """Where a member's next step must end at the latest."""
        return self.t_max if self.every is not None else self.grid[min(self.next, len(self.grid) - 1)]

    def waiting(self, t: Tensor | None = None, accepted: Tensor | None = None) -> Tensor:
        """Whether each member is at t_max or at the next row's time (or step count): (E,) now, or of the states
        t, accepted (..., E) given."""
        t = self.t if t is None else t
        if self.every is not None:
            accepted = self.accepted if accepted is None else accepted
            return (t >= self.t_max) | (accepted >= self.next * self.every)
        return t >= self._stop()  # the grid ends at t_max

    def resting(self, running: Tensor) -> Tensor:
        """Whether no running member can move: a row is due, or all are at t_max (a 0-dim tensor)."""
        return (self.waiting() | ~running).all()

    def due(self, running: list[bool]) -> bool:
        if self.every is None and self.next >= len(self.grid):
            return False
        return bool(self.resting(torch.tensor(running, device=self.t.device)))

    def logged(self) -> None:
        self.next += 1

    def finished(self, running: list[bool]) -> bool:
        return bool(((self.t >= self.t_max) | ~torch.tensor(running, device=self.t.device)).all())

    def out_of_budget_mask(self, t: Tensor, accepted: Tensor, rejected: Tensor) -> Tensor:
        """Members short of t_max that have used up their attempts."""
        return (t < self.t_max) & (accepted + rejected >= self.schedule.max_steps)

    def stalled_mask(self, t: Tensor, h: Tensor, last_rejected: Tensor) -> Tensor:
        """Members whose last step was rejected and whose step size fell below MIN_STEP·max(t, 1)."""
        return last_rejected & (h < MIN_STEP * t.clamp(min=1.0))

    def out_of_budget(self) -> list[int]:
        return self.out_of_budget_mask(self.t, self.accepted, self.rejected).nonzero()[:, 0].tolist()

    def stalled(self) -> list[int]:
        return self.stalled_mask(self.t, self.h, self.last_rejected).nonzero()[:, 0].tolist()

    def step_size(self, running: list[bool] | Tensor) -> tuple[Tensor, Tensor]:
        """Each member's step, clipped to its next stop (0 while it waits), and which members move."""
        running = running if isinstance(running, Tensor) else torch.tensor(running, device=self.t.device)
        moving = running & ~self.waiting()
        self._taken = torch.where(moving, torch.minimum(self.h, self._stop() - self.t), 0.0)
        return self._taken.to(self.dtype), moving

    def commit(self, step: Step, moving: Tensor) -> Tensor:
        """Accept or reject each moving member's step by its own error; update its t and next step size."""
        err, taken, stop = step.error.to(torch.float64), self._taken, self._stop()
        # SAFETY·err^(−1/(q+1)) clamped: err = 0 gives MAX_FACTOR, NaN or inf MIN_FACTOR
        factor = err.pow(-self.exponent).mul_(SAFETY).clamp_(MIN_FACTOR, MAX_FACTOR).nan_to_num_(MIN_FACTOR)
        accepted = moving & (err <= 1.0)  # NaN compares False: rejected
        rejected = moving ^ accepted
        shrink = factor.clamp(max=1.0)
        grow = torch.where(self.last_rejected, shrink, factor)  # after a rejection the step may not grow
        # a step shortened to reach the grid says little about the step size that fits: keep the proposal
        # unless the shortened step's own error asks for less
        proposed = taken * grow
        kept = torch.where((taken < self.h) & (grow >= 1.0), torch.maximum(self.h, proposed), proposed)
        self.h = torch.where(accepted, kept, torch.where(rejected, taken * shrink, self.h))
        reached = torch.where(taken >= stop - self.t, stop, self.t + taken)  # exactly on the grid
        self.t = torch.where(accepted, reached, self.t)
        self.accepted, self.rejected = self.accepted + accepted, self.rejected + rejected
        self.last_rejected = torch.where(moving, rejected, self.last_rejected)
        return accepted


def make_clock(schedule: Schedule, spec: GridSpec, size: int, like: Tensor | None = None) -> FixedClock | AdaptiveClock:
    """The clock for the schedule; `like` sets the adaptive clock's device and dtype."""
    if schedule.adaptive:
        return AdaptiveClock(schedule, spec, size, like)
    return FixedClock(schedule, spec, size)
