"""The curvature instruments against oracles: the empirical NTK against Jacobians from unbatched autograd (and
closed forms for a linear model and Du et al.'s fixed-output ReLU net), the Hessian's extremes against a dense
eigendecomposition of torch.autograd.functional.hessian, Lanczos against the dense spectrum, and the vector case's
saddle at the origin against docs/theory.md §2.6 (eigenvalues ±|f′(0)|, each k times, index k).

Tolerances are round-off: K and H are sums of O(P) products of O(1) numbers in float64, so they agree with their
oracles to ~1e-15·P relative to their largest entry; 1e-12 leaves room and still fails on any wrong entry.
"""
from __future__ import annotations

import math

import pytest
import torch

from dynamics_bench.config import ConfigError
from dynamics_bench.experiment import build, init_params
from dynamics_bench.metrics import METRICS, Settings, Snapshot
from dynamics_bench.metrics import hessian as hessian_module
from dynamics_bench.metrics.hessian import flatten
from dynamics_bench.metrics import ntk as ntk_module
from dynamics_bench.metrics.ntk import ntk_gram

ROWS_PER_BLOCK = ntk_module.rows_per_block
from tests.conftest import make_cfg, run_overrides

F64 = torch.float64
ROUND_OFF = 1e-12

pytestmark = pytest.mark.usefixtures("one_thread")

# every model family, several outputs, every output layer and parameterization
FAMILIES = {
    "deep_linear": ["model=deep_linear", "model.depth=3", "model.width=4", "task=linear_regression",
                    "task.input_dim=3", "task.output_dim=2", "task.n=12"],
    "two_layer_relu_bias": ["model=two_layer", "model.width=5", "model.bias=true", "task.input_dim=3", "task.n=12"],
    "two_layer_norm_abs": ["model=two_layer", "model.width=4", "model.activation=abs", "model.output_layer=norm",
                           "task.teacher_activation=abs", "task.input_dim=3", "task.n=12"],
    "two_layer_fixed_erf": ["model=two_layer", "model.width=4", "model.activation=erf", "model.output_layer=fixed",
                            "task.input_dim=3", "task.n=12"],
    "mlp_standard": ["model=mlp", "model.depth=3", "model.width=5", "task.input_dim=3", "task.n=12"],
    "mlp_ntk_tanh_classes": ["model=mlp", "model.depth=3", "model.width=4", "model.parameterization=ntk",
                             "model.activation=tanh", "task=classification", "task.labels=random",
                             "task.num_classes=3", "task.input_dim=3", "task.n=12", "loss=cross_entropy"],
}


def experiment(*overrides: str, size: int = 2):
    exp = build(make_cfg(*overrides, f"ensemble.size={size}"))
    return exp, init_params(exp)


def snapshot(exp, params, **settings) -> Snapshot:
    x, y = exp.task.data()
    size = next(iter(params.values())).shape[0]
    return Snapshot(iteration=0, steps=[0] * size, t=[0.0] * size, params=params, params0=params,
                    objective=exp.objective, task=exp.task, x=x.expand(size, *x.shape), y=y.expand(size, *y.shape),
                    settings=Settings(**{"probe": exp.settings.probe, **settings}))


def member(params, e: int) -> dict[str, torch.Tensor]:
    return {k: v[e].detach().clone().requires_grad_(True) for k, v in params.items()}


def jacobian(exp, params, e: int, x: torch.Tensor) -> torch.Tensor:
    """Member e's J (N·o, P) row by row with torch.autograd on its unbatched parameters."""
    leaves = member(params, e)
    out = exp.objective.model.forward(leaves, x).flatten()  # sample-major
    rows = []
    for r in range(out.numel()):
        grads = torch.autograd.grad(out[r], list(leaves.values()), retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(v) if g is None else g).flatten()
                               for g, v in zip(grads, leaves.values())]))
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------------------------
# NTK
@pytest.mark.parametrize("family", FAMILIES)
def test_ntk_matches_unbatched_autograd(family):
    exp, params = experiment(*FAMILIES[family], "metrics.probe=7")
    x, y = exp.task.data()
    values, memory = METRICS["ntk"].fn(snapshot(exp, params), {})
    k = memory["k0"]
    assert k.shape == (2, 7 * exp.objective.model.output_dim, 7 * exp.objective.model.output_dim)
    for e in range(2):
        j = jacobian(exp, params, e, x[:7])
        oracle = j @ j.T
        scale = oracle.abs().max().item()
        torch.testing.assert_close(k[e], oracle, rtol=0, atol=ROUND_OFF * scale)
        eigenvalues = torch.linalg.eigvalsh(oracle)
        assert values["ntk_lambda_min"][e].item() == pytest.approx(eigenvalues[0].item(), abs=ROUND_OFF * scale)
        assert values["ntk_lambda_max"][e].item() == pytest.approx(eigenvalues[-1].item(), rel=ROUND_OFF)
        assert values["ntk_trace"][e].item() == pytest.approx(oracle.trace().item(), rel=ROUND_OFF)
        assert values["ntk_change_rel"][e].item() == 0.0  # the first row is K_0
        if exp.task.num_classes is None:
            target = y[:7].flatten()
            expected = (target @ oracle @ target / (oracle.norm() * target.dot(target))).item()
            assert values["ntk_target_alignment"][e].item() == pytest.approx(expected, rel=ROUND_OFF)
        else:
            assert "ntk_target_alignment" not in values


def test_ntk_of_a_linear_model_is_the_input_gram():
    """f(x) = Wx: ∂f_a(x_i)/∂W_bc = δ_ab x_ic, so K[(i,a),(j,b)] = δ_ab·x_iᵀx_j = (XXᵀ ⊗ I_o)."""
    exp, params = experiment("model=deep_linear", "model.depth=1", "task=linear_regression", "task.input_dim=3",
                             "task.output_dim=2", "task.n=4", size=1)
    x = exp.task.data()[0]
    k = ntk_gram(exp.objective.model, params, x[None])[0]
    torch.testing.assert_close(k, torch.kron(x @ x.T, torch.eye(2, dtype=F64)), rtol=1e-14, atol=1e-14)


def test_ntk_of_a_fixed_output_relu_net_is_du_et_al_gram():
    """f(x) = Σ_r relu(w_rᵀx), a fixed: K_ij = x_iᵀx_j·Σ_r 1{w_rᵀx_i > 0}1{w_rᵀx_j > 0} (Du et al. 2019, H(t)
    without the 1/m)."""
    exp, params = experiment("model=two_layer", "model.width=6", "model.output_layer=fixed", "task.input_dim=3",
                             "task.n=5", size=1)
    x, w = exp.task.data()[0], params["w"][0]
    active = (x @ w.T > 0).to(F64)  # (n, m)
    k = ntk_gram(exp.objective.model, params, x[None])[0]
    torch.testing.assert_close(k, (x @ x.T) * (active @ active.T), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("family", ["deep_linear", "mlp_ntk_tanh_classes"])
def test_ensemble_ntk_equals_each_member_alone(family):
    exp, params = experiment(*FAMILIES[family], size=3)
    x = exp.task.data()[0][:6]
    together = ntk_gram(exp.objective.model, params, x.expand(3, *x.shape))
    for e in range(3):
        alone = ntk_gram(exp.objective.model, {k: v[e:e + 1] for k, v in params.items()}, x[None])
        torch.testing.assert_close(together[e], alone[0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("family", FAMILIES)
def test_ntk_in_blocks_of_one_row_equals_one_block(family):
    """The memory bound: with room for one row of J at a time, K is formed column by column, and is the same."""
    exp, params = experiment(*FAMILIES[family])
    x = exp.task.data()[0][:5]
    whole = ntk_gram(exp.objective.model, params, x.expand(2, *x.shape))
    rows = ntk_gram(exp.objective.model, params, x.expand(2, *x.shape), block_bytes=1)
    torch.testing.assert_close(rows, whole, rtol=1e-14, atol=1e-14)


def test_ntk_change_from_a_zero_kernel_is_empty():
    """A depth-2 linear net at the origin has J = 0, so K_0 = 0: a change relative to it is undefined (empty), not
    inf."""
    exp, params = experiment("model=deep_linear", "task=linear_regression", "task.output_dim=1", size=1)
    zero = {k: torch.zeros_like(v) for k, v in params.items()}
    _, memory = METRICS["ntk"].fn(snapshot(exp, zero), {})
    assert memory["k0"].abs().max().item() == 0.0
    values, _ = METRICS["ntk"].fn(snapshot(exp, params), memory)
    assert math.isnan(values["ntk_change_rel"].item()) and values["ntk_trace"].item() > 0


def test_ntk_blocks_count_the_backward_intermediates(monkeypatch):
    """A wide net on a small probe: a row of J is small, but the backward keeps ~N·m numbers per row; the block
    size must count them (else a block that fits J could take gigabytes), and the kernel is the same."""
    exp, params = experiment("model=two_layer", "model.width=2048", "task.input_dim=3", "task.n=32", size=1)
    x = exp.task.data()[0][None]
    seen = []

    def spy(row_bytes: int, rows: int, budget: int) -> int:
        seen.append(row_bytes)
        return ROWS_PER_BLOCK(row_bytes, rows, budget)
    monkeypatch.setattr(ntk_module, "rows_per_block", spy)
    jacobian_row = (params["w"][0].numel() + params["a"][0].numel()) * 8
    budget = 40 * jacobian_row  # room for J whole (32 rows), not for the intermediates
    blocked = ntk_gram(exp.objective.model, params, x, block_bytes=budget)
    assert seen and seen[0] > 2 * jacobian_row  # the intermediates (32 samples × 2048 units) are counted
    assert ROWS_PER_BLOCK(seen[0], 32, budget) < 32  # so J is formed in blocks
    torch.testing.assert_close(blocked, ntk_gram(exp.objective.model, params, x), rtol=1e-13, atol=1e-12)


def test_ntk_change_and_alignment_against_k0(tmp_path):
    """Through a run: ntk_change_rel is ‖K_t − K_0‖_F/‖K_0‖_F with K_0 the kernel at θ_0, recomputed here from
    final_params.pt and the init by autograd."""
    overrides = [*FAMILIES["two_layer_relu_bias"], "trainer.steps=30", "trainer.lr=0.2", "metrics.names=[ntk]",
                 "metrics.probe=6", "logger.tensorboard=false"]
    summary = run_overrides(tmp_path, *overrides)
    exp = build(make_cfg(*overrides))
    x = exp.task.data()[0][:6]
    params0 = init_params(exp)
    final = torch.load(tmp_path / "run" / "final_params.pt", weights_only=True)
    j0, j1 = jacobian(exp, params0, 0, x), jacobian(exp, final, 0, x)
    k0, k1 = j0 @ j0.T, j1 @ j1.T
    assert (k1 - k0).norm() > 1e-3 * k0.norm()  # the kernel did move: the check below is not 0 = 0
    final = summary["members"][0]["final"]
    assert final["ntk_change_rel"] == pytest.approx(((k1 - k0).norm() / k0.norm()).item(), rel=1e-10)
    target = exp.task.data()[1][:6].flatten()
    alignment = (target @ k1 @ target / (k1.norm() * target.dot(target))).item()
    assert final["ntk_target_alignment"] == pytest.approx(alignment, rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Hessian
def unflatten(vector: torch.Tensor, like) -> dict[str, torch.Tensor]:
    """(E, P) -> {name: (E, ...)} shaped like `like`."""
    out, start = {}, 0
    for key, value in like.items():
        out[key] = vector[:, start:start + value[0].numel()].reshape(value.shape)
        start += value[0].numel()
    return out


def dense_oracle(exp, params, e: int) -> torch.Tensor:
    """Member e's Hessian spectrum from torch.autograd.functional.hessian of its unbatched loss."""
    x, y = exp.task.data()
    one = {k: v[e:e + 1] for k, v in params.items()}

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return exp.objective.loss(unflatten(flat[None], one), x[None], y[None]).sum()
    return torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flatten(one)[0]))


@pytest.mark.parametrize("dense_max", [256, 0], ids=["dense", "lanczos"])
@pytest.mark.parametrize("family", FAMILIES)
def test_hessian_extremes_match_dense_eigvalsh(family, dense_max):
    """These nets have P < lanczos_steps, so Lanczos runs P steps: its T is H in another basis, exact up to the
    round-off of P reorthogonalized steps (1e-10 leaves room for it; the dense path is held to ROUND_OFF)."""
    exp, params = experiment(*FAMILIES[family])
    values = METRICS["hessian"].fn(snapshot(exp, params, hessian_dense_max=dense_max))
    tolerance = ROUND_OFF if dense_max else 1e-10
    for e in range(2):
        spectrum = dense_oracle(exp, params, e)
        scale = spectrum.abs().max().item()
        assert values["hessian_max"][e].item() == pytest.approx(spectrum[-1].item(), abs=tolerance * scale)
        assert values["hessian_min"][e].item() == pytest.approx(spectrum[0].item(), abs=tolerance * scale)
        if dense_max:
            assert values["hessian_negative"][e].item() == (spectrum < -1e-8 * scale).sum().item()
        else:
            assert math.isnan(values["hessian_negative"][e].item())  # no index under Lanczos


def test_lanczos_with_fewer_steps_than_parameters():
    """~200 parameters, 100 Lanczos steps: the extremes within 1e-6·max|λ| of the dense spectrum (they converge
    first: Kaniel–Paige), on a saddle-rich ReLU net with both signs of curvature."""
    exp, params = experiment("model=two_layer", "model.width=20", "model.bias=true", "task.input_dim=8",
                             "task.n=60", "model.init_scale=0.5")
    dim = flatten(params).shape[1]
    assert 180 <= dim <= 220 and dim > 100
    values = METRICS["hessian"].fn(snapshot(exp, params, hessian_dense_max=0, lanczos_steps=100))
    for e in range(2):
        spectrum = dense_oracle(exp, params, e)
        scale = spectrum.abs().max().item()
        assert spectrum[0] < -1e-3 * scale  # a saddle-ish point: λ_min is a real test
        assert values["hessian_max"][e].item() == pytest.approx(spectrum[-1].item(), abs=1e-6 * scale)
        assert values["hessian_min"][e].item() == pytest.approx(spectrum[0].item(), abs=1e-6 * scale)


@pytest.mark.parametrize("dense_max", [256, 0], ids=["dense", "lanczos"])
def test_vector_case_saddle_at_the_origin(dense_max):
    """matrix_cost with target y, mse: f(w) = ½(w − y)², f′(0) = −y; the Hessian at the origin is
    f′(0)·[[0, I], [I, 0]] with eigenvalues ±|y|, each k times: a strict saddle of index k (docs/theory.md §2.6)."""
    y, k = -1.5, 4
    zeros = f"[[{','.join(['[0.0]'] * k)}],[[{','.join(['0.0'] * k)}]]]"
    exp, params = experiment("model=deep_linear", f"model.width={k}", "task=matrix_cost", f"task.target={y}",
                             "model.init=explicit", f"model.init_values={zeros}", size=1)
    s = snapshot(exp, params, hessian_dense_max=dense_max)
    spectrum = hessian_module.dense_spectrum(hessian_module.hessian_product(s), 1, 2 * k, params["W1"])[0]
    torch.testing.assert_close(spectrum, torch.tensor([-abs(y)] * k + [abs(y)] * k, dtype=F64), rtol=0, atol=1e-14)
    values = METRICS["hessian"].fn(s)
    assert values["hessian_max"].item() == pytest.approx(abs(y), rel=1e-12)
    assert values["hessian_min"].item() == pytest.approx(-abs(y), rel=1e-12)
    if dense_max:
        assert values["hessian_negative"].item() == k


def test_sharpness_lr_for_fixed_steps_only(tmp_path):
    """sharpness_lr = λ_max·h under GD (h = lr); adaptive steps have no fixed h, so no column."""
    gd = run_overrides(tmp_path, *FAMILIES["deep_linear"], "trainer.lr=0.03", "trainer.steps=5",
                       "metrics.names=[hessian]", "logger.tensorboard=false", name="gd")
    final = gd["members"][0]["final"]
    assert final["sharpness_lr"] == pytest.approx(final["hessian_max"] * 0.03, rel=1e-14)
    flow = run_overrides(tmp_path, *FAMILIES["deep_linear"], "trainer=gradient_flow", "trainer.method=dopri5",
                         "trainer.t_max=0.1", "metrics.names=[hessian]", "logger.tensorboard=false", name="flow")
    assert "sharpness_lr" not in flow["members"][0]["final"] and "hessian_max" in flow["members"][0]["final"]


@pytest.mark.parametrize("dense_max, key", [(0, "metrics.lanczos_steps"), (256, "metrics.hessian_dense_max")])
def test_a_hessian_too_large_for_memory_is_a_config_error_before_work(monkeypatch, dense_max, key):
    """mlp_standard has 45 parameters: the Lanczos basis (2 × 45 × 45 float64) or the dense Hessian does not fit
    in half of 1000 bytes; build() says so, naming the key to lower, before any run starts."""
    monkeypatch.setattr(hessian_module, "free_memory", lambda device: 1000)
    with pytest.raises(ConfigError) as info:
        build(make_cfg(*FAMILIES["mlp_standard"], "ensemble.size=2", "metrics.names=[hessian]",
                       f"metrics.hessian_dense_max={dense_max}", "metrics.lanczos_steps=50"))
    assert info.value.key == key and info.value.value == (50 if dense_max == 0 else dense_max)
    monkeypatch.setattr(hessian_module, "free_memory", lambda device: 10**9)
    build(make_cfg(*FAMILIES["mlp_standard"], "metrics.names=[hessian]", f"metrics.hessian_dense_max={dense_max}"))


@pytest.mark.parametrize("dense_max", [256, 0], ids=["dense", "lanczos"])
def test_heavy_metrics_of_a_member_with_non_finite_parameters_are_empty(dense_max):
    """A diverged member's θ may hold NaN or inf; its NTK, Hessian and the spectral norms of its non-finite
    matrix are NaN (empty) instead of a LinAlgError that would end the run, and the other member's are what they
    are alone."""
    exp, params = experiment(*FAMILIES["deep_linear"])
    broken = {k: v.clone() for k, v in params.items()}
    broken["W1"][1, 0, 0] = math.nan
    s = snapshot(exp, broken, hessian_dense_max=dense_max)
    alone = {k: v[:1] for k, v in params.items()}
    x, y = exp.task.data()
    one = Snapshot(iteration=0, steps=[0], t=[0.0], params=alone, params0=alone, objective=exp.objective,
                   task=exp.task, x=x[None], y=y[None],
                   settings=Settings(probe=exp.settings.probe, hessian_dense_max=dense_max))
    for name in ("ntk", "hessian", "layer_change_spec"):
        metric = METRICS[name]
        both = metric.fn(s, {})[0] if metric.remembers else metric.fn(s)
        first = metric.fn(one, {})[0] if metric.remembers else metric.fn(one)
        for column, value in both.items():
            if name != "layer_change_spec" or column.endswith("/W1"):  # W2 is finite, and its norms are
                assert math.isnan(value[1].item()), (name, column)
            assert value[0].item() == pytest.approx(first[column].item(), rel=1e-12, nan_ok=True), (name, column)


def test_lanczos_member_alone_equals_member_in_an_ensemble():
    """Member 0 at the vector case's origin (two distinct eigenvalues: the Krylov space breaks down and Lanczos
    restarts), member 1 elsewhere: each member's extremes are its own, whatever the others do."""
    exp, params = experiment("model=deep_linear", "model.width=4", "task=matrix_cost", "task.target=1.5", size=2)
    params = {k: torch.cat([torch.zeros_like(v[:1]), v[1:]]) for k, v in params.items()}
    together = METRICS["hessian"].fn(snapshot(exp, params, hessian_dense_max=0, lanczos_steps=8))
    for e in range(2):
        one = {k: v[e:e + 1] for k, v in params.items()}
        alone = METRICS["hessian"].fn(snapshot(exp, one, hessian_dense_max=0, lanczos_steps=8))
        for k in ("hessian_max", "hessian_min"):
            assert together[k][e].item() == pytest.approx(alone[k].item(), rel=1e-12), (e, k)
    assert together["hessian_max"][0].item() == pytest.approx(1.5, rel=1e-12)


def test_saddle_index_counts_no_round_off_in_float32():
    """At an exact minimum (the target is the init's own product) the Hessian is positive semi-definite: index 0.
    In float32 its zero eigenvalues come out as ±1e-7·max|λ|, above −1e-8·max|λ|: the cut follows the dtype."""
    w1, w2 = "[[1.0,0.5],[0.0,1.0],[2.0,-1.0]]", "[[1.0,2.0,0.0],[0.5,-1.0,1.0]]"
    target = "[[1.0,2.5],[2.5,-1.75]]"  # W2·W1
    for dtype in ("float64", "float32"):
        exp, params = experiment("model=deep_linear", "model.width=3", "task=matrix_cost", f"task.target={target}",
                                 "model.init=explicit", f"model.init_values=[{w1},{w2}]", f"dtype={dtype}", size=1)
        params = {k: v.to(torch.float32 if dtype == "float32" else F64) for k, v in params.items()}
        assert exp.objective.loss(params, *[v[None] for v in exp.task.data()]).item() == 0.0
        values = METRICS["hessian"].fn(snapshot(exp, params))
        assert values["hessian_negative"].item() == 0, dtype
