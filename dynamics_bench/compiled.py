"""Compiled steps (``trainer.compile=true``): the objective's loss and gradient as one `torch.compile`d graph.

The gradient is taken with `torch.func.grad_and_value` inside the compiled function, so Dynamo traces forward and
backward into one graph (``fullgraph=True``) and Inductor fuses both; compiling only the forward and letting
AOTAutograd build the backward ran slower than eager on the benchmark problem (the eager `torch.autograd.grad`
around it keeps the autograd engine's per-step overhead). A whole GD step in one graph, the update included, ran
4–12% faster again on that problem in a first measurement; the loop does not use one yet. Shapes are fixed during
a run, so the graph is specialized to them (``dynamic=False``). On CUDA the graph is also captured as a CUDA graph
(``mode="reduce-overhead"``, CUDA graph trees), so a small net is not bound by kernel launches.

Compilation is paid here, not in the training loop: the compiled function is called on the run's first point
(twice: on CUDA the first call warms up and the second records the graph) and checked against its eager
equivalent there. Where compilation is unavailable (no C++ compiler, an op Dynamo cannot trace such as the
population loss's data-dependent indexing) or disagrees with eager, the eager function is returned with one
warning. Results equal eager's to round-off (tests/test_compiled.py: 100 float64 GD steps within 1e-12).
"""
from __future__ import annotations

import time
import types
import warnings
from typing import Any, Callable

import torch
from torch import Tensor
from torch.func import grad_and_value

from dynamics_bench.models.base import Params
from dynamics_bench.objective import LossAndGrad, Objective

CHECK_ULPS = 1000  # compiled vs eager at the first point: max |difference| ≤ this × eps × max |eager| per tensor
WARM_UP_CALLS = 2  # CUDA graph trees warm up on the first call and record on the second


class CompileMismatch(RuntimeError):
    """The compiled function disagreed with eager beyond round-off at the first point."""


def compile_loss_and_grad(objective: Objective, params: Params, x: Tensor, y: Tensor) -> tuple[LossAndGrad, float]:
    """A compiled equivalent of ``objective.loss_and_grad`` and the seconds spent compiling it (warm-up and check
    included).

    params: every parameter, (E, ...) each; x (E, n, d), y (E, n, ...): the shapes, device and dtype every later
    call must have (another shape recompiles, inside the loop). Call it after ``objective.anchor(θ_0)`` (lazy and
    linearized objectives read θ_0). The returned function has the signature and results of
    ``objective.loss_and_grad``: (loss (E,), {trainable name: gradient (E, ...)}), tensors the caller may keep.
    A failure to compile never raises: it warns once and returns ``objective.loss_and_grad`` itself, and the
    seconds are then those spent trying."""
    return _compile_checked(_loss_and_grad_fn(objective), objective.loss_and_grad, params, x, y)


def _compile_checked(fn: Callable, eager: Callable, params: Params, x: Tensor, y: Tensor) -> tuple[Callable, float]:
    """fn compiled, warmed up and checked against eager at (params, x, y); else eager, with one warning."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # torch's own warnings while tracing are noise here; ours follows
            warnings.simplefilter("ignore")
            compiled = _compile(fn, x)
            _check(compiled, eager, params, x, y)
    except Exception as exc:  # noqa: BLE001  (any failure of Dynamo, Inductor or the C++ compiler: run eagerly)
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"trainer.compile=true: training eagerly, as compiling failed ({type(exc).__name__}: "
                      f"{reason})", stacklevel=3)
        return eager, time.perf_counter() - start
    return compiled, time.perf_counter() - start


def _loss_and_grad_fn(objective: Objective) -> LossAndGrad:
    """objective.loss_and_grad written with torch.func, which Dynamo traces into one graph (autograd.grad breaks
    it). A single member is evaluated unbatched, as the eager method does."""
    trainable = objective.trainable

    def loss_and_grad(params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Params]:
        single = x.shape[0] == 1  # static under dynamic=False: the branch is resolved at trace time
        if single:
            params, x, y = {k: v[0] for k, v in params.items()}, x[0], y[0]

        def total(moving: Params) -> tuple[Tensor, Tensor]:
            loss = objective.loss({k: moving.get(k, v) for k, v in params.items()}, x, y)
            return loss.sum(), loss  # members never mix: ∇ of the sum is each member's own gradient

        grads, (_, loss) = grad_and_value(total, has_aux=True)({k: params[k] for k in trainable})
        if single:
            return loss.reshape(1), {k: g.unsqueeze(0) for k, g in grads.items()}
        return loss, grads
    return loss_and_grad


def _compile(fn: Callable, x: Tensor) -> Callable:
    """fn compiled to one graph for the device of x; on CUDA also a CUDA graph, whose outputs are static buffers
    that the next replay overwrites, so they are cloned (the loop keeps a step's results across later calls)."""
    cuda = x.device.type == "cuda"
    # A fresh code object: Dynamo caches graphs per code object, so every run in one process (a multirun) would
    # share one cache, and past its recompile limit (8 shapes or objectives) fullgraph compilation fails.
    fresh = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    graph = torch.compile(fresh, fullgraph=True, dynamic=False, mode="reduce-overhead" if cuda else None)

    def compiled(*args: Any) -> Any:
        with torch.no_grad():  # one grad mode for every call, as Dynamo guards on it (torch.func ignores it)
            out = graph(*args)
        return _clone(out) if cuda else out
    return compiled


def _clone(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.clone()
    if isinstance(out, dict):
        return {k: _clone(v) for k, v in out.items()}
    return tuple(_clone(v) for v in out)


def _named_tensors(out: Any, name: str = "output") -> list[tuple[str, Tensor]]:
    """The tensors of nested tuples and dicts, each named by its path (output[1][w])."""
    if isinstance(out, Tensor):
        return [(name, out)]
    items = out.items() if isinstance(out, dict) else enumerate(out)
    return [pair for key, value in items for pair in _named_tensors(value, f"{name}[{key}]")]


def _check(compiled: Callable, eager: Callable, params: Params, x: Tensor, y: Tensor) -> None:
    """Warm up (compile, and on CUDA record) and compare with eager; CompileMismatch beyond round-off."""
    for _ in range(WARM_UP_CALLS):
        got = _named_tensors(compiled(params, x, y))
    want = _named_tensors(eager(params, x, y))
    if [name for name, _ in got] != [name for name, _ in want]:
        raise CompileMismatch(f"outputs {[n for n, _ in got]} differ from eager's {[n for n, _ in want]}")
    for (name, a), (_, b) in zip(got, want):
        tol = CHECK_ULPS * torch.finfo(b.dtype).eps * float(b.abs().nan_to_num(0.0, 0.0, 0.0).max())
        if a.shape != b.shape or not torch.allclose(a, b, rtol=0, atol=tol, equal_nan=True):
            raise CompileMismatch(f"{name} differs from eager by more than {CHECK_ULPS}·eps at the first point")
