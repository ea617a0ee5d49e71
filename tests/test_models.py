"""Models against oracles: an unbatched plain-matmul copy of each model (forward and autograd gradient), central
finite differences, closed-form init properties (std, orthogonality, balancedness), member independence of the
init, and ConfigErrors that name the key and the value."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build
from dynamics_bench.models import MODELS, build_model
from dynamics_bench.objective import ObjectiveConfig
from dynamics_bench.models.base import ACTIVATIONS
from dynamics_bench.models.deep_linear import DeepLinear
from tests.conftest import make_cfg

E = 3
F64 = torch.float64
CONF_DIR = Path(__file__).resolve().parents[1] / "dynamics_bench" / "conf" / "model"


def gens(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def member(params: dict[str, Tensor], e: int) -> dict[str, Tensor]:
    return {k: v[e] for k, v in params.items()}


# ---------------------------------------------------------------------------------------------------------------
# Unbatched reference copies: one member, plain matmul, activations written out independently of base.ACTIVATIONS.
def _sigmoid(z: Tensor) -> Tensor:
    return 1 / (1 + torch.exp(-z))


REF_ACT = {
    "relu": lambda z: z.clamp(min=0),
    "abs": lambda z: torch.where(z >= 0, z, -z),
    "linear": lambda z: z,
    "sigmoid": _sigmoid,
    "algebraic_sigmoid": lambda z: z / torch.sqrt(1 + z * z),
    "tanh": lambda z: 2 * _sigmoid(2 * z) - 1,
    "erf": torch.special.erf,
}


def ref_deep_linear(sec: dict, p: dict[str, Tensor], x: Tensor) -> Tensor:
    h = x  # (n, in)
    for i in range(sec["depth"]):
        h = h @ p[f"W{i + 1}"].T
    return h


def ref_two_layer(sec: dict, p: dict[str, Tensor], x: Tensor, output_dim: int) -> Tensor:
    w = p["w"]  # (m, d)
    z = x @ w.T + (p["b"] if sec.get("bias") else 0)  # (n, m)
    h = REF_ACT[sec.get("activation", "relu")](z)
    layer = sec.get("output_layer", "trainable")
    if layer == "trainable":
        a = p["a"]
    elif layer == "fixed":
        a = torch.ones(output_dim, w.shape[0], dtype=w.dtype)
    else:  # norm: a_j = ‖w_j‖
        a = torch.sqrt((w * w).sum(1)).repeat(output_dim, 1)
    return h @ a.T


def ref_mlp(sec: dict, p: dict[str, Tensor], x: Tensor) -> Tensor:
    act = REF_ACT[sec.get("activation", "relu")]
    h = x
    for i in range(sec["depth"]):
        w = p[f"W{i + 1}"]
        c = 1 / math.sqrt(w.shape[1]) if sec.get("parameterization") == "ntk" else 1.0
        h = (h @ w.T) * c
        if i < sec["depth"] - 1:
            h = act(h)
    return h


def reference(sec: dict, p: dict[str, Tensor], x: Tensor, output_dim: int) -> Tensor:
    if sec["name"] == "deep_linear":
        return ref_deep_linear(sec, p, x)
    if sec["name"] == "two_layer":
        return ref_two_layer(sec, p, x, output_dim)
    return ref_mlp(sec, p, x)


# (section, input_dim, output_dim)
CASES = (
    [({"name": "deep_linear", "depth": n, "width": 4}, 3, 2) for n in (1, 2, 3)]
    + [({"name": "deep_linear", "depth": 2, "width": 5, "init": "balanced"}, 1, 1)]  # vector case
    + [({"name": "two_layer", "width": 4, "activation": act, "output_layer": out, "bias": bias}, 3, 2)
       for act in ACTIVATIONS for out in ("trainable", "fixed", "norm") for bias in (False, True)]
    + [({"name": "two_layer", "width": 4, "output_layer": "norm", "activation": "abs"}, 3, 1)]  # Zhou–Ge–Jin student
    + [({"name": "mlp", "depth": n, "width": 5, "activation": act, "parameterization": par}, 3, 2)
       for n in (2, 3) for act in ("relu", "tanh") for par in ("standard", "ntk")]
)
IDS = ["-".join(str(v) for v in sec.values()) + f"-{d}x{o}" for sec, d, o in CASES]


def _setup(sec: dict, d: int, o: int, seed: int = 0):
    model = build_model(sec, input_dim=d, output_dim=o)
    params = model.init_params(gens(range(seed, seed + E)))
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(E, 6, d, generator=g, dtype=F64)
    y = torch.randn(E, 6, o, generator=g, dtype=F64)
    return model, params, x, y


def _loss(out: Tensor, y: Tensor) -> Tensor:
    return 0.5 * ((out - y) ** 2).sum()


def _close(a: Tensor, b: Tensor, rel: float) -> None:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-300)
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("sec,d,o", CASES, ids=IDS)
def test_batched_member_matches_unbatched_copy(sec, d, o):
    model, params, x, y = _setup(sec, d, o)
    params = {k: v.clone().requires_grad_() for k, v in params.items()}
    out = model.forward(params, x)
    assert out.shape == (E, x.shape[1], o) and out.dtype == F64
    grads = torch.autograd.grad(_loss(out, y), list(params.values()))
    for e in range(E):
        pe = {k: v.detach()[e].clone().requires_grad_() for k, v in params.items()}
        oe = reference(sec, pe, x[e], o)
        _close(out[e].detach(), oe.detach(), 1e-12)
        ge = torch.autograd.grad(_loss(oe, y[e]), list(pe.values()))
        for name, gb, gu in zip(params, grads, ge):
            _close(gb[e], gu, 1e-12)


@pytest.mark.parametrize("sec,d,o", CASES, ids=IDS)
def test_gradient_matches_central_differences(sec, d, o):
    model, params, x, y = _setup(sec, d, o, seed=7)
    req = {k: v.clone().requires_grad_() for k, v in params.items()}
    grads = dict(zip(req, torch.autograd.grad(_loss(model.forward(req, x), y), list(req.values()))))
    # Central differences: truncation error h²/6·|L'''| ~ 1e-12 and round-off ~ eps·|L|/h ~ 1e-10·|L| for the O(1)
    # losses here, so 1e-6 relative to the largest gradient entry leaves 4 orders of margin. Inputs and parameters
    # are random (fixed seeds), so no relu/abs pre-activation lies within h of its kink.
    h = 1e-6
    with torch.no_grad():
        for name, value in params.items():
            fd = torch.empty_like(value)
            for i in range(value.numel()):
                plus, minus = value.clone(), value.clone()
                plus.view(-1)[i] += h
                minus.view(-1)[i] -= h
                lp = _loss(model.forward({**params, name: plus}, x), y)
                lm = _loss(model.forward({**params, name: minus}, x), y)
                fd.view(-1)[i] = (lp - lm) / (2 * h)
            _close(grads[name], fd, 1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_accepts_expanded_input_and_other_dtypes(name):
    model, params, x, _ = _setup({"name": name, "width": 4}, 3, 2)
    x0 = x[0]
    expanded = model.forward(params, x0.expand(E, -1, -1))  # stride-0 ensemble axis, as a shared data set
    _close(expanded, model.forward(params, x0.repeat(E, 1, 1)), 1e-14)
    out32 = model.forward({k: v.float() for k, v in params.items()}, x0.float().expand(E, -1, -1))
    assert out32.dtype == torch.float32
    _close(out32.double(), expanded, 1e-5)


def test_ref_activations_cover_registry():
    assert set(REF_ACT) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(REF_ACT))
def test_activation_facts_hold(name):
    """What each activation declares is true of its function: homogeneous iff σ(cz) = cσ(z) for c > 0, even iff
    σ(−z) = σ(z), smooth iff it has no kink (relu and abs are the kinked ones), on a grid of z."""
    act, z = ACTIVATIONS[name], torch.linspace(-3, 3, 61, dtype=F64)
    assert act.homogeneous == all(torch.allclose(act.fn(c * z), c * act.fn(z), rtol=1e-14, atol=0) for c in (0.5, 3.0))
    assert act.even == torch.allclose(act.fn(-z), act.fn(z), rtol=1e-14, atol=0)
    assert act.smooth == (name not in ("relu", "abs"))


@pytest.mark.parametrize("name", sorted(n for n in REF_ACT if ACTIVATIONS[n].potential is not None))
def test_activation_potential_solves_its_equation(name):
    """H' = 2σ/σ' (what makes a² − H(w) conserved on the single input x = 1), by autograd on z in ±[0.1, 3] (relu:
    z > 0 only, where σ' ≠ 0)."""
    act = ACTIVATIONS[name]
    z = torch.cat([torch.linspace(-3, -0.1, 30, dtype=F64), torch.linspace(0.1, 3, 30, dtype=F64)])
    z = z[z > 0] if name == "relu" else z
    z.requires_grad_(True)
    (slope,) = torch.autograd.grad(act.fn(z).sum(), z)
    (h_slope,) = torch.autograd.grad(act.potential(z).sum(), z)
    torch.testing.assert_close(h_slope, 2 * act.fn(z).detach() / slope, rtol=1e-9, atol=0)


def test_deep_linear_views():
    model, params, x, _ = _setup({"name": "deep_linear", "depth": 3, "width": 4}, 3, 2)
    mats = model.layer_matrices(params)
    assert [tuple(m.shape) for m in mats] == [(E, 4, 3), (E, 4, 4), (E, 2, 4)]
    prod = model.end_to_end(params)
    assert prod.shape == (E, 2, 3)
    for e in range(E):
        _close(prod[e], mats[2][e] @ mats[1][e] @ mats[0][e], 1e-12)
    _close(model.forward(params, x), x @ prod.transpose(1, 2), 1e-12)
    m1 = build_model({"name": "deep_linear", "depth": 1}, input_dim=3, output_dim=2)
    assert m1.init_params(gens([0]))["W1"].shape == (1, 2, 3)


def test_two_layer_neurons():
    for layer in ("trainable", "fixed", "norm"):
        sec = {"name": "two_layer", "width": 4, "output_layer": layer, "bias": True, "activation": "tanh"}
        model, params, _, _ = _setup(sec, 3, 2)
        nrn = model.neurons(params)
        assert nrn.w.shape == (E, 4, 3) and nrn.a.shape == (E, 2, 4) and nrn.b.shape == (E, 4)
        assert model.activation is ACTIVATIONS["tanh"] and model.activation_name == "tanh"
        assert model.output_layer == layer and model.bias is True
        assert ("a" in params) == (layer == "trainable")
    _close(nrn.a, params["w"].norm(dim=-1)[:, None, :].expand(-1, 2, -1), 1e-14)
    model, params, _, _ = _setup({"name": "two_layer", "width": 4}, 3, 1)
    assert model.neurons(params).b is None and set(params) == {"w", "a"}


# ---------------------------------------------------------------------------------------------------------------
# Initialization.
def _check_std(t: Tensor, std: float) -> None:
    """The sample std of N i.i.d. N(0, std²) entries has relative standard error 1/√(2N) and the sample mean has
    standard error std/√N; 6 standard errors make a false failure a < 1e-8 event (and the seeds are fixed)."""
    n = t.numel()
    assert abs(t.std().item() / std - 1) < 6 / math.sqrt(2 * n)
    assert abs(t.mean().item()) < 6 * std / math.sqrt(n)


def test_gaussian_init_std():
    s = 1.7
    model = build_model({"name": "deep_linear", "depth": 3, "width": 120, "init_scale": s}, input_dim=90, output_dim=60)
    p = model.init_params(gens(range(2)))
    for name, fan_in in (("W1", 90), ("W2", 120), ("W3", 120)):
        _check_std(p[name], s / math.sqrt(fan_in))
    sec = {"name": "two_layer", "width": 400, "bias": True, "init_scale": s}
    p = build_model(sec, input_dim=100, output_dim=30).init_params(gens(range(4)))
    _check_std(p["w"], s / 10)
    _check_std(p["b"], s / 10)
    _check_std(p["a"], s / 20)
    for par in ("standard", "ntk"):
        model = build_model({"name": "mlp", "depth": 3, "width": 150, "init_scale": s, "parameterization": par},
                            input_dim=80, output_dim=40)
        p = model.init_params(gens(range(2)))
        for (name, w), c, fan_in in zip(p.items(), model.layer_scales, (80, 150, 150)):
            _check_std(c * w, s / math.sqrt(fan_in))  # effective weights match standard init
            _check_std(w, s / math.sqrt(fan_in) if par == "standard" else s)  # stored weights


def _assert_semi_orthogonal(w: Tensor, s: float) -> None:
    """w (E, r, c): s·(orthonormal rows) if r <= c, else s·(orthonormal columns)."""
    gram = w @ w.transpose(1, 2) if w.shape[1] <= w.shape[2] else w.transpose(1, 2) @ w
    eye = torch.eye(gram.shape[-1], dtype=F64).expand_as(gram)
    _close(gram, s * s * eye, 1e-13)


def test_orthogonal_init():
    s = 0.8
    p = build_model({"name": "deep_linear", "depth": 3, "width": 7, "init": "orthogonal", "init_scale": s},
                    input_dim=5, output_dim=3).init_params(gens(range(E)))
    for w in p.values():
        _assert_semi_orthogonal(w, s)
    for d in (3, 9):  # more and fewer neurons than inputs
        sec = {"name": "two_layer", "width": 6, "init": "orthogonal", "init_scale": s, "bias": True}
        p = build_model(sec, input_dim=d, output_dim=2).init_params(gens(range(E)))
        _assert_semi_orthogonal(p["w"], s)
        _assert_semi_orthogonal(p["a"], s)
        assert torch.all(p["b"] == 0)
    for par in ("standard", "ntk"):
        sec = {"name": "mlp", "depth": 3, "width": 6, "init": "orthogonal", "init_scale": s, "parameterization": par}
        model = build_model(sec, input_dim=4, output_dim=2)
        p = model.init_params(gens(range(E)))
        for w, c in zip(model.layer_matrices(p), model.layer_scales):
            _assert_semi_orthogonal(c * w, s)


@pytest.mark.parametrize("depth,width,d,o", [(2, 6, 4, 3), (3, 6, 4, 3), (3, 2, 4, 3), (4, 5, 7, 2), (2, 5, 1, 1)],
                         ids=["N2", "N3", "N3-narrow", "N4", "vector"])
def test_balanced_deep_linear(depth, width, d, o):
    s = 1.3
    sec = {"name": "deep_linear", "depth": depth, "width": width, "init": "balanced", "init_scale": s}
    model = build_model(sec, input_dim=d, output_dim=o)
    seeds = (5, 6, 7)
    p = model.init_params(gens(seeds))
    mats = model.layer_matrices(p)
    scale = max(w.square().sum((1, 2)).max().item() for w in mats)
    for w, v in zip(mats[:-1], mats[1:]):
        c = w @ w.transpose(1, 2) - v.transpose(1, 2) @ v  # C_i (E, k, k)
        assert c.square().sum((1, 2)).sqrt().max().item() <= 1e-12 * scale
    r = min(d, o, width)
    for e, seed in enumerate(seeds):
        a = torch.randn(o, d, generator=torch.Generator().manual_seed(seed), dtype=F64) * s / math.sqrt(d)  # 1st draw
        u, sig, vh = torch.linalg.svd(a, full_matrices=False)
        _close(model.end_to_end(p)[e], u[:, :r] @ torch.diag(sig[:r]) @ vh[:r], 1e-12)


def test_balanced_depth_one_is_gaussian():
    kw = {"input_dim": 4, "output_dim": 3}
    bal = build_model({"name": "deep_linear", "depth": 1, "init": "balanced"}, **kw).init_params(gens([3]))
    gau = build_model({"name": "deep_linear", "depth": 1}, **kw).init_params(gens([3]))
    assert torch.equal(bal["W1"], gau["W1"])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("o", [1, 3])
def test_balanced_two_layer(bias, o):
    sec = {"name": "two_layer", "width": 10, "init": "balanced", "bias": bias, "init_scale": 2.0}
    model = build_model(sec, input_dim=4, output_dim=o)
    nrn = model.neurons(model.init_params(gens(range(E))))
    incoming = nrn.w.square().sum(-1) + (nrn.b.square() if bias else 0)  # (E, m)
    imbalance = nrn.a.square().sum(1) - incoming  # a_j² − ‖w_j‖² − b_j²
    assert imbalance.abs().max().item() <= 1e-12 * incoming.max().item()


EXPLICIT = [
    ({"name": "deep_linear", "depth": 2, "width": 3}, 2, 1, [[[1, 2], [3, 4], [5, 6]], [0.5, -1, 2]]),
    ({"name": "deep_linear", "depth": 1}, 2, 2, [[[1, 2], [3, 4]]]),
    ({"name": "two_layer", "width": 2}, 3, 1, [[[1, 2, 3], [4, 5, 6]], [[7, 8]]]),
    ({"name": "two_layer", "width": 2, "output_layer": "norm"}, 3, 1, [[[1, 2, 3], [4, 5, 6]]]),
    ({"name": "mlp", "depth": 2, "width": 2, "parameterization": "ntk"}, 1, 1, [[[1], [2]], [[3, 4]]]),
]


@pytest.mark.parametrize("sec,d,o,values", EXPLICIT, ids=[f"{s['name']}{i}" for i, (s, *_) in enumerate(EXPLICIT)])
def test_explicit_init_reproduces_values(sec, d, o, values):
    model = build_model({**sec, "init": "explicit", "init_values": values}, input_dim=d, output_dim=o)
    p = model.init_params(gens(range(E)))
    assert len(p) == len(values)
    for t, v in zip(p.values(), values):
        expected = torch.tensor(v, dtype=F64).reshape(t.shape[1:])
        for e in range(E):
            assert torch.equal(t[e], expected)
    next(iter(p.values())).add_(1.0)  # the model hands out copies
    assert torch.equal(next(iter(model.init_params(gens([0])).values()))[0], torch.tensor(values[0], dtype=F64))


RANDOM_INITS = ("gaussian", "orthogonal", "balanced")
INDEPENDENCE = (
    [({"name": "deep_linear", "depth": 3, "width": 4, "init": i}, 3, 2) for i in RANDOM_INITS]
    + [({"name": "two_layer", "width": 4, "init": i, "bias": True}, 3, 2) for i in RANDOM_INITS]
    + [({"name": "mlp", "width": 4, "init": i, "parameterization": "ntk"}, 3, 2) for i in RANDOM_INITS[:2]]
)


@pytest.mark.parametrize("sec,d,o", INDEPENDENCE, ids=[f"{s['name']}-{s['init']}" for s, *_ in INDEPENDENCE])
def test_member_init_depends_only_on_its_generator(sec, d, o):
    model = build_model(sec, input_dim=d, output_dim=o)
    batch = model.init_params(gens([10, 11, 12]))
    alone = model.init_params(gens([11]))
    assert batch.keys() == alone.keys()
    for k in batch:
        assert batch[k].dtype == F64 and batch[k].device.type == "cpu"
        assert torch.equal(batch[k][1], alone[k][0])
    assert not torch.equal(batch[next(iter(batch))][0], batch[next(iter(batch))][1])


# ---------------------------------------------------------------------------------------------------------------
# Config errors: each names the key and the value.
ERRORS = [
    ({"name": "deep_linear", "width": 0}, "model.width", "0"),
    ({"name": "deep_linear", "depth": 0}, "model.depth", "0"),
    ({"name": "two_layer", "width": 0}, "model.width", "0"),
    ({"name": "mlp", "width": 0}, "model.width", "0"),
    ({"name": "mlp", "depth": 1}, "model.depth", "1"),
    ({"name": "two_layer", "activation": "softplus"}, "model.activation", "softplus"),
    ({"name": "mlp", "activation": "gelu"}, "model.activation", "gelu"),
    ({"name": "two_layer", "output_layer": "frozen"}, "model.output_layer", "frozen"),
    ({"name": "mlp", "parameterization": "mup"}, "model.parameterization", "mup"),
    ({"name": "mlp", "init": "balanced"}, "model.init", "balanced"),
    ({"name": "two_layer", "init": "balanced", "output_layer": "fixed"}, "model.init", "balanced"),
    ({"name": "deep_linear", "init": "xavier"}, "model.init", "xavier"),
    ({"name": "deep_linear", "init_scale": -1.0}, "model.init_scale", "-1.0"),
    ({"name": "deep_linear", "width": "8"}, "model.width", "'8'"),
    ({"name": "deep_linear", "init": "explicit"}, "model.init_values", "None"),
    ({"name": "deep_linear", "init_values": [[[1.0]]]}, "model.init_values", "1 matrices"),
    ({"name": "deep_linear", "depth": 2, "init": "explicit", "init_values": [[[1, 2, 3]]]},
     "model.init_values", "1 matrices"),
    ({"name": "deep_linear", "depth": 2, "width": 2, "init": "explicit", "init_values": [[[1, 2, 3]] * 2, [[1, 2, 3]]]},
     "model.init_values[1]", "shape 1x3"),
    ({"name": "two_layer", "width": 2, "init": "explicit", "init_values": [[[1, 2, 3]] * 2]},
     "model.init_values", "1 matrices"),
    ({"name": "two_layer", "width": 2, "init": "explicit", "bias": True, "init_values": [[[1, 2, 3]] * 2, [[1, 2]]]},
     "model.bias", "True"),
    ({"name": "mlp", "depth": 2, "width": 2, "init": "explicit", "init_values": [[[1, 2, 3]] * 2, [[1, 2, 3]]]},
     "model.init_values[1]", "shape 1x3"),
    ({"name": "mlp", "widht": 3}, "model.widht", "3"),
    ({"name": "resnet"}, "model.name", "resnet"),
]


@pytest.mark.parametrize("sec,key,value", ERRORS, ids=[f"{k}={v}" for _, k, v in ERRORS])
def test_config_errors_name_key_and_value(sec, key, value):
    with pytest.raises(ConfigError) as err:
        build_model(sec, input_dim=3, output_dim=1)
    assert err.value.key == key
    assert f"{key}=" in str(err.value) and value in str(err.value)


def test_constructor_validates_without_build_model():
    kw = dict(width=4, init="gaussian", init_scale=1.0, init_values=None, input_dim=2, output_dim=1)
    with pytest.raises(ConfigError, match=r"model\.depth=0"):
        DeepLinear(depth=0, **kw)


# ---------------------------------------------------------------------------------------------------------------
# YAML defaults.
@pytest.mark.parametrize("name", sorted(MODELS))
def test_yaml_lists_every_key_with_its_default(name):
    path = CONF_DIR / f"{name}.yaml"
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines[0].split("#")[0].strip() == f"name: {name}"
    assert all("#" in ln for ln in lines[1:]), "every key has a comment"
    section = OmegaConf.to_container(OmegaConf.load(path))
    config_cls, _ = MODELS[name]
    what_is_trained = dataclasses.fields(ObjectiveConfig)  # every model's: split off before the model is built
    assert list(section) == [f.name for f in (*dataclasses.fields(config_cls), *what_is_trained)]
    assert section == {**dataclasses.asdict(config_cls()), **dataclasses.asdict(ObjectiveConfig())}
    model, params, x, _ = _setup({k: v for k, v in section.items() if k not in {f.name for f in what_is_trained}},
                                 3, 2)
    assert model.forward(params, x).shape == (E, 6, 2)


def test_every_yaml_is_registered():
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == sorted(MODELS)


@pytest.mark.parametrize("section, in_dim, out_dim", [
    ({"name": "deep_linear", "depth": 3, "width": 4}, 3, 2),
    ({"name": "two_layer", "width": 5, "activation": "tanh", "bias": True}, 3, 2),
    ({"name": "two_layer", "width": 5, "output_layer": "norm"}, 3, 1),
    ({"name": "two_layer", "width": 5, "output_layer": "fixed"}, 3, 2),
    ({"name": "mlp", "depth": 3, "width": 6, "parameterization": "ntk"}, 3, 2),
])
def test_unbatched_member_forward_equals_batched_row(section, in_dim, out_dim):
    """Objective evaluates a lone member unbatched (params and x without the E axis): same outputs."""
    model = build_model(section, input_dim=in_dim, output_dim=out_dim)
    params = model.init_params([torch.Generator().manual_seed(s) for s in (3, 4)])
    x = torch.randn(2, 7, in_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = model.forward(params, x)
    for e in range(2):
        single = model.forward({k: v[e] for k, v in params.items()}, x[e])
        assert single.shape == (7, out_dim)
        torch.testing.assert_close(single, batched[e], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("overrides", [
    ["model=two_layer"], ["model=two_layer", "model.bias=true"], ["model=two_layer", "model.output_layer=norm"],
    ["model=two_layer", "task=linear_regression", "task.output_dim=3"], ["model=mlp", "model.depth=4"],
    ["model=deep_linear", "model.depth=3"], ["model=deep_linear", "model.depth=1", "task=matrix_cost"],
])
def test_num_params_counts_what_init_draws(overrides):
    """P before any parameter is drawn (what build() checks a Hessian's memory with) equals the drawn count."""
    exp = build(make_cfg(*overrides))
    params = exp.objective.model.init_params([torch.Generator().manual_seed(0)])
    assert exp.objective.model.num_params == sum(v[0].numel() for v in params.values())
