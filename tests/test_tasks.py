"""Tasks: determinism, closed-form checks of each construction, online sampling, config errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dynamics_bench.config import ConfigError
from dynamics_bench.models.base import ACTIVATIONS
from dynamics_bench.tasks import TASKS, build_task
from tests.test_models import REF_ACT

CPU = torch.device("cpu")
F64 = dict(dtype=torch.float64, device=CPU)
CONF = Path(__file__).resolve().parents[1] / "dynamics_bench" / "conf" / "task"
DEFAULTS = {  # one small instance of every task, exercising its non-default branches too
    "linear_regression": {"singular_values": [3.0, 2.0, 1.0], "whiten": True, "noise": 0.1},
    "matrix_cost": {"target": "gaussian", "input_dim": 3, "output_dim": 2},
    "teacher": {"teacher_activation": "abs", "teacher_norms": [1.0, 2.0], "noise": 0.1, "normalize_inputs": True},
    "classification": {"labels": "random", "num_classes": 3, "normalize_inputs": True},
}
# The tasks drawn from task.seed; dataset reads a file (its tests, yaml included: tests/test_task_settings.py).
DRAWN = [name for name in TASKS if name != "dataset"]


def make(name: str, seed: int = 0, dtype: torch.dtype = torch.float64, **kw):
    return build_task({"name": name, "seed": seed, **kw}, dtype=dtype, device=CPU)


@pytest.mark.parametrize("name", DRAWN)
def test_seed_determinism_and_dtype(name):
    a, b, c = (make(name, s, **DEFAULTS[name]).data() for s in (0, 0, 1))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[1], c[1])  # y differs (x of matrix_cost is the identity)
    x32, y32 = make(name, 0, torch.float32, **DEFAULTS[name]).data()
    assert x32.dtype == torch.float32 and torch.equal(x32, a[0].float())
    assert torch.equal(y32, a[1].float() if y32.is_floating_point() else a[1])


def test_linear_regression_whiten_and_singular_values():
    task = make("linear_regression", input_dim=6, output_dim=5, n=8, singular_values=[3.0, 0.5, 2.0], whiten=True)
    x, y = task.data()
    assert x.shape == (8, 6) and y.shape == (8, 5) and task.rank == 3
    assert torch.allclose(x.T @ x / 8, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-12)
    s = torch.linalg.svdvals(task.target_matrix)  # (5,), descending
    assert torch.allclose(s[:3], torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64)) and s[3:].abs().max() < 1e-12
    assert torch.allclose(y, x @ task.target_matrix.T)
    assert torch.allclose(y.T @ x / 8, task.target_matrix)  # Saxe: Σ³¹ = M with whitened inputs


def test_linear_regression_full_rank_singular_values():
    """min(input_dim, output_dim) singular values (full rank) is the most allowed, and one more is refused."""
    task = make("linear_regression", input_dim=6, output_dim=5, singular_values=[5.0, 4.0, 3.0, 2.0, 1.0])
    expected = torch.arange(5.0, 0.0, -1, dtype=torch.float64)
    torch.testing.assert_close(torch.linalg.svdvals(task.target_matrix), expected)
    with pytest.raises(ConfigError, match="task.singular_values"):
        make("linear_regression", input_dim=6, output_dim=5, singular_values=[6.0, 5.0, 4.0, 3.0, 2.0, 1.0])


def test_linear_regression_gaussian_rank():
    task = make("linear_regression", rank=2)
    assert torch.linalg.matrix_rank(task.target_matrix).item() == 2
    x, y = task.data()
    assert x.shape == (100, 6) and torch.allclose(y, x @ task.target_matrix.T)


def test_linear_regression_gaussian_target_has_unit_variance_entries():
    """M = AB/√r (A, B Gaussian) has entries of mean 0 and variance 1 whatever the rank r. The mean of M's mean
    square over 16 seeds (30×30, r = 5) has sd 0.044 (measured over 50 such sets of seeds): ±20% is 4.5 sd, while
    a scale of 1/r or none would be off by 5×, and std 2 by 4×."""
    squares = [make("linear_regression", s, input_dim=30, output_dim=30, n=2, rank=5).target_matrix.pow(2).mean()
               for s in range(16)]
    assert torch.stack(squares).mean().item() == pytest.approx(1.0, rel=0.2)


def test_teacher_labels_and_norms():
    task = make("teacher", input_dim=4, teacher_width=3, teacher_norms=[0.5, 1.0, 2.0], n=50)
    x, y = task.data()
    w = task.teacher.weights
    assert task.teacher.activation == "relu" and w.shape == (3, 4) and task.output_dim == 1
    assert torch.allclose(w.norm(dim=1), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    assert torch.allclose(y[:, 0], sum(torch.relu(x @ w[i]) for i in range(3)))
    norms = make("teacher", teacher_norms=1.5).teacher.weights.norm(dim=1)
    assert torch.allclose(norms, torch.full((2,), 1.5, dtype=torch.float64))


def test_teacher_online_sample_per_member():
    task = make("teacher", online=True, teacher_activation="tanh")
    assert task.online
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    x, y = task.sample(gens(1, 2, 3), 7)
    assert x.shape == (3, 7, 5) and y.shape == (3, 7, 1)
    x2, y2 = task.sample(gens(9, 2, 4), 7)
    assert torch.equal(x[1], x2[1]) and torch.equal(y[1], y2[1]) and not torch.equal(x[0], x2[0])
    assert torch.allclose(y[..., 0], torch.tanh(x @ task.teacher.weights.T).sum(-1))


def test_matrix_cost_identity_input_gives_columns_of_product():
    m = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]  # (out=2, in=3)
    task = make("matrix_cost", target=m, input_dim=3)
    x, y = task.data()
    assert task.sum_over_samples is True and (task.input_dim, task.output_dim) == (3, 2)
    assert torch.equal(x, torch.eye(3, dtype=torch.float64)) and torch.equal(y, torch.tensor(m).double().T)
    w1, w2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)  # 2-layer linear net
    f = w2 @ w1  # (2, 3)
    out = x @ w1.T @ w2.T  # the model applied to each sample (row of x)
    assert torch.allclose(out, f.T)  # row j = column j of F
    scalar = make("matrix_cost", target=2)
    assert scalar.target_matrix.tolist() == [[2.0]] and scalar.data()[0].tolist() == [[1.0]]
    assert make("matrix_cost", target=[1.0, 2.0]).target_matrix.shape == (1, 2)  # a flat list is one row


def test_classification_labels():
    task = make("classification", labels="random", num_classes=4, n=200, normalize_inputs=True)
    x, y = task.data()
    assert y.dtype == torch.int64 and y.shape == (200,) and set(y.tolist()) == {0, 1, 2, 3}
    assert task.num_classes == task.output_dim == 4
    assert torch.allclose(x.norm(dim=1), torch.ones(200, dtype=torch.float64))
    x, y = make("classification", n=400, separation=6.0).data()
    assert y.sum().item() == 200  # balanced
    mu0, mu1 = x[y == 0].mean(0), x[y == 1].mean(0)
    pred = ((x - (mu0 + mu1) / 2) @ (mu1 - mu0) > 0).long()
    assert (pred == y).double().mean() > 0.95  # Bayes error Φ(−3) ≈ 0.13%


@pytest.mark.parametrize("name, section, key, value", [
    ("linear_regression", {"n": 0}, "task.n", "0"),
    ("linear_regression", {"input_dim": 0}, "task.input_dim", "0"),
    ("linear_regression", {"singular_values": [1.0] * 6}, "task.singular_values", "[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]"),
    ("linear_regression", {"singular_values": [1.0, -0.5]}, "task.singular_values", "-0.5"),
    ("linear_regression", {"whiten": True, "n": 4}, "task.n", "4"),
    ("linear_regression", {"rank": 9}, "task.rank", "9"),
    ("linear_regression", {"bogus": 1}, "task.bogus", "1"),
    ("teacher", {"teacher_norms": [1.0, 2.0, 3.0]}, "task.teacher_norms", "[1.0, 2.0, 3.0]"),
    ("teacher", {"teacher_norms": 0}, "task.teacher_norms", "0"),
    ("teacher", {"teacher_activation": "gelu"}, "task.teacher_activation", "gelu"),
    ("teacher", {"n": -1}, "task.n", "-1"),
    ("classification", {"num_classes": 3}, "task.num_classes", "3"),
    ("classification", {"labels": "moons"}, "task.labels", "moons"),
    ("matrix_cost", {"target": [[1.0, 2.0]], "input_dim": 3}, "task.input_dim", "3"),
    ("matrix_cost", {"target": [[1.0, 2.0]], "output_dim": 2}, "task.output_dim", "2"),
    ("matrix_cost", {"target": [[1.0, 2.0], [3.0]]}, "task.target", "[3.0]"),
    ("matrix_cost", {"target": "gaussian"}, "task.input_dim", "None"),
    ("matrix_cost", {"target": "identity"}, "task.target", "identity"),
    ("nope", {}, "task.name", "nope"),
])
def test_config_errors(name, section, key, value):
    with pytest.raises(ConfigError) as err:
        make(name, **section)
    assert err.value.key == key and key in str(err.value) and value in str(err.value)


@pytest.mark.parametrize("name", DRAWN)
def test_yaml_defaults_match_schema(name):
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    assert list(raw)[:2] == ["name", "seed"] and OmegaConf.to_container(raw)["seed"] == "${seed}"
    section = OmegaConf.to_container(OmegaConf.create({"seed": 3, "task": raw}), resolve=True)["task"]
    config_cls = TASKS[name][0]
    assert set(section) == {f.name for f in dataclasses.fields(config_cls)}
    assert section == {**dataclasses.asdict(config_cls()), "seed": 3}
    x, _ = build_task(section, **F64).data()
    assert x.shape[1] == build_task(section, **F64).input_dim


def _noiseless(task, x: torch.Tensor) -> torch.Tensor:
    """f*(x) of a relu teacher or a linear-regression task, (n, out)."""
    if task.teacher is not None:
        return (x @ task.teacher.weights.T).relu().sum(-1, keepdim=True)
    return x @ task.target_matrix.T


@pytest.mark.parametrize("name", ["teacher", "linear_regression"])
def test_noise_is_added_to_the_targets(name):
    """y = f*(x) + noise·ε: noise = 0 leaves f*(x) exactly; with noise 0.1 the residual y − f*(x) over n = 4000
    samples has mean ≈ 0 and std within 10% of 0.1 (the sample std's relative sd is 1/√(2n) ≈ 1.1%: 10% is 9 sd).
    The teacher's online samples carry the same noise."""
    kw = {"input_dim": 3} if name == "teacher" else {"input_dim": 3, "output_dim": 2}
    clean = make(name, n=4000, **kw)
    assert torch.equal(clean.data()[1], _noiseless(clean, clean.data()[0]))
    noisy = make(name, n=4000, noise=0.1, **kw)
    residual = noisy.data()[1] - _noiseless(noisy, noisy.data()[0])
    assert residual.mean().abs().item() < 0.01 and residual.std().item() == pytest.approx(0.1, rel=0.1)
    if name == "teacher":
        online = make(name, n=4000, noise=0.1, online=True, **kw)
        x, y = online.sample([torch.Generator().manual_seed(1)], 4000)
        assert (y[0] - _noiseless(online, x[0])).std().item() == pytest.approx(0.1, rel=0.1)


def test_activation_registry_is_used():
    """Each name in ACTIVATIONS is that function (written out independently in tests/test_models.py), and the
    teacher computes y = Σ_i σ(w_i*ᵀx) with it: a registry entry pointing at another function, or a teacher
    ignoring task.teacher_activation, fails here."""
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for act in ACTIVATIONS:
        torch.testing.assert_close(ACTIVATIONS[act].fn(z), REF_ACT[act](z), rtol=1e-14, atol=1e-15, msg=act)
        task = make("teacher", teacher_activation=act, n=5)
        x, y = task.data()
        assert task.teacher.activation == act
        torch.testing.assert_close(y[:, 0], REF_ACT[act](x @ task.teacher.weights.T).sum(-1), rtol=1e-14, atol=1e-15,
                                   msg=act)
    assert set(ACTIVATIONS) == set(REF_ACT)


@pytest.mark.parametrize("section", [{"name": "teacher", "input_dim": 4, "teacher_width": 3, "n": 16},
                                     {"name": "classification", "input_dim": 5, "n": 16},
                                     {"name": "linear_regression", "input_dim": 4, "output_dim": 3, "n": 16}])
def test_draw_check_counts_the_numbers_kept_per_sample(section, monkeypatch):
    """The memory check before a draw counts what the data set keeps per sample, x's and y's numbers, exactly,
    and at least as many while drawing."""
    seen = []
    module = __import__(f"dynamics_bench.tasks.{section['name']}", fromlist=["check_draw"])
    monkeypatch.setattr(module, "check_draw", lambda n, drawn, kept, **kw: seen.append((n, drawn, kept)))
    task = build_task(section, dtype=torch.float64, device=torch.device("cpu"))
    x, y = task.data()
    assert seen == [(16, seen[0][1], x.shape[1] + y[0].numel())] and seen[0][1] >= seen[0][2]


def test_draw_check_names_task_n_and_each_number():
    from dynamics_bench.tasks.base import check_draw

    with pytest.raises(ConfigError) as info:  # float32 on the CPU: the draw in float64, then a float32 copy
        check_draw(10**13, 20, 6, dtype=torch.float32, device=torch.device("cpu"))
    message = str(info.value)
    assert info.value.key == "task.n" and "20 numbers × 8 bytes" in message and "6 numbers × 4 bytes" in message
