"""Losses against hand computations; reductions; loss/task compatibility; config errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dynamics_bench.config import ConfigError
from dynamics_bench.losses import LOSSES, build_loss
from dynamics_bench.tasks import build_task

F64 = dict(dtype=torch.float64, device=torch.device("cpu"))
CONF = Path(__file__).resolve().parents[1] / "dynamics_bench" / "conf" / "loss"


def t(v) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def test_regression_losses_by_hand():
    yhat, y = t([[[3.0, 1.0], [0.0, 0.5]]]), t([[[1.0, 1.0], [1.0, 0.0]]])  # (E=1, n=2, o=2); r = (2, 0), (-1, .5)
    assert torch.allclose(build_loss({"name": "mse"}).per_sample(yhat, y), t([[2.0, 0.5 + 0.125]]))
    assert torch.allclose(build_loss({"name": "quartic"}).per_sample(yhat, y), t([[4.0, 0.25 + 0.25 * 0.0625]]))
    want = [[math.log(math.cosh(2.0)), math.log(math.cosh(-1.0)) + math.log(math.cosh(0.5))]]
    assert torch.allclose(build_loss({"name": "log_cosh"}).per_sample(yhat, y), t(want), rtol=0, atol=1e-14)


def test_log_cosh_large_residual_and_gradient():
    r = t([[[800.0], [-800.0]]]).requires_grad_()
    v = build_loss({"name": "log_cosh"}).per_sample(r, torch.zeros_like(r))
    assert torch.isfinite(v).all()
    assert torch.allclose(v, t([[800 - math.log(2)] * 2]), rtol=0, atol=1e-12)
    (g,) = torch.autograd.grad(v.sum(), r)
    assert torch.equal(g, t([[[1.0], [-1.0]]]))  # d/dr log cosh r = tanh r


def test_classification_losses_by_hand():
    yhat, y = t([[[2.0], [-1.0], [0.5]]]), torch.tensor([[1, 1, 0]])
    loss = build_loss({"name": "logistic"})
    want = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0)), math.log1p(math.exp(0.5))]
    assert torch.allclose(loss.per_sample(yhat, y), t([want]))
    assert loss.classification and loss.predict(yhat).tolist() == [[1, 0, 1]]

    yhat, y = t([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]]), torch.tensor([[0, 2]])
    loss = build_loss({"name": "cross_entropy"})
    lse = math.log(math.e + math.e**2 + math.e**3)
    assert torch.allclose(loss.per_sample(yhat, y), t([[lse - 1.0, math.log(3.0)]]))
    assert loss.predict(yhat)[0, 0].item() == 2


def test_reduction_mean_sum_and_sum_over_samples():
    ps = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (E=2, n=3)
    mean, total = build_loss({"name": "mse"}), build_loss({"name": "mse", "reduction": "sum"})
    assert mean.reduction == "mean" and torch.equal(mean.reduce(ps), t([2.0, 5.0]))
    assert torch.equal(total.reduce(ps), t([6.0, 15.0]))
    assert torch.equal(mean.reduce(ps, sum_over_samples=True), t([6.0, 15.0]))
    assert not mean.classification and mean.predict(ps[..., None]) is None


def test_output_dim_and_compatibility():
    reg = build_task({"name": "linear_regression", "seed": 0}, **F64)
    cls2 = build_task({"name": "classification", "seed": 0}, **F64)
    cls3 = build_task({"name": "classification", "seed": 0, "labels": "random", "num_classes": 3}, **F64)
    assert build_loss({"name": "mse"}).output_dim(reg) == 5
    assert build_loss({"name": "logistic"}).output_dim(cls2) == 1
    assert build_loss({"name": "cross_entropy"}).output_dim(cls3) == 3
    for name, task in [("logistic", reg), ("cross_entropy", reg), ("mse", cls2), ("logistic", cls3)]:
        with pytest.raises(ConfigError, match=rf"loss\.name='{name}'.*task\.name='{task.name}'"):
            build_loss({"name": name}).output_dim(task)


@pytest.mark.parametrize("section, key, value", [
    ({"name": "mse", "reduction": "avg"}, "loss.reduction", "avg"),
    ({"name": "hinge"}, "loss.name", "hinge"),
    ({"name": "mse", "weight": 2}, "loss.weight", "2"),
])
def test_config_errors(section, key, value):
    with pytest.raises(ConfigError) as err:
        build_loss(section)
    assert err.value.key == key and key in str(err.value) and value in str(err.value)


def test_yaml_files_match_registry():
    names = {p.stem for p in CONF.glob("*.yaml")}
    assert names == set(LOSSES)
    for p in CONF.glob("*.yaml"):
        section = OmegaConf.to_container(OmegaConf.load(p))
        assert section["name"] == p.stem and build_loss(section).name == p.stem


@pytest.mark.parametrize("name", ["mse", "quartic", "log_cosh"])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_single_reduction_equals_per_sample_then_reduce(name, outputs, reduction):
    """__call__ (one reduction over samples and outputs) = the mean or sum over samples of the per-sample
    sums over outputs, to float64 round-off (only the summation order differs)."""
    loss = build_loss({"name": name, "reduction": reduction})
    gen = torch.Generator().manual_seed(outputs)
    yhat, y = (torch.randn(2, 7, outputs, generator=gen, dtype=torch.float64) for _ in range(2))
    for sum_over_samples in (False, True):
        expected = loss.reduce(loss.per_sample(yhat, y), sum_over_samples)
        torch.testing.assert_close(loss(yhat, y, sum_over_samples), expected, rtol=1e-14, atol=0)
