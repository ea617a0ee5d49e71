"""Task settings: teacher normalize_inputs and population, singular modes, state() for task.pt, task=dataset."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from dynamics_bench import compose, run
from dynamics_bench.config import ConfigError
from dynamics_bench.models.base import ACTIVATIONS
from dynamics_bench.tasks import TASKS, build_task
from dynamics_bench.tasks.base import STATE_DATA_MAX
from tests.test_tasks import CONF

CPU = torch.device("cpu")
F64 = torch.float64


def make(name: str, dtype: torch.dtype = F64, **kw):
    return build_task({"name": name, **kw}, dtype=dtype, device=CPU)


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def f_star(task, x: torch.Tensor) -> torch.Tensor:
    """The teacher's labels, (..., 1), computed here from its weights."""
    act = ACTIVATIONS[task.teacher.activation].fn
    return act(x @ task.teacher.weights.T).sum(-1, keepdim=True)


# --- teacher: normalize_inputs, population ------------------------------------------------------------------

def test_teacher_normalize_inputs_fixed_and_online():
    kw = dict(teacher_activation="abs", teacher_norms=[1.0, 2.0], n=50, online=True)
    task, plain = make("teacher", normalize_inputs=True, **kw), make("teacher", **kw)
    x, y = task.data()
    ones = torch.ones(50, dtype=F64)
    assert torch.allclose(x.norm(dim=1), ones, rtol=0, atol=1e-15) and torch.allclose(y, f_star(task, x))
    x0 = plain.data()[0]  # the same draws, rescaled: normalizing takes nothing from the generator
    assert torch.allclose(x, x0 / x0.norm(dim=1, keepdim=True), rtol=0, atol=1e-15)
    xs, ys = task.sample(gens(1, 2), 7)  # (2, 7, 5), (2, 7, 1)
    assert torch.allclose(xs.norm(dim=-1), torch.ones(2, 7, dtype=F64), rtol=0, atol=1e-15)
    assert torch.allclose(ys, f_star(task, xs))


def test_teacher_default_data_bit_for_bit():
    """normalize_inputs=false draws exactly as before it existed: teacher, then x, then the noise."""
    task = make("teacher", seed=4, input_dim=3, teacher_width=2, teacher_norms=[0.5, 2.0], n=20, noise=0.1)
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(2, 3, generator=gen, dtype=F64)
    w = w / w.norm(dim=1, keepdim=True) * torch.tensor([0.5, 2.0], dtype=F64)[:, None]
    x = torch.randn(20, 3, generator=gen, dtype=F64)
    y = torch.relu(x @ w.T).sum(-1, keepdim=True) + torch.randn(20, 1, generator=gen, dtype=F64) * 0.1
    assert torch.equal(task.teacher.weights, w) and torch.equal(task.data()[0], x) and torch.equal(task.data()[1], y)
    g = torch.Generator().manual_seed(9)
    xs = torch.randn(6, 3, generator=g, dtype=F64)
    ys = torch.relu(xs @ w.T).sum(-1, keepdim=True) + torch.randn(6, 1, generator=g, dtype=F64) * 0.1
    sx, sy = task.sample(gens(9), 6)
    assert torch.equal(sx[0], xs) and torch.equal(sy[0], ys)


def test_teacher_population_flag_keeps_the_sample():
    task, plain = make("teacher", population=True), make("teacher")
    assert task.population is True and plain.population is False and not task.online
    assert all(torch.equal(a, b) for a, b in zip(task.data(), plain.data()))


@pytest.mark.parametrize("key, value", [("noise", 0.1), ("online", True), ("normalize_inputs", True)])
def test_teacher_population_refuses(key, value):
    with pytest.raises(ConfigError) as err:
        make("teacher", population=True, **{key: value})
    assert err.value.key == f"task.{key}" and err.value.value == value
    assert str(err.value).startswith(f"task.{key}={value!r} is invalid: must be ")
    assert "with task.population=true" in str(err.value)
    make("teacher", **{key: value})  # fine without population


# --- modes ---------------------------------------------------------------------------------------------------

def check_modes(modes, sigma: torch.Tensor, r: int) -> None:
    """U diag(S) Vᵀ = sigma, orthonormal columns, S descending and > 0, the documented signs."""
    u, s, v = modes
    assert u.shape == (sigma.shape[0], r) and s.shape == (r,) and v.shape == (sigma.shape[1], r)
    assert torch.allclose(u @ torch.diag(s) @ v.T, sigma, rtol=0, atol=1e-12)
    eye = torch.eye(r, dtype=F64)
    assert torch.allclose(u.T @ u, eye, rtol=0, atol=1e-12) and torch.allclose(v.T @ v, eye, rtol=0, atol=1e-12)
    assert (s[:-1] >= s[1:]).all() and (s > 0).all()
    assert (v.gather(0, v.abs().argmax(0, keepdim=True)) > 0).all()  # largest-|entry| of each V column positive


@pytest.mark.parametrize("kw, r", [
    ({}, 5),  # full rank min(6, 5)
    ({"rank": 2}, 2),  # rank-deficient M: round-off singular values of Σ³¹ are not modes
    ({"rank": 1, "input_dim": 20, "output_dim": 12, "n": 300}, 1),
    ({"singular_values": [3.0, 0.5, 2.0], "whiten": True, "n": 8}, 3),
    ({"rank": 2, "noise": 0.1}, 5),  # noise fills Σ³¹'s spectrum
], ids=["full_rank", "rank_2", "rank_1_20x12", "whitened", "noise"])
def test_linear_regression_modes(kw, r):
    task = make("linear_regression", **kw)
    x, y = task.data()
    check_modes(task.modes(), y.T @ x / x.shape[0], r)


def test_whitened_modes_are_the_target():
    task = make("linear_regression", singular_values=[3.0, 0.5, 2.0], whiten=True, n=8)
    u, s, v = task.modes()
    assert task.whitened and not make("linear_regression").whitened
    assert torch.allclose(u @ torch.diag(s) @ v.T, task.target_matrix, rtol=0, atol=1e-12)  # Σ³¹ = M
    assert torch.allclose(s, torch.tensor([3.0, 2.0, 0.5], dtype=F64), rtol=0, atol=1e-12)


def test_modes_are_float64_from_the_data_before_the_cast():
    for name, kw in (("linear_regression", {"rank": 2}), ("matrix_cost", {"target": [[1.0, 0.1]]})):
        m64, m32 = make(name, **kw).modes(), make(name, torch.float32, **kw).modes()
        assert all(b.dtype == F64 and b.device == CPU and torch.equal(a, b) for a, b in zip(m64, m32)), name


def test_matrix_cost_modes():
    u, s, v = make("matrix_cost", target=[[1.0, 2.0], [2.0, 4.0]]).modes()  # rank 1: (1, 2)ᵀ(1, 2)
    w = torch.tensor([[1.0], [2.0]], dtype=F64) / math.sqrt(5)
    assert torch.allclose(s, torch.tensor([5.0], dtype=F64)) and torch.allclose(u, w) and torch.allclose(v, w)
    task = make("matrix_cost", target="gaussian", input_dim=4, output_dim=3)
    check_modes(task.modes(), task.target_matrix, 3)
    assert [t.shape for t in make("matrix_cost", target=0.0).modes()] == [(1, 0), (0,), (1, 0)]
    assert make("teacher").modes() is None and make("classification").modes() is None


# --- state() -------------------------------------------------------------------------------------------------

def test_state_keys_and_shapes(tmp_path):
    path = tmp_path / "d.pt"
    torch.save({"x": torch.randn(4, 3), "y": torch.randn(4)}, path)
    teacher = make("teacher", input_dim=4, teacher_width=3, n=10)
    expected = [  # (task, {key: shape})
        (teacher, {"teacher_weights": (3, 4), "teacher_norms": (3,), "x": (10, 4), "y": (10, 1)}),
        (make("linear_regression", rank=2),
         {"target": (5, 6), "U": (5, 2), "S": (2,), "V": (6, 2), "x": (100, 6), "y": (100, 5)}),
        (make("matrix_cost", target="gaussian", input_dim=3, output_dim=2),
         {"target": (2, 3), "U": (2, 2), "S": (2,), "V": (3, 2), "x": (3, 3), "y": (3, 2)}),
        (make("classification", n=8), {"x": (8, 10), "y": (8,)}),
        (make("dataset", path=str(path)), {"x": (4, 3), "y": (4, 1)}),
    ]
    assert {task.name for task, _ in expected} == set(TASKS)
    for task, shapes in expected:
        state = task.state()
        assert {k: tuple(v.shape) for k, v in state.items()} == shapes, task.name
        assert all(v.device == CPU for v in state.values())
    assert torch.equal(teacher.state()["teacher_weights"], teacher.teacher.weights)
    assert torch.equal(teacher.state()["teacher_norms"], teacher.teacher.norms)
    assert torch.equal(teacher.state()["x"], teacher.data()[0])


def test_state_holds_data_up_to_a_million_entries():
    assert STATE_DATA_MAX == 10**6
    small = make("teacher", input_dim=2, teacher_width=1, n=STATE_DATA_MAX // 2).state()
    large = make("teacher", input_dim=2, teacher_width=1, n=STATE_DATA_MAX // 2 + 1).state()
    assert set(small) == {"teacher_weights", "teacher_norms", "x", "y"}
    assert set(large) == {"teacher_weights", "teacher_norms"}


# --- task=dataset --------------------------------------------------------------------------------------------

X = [[1.0, 0.0], [1.0, 1e-3], [0.0, 2.0]]  # two inputs at distance 1e-3, and a third
Y = [0.0, 1.0, -1.0]


def test_dataset_pt_npz_csv_agree(tmp_path, monkeypatch):
    x, y = torch.tensor(X, dtype=F64), torch.tensor(Y, dtype=F64)[:, None]
    torch.save({"x": x.float(), "y": torch.tensor([0, 1, -1])}, tmp_path / "d.pt")  # float32 x, int64 (n,) y
    np.savez(tmp_path / "d.npz", x=np.array(X), y=np.array(Y)[:, None])
    pd.DataFrame({"a": [r[0] for r in X], "b": [r[1] for r in X], "y": Y}).to_csv(tmp_path / "d.csv", index=False)
    monkeypatch.chdir(tmp_path)  # a relative path is relative to the working directory
    for path in ("d.pt", "d.npz", "d.csv", str(tmp_path / "d.csv")):
        task = make("dataset", path=path)
        assert (task.input_dim, task.output_dim, task.num_classes, task.online) == (2, 1, None, False)
        got_x, got_y = task.data()
        assert torch.allclose(got_x, x, rtol=1e-7, atol=0) and torch.equal(got_y, y), path
    x32, y32 = make("dataset", torch.float32, path="d.npz").data()
    assert x32.dtype == y32.dtype == torch.float32 and torch.equal(x32, x.float())


def test_dataset_csv_columns_and_normalize(tmp_path):
    frame = pd.DataFrame({"t1": [1.0, 2.0], "a": [3.0, 0.0], "b": [4.0, 5.0], "t2": [5.0, 6.0]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    task = make("dataset", path=str(tmp_path / "d.csv"), inputs=["b", "a"], targets=["t2", "t1"])
    x, y = task.data()
    assert x.tolist() == [[4.0, 3.0], [5.0, 0.0]] and y.tolist() == [[5.0, 1.0], [6.0, 2.0]]
    x, _ = make("dataset", path=str(tmp_path / "d.csv"), targets=["t1"], normalize_inputs=True).data()  # a, b, t2
    assert torch.allclose(x.norm(dim=1), torch.ones(2, dtype=F64), rtol=0, atol=1e-15)
    assert torch.allclose(x[0], torch.tensor([3.0, 4.0, 5.0], dtype=F64) / math.sqrt(50))


def write(tmp_path, name: str, content) -> str:
    """content saved under name by its suffix's writer (bytes, a DataFrame, a dict for .pt / .npz)."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    elif path.suffix == ".npz":
        np.savez(path, **content)
    else:
        torch.save(content, path)
    return str(path)


GOOD = {"x": torch.zeros(3, 2), "y": torch.zeros(3)}
FRAME = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "y": [0.0, 1.0]})


DATASET_ERRORS = [  # (file name, its content (None: not written), section, the key named, what the message says)
    (None, None, {}, "task.path", "is required"),
    ("absent.pt", None, {}, "task.path", "no such file"),
    ("d.txt", b"1 2 3", {}, "task.path", "must be a file ending in .pt, .npz, .csv"),
    ("d.pt", b"not a pickle", {}, "task.path", "cannot be read as a .pt file"),
    ("d.pt", b"junk\n", {}, "task.path", "cannot be read as a .pt file"),  # torch.load raises struct.error here
    ("d.pt", torch.zeros(3, 2), {}, "task.path", "must hold a dict"),
    ("d.pt", {"x": torch.zeros(3, 2)}, {}, "task.path", "has no 'y'"),
    ("d.pt", {"x": torch.zeros(3, 2, 1), "y": torch.zeros(3)}, {}, "task.path", "x must have shape (n, d)"),
    ("d.pt", {"x": torch.zeros(3, 2), "y": torch.zeros(3, 1, 1)}, {}, "task.path", "y must have shape (n, o)"),
    ("d.pt", {"x": torch.zeros(3, 2), "y": torch.zeros(4)}, {}, "task.path", "x has 3 rows but y has 4"),
    ("d.pt", {"x": torch.tensor([[0.0, 1.0], [math.nan, 0.0]]), "y": torch.zeros(2)}, {}, "task.path",
     "x must be finite, but is not at (row, column) [[1, 0]]"),
    ("d.pt", {"x": torch.zeros(2, 2), "y": torch.tensor([0.0, math.inf])}, {}, "task.path", "y must be finite"),
    ("d.pt", {"x": torch.zeros(2, 2, dtype=torch.complex64), "y": torch.zeros(2)}, {}, "task.path", "real-valued"),
    ("d.pt", GOOD, {"inputs": ["a"]}, "task.inputs", "must be null for a .pt file"),
    ("d.npz", {k: v.numpy() for k, v in GOOD.items()}, {"targets": ["y"]}, "task.targets",
     "must be null for a .npz file"),
    ("d.npz", {"y": np.zeros(3)}, {}, "task.path", "has no 'x'"),
    ("d.npz", {"x": np.array([["a", "b"]]), "y": np.zeros(1)}, {}, "task.path", "must be numeric"),
    ("d.npz", b"not a zip", {}, "task.path", "cannot be read as a .npz file"),
    ("d.csv", b"", {}, "task.path", "cannot be read as a .csv file"),
    ("d.csv", FRAME, {"targets": ["z"]}, "task.targets", "has no column 'z'; its columns: a, b, y"),
    ("d.csv", FRAME, {"inputs": ["a", "c"]}, "task.inputs", "has no column 'c'; its columns: a, b, y"),
    ("d.csv", FRAME, {"inputs": ["a", "y"]}, "task.inputs", "must not name a target column (y is in task.targets)"),
    ("d.csv", FRAME.assign(id=["p", "q"]), {}, "task.inputs", "column 'id' of"),
    ("d.csv", FRAME, {"targets": ["a", "b", "y"]}, "task.inputs", "every column"),
    ("d.csv", FRAME, {"inputs": []}, "task.inputs", "at least one column"),
    ("d.csv", FRAME.assign(b=[3.0, None]), {}, "task.path", "x must be finite"),
    ("d.csv", FRAME.assign(a=[1.0, 0.0], b=[3.0, 0.0]), {"normalize_inputs": True}, "task.normalize_inputs",
     "x is zero in row(s) [1]"),
    ("d.pt", {"x": torch.zeros(5, 2), "y": torch.zeros(5)}, {"normalize_inputs": True}, "task.normalize_inputs",
     "x is zero in row(s) [0, 1, 2]:"),  # the first three named, not every one
]


@pytest.mark.parametrize("name, content, section, key, says", DATASET_ERRORS,
                         ids=[f"{case[0]}:{case[4][:24]}" for case in DATASET_ERRORS])
def test_dataset_errors(tmp_path, name, content, section, key, says):
    path = None if name is None else (str(tmp_path / name) if content is None else write(tmp_path, name, content))
    with pytest.raises(ConfigError) as err:
        make("dataset", path=path, **section)
    assert err.value.key == key and says in str(err.value), str(err.value)


def test_dataset_yaml_matches_schema_and_needs_a_path():
    raw = OmegaConf.load(CONF / "dataset.yaml")
    section = OmegaConf.to_container(OmegaConf.create({"seed": 3, "task": raw}), resolve=True)["task"]
    defaults = {f.name: f.default for f in dataclasses.fields(TASKS["dataset"][0])}
    assert list(raw)[:2] == ["name", "seed"] and OmegaConf.to_container(raw)["seed"] == "${seed}"
    assert section == {**defaults, "seed": 3}
    with pytest.raises(ConfigError, match=r"task.path=None is invalid: is required"):
        build_task(section, dtype=F64, device=CPU)


def test_dataset_end_to_end(tmp_path):
    path = write(tmp_path, "two_points.pt", {"x": torch.tensor(X[:2]), "y": torch.tensor(Y[:2])})
    cfg = compose("task=dataset", f"task.path={path}", "trainer.steps=5", "logger.progress=false",
                  "logger.tensorboard=false")
    summary = run(cfg, tmp_path / "out")
    assert summary["status"] == "max_steps" and summary["steps"] == 5 and summary["ensemble_size"] == 1
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert metrics["step"].tolist()[0] == 0 and metrics["step"].max() == 5 and metrics["loss"].notna().all()
