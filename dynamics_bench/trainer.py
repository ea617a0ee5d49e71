"""The one training loop. The update rule (a Runge–Kutta method on a data stream) and the clock (fixed or
adaptive steps) are pluggable; the loop owns the stopping rules and when metrics are taken.

Member statuses: ``running`` until its loss reaches ``target_loss`` (``converged``), is NaN/inf or above
``divergence_threshold`` (``diverged``), or the adaptive step budget runs out (``step_budget``); a stopped
member's parameters are frozen while the others go on. Full-batch trainers check every step on the exact
loss; minibatch and online trainers check divergence on the step's batch loss and the target on the logged
(full-data) loss. Flow trainers place time_to_target between steps with the method's dense output.

Steps never wait for the host: the loop takes a window of steps with the losses (and the adaptive clock's
bookkeeping) left on the device, then reads which members stopped, or whether a row is due, in one transfer.
A member that stopped inside the window is found at its exact step by going back to the window's start and
taking the same steps again (same arithmetic, same data draws); an ensemble of fixed steps that had to go back
once freezes stopping members on the device from then on instead. Either way statuses, rows and frozen
parameters are those of a loop that checked every step.

Between windows the loop offers its whole state (:class:`LoopState`) to `pause`, which may save it (a checkpoint)
or stop the run; ``train(resume=state)`` goes on from such a state exactly as the run would have.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from dynamics_bench.batches import Batches
from dynamics_bench.clocks import AdaptiveClock, FixedClock, GridSpec, make_clock
from dynamics_bench.integrators import Step, StepSize, Tableau, advance, dense_point, rk_step
from dynamics_bench.metrics.base import Snapshot
from dynamics_bench.models.base import Params, per_member
from dynamics_bench.objective import LossAndGrad, Objective
from dynamics_bench.trainers import Schedule, member_value

# on_log(snapshot, members, grid, ending): log the rows of the members marked; grid: a row of the metrics grid (not
# only a stop's); ending: the members whose last row this is (a stop, or t_max)
OnLog = Callable[[Snapshot, list[bool], bool, list[bool]], None]
LOCATE_ITERATIONS = 60  # regula falsi (Illinois) on the dense output; converges superlinearly, this is a cap
WINDOW = 64  # fixed steps between reads of the losses by the host: one transfer per window, not per step


@dataclass
class MemberState:
    status: str = "running"
    stop_step: int | None = None  # accepted steps when the member converged, diverged or ran out of budget
    time_to_target: float | None = None


@dataclass
class TrainResult:
    params: Params
    iterations: int  # attempted steps of the whole ensemble (= steps for fixed-step methods)
    steps: list[int]  # accepted steps per member
    t: list[float]  # flow time reached per member
    grad_evals: int  # batched gradient evaluations, rejected steps included: the cost
    member_grad_evals: list[int]  # evaluations each member needed (not counting steps it sat out)
    rejected: list[int]
    wall_seconds: float
    members: list[MemberState] = field(default_factory=list)
    compile_seconds: float = 0.0  # inside wall_seconds: compiling the step (trainer.compile) and its first call


@dataclass
class LoopState:
    """Everything the loop needs to go on from a window boundary, as it would have (a checkpoint's training part).
    x, y are None for a full batch (every step sees the task's data)."""

    params: Params
    x: Tensor | None
    y: Tensor | None
    loss: Tensor
    grad: Params
    clock: dict[str, Any]
    members: list[MemberState]
    counters: dict[str, Any]  # the loop's own: window lengths, gradient evaluations, ...
    batches: list[Tensor]  # the data generators' states
    last_logged: list[bool]


# pause(iteration, state): called at every window boundary with the loop's state (built only when called); it may
# save the state or raise to stop the run
Pause = Callable[[int, Callable[[], LoopState]], None]


@dataclass
class _Previous:
    """The last step and the state it started from: enough to evaluate the flow between the two states."""

    step: Step
    params: Params
    loss: Tensor
    t: list[float] | Tensor  # each member's t at the step's start


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(per_member(mask, new), new, old)


def locate_crossing(loss_at: Callable[[Params], Tensor], method: Tableau, prev: _Previous, level: float | Tensor,
                    loss_after: Tensor) -> list[float]:
    """Per member, the s ∈ [0, 1] where L(θ(t_k + s·h)) = level on the step's dense output (Illinois regula
    falsi, bracketed by L(θ_k) > level ≥ L(θ_{k+1})). Members without a crossing get s = 1."""
    lo, hi = torch.zeros_like(prev.loss), torch.ones_like(prev.loss)
    f_lo, f_hi = prev.loss - level, loss_after - level
    bracket = (f_lo > 0) & (f_hi <= 0)
    side = torch.zeros_like(lo)  # which end moved last: the Illinois halving of the stale end
    for _ in range(LOCATE_ITERATIONS):
        s = torch.where(bracket, (lo * f_hi - hi * f_lo) / (f_hi - f_lo), hi)
        f = loss_at(dense_point(method, prev.step, prev.params, s)) - level
        left = f > 0
        # Illinois: an end kept twice in a row has its value halved, so the secant moves past it
        lo, f_lo = torch.where(left, s, lo), torch.where(left, f, f_lo * torch.where(side > 0, 0.5, 1.0))
        hi, f_hi = torch.where(left, hi, s), torch.where(left, f_hi * torch.where(side < 0, 0.5, 1.0), f)
        side = torch.where(left, -1.0, 1.0)
        if bool(((hi - lo) <= 1e-14).logical_or(f == 0).logical_or(~bracket).all()):
            break
    return torch.where(bracket, s, hi).tolist()


class _Rules:
    """The stopping rules as tensors: a loss is a divergence when NaN/inf or above the threshold, a convergence
    when at or below the member's target (a target per member under ensemble.vary; none: never)."""

    def __init__(self, schedule: Schedule, like: Tensor):
        self.targets = [member_value(schedule.target_loss, e) for e in range(like.shape[0])]
        self.any_target = any(t is not None for t in self.targets)
        # float64, as the config's numbers: a float32 loss is compared exactly with the levels the user wrote
        self.target = torch.tensor([-math.inf if t is None else t for t in self.targets], dtype=torch.float64,
                                   device=like.device)
        self.threshold = torch.full_like(self.target, schedule.divergence_threshold)  # (E,): a 0-dim one would not
        # raise a float32 loss to float64

    def judge(self, loss: Tensor, target: bool = True) -> tuple[Tensor, Tensor]:
        """(whether each loss diverged, whether a rule fires: divergence, or with `target` convergence)."""
        bad = ~torch.isfinite(loss) | (loss > self.threshold)
        return bad, bad | (loss <= self.target) if target and self.any_target else bad

    def first_events(self, losses: list[Tensor], running: list[bool], target: bool) -> list[tuple[int, str]]:
        """Per member, (the first index into `losses` where a rule fires, "diverged" or "converged"), or (-1, "")
        for none; one read by the host for the whole window."""
        bad, event = self.judge(torch.stack(losses), target)  # (n, E)
        event &= torch.tensor(running, device=event.device)
        first = event.to(torch.uint8).argmax(0)
        fired, diverged = event.any(0), bad.gather(0, first[None])[0]
        rows = torch.stack([torch.where(fired, first, -1), diverged.long()]).tolist()
        return [(i, "diverged" if d else "converged") if i >= 0 else (-1, "") for i, d in zip(*rows)]


class _Logger:
    """The logging half of the loop, shared by both clocks: builds the snapshot, checks the minibatch trainers'
    target on the full-data loss, and calls on_log with the rows and the members whose last row it is."""

    def __init__(self, on_log: OnLog, snapshot: Callable[..., Snapshot], schedule: Schedule, rules: _Rules,
                 members: list[MemberState], full: bool):
        self.on_log, self.snapshot, self.schedule, self.rules = on_log, snapshot, schedule, rules
        self.members, self.full = members, full
        self.last_logged = [False] * len(members)  # whether the member's last row (its stop, or t_max) is logged

    def __call__(self, iteration: int, steps: list[int], times: list[float], params: Params, loss: Tensor,
                 grad: Params, stopped: list[int], due: bool, finished: bool) -> bool:
        """Log if a row is due, the run ends, or members stopped; returns whether the run is finished."""
        size = len(self.members)
        if not (due or finished or stopped):
            return finished
        cached = (loss, grad) if self.full else (None, None)
        snap = self.snapshot(iteration=iteration, steps=steps, t=times, params=params, loss=cached[0], grad=cached[1])
        if not self.full and (due or finished) and self.rules.any_target:
            # a row for every member: the full-data loss may stop it
            full_loss = snap.loss_and_grad()[0].tolist()
            for i, (m, value, target) in enumerate(zip(self.members, full_loss, self.rules.targets)):
                if m.status == "running" and target is not None and value <= target:
                    m.status, m.stop_step, m.time_to_target = "converged", steps[i], times[i]
                    stopped.append(i)
            finished = finished or all(m.status != "running" for m in self.members)
        rows = [True] * size if due or finished else [i in stopped for i in range(size)]
        at_end = [times[i] >= member_value(self.schedule.t_max, i) for i in range(size)]  # adaptive steps: a member
        # may reach t_max before the others
        ending = [rows[i] and not self.last_logged[i] and (finished or i in stopped or at_end[i]) for i in range(size)]
        self.on_log(snap, rows, due, ending)
        self.last_logged = [a or b for a, b in zip(self.last_logged, ending)]
        return finished


def _grad_fn(objective: Objective, schedule: Schedule, params: Params, x: Tensor,
             y: Tensor) -> tuple[LossAndGrad, float]:
    """The loss-and-gradient the steps use (compiled under trainer.compile) and the seconds compiling took."""
    if not schedule.compile:
        return objective.loss_and_grad, 0.0
    from dynamics_bench.compiled import compile_loss_and_grad  # torch.compile's import is slow: only when asked

    return compile_loss_and_grad(objective, params, x, y)


def train(*, objective: Objective, params: Params, batches: Batches, schedule: Schedule, grid: GridSpec,
          on_log: OnLog, snapshot: Callable[..., Snapshot], progress: Callable[[float], None],
          freeze: bool = True, pause: Pause | None = None, resume: LoopState | None = None) -> TrainResult:
    """Integrate from `params` (E members, left untouched) to the schedule's end, calling on_log at the grid
    times, where a member stops, and at the end. `progress` gets the flow time reached. `freeze`: whether an
    ensemble may freeze stopping members on the device (then a stop's on_log sees the other members at a later
    step than the stop's; off where every row must hold every member at its own step). `pause` is offered the
    loop's state between windows; `resume`: go on from such a state (`params` then unused) instead of θ_0."""
    start = time.perf_counter()
    params = {k: v.detach().clone() for k, v in (params if resume is None else resume.params).items()}  # in place
    size = next(iter(params.values())).shape[0]
    members = [MemberState() for _ in range(size)] if resume is None else resume.members
    if resume is None:
        x, y = batches()
    else:  # a full batch draws nothing; a drawn stream goes on from its generators' states
        x, y = batches() if resume.x is None else (resume.x, resume.y)
        batches.restore(resume.batches)
    loss_and_grad, compile_seconds = _grad_fn(objective, schedule, params, x, y)
    loss, grad = loss_and_grad(params, x, y) if resume is None else (resume.loss, resume.grad)
    rules = _Rules(schedule, loss)
    clock = make_clock(schedule, grid, size, loss)
    log = _Logger(on_log, snapshot, schedule, rules, members, batches.full)
    if resume is not None:
        clock.load_state_dict(resume.clock)
        log.last_logged = list(resume.last_logged)
    stage = (x, y, loss, grad)
    counters = None if resume is None else resume.counters
    saver = _Saver(pause, params, batches, log)
    if isinstance(clock, FixedClock):
        result = _fixed_loop(objective, loss_and_grad, params, stage, batches, schedule, clock, rules, log, progress,
                             freeze, saver, counters)
    else:
        result = _adaptive_loop(objective, loss_and_grad, params, stage, batches, schedule, clock, rules, log,
                                progress, saver, counters)
    if loss.device.type == "cuda":  # the wall time includes the device's work, not only its launch
        torch.cuda.synchronize(loss.device)
    result.wall_seconds, result.compile_seconds = time.perf_counter() - start, compile_seconds
    return result


class _Saver:
    """Offers the loop's state to `pause` at a window boundary (the part every loop shares)."""

    def __init__(self, pause: Pause | None, params: Params, batches: Batches, log: _Logger):
        self.pause, self.params, self.batches, self.log = pause, params, batches, log

    def __call__(self, iteration: int, stage: Stage, clock: FixedClock | AdaptiveClock,
                 counters: dict[str, Any]) -> None:
        if self.pause is None:
            return
        x, y, loss, grad = stage
        drawn = not self.batches.full
        self.pause(iteration, lambda: LoopState(
            self.params, x if drawn else None, y if drawn else None, loss, grad, clock.state_dict(), self.log.members,
            counters, self.batches.state(), list(self.log.last_logged)))


def _stop(members: list[MemberState], events: list[tuple[int, str]], index: int, steps: list[int],
          times: list[float]) -> list[int]:
    """Mark the running members whose first event is at `index`; returns them."""
    stopped = [i for i, (at, _) in enumerate(events) if at == index and members[i].status == "running"]
    for i in stopped:
        status = events[i][1]
        members[i].status, members[i].stop_step = status, steps[i]
        if status == "converged":
            members[i].time_to_target = times[i]
    return stopped


def _locate(objective: Objective, method: Tableau, previous: _Previous, rules: _Rules, loss: Tensor,
            data: tuple[Tensor, Tensor], members: list[MemberState], stopped: list[int], times: list[float]) -> None:
    """time_to_target of the members that converged in `previous`'s step, on its dense output."""
    if not any(members[i].status == "converged" for i in stopped):
        return
    s = locate_crossing(lambda p: objective.loss(p, *data), method, previous, rules.target.to(loss.dtype), loss)
    before = previous.t.tolist() if isinstance(previous.t, Tensor) else previous.t
    for i in (i for i in stopped if members[i].status == "converged"):
        members[i].time_to_target = before[i] + s[i] * (times[i] - before[i])


Stage = tuple[Tensor, Tensor, Tensor, Params]  # (x, y) of the next step, and L, ∇L at the current θ on them


def _fixed_steps(count: int, method: Tableau, loss_and_grad: LossAndGrad, params: Params, stage: Stage,
                 clock: FixedClock, h: StepSize, moving: Tensor | None, batches: Batches,
                 locate: bool) -> tuple[Stage, list[Tensor], _Previous | None]:
    """`count` steps from clock.k; returns the last stage, each step's loss after it, and (with `locate`) the
    last step with the state it started from."""
    losses, previous = [], None
    for j in range(count):
        x, y, loss, grad = stage
        before = {k: v.clone() for k, v in params.items()} if locate and j == count - 1 else None
        step = rk_step(method, lambda p: loss_and_grad(p, x, y), params, clock.step_at(clock.k + j, h), (loss, grad))
        if before is not None:
            previous = _Previous(step, before, loss, clock.times_at(clock.k + j))
        advance(params, step, moving)
        x, y = batches()
        loss, grad = loss_and_grad(params, x, y)  # fixed-step methods are not FSAL
        stage = (x, y, loss, grad)
        losses.append(loss)
    return stage, losses, previous


def _frozen_steps(count: int, method: Tableau, loss_and_grad: LossAndGrad, params: Params, stage: Stage,
                  clock: FixedClock, h: StepSize, running: Tensor, batches: Batches, rules: _Rules,
                  target: bool) -> tuple[Stage, Tensor, Tensor]:
    """`count` steps from clock.k with each member frozen from the step where a stopping rule fires on it, judged
    on the device (no go-back). Returns the last stage, the steps each member took (E,) and whether its rule
    fired (E,) and on a divergence."""
    moving, taken = running.clone(), torch.zeros_like(running, dtype=torch.long)
    fired, diverged = torch.zeros_like(running), torch.zeros_like(running)
    for j in range(count):
        x, y, loss, grad = stage
        step = rk_step(method, lambda p: loss_and_grad(p, x, y), params, clock.step_at(clock.k + j, h), (loss, grad))
        advance(params, step, moving)
        taken += moving
        x, y = batches()
        loss, grad = loss_and_grad(params, x, y)
        stage = (x, y, loss, grad)
        bad, fires = rules.judge(loss, target)
        now = moving & fires
        fired, diverged, moving = fired | now, diverged | (now & bad), moving & ~now
    return stage, taken, torch.stack([fired, diverged])


def _fixed_loop(objective: Objective, loss_and_grad: LossAndGrad, params: Params, stage: Stage, batches: Batches,
                schedule: Schedule, clock: FixedClock, rules: _Rules, log: _Logger,
                progress: Callable[[float], None], freeze: bool, save: _Saver,
                counters: dict[str, Any] | None) -> TrainResult:
    """Fixed steps, in windows the host reads once (see the module docstring). Each go-back halves the longest
    window and each window without a stop doubles it again; an ensemble that went back once freezes its stopping
    members on the device from then on (no more go-backs), so members stopping at scattered steps, as seeds do,
    cost a few device operations a step, not steps taken twice. (Not when time_to_target is located between
    steps: that needs each stop's step again.)"""
    members, size, method = log.members, len(log.members), schedule.method
    like = stage[2]
    h = clock.h if isinstance(clock.h, float) else torch.tensor(clock.h, dtype=like.dtype, device=like.device)
    locate = schedule.locate_target and rules.any_target and batches.full
    check_target = batches.full  # minibatch trainers judge the target on the logged full-data loss
    previous, pending = None, []
    resumed = counters is not None  # a resumed loop has judged, logged and offered this state already
    # member_evals: every ∇L the loop computes, the first one at θ_0 included
    counters = counters or {"member_evals": [1] * size, "limit": WINDOW, "frozen": False}
    member_evals, limit, frozen = list(counters["member_evals"]), counters["limit"], counters["frozen"]
    while True:
        if not resumed:
            x, y, loss, grad = stage
            running = [m.status == "running" for m in members]
            steps, times = clock.steps(), clock.times()
            stopped = pending + _stop(members, rules.first_events([loss], running, check_target), 0, steps, times)
            if locate and previous is not None:
                _locate(objective, method, previous, rules, loss, (x, y), members, stopped, times)
            running = [m.status == "running" for m in members]
            for s in sorted({steps[i] for i in stopped if steps[i] < clock.k}):  # in step order, as step by step
                log(s, steps, times, params, loss, grad, [i for i in stopped if steps[i] == s], False, False)
            finished = log(clock.k, steps, times, params, loss, grad, [i for i in stopped if steps[i] == clock.k],
                           clock.due(), clock.finished() or not any(running))
            progress(max(times))
            if finished or not any(m.status == "running" for m in members):  # the full-data loss of a minibatch
                break  # run may stop some
            save(clock.k, stage, clock, {"member_evals": member_evals, "limit": limit, "frozen": frozen})
        resumed = False
        running = [m.status == "running" for m in members]
        mask = torch.tensor(running, device=like.device)
        n = clock.window(WINDOW if frozen else limit)
        if frozen:
            stage, taken, fired = _frozen_steps(n, method, loss_and_grad, params, stage, clock, h, mask, batches,
                                                rules, check_target)
            counts, (fires, bad) = taken.tolist(), fired.tolist()
            clock.advance(max(counts), counts)  # steps after the last member stopped moved nobody: not counted
            events = [(0, "diverged" if d else "converged") if f else (-1, "") for f, d in zip(fires, bad)]
            pending = _stop(members, events, 0, clock.steps(), clock.times())
        else:
            moving = None if all(running) else mask
            saved = ({k: v.clone() for k, v in params.items()}, stage, batches.state())
            stage, losses, previous = _fixed_steps(n, method, loss_and_grad, params, stage, clock, h, moving, batches,
                                                   locate)
            hit = min((at for at, _ in rules.first_events(losses, running, check_target) if at >= 0), default=-1)
            if 0 <= hit < n - 1:  # back to the window's start, then the same steps again up to the first stop
                for k, v in saved[0].items():
                    params[k].copy_(v)
                batches.restore(saved[2])
                stage, _, previous = _fixed_steps(hit + 1, method, loss_and_grad, params, saved[1], clock, h, moving,
                                                  batches, locate)
                limit, frozen = max(limit // 2, 1), freeze and size > 1 and not locate
            elif hit < 0:
                limit = min(2 * limit, WINDOW)
            counts = [(n if hit < 0 else hit + 1) * r for r in running]
            clock.advance(n if hit < 0 else hit + 1, counts)  # the stop is judged on the state reached, at the top
        member_evals = [e + c * method.grad_evals_per_step for e, c in zip(member_evals, counts)]
    return TrainResult(params, clock.k, clock.steps(), clock.times(), 1 + clock.k * method.grad_evals_per_step,
                       member_evals, clock.rejected, 0.0, members)


def _adaptive_steps(count: int, method: Tableau, loss_and_grad: LossAndGrad, params: Params, stage: Stage,
                    clock: AdaptiveClock, running: Tensor, rules: _Rules, schedule: Schedule,
                    locate: bool) -> tuple[Stage, Tensor, Tensor, _Previous | None]:
    """`count` attempted steps (adaptive methods need the fixed data set: stage's x, y throughout), nothing read
    by the host. Returns the last stage; per step (n, 2) whether a running member's stopping rule fires after
    it and whether no running member can move (a row is due, or all are at t_max); which members moved at each
    step (n, E); and (with `locate`) the last step with the state it started from."""
    x, y, loss, grad = stage
    kept: list[tuple[Tensor, ...]] = []  # after each step: the loss and the clock's state (fresh tensors)
    previous = None
    for j in range(count):
        h, moving = clock.step_size(running)
        before = ({k: v.clone() for k, v in params.items()}, loss, clock.t.clone()) \
            if locate and j == count - 1 else None
        step = rk_step(method, lambda p: loss_and_grad(p, x, y), params, h, (loss, grad), schedule.rtol,
                       schedule.atol)
        accepted = clock.commit(step, moving)
        if before is not None:
            previous = _Previous(step, *before)
        advance(params, step, accepted)
        if method.fsal:  # the last stage was evaluated at θ_{k+1}: the next step's first, for accepted members
            end_loss, end_grad = step.end
            loss = torch.where(accepted, end_loss, loss)
            grad = {k: _where(accepted, end_grad[k], g) for k, g in grad.items()}
        else:
            loss, grad = loss_and_grad(params, x, y)
        kept.append((loss, moving, clock.t, clock.h, clock.accepted, clock.rejected, clock.last_rejected))
    # the stopping rules of every step at once: a few ops per window, not per step
    losses, moved, t, h, accepted, rejected, last_rejected = (torch.stack(v) for v in zip(*kept))  # (n, E) each
    ended = clock.out_of_budget_mask(t, accepted, rejected) | clock.stalled_mask(t, h, last_rejected)
    stops = running & (rules.judge(losses)[1] | ended)
    resting = (clock.waiting(t, accepted) | ~running).all(1)
    return (x, y, loss, grad), torch.stack([stops.any(1), resting], 1), moved, previous


def _adaptive_loop(objective: Objective, loss_and_grad: LossAndGrad, params: Params, stage: Stage,
                   batches: Batches, schedule: Schedule, clock: AdaptiveClock, rules: _Rules, log: _Logger,
                   progress: Callable[[float], None], save: _Saver, counters: dict[str, Any] | None) -> TrainResult:
    """Per-member steps under error control, in windows the host reads once, up to the first step where a
    member stops or a row is due. Steps after a due row move nobody (every running member waits at the row's
    time) and are not counted; a stop inside the window is found by going back to the window's start and taking
    the same steps again. A window reaches as far as the steps the last row took (rows are log-spaced in t, and
    so are steps that grow with t), then half as far again while nothing happens; each go-back halves the
    longest window and each window without an event doubles it again (at most WINDOW)."""
    members, size, method = log.members, len(log.members), schedule.method
    locate = schedule.locate_target and rules.any_target
    previous: _Previous | None = None
    resumed = counters is not None  # a resumed loop has judged, logged and offered this state already
    # member_evals: every ∇L the loop computes, the first one at θ_0 included; interval: the steps the last row
    # took; since_row: steps taken since it; limit: the longest window
    counters = counters or {"iterations": 0, "member_evals": [1] * size, "interval": 1, "since_row": 0,
                            "limit": WINDOW}
    iterations, member_evals = counters["iterations"], list(counters["member_evals"])
    interval, since_row, limit = counters["interval"], counters["since_row"], counters["limit"]
    while True:
        if not resumed:
            x, y, loss, grad = stage
            steps, times = clock.steps(), clock.times()
            running = [m.status == "running" for m in members]
            stopped = _stop(members, rules.first_events([loss], running, True), 0, steps, times)
            if locate and previous is not None:
                _locate(objective, method, previous, rules, loss, (x, y), members, stopped, times)
            # a stalled member's step size underflowed: the vector field is NaN/inf next to its θ
            for status, ended in (("diverged", clock.stalled()), ("step_budget", clock.out_of_budget())):
                for i in (i for i in ended if members[i].status == "running"):
                    members[i].status, members[i].stop_step = status, steps[i]
                    stopped.append(i)
            running = [m.status == "running" for m in members]
            due = clock.due(running)
            finished = log(iterations, steps, times, params, loss, grad, stopped, due,
                           not any(running) or clock.finished(running))
            if due:
                clock.logged()
            progress(max(times))
            if finished:
                break
            if due:
                interval, since_row = max(since_row, 1), 0
            save(iterations, stage, clock, {"iterations": iterations, "member_evals": member_evals,
                                            "interval": interval, "since_row": since_row, "limit": limit})
        resumed = False
        running = [m.status == "running" for m in members]
        window = min(max(interval - since_row, (since_row + 1) // 2, 1), limit)
        mask = torch.tensor(running, device=stage[2].device)
        saved = ({k: v.clone() for k, v in params.items()}, stage, clock.state())
        stage, flags, moved, previous = _adaptive_steps(window, method, loss_and_grad, params, stage, clock, mask,
                                                        rules, schedule, locate)
        marks = [stop or rest for stop, rest in flags.tolist()]
        taken = marks.index(True) + 1 if True in marks else window
        if taken < window and flags[taken - 1, 0]:  # back to the window's start, the same steps up to the stop
            for k, v in saved[0].items():
                params[k].copy_(v)
            clock.load(saved[2])
            stage, _, _, previous = _adaptive_steps(taken, method, loss_and_grad, params, saved[1], clock, mask,
                                                    rules, schedule, locate)
            limit = max(limit // 2, 1)
        elif True not in marks:
            limit = min(2 * limit, WINDOW)
        iterations, since_row = iterations + taken, since_row + taken
        counts = moved[:taken].sum(0).tolist()
        member_evals = [e + method.grad_evals_per_step * c for e, c in zip(member_evals, counts)]
    return TrainResult(params, iterations, clock.steps(), clock.times(), 1 + iterations * method.grad_evals_per_step,
                       member_evals, clock.rejected.tolist(), 0.0, members)
