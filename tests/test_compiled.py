"""trainer.compile: the compiled loss and gradient (dynamics_bench.compiled) against the eager oracle
`Objective.loss_and_grad`, step by step along GD trajectories, and the fallback to eager where compilation fails.

Compiling costs seconds (the first compilation in a process most), so each function is compiled once, shared
through a module fixture where tests look at the same function: four compilations on the CPU in all."""
from __future__ import annotations

import os
import shutil
import warnings

import pandas as pd
import pytest
import torch

from dynamics_bench import compiled
from dynamics_bench.compiled import compile_loss_and_grad
from dynamics_bench.experiment import build, init_params
from tests.conftest import make_cfg, run_overrides

pytestmark = pytest.mark.usefixtures("one_thread")
needs_cxx = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                               reason="no C++ compiler (CXX or g++): Inductor cannot compile for the CPU")
SMALL = ("task=teacher", "task.n=40", "task.input_dim=4", "task.teacher_width=2", "model.width=6", "dtype=float64")
LR = 0.05


def built(*overrides: str, device: str = "cpu"):
    """The objective (anchored at θ_0), θ_0 and the full data (E, n, ·) of a small teacher-student problem."""
    exp = build(make_cfg(*SMALL, f"device={device}", *overrides))
    params = init_params(exp)
    exp.objective.anchor(params)
    x, y = exp.task.data()
    size = exp.ensemble_size
    return exp.objective, params, x.expand(size, *x.shape), y.expand(size, *y.shape)


def gd(loss_and_grad, params, x, y, steps: int, lr: float = LR) -> list[dict[str, torch.Tensor]]:
    """GD θ -= lr·∇L with the given function: per step {"loss": L(θ_k), "grad w": ∇_w L(θ_k), ..., "w": θ_{k+1}
    entries}. Outputs are kept uncloned, so a function whose outputs a later call overwrites (a CUDA graph's
    static buffers) fails the comparison."""
    p = {k: v.clone() for k, v in params.items()}
    path = []
    for _ in range(steps):
        loss, grad = loss_and_grad(p, x, y)
        p = {k: v - lr * grad[k] if k in grad else v for k, v in p.items()}
        path.append({"loss": loss, **{f"grad {k}": g for k, g in grad.items()}, **p})
    return path


def assert_same_path(got, want, rtol: float) -> None:
    """Per step: the loss, the gradient and the parameters within rtol of eager's, relative to each tensor's
    largest entry."""
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert list(a) == list(b)
        for name in b:
            diff = float((a[name] - b[name]).abs().max() / b[name].abs().max())
            assert diff <= rtol, f"step {k}: {name} differs from eager by {diff:.1e} (relative)"


def compile_quietly(compile_fn, *args):
    """compile_fn(*args) that must compile: a fallback warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn, seconds = compile_fn(*args)
    assert seconds > 0
    return fn


@pytest.fixture(scope="module")
def compiled_gd():
    """The single-member benchmark path (unbatched), compiled once for the module."""
    objective, params, x, y = built("ensemble.size=1")
    return objective, params, x, y, compile_quietly(compile_loss_and_grad, objective, params, x, y)


@needs_cxx
def test_compiled_gd_equals_eager_to_round_off_over_100_steps(compiled_gd):
    objective, params, x, y, fn = compiled_gd
    eager = gd(objective.loss_and_grad, params, x, y, 100)
    assert float(eager[-1]["loss"]) < 0.5 * float(eager[0]["loss"])  # the run moves: not a still point compared
    assert_same_path(gd(fn, params, x, y, 100), eager, rtol=1e-12)


@needs_cxx
def test_compiled_function_returns_what_eager_does(compiled_gd):
    objective, params, x, y, fn = compiled_gd
    loss, grad = fn(params, x, y)
    ref_loss, ref_grad = objective.loss_and_grad(params, x, y)
    assert loss.shape == ref_loss.shape == (1,) and list(grad) == list(ref_grad)
    assert all(grad[k].shape == ref_grad[k].shape for k in grad)


@needs_cxx
@pytest.mark.parametrize("overrides", [
    ("model.linearize=true", "model.lazy_alpha=4", "model.train_layers=[w]", "ensemble.size=2"),  # jvp, frozen a
    ("task.population=true", "model.bias=false", "ensemble.size=2"),  # closed form: data-dependent indexing
], ids=["linearized_lazy", "population"])
def test_other_objectives_compile_or_fall_back_cleanly(overrides):
    """Either way: at most one warning, never an exception, and the function returned equals eager's."""
    objective, params, x, y = built(*overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn, _ = compile_loss_and_grad(objective, params, x, y)
    assert len(caught) <= 1 and (not caught or fn == objective.loss_and_grad)
    assert_same_path(gd(fn, params, x, y, 10), gd(objective.loss_and_grad, params, x, y, 10), rtol=1e-12)


def test_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(compiled.torch, "compile", unavailable)
    objective, params, x, y = built("ensemble.size=2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn, seconds = compile_loss_and_grad(objective, params, x, y)
    assert len(caught) == 1 and "no C++ compiler" in str(caught[0].message) and seconds >= 0
    assert fn == objective.loss_and_grad
    loss, grad = fn(params, x, y)
    ref_loss, ref_grad = objective.loss_and_grad(params, x, y)
    assert torch.equal(loss, ref_loss) and all(torch.equal(grad[k], ref_grad[k]) for k in ref_grad)


def test_a_compiled_function_that_disagrees_with_eager_is_not_used(monkeypatch):
    """The check at the first point: a wrong 'compiled' function (twice the loss) is caught and eager returned."""
    def wrong(fn, x):
        return lambda p, x, y: (lambda loss, grad: (2 * loss, grad))(*fn(p, x, y))
    monkeypatch.setattr(compiled, "_compile", wrong)
    objective, params, x, y = built("ensemble.size=2")
    with pytest.warns(UserWarning, match="CompileMismatch") as caught:
        fn, _ = compile_loss_and_grad(objective, params, x, y)
    assert len(caught) == 1 and fn == objective.loss_and_grad


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_equal_eager_over_20_steps():
    """mode=reduce-overhead (a CUDA graph): replays overwrite the graph's outputs, so the functions must hand out
    copies; the paths keep every step's outputs."""
    pytest.importorskip("triton", reason="Inductor compiles for CUDA with Triton")
    objective, params, x, y = built("ensemble.size=3", device="cuda")
    eager = gd(objective.loss_and_grad, params, x, y, 20)
    fn = compile_quietly(compile_loss_and_grad, objective, params, x, y)
    assert_same_path(gd(fn, params, x, y, 20), eager, rtol=1e-12)


@needs_cxx
def test_a_compiled_run_equals_the_eager_run_and_times_its_compilation(tmp_path):
    """trainer.compile=true through the whole loop (SGD minibatches, an ensemble of 2): every metrics row equals
    eager's to round-off, compile_seconds is reported and steps_per_second leaves it out."""
    common = (*SMALL, "trainer=sgd", "trainer.batch_size=10", "trainer.steps=100", "ensemble.size=2",
              "metrics.names=[loss,grad_norm,param_norm]", "logger.tensorboard=false")
    eager = run_overrides(tmp_path, *common, name="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would make the comparison vacuous
        fast = run_overrides(tmp_path, *common, "trainer.compile=true", name="compiled")
    assert eager["compile_seconds"] == 0 and fast["compile_seconds"] > 0
    assert fast["steps_per_second"] == pytest.approx(
        fast["iterations"] / (fast["wall_seconds"] - fast["compile_seconds"]))
    a, b = (pd.read_csv(tmp_path / name / "metrics.csv") for name in ("eager", "compiled"))
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-14)
