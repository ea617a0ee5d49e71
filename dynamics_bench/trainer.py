"""The one training loop. The update rule (a Runge–Kutta method on a data stream) and the clock (fixed or
adaptive steps) are pluggable; the loop owns the stopping rules and when metrics are taken.

Member statuses: ``running`` until its loss reaches ``target_loss`` (``converged``), is NaN/inf or above
``divergence_threshold`` (``diverged``), or the adaptive step budget runs out (``step_budget``); a stopped
member's parameters are frozen while the others go on. Full-batch trainers check every step on the exact
loss; minibatch and online trainers check divergence on the step's batch loss and the target on the logged
(full-data) loss. Flow trainers place time_to_target between steps with the method's dense output.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.batches import Batches
from dynamics_bench.clocks import GridSpec, make_clock
from dynamics_bench.integrators import Step, Tableau, advance, dense_point, rk_step
from dynamics_bench.metrics.base import Snapshot
from dynamics_bench.models.base import Params, per_member
from dynamics_bench.objective import Objective
from dynamics_bench.trainers import Schedule

# on_log(snapshot, members, grid, ending): log the rows of the members marked; grid: a row of the metrics grid (not
# only a stop's); ending: the members whose last row this is (a stop, or t_max)
OnLog = Callable[[Snapshot, list[bool], bool, list[bool]], None]
LOCATE_ITERATIONS = 60  # regula falsi (Illinois) on the dense output; converges superlinearly, this is a cap


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


@dataclass
class _Previous:
    """The last step and the state it started from: enough to evaluate the flow between the two states."""

    step: Step
    params: Params
    loss: Tensor
    t: list[float]


def _check(members: list[MemberState], losses: list[float], steps: list[int], t: list[float],
           schedule: Schedule, target: bool, divergence: bool) -> list[int]:
    """Update statuses from the current losses; returns the members that stopped now."""
    stopped = []
    for i, (m, value) in enumerate(zip(members, losses)):
        if m.status != "running":
            continue
        if divergence and (not math.isfinite(value) or value > schedule.divergence_threshold):
            m.status, m.stop_step = "diverged", steps[i]
        elif target and schedule.target_loss is not None and value <= schedule.target_loss:
            m.status, m.stop_step, m.time_to_target = "converged", steps[i], t[i]
        else:
            continue
        stopped.append(i)
    return stopped


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(per_member(mask, new), new, old)


def locate_crossing(loss_at: Callable[[Params], Tensor], method: Tableau, prev: _Previous, level: float,
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


def train(*, objective: Objective, params: Params, batches: Batches, schedule: Schedule, grid: GridSpec,
          on_log: OnLog, snapshot: Callable[..., Snapshot], progress: Callable[[float], None]) -> TrainResult:
    """Integrate from `params` (E members, left untouched) to the schedule's end, calling on_log at the grid
    times, where a member stops, and at the end. `progress` gets the flow time reached."""
    params = {k: v.detach().clone() for k, v in params.items()}  # updated in place
    size = next(iter(params.values())).shape[0]
    members = [MemberState() for _ in range(size)]
    clock, method = make_clock(schedule, grid, size), schedule.method
    locate = schedule.locate_target and schedule.target_loss is not None and batches.full
    grad_evals, member_evals = 1, [1] * size  # every ∇L the loop computes, this first one at θ_0 included
    x, y = batches()
    grad_fn = lambda p: objective.loss_and_grad(p, x, y)  # noqa: E731  (x, y rebound per step)
    loss, grad = grad_fn(params)
    previous: _Previous | None = None
    last_logged = [False] * size  # whether the member's last row (its stop, or t_max) has been logged
    iteration, start = 0, time.perf_counter()
    while True:
        steps, times = clock.steps(), clock.times()
        stopped = _check(members, loss.tolist(), steps, times, schedule, target=batches.full, divergence=True)
        if locate and previous is not None and any(members[i].status == "converged" for i in stopped):
            s = locate_crossing(lambda p: objective.loss(p, x, y), method, previous, schedule.target_loss, loss)
            for i in stopped:
                if members[i].status == "converged":
                    members[i].time_to_target = previous.t[i] + s[i] * (times[i] - previous.t[i])
        # a stalled member's step size underflowed: the vector field is NaN/inf next to its θ
        for status, ended in (("diverged", clock.stalled()), ("step_budget", clock.out_of_budget())):
            for i in (i for i in ended if members[i].status == "running"):
                members[i].status, members[i].stop_step = status, steps[i]
                stopped.append(i)
        running = [m.status == "running" for m in members]
        due = clock.due(running)
        finished = not any(running) or clock.finished(running)
        if due or finished or stopped:
            cached = (loss, grad) if batches.full else (None, None)
            snap = snapshot(iteration=iteration, steps=steps, t=times, params=params, loss=cached[0], grad=cached[1])
            if not batches.full and (due or finished):  # a row for every member: the full-data loss may stop it
                stopped += _check(members, snap.loss_and_grad()[0].tolist(), steps, times, schedule, target=True,
                                  divergence=False)
                running = [m.status == "running" for m in members]
                finished = not any(running) or finished
            rows = [True] * size if due or finished else [i in stopped for i in range(size)]
            ending = [rows[i] and not last_logged[i] and (finished or i in stopped or times[i] >= schedule.t_max)
                      for i in range(size)]  # with adaptive steps a member may reach t_max before the others
            on_log(snap, rows, due, ending)
            last_logged = [a or b for a, b in zip(last_logged, ending)]
            if due:
                clock.logged()
        progress(max(times))
        if finished:
            break
        h, moving = clock.step_size(running, loss)
        step = rk_step(method, grad_fn, params, h, (loss, grad), schedule.rtol, schedule.atol)
        grad_evals += method.grad_evals_per_step
        moves = running if moving is None else moving.tolist()
        for i in (i for i in range(size) if moves[i]):
            member_evals[i] += method.grad_evals_per_step
        accepted = clock.commit(step, moving)
        if locate:
            previous = _Previous(step, {k: v.clone() for k, v in params.items()}, loss, times)
        advance(params, step, accepted)
        iteration += 1
        x, y = batches()
        if method.fsal:  # the last stage was evaluated at θ_{k+1}: the next step's first, for accepted members
            end_loss, end_grad = step.end
            loss = end_loss if accepted is None else torch.where(accepted, end_loss, loss)
            grad = end_grad if accepted is None else {k: _where(accepted, end_grad[k], g) for k, g in grad.items()}
        else:
            loss, grad = grad_fn(params)
    return TrainResult(params, iteration, clock.steps(), clock.times(), grad_evals, member_evals,
                       clock.rejected, time.perf_counter() - start, members)
