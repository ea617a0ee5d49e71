"""The one training loop. The update rule (an integrator on a data stream) is pluggable; the loop owns the
time axis, the per-member stopping rules, and when metrics are taken.

Member statuses: ``running`` until its loss reaches ``target_loss`` (``converged``) or is NaN/inf or above
``divergence_threshold`` (``diverged``); a stopped member's parameters are frozen while the others go on.
Full-batch trainers check every step on the exact loss; minibatch and online trainers check divergence on the
step's batch loss and the target on the logged (full-data) loss.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.batches import Batches
from dynamics_bench.metrics.base import Snapshot
from dynamics_bench.models.base import Params
from dynamics_bench.objective import Objective
from dynamics_bench.integrators import advance
from dynamics_bench.trainers import Schedule

OnLog = Callable[[Snapshot], dict[str, Tensor]]  # logs a snapshot, returns its metrics


@dataclass
class MemberState:
    status: str = "running"
    stop_step: int | None = None  # step at which the member converged or diverged
    time_to_target: float | None = None


@dataclass
class TrainResult:
    params: Params
    steps: int  # the last step taken (θ_steps are the final parameters)
    t: float
    grad_evals: int
    wall_seconds: float
    members: list[MemberState] = field(default_factory=list)


def _check(members: list[MemberState], losses: list[float], step: int, t: float, schedule: Schedule,
           target: bool, divergence: bool) -> None:
    for m, value in zip(members, losses):
        if m.status != "running":
            continue
        if divergence and (not math.isfinite(value) or value > schedule.divergence_threshold):
            m.status, m.stop_step = "diverged", step
        elif target and schedule.target_loss is not None and value <= schedule.target_loss:
            m.status, m.stop_step, m.time_to_target = "converged", step, t


def _mask(direction: list[Tensor], running: Tensor) -> list[Tensor]:
    """Zero the increment of stopped members (where, not a product: a diverged member's may be NaN)."""
    return [torch.where(running.view(-1, *[1] * (d.dim() - 1)), d, 0.0) for d in direction]


def train(*, objective: Objective, params: Params, batches: Batches, schedule: Schedule, grid: set[int],
          on_log: OnLog, snapshot: Callable[..., Snapshot], progress: Callable[[int], None]) -> TrainResult:
    """Run `schedule.steps` steps from `params` (E members, left untouched), calling on_log on the grid and at
    the end."""
    params = {k: v.detach().clone() for k, v in params.items()}  # updated in place
    members = [MemberState() for _ in range(next(iter(params.values())).shape[0])]
    integrator, h = schedule.integrator, schedule.h
    grad_evals, step, start = 0, 0, time.perf_counter()
    for step in range(schedule.steps + 1):
        t = step * h
        x, y = batches()
        with torch.no_grad():  # only the objective's own gradient evaluations build graphs
            if step < schedule.steps:
                taken = integrator.step(lambda p: objective.loss_and_grad(p, x, y), params, h)
                loss, grad, direction, alpha = taken
                grad_evals += integrator.grad_evals_per_step
            else:
                loss, grad, direction, alpha = objective.loss(params, x, y), None, None, 0.0
        _check(members, loss.tolist(), step, t, schedule, target=batches.full, divergence=True)
        finished = all(m.status != "running" for m in members)
        stopped = any(m.stop_step == step for m in members)  # a member's stop step always gets its row
        if step in grid or step == schedule.steps or finished or stopped:
            cached = (loss, grad) if batches.full else (None, None)
            logged = on_log(snapshot(step=step, t=t, params=params, loss=cached[0], grad=cached[1]))
            if not batches.full:
                _check(members, logged["loss"].tolist(), step, t, schedule, target=True, divergence=False)
                finished = all(m.status != "running" for m in members)
        progress(step)
        if finished or direction is None:
            break
        running = [m.status == "running" for m in members]
        if not all(running):
            direction = _mask(direction, torch.tensor(running, device=loss.device))
        advance(params, direction, alpha)
    return TrainResult(params, step, step * h, grad_evals, time.perf_counter() - start, members)
