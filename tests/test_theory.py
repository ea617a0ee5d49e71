"""dynamics_bench.theory against independent oracles: Monte Carlo over x ~ N(0, I) for the Gaussian kernels and
the population loss, central finite differences for their gradients and Hessian-vector products (generic points,
and the singular ones: coincident, opposite and zero-norm neurons), the exact limits at θ = 0 and π, scipy's ODE
solver for the scalar-product time, Saxe's closed form for the depth-N quadrature, and the harness's own
empirical NTK (metrics.ntk.ntk_gram on models from build_model) at large width for the NTK Grams.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from dynamics_bench.metrics.ntk import ntk_gram
from dynamics_bench.models import build_model
from dynamics_bench.theory import kernels
from dynamics_bench.theory import (balanced_mode_strength, balanced_mode_time, du_gram, gaussian_kernel, ntk_mlp,
                                   ntk_two_layer, population_loss, saxe_mode_strength, saxe_time,
                                   scalar_product_time, vector_case_time)

F64 = torch.float64
ACTIVATIONS = {"relu": torch.relu, "abs": torch.abs, "erf": torch.erf}
KINKED = ["relu", "abs"]
MC_SAMPLES = 10**6


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def assert_within_3_sigma(exact: torch.Tensor, samples: torch.Tensor) -> None:
    """samples (N, ...): the closed form within 3 standard errors of their mean, entrywise."""
    error = (exact - samples.mean(0)).abs()
    sigma = samples.std(0) / math.sqrt(samples.shape[0])
    assert (error <= 3 * sigma).all(), (error / sigma).max()


# --- 1. Gaussian kernels and the population loss -------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernel_matches_monte_carlo(activation):
    """Generic pairs, plus a coincident (u = 2v) and an opposite (u = −v) one."""
    g = gen(0)
    v = randn(g, 2, 4)
    u = torch.cat([randn(g, 2, 4), 2 * v[:1], -v[1:]])  # (4, 4)
    x = randn(g, MC_SAMPLES, 4)
    sigma = ACTIVATIONS[activation]
    samples = sigma(x @ u.T)[:, :, None] * sigma(x @ v.T)[:, None, :]  # (N, 4, 2)
    assert_within_3_sigma(gaussian_kernel(activation, u, v), samples)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_population_loss_matches_monte_carlo(activation):
    g = gen(1)
    teacher, w, a = randn(g, 2, 4), randn(g, 2, 3, 4), randn(g, 2, 1, 3)  # r = 2, E = 2, m = 3, d = 4
    x = randn(g, MC_SAMPLES, 4)
    sigma = ACTIVATIONS[activation]
    residual = sigma(x @ w.mT) @ a.mT - sigma(x @ teacher.T).sum(-1, keepdim=True)  # (E, N, 1)
    samples = 0.5 * residual.square().sum(-1).T  # (N, E): mse's per-sample ½Σ_o r_o²
    assert_within_3_sigma(population_loss(w, a, teacher, activation), samples)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_population_loss_vanishes_at_a_student_that_computes_the_teacher(activation):
    """r = 5 teachers in d = 10: the loss is a difference of O(10)-sized sums. As ½cᵀKc over [w; w*] it comes out
    within 3.3e-15 of 0 here; as three separate sums (student-student − 2·student-teacher + teacher-teacher) abs
    is 1.4e-14 off for the permuted and half-mass students, so 1e-14 tells the two apart (and is far below any
    wrong cross term). In general the error is round-off of Σ|c_p c_q k_pq|, and can be slightly negative."""
    teacher = randn(gen(2), 5, 10)
    ones = torch.ones(1, 1, 5, dtype=F64)
    students = [(teacher[None], ones),  # w = w*, a = 1
                (teacher[[3, 0, 4, 1, 2]][None], ones),  # the same neurons in another order
                (torch.cat([teacher, teacher])[None], torch.full((1, 1, 10), 0.5, dtype=F64))]  # half mass each
    if activation != "erf":  # 1-homogeneous: a·σ(wᵀx) = σ((a·w)ᵀx)
        students.append((2 * teacher[None], 0.5 * ones))
    for w, a in students:
        assert population_loss(w, a, teacher, activation).abs().item() <= 1e-14


def loss_of(activation: str, teacher: torch.Tensor, e: int, m: int, d: int):
    """The summed population loss as a function of one flat vector [w (E, m, d), a (E, 1, m)]."""
    def loss(p: torch.Tensor) -> torch.Tensor:
        return population_loss(p[:e * m * d].view(e, m, d), p[e * m * d:].view(e, 1, m), teacher, activation).sum()
    return loss


def grad_of(loss, p: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    p = p if create_graph else p.detach().requires_grad_(True)
    return torch.autograd.grad(loss(p), p, create_graph=create_graph)[0]


def hvp(loss, p: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """By double backward, as Lanczos on the Hessian does."""
    p = p.detach().requires_grad_(True)
    return torch.autograd.grad(grad_of(loss, p, create_graph=True) @ direction, p)[0]


def fd_grad(loss, p: torch.Tensor, h: float) -> torch.Tensor:
    eye = torch.eye(p.numel(), dtype=F64)
    return torch.stack([(loss(p + h * e) - loss(p - h * e)) / (2 * h) for e in eye])


def fd_hvp(loss, p: torch.Tensor, direction: torch.Tensor, h: float) -> torch.Tensor:
    return (grad_of(loss, p + h * direction) - grad_of(loss, p - h * direction)) / (2 * h)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradient_and_hvp_match_finite_differences(activation):
    """Generic point, E = 2 members with trainable-style a (E, 1, m). Smooth there: central differences err by
    O(h²·|L'''|) + O(ε_mach·|L|/h): measured ≤ 1e-10 for the gradient (h = 1e-5) and 3e-10 for the HVP (h = 1e-6,
    where its h² part, 30·h², falls below round-off); 1e-8 fails on any wrong term of an O(1) Hessian."""
    g = gen(3)
    teacher, e, m, d = randn(g, 2, 3), 2, 3, 3
    loss = loss_of(activation, teacher, e, m, d)
    p, direction = randn(g, e * m * d + e * m), randn(g, e * m * d + e * m)
    torch.testing.assert_close(grad_of(loss, p), fd_grad(loss, p, 1e-5), rtol=0, atol=1e-8)
    torch.testing.assert_close(hvp(loss, p, direction), fd_hvp(loss, p, direction, 1e-6), rtol=0, atol=1e-8)


def singular_student(teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Member 0: a neuron exactly along teacher 0, one exactly opposite teacher 1, one along the first; member 1:
    a neuron at zero norm. Returns the flat point and the mask of the zero neuron's w block."""
    g = gen(4)
    w = randn(g, 2, 3, 3)
    w[0, 0], w[0, 1], w[0, 2] = 2 * teacher[0], -teacher[1], 0.5 * w[0, 0]
    w[1, 1] = 0.0
    zero_block = torch.zeros_like(w, dtype=torch.bool)
    zero_block[1, 1] = True
    a = randn(g, 2, 1, 3)
    return torch.cat([w.flatten(), a.flatten()]), torch.cat([zero_block.flatten(), torch.zeros(6, dtype=torch.bool)])


@pytest.mark.parametrize("activation", KINKED)
def test_gradient_and_hvp_at_coincident_opposite_and_zero_neurons(activation):
    """relu and abs kernels are C² (not C³) at θ = 0 and π and not differentiable at a zero vector.
    * gradient vs central differences of the loss, off the zero block: still O(h²) since the third derivatives
      stay bounded (the non-smooth part is ~‖u‖‖v‖θ³); tolerance as at a generic point;
    * HVP vs central differences of the gradient along a direction that leaves the zero neuron at 0: the Hessian
      is only Lipschitz (~θ) across θ = 0, so the difference errs by O(h): measured 1.6e-7 (relu), 6.3e-7 (abs)
      at h = 1e-6, shrinking 10× per 10× in h; 1e-5 still fails on a wrong limit (an O(1) error);
    * the zero neuron's gradient and HVP blocks are exactly 0 (relu'(0) = sign(0) = 0 on samples) for any
      direction, and everything is finite."""
    teacher = randn(gen(5), 2, 3)
    loss = loss_of(activation, teacher, 2, 3, 3)
    p, zero_block = singular_student(teacher)
    direction = randn(gen(6), p.numel())
    grad, full_hvp = grad_of(loss, p), hvp(loss, p, direction)
    assert grad.isfinite().all() and full_hvp.isfinite().all()
    assert (grad[zero_block] == 0).all() and (full_hvp[zero_block] == 0).all()
    torch.testing.assert_close(grad[~zero_block], fd_grad(loss, p, 1e-5)[~zero_block], rtol=0, atol=1e-8)
    direction[zero_block] = 0.0
    torch.testing.assert_close(hvp(loss, p, direction), fd_hvp(loss, p, direction, 1e-6), rtol=0, atol=1e-5)


def test_erf_gradient_and_hvp_at_the_same_points():
    """erf is smooth, zero norm included (its gradient there is not 0): the generic test's tolerances hold."""
    teacher = randn(gen(5), 2, 3)
    loss = loss_of("erf", teacher, 2, 3, 3)
    p, _ = singular_student(teacher)
    direction = randn(gen(6), p.numel())
    torch.testing.assert_close(grad_of(loss, p), fd_grad(loss, p, 1e-5), rtol=0, atol=1e-8)
    torch.testing.assert_close(hvp(loss, p, direction), fd_hvp(loss, p, direction, 1e-6), rtol=0, atol=1e-8)


def kernel_derivatives(activation: str, u: torch.Tensor, v: torch.Tensor):
    """k, ∇k and the Hessian of k(u, v) in (u, v) (d,) each, by autograd (double backward)."""
    def k(p: torch.Tensor) -> torch.Tensor:
        return gaussian_kernel(activation, p[None, :u.numel()], p[None, u.numel():])[0, 0]
    p = torch.cat([u, v])
    return (k(p), torch.autograd.functional.jacobian(k, p),
            torch.autograd.functional.hessian(k, p))


def swap_blocks(d: int) -> torch.Tensor:
    """[[0, I], [I, 0]]: the Hessian of uᵀv in (u, v)."""
    eye = torch.eye(d, dtype=F64)
    return torch.cat([torch.cat([0 * eye, eye], 1), torch.cat([eye, 0 * eye], 1)])


# limit of k near θ = 0 and θ = π: k = coefficient·uᵀv + O(θ³) (relu: ½ and 0; abs: ±1)
LIMITS = {("relu", 1.0): 0.5, ("relu", -1.0): 0.0, ("abs", 1.0): 1.0, ("abs", -1.0): -1.0}


@pytest.mark.parametrize("activation,side", LIMITS)
def test_kernel_limits_at_coincident_and_opposite_directions(activation, side):
    """At θ = 0 (u = 2v) and θ = π (u = −3v): k, ∇k and the Hessian are those of c·uᵀv (the O(θ³) rest has value,
    gradient and Hessian 0 there); round-off only."""
    v = randn(gen(7), 4)
    u = side * (2.0 if side > 0 else 3.0) * v
    c = LIMITS[(activation, side)]
    k, grad, hess = kernel_derivatives(activation, u, v)
    torch.testing.assert_close(k, c * (u @ v), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(grad, c * torch.cat([v, u]), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(hess, c * swap_blocks(4), rtol=0, atol=1e-15)


@pytest.mark.parametrize("activation", KINKED)
def test_kernel_derivatives_at_exactly_orthogonal_directions(activation):
    """uᵀv = 0 exactly, where the closed form switches from v to −v: k is smooth there, so autograd's gradient and
    Hessian must match central differences (errors O(h²) ≈ 1e-10 at h = 1e-5, and 1e-10 at h = 1e-6), whichever
    side autograd takes (a relu or abs of uᵀv would give the kink's one-sided 0 instead)."""
    u, v = torch.tensor([1.0, 0.0, 0.5], dtype=F64), torch.tensor([0.0, 2.0, 0.0], dtype=F64)
    p = torch.cat([u, v])

    def k(q: torch.Tensor) -> torch.Tensor:
        return gaussian_kernel(activation, q[None, :3], q[None, 3:])[0, 0]
    _, grad, hess = kernel_derivatives(activation, u, v)
    torch.testing.assert_close(grad, fd_grad(k, p, 1e-5), rtol=0, atol=1e-8)
    columns = [fd_hvp(k, p, e, 1e-6) for e in torch.eye(6, dtype=F64)]
    torch.testing.assert_close(hess, torch.stack(columns, 1), rtol=0, atol=1e-8)


@pytest.mark.parametrize("activation", KINKED)
@pytest.mark.parametrize("angle", [1e-4, 1e-8, 1e-12])
def test_kernel_near_coincident_directions_approach_the_limit(activation, angle):
    """At θ ~ angle from v (‖u‖, ‖v‖ ~ 2): gradient within O(θ²) and Hessian within O(θ) of the θ = 0 limits
    (the rest is ~‖u‖‖v‖θ³, whose Hessian is ≤ ~‖v‖θ/‖u‖ with O(1) constants): 10·θ, plus round-off. Computing
    h(θ) = sin θ − θ cos θ directly would put 1e-16/θ in the Hessian and fail at θ = 1e-12."""
    g = gen(8)
    v = randn(g, 4)
    perpendicular = randn(g, 4)
    perpendicular -= (perpendicular @ v) / (v @ v) * v
    u = 1.5 * v + angle * 1.5 * v.norm() * perpendicular / perpendicular.norm()
    c = LIMITS[(activation, 1.0)]
    k, grad, hess = kernel_derivatives(activation, u, v)
    assert hess.isfinite().all()
    torch.testing.assert_close(grad, c * torch.cat([v, u]), rtol=0, atol=10 * angle**2 + 1e-14)
    torch.testing.assert_close(hess, c * swap_blocks(4), rtol=0, atol=10 * angle + 1e-14)


@pytest.mark.parametrize("activation", KINKED)
@pytest.mark.parametrize("angle", [1e-3, 1e-6, 1e-8])
def test_kernel_curvature_at_small_angles_is_accurate(activation, angle):
    """Differentiating ∇_u k = c·[(π − θ)·v/c' + ‖v‖ sin θ·ū] (relu: c = 1/2π, c' = 1; abs: c = 2/π, c' = 2;
    docs/theory.md §6.2) once more gives ∂²k/∂u² = c·(‖v‖/‖u‖)·sin θ·(ppᵀ + I − ūūᵀ), p = (v̄ − cos θ·ū)/sin θ: in the
    plane with ū = e1, 2c·(‖v‖/‖u‖)·sin θ·e2e2ᵀ. Here u and v normalize exactly, and autograd matches it to
    round-off (measured 2e-16 relative; for generic directions the rounding of ū, ṽ adds ~eps/θ relative); the
    closed form sin θ − θ cos θ for h would be off by ~1e-16/θ (3.6e-11 relative at 1e-6, 7e-9 at 1e-8)."""
    c = {"relu": 1 / (2 * math.pi), "abs": 2 / math.pi}[activation]
    u, v = torch.tensor([1.5, 0.0], dtype=F64), 0.8 * torch.tensor([math.cos(angle), math.sin(angle)], dtype=F64)
    theta = math.atan2(v[1].item(), v[0].item())  # the angle of the rounded v
    expected = torch.zeros(2, 2, dtype=F64)
    expected[1, 1] = 2 * c * (0.8 / 1.5) * math.sin(theta)
    hess_uu = kernel_derivatives(activation, u, v)[2][:2, :2]
    assert torch.linalg.matrix_norm(hess_uu - expected) <= 1e-12 * expected[1, 1]


SWITCH = math.acos(1 - kernels.NEAR)  # the folded angle where the angle's source switches (Gram arccos / atan2)


@pytest.mark.parametrize("activation", KINKED)
@pytest.mark.parametrize("side", [1 - 1e-6, 1 + 1e-6])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_kernel_is_seamless_where_the_angle_changes_source(activation, side, sign):
    """Just inside (atan2 on the vectors) and just outside (arccos of the Gram cosine) the switch, at generic
    directions in d = 4, v on either side of u (folded onto −v for sign −1): the value matches the closed form
    (Python floats) and the gradient and Hessian match central differences (h = 1e-5, 1e-6: O(h²) + eps/h ≈ 1e-10)."""
    g = gen(12)
    u = randn(g, 4)
    perpendicular = randn(g, 4)
    perpendicular -= (perpendicular @ u) / (u @ u) * u
    angle = SWITCH * side
    v = sign * 0.7 * (math.cos(angle) * u / u.norm() + math.sin(angle) * perpendicular / perpendicular.norm())
    theta = math.acos(max(-1.0, min(1.0, (u @ v / (u.norm() * v.norm())).item())))
    nu, nv = u.norm().item(), v.norm().item()
    closed = {"relu": nu * nv / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * math.cos(theta)),
              "abs": nu * nv / math.pi * (2 * math.sin(theta) + (math.pi - 2 * theta) * math.cos(theta))}[activation]
    k, grad, hess = kernel_derivatives(activation, u, v)
    assert k.item() == pytest.approx(closed, rel=1e-12)

    def f(q: torch.Tensor) -> torch.Tensor:
        return gaussian_kernel(activation, q[None, :4], q[None, 4:])[0, 0]
    p = torch.cat([u, v])
    torch.testing.assert_close(grad, fd_grad(f, p, 1e-5), rtol=0, atol=1e-8)
    columns = [fd_hvp(f, p, e, 1e-6) for e in torch.eye(8, dtype=F64)]
    torch.testing.assert_close(hess, torch.stack(columns, 1), rtol=0, atol=1e-8)


def aligned_students(m: int, d: int, spread: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One member of m students within ~spread of one unit teacher (every pair nearly parallel), norm-tied masses."""
    g = gen(13)
    teacher = torch.nn.functional.normalize(randn(g, 1, d), dim=1)
    w = (teacher + spread * randn(g, m, d) / math.sqrt(d)) / math.sqrt(m)
    return w[None].requires_grad_(True), w.norm(dim=1)[None, None].detach(), teacher


def test_chunked_near_angles_equal_the_direct_ones(monkeypatch):
    """The checkpointed chunks (taken when near pairs × d exceed CHUNK_ENTRIES) give the same loss, gradient and
    Hessian-vector product as one pass: the same arithmetic, recomputed in the backward."""
    w, a, teacher = aligned_students(12, 6, 1e-3)
    direction = randn(gen(14), *w.shape)

    def derivatives():
        loss = population_loss(w, a, teacher, "relu").sum()
        grad = torch.autograd.grad(loss, w, create_graph=True)[0]
        return loss, grad, torch.autograd.grad(grad, w, direction)[0]
    direct = derivatives()
    monkeypatch.setattr(kernels, "CHUNK_ENTRIES", 7 * 6)  # 7 pairs a chunk: 169 near pairs, 25 chunks
    chunked = derivatives()
    for one, other in zip(direct, chunked):
        torch.testing.assert_close(one, other, rtol=1e-14, atol=1e-16)


def test_gradient_of_aligned_students_saves_no_pair_by_dimension_tensor():
    """Late in a run every student of a group is nearly parallel to its teacher and siblings (K ≈ m² pairs take
    the vector path): the graph of one loss must not keep (K, d) tensors. Saved bytes counted by autograd's
    saved-tensor hook, m = 64, d = 512: (m + 1)²·d·8 B = 17 MB per such tensor; everything O(m² + m·d) is < 2 MB."""
    w, a, teacher = aligned_students(64, 512, 1e-3)
    saved = []

    def count(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        loss = population_loss(w, a, teacher, "relu").sum()
    assert max(saved) < 2 * 2**20
    torch.autograd.grad(loss, w)  # the backward recomputes the chunks


@pytest.mark.parametrize("activation", KINKED)
def test_kernel_at_a_zero_vector_is_zero_with_zero_derivatives(activation):
    """Not differentiable there (k = ‖u‖·(…) depends on u's direction): value 0 and, as autograd on samples gives,
    a zero gradient and Hessian in every block of that pair, including the self pair k(0, 0)."""
    v = randn(gen(9), 3)
    for u in (torch.zeros(3, dtype=F64), v):
        k, grad, hess = kernel_derivatives(activation, torch.zeros(3, dtype=F64), u)
        assert k == 0 and (grad == 0).all() and (hess == 0).all()


def test_erf_kernel_is_finite_at_large_norms():
    """The arcsin argument 2uᵀv/√((1 + 2‖u‖²)(1 + 2‖v‖²)) stays < 1 for parallel vectors of norm 1e3."""
    v = randn(gen(10), 3)
    v = 1e3 * v / v.norm()
    k, grad, hess = kernel_derivatives("erf", v, v)
    assert k < 1 and grad.isfinite().all() and hess.isfinite().all()


# --- 2. Linear-network closed forms -------------------------------------------------------------------------

def test_saxe_mode_strength_inverts_saxe_time_and_saturates_without_overflow():
    s, u0 = 2.0, 1e-3
    t = np.linspace(0.1, 5.0, 7)
    times = [saxe_time(u0, u, s) for u in saxe_mode_strength(t, s, u0)]
    np.testing.assert_allclose(times, t, rtol=1e-10)
    with np.errstate(over="raise"):
        assert saxe_mode_strength(np.array([1e3, 1e6]), s, u0).tolist() == [s, s]


@pytest.mark.parametrize("u0,u1", [(1e-3, 0.5), (1e-6, 2 * (1 - 1e-12)), (3.0, 2.5), (0.7, 0.1)])
def test_balanced_depth_2_is_saxe(u0, u1):
    """Rising from small init to within 1e-12 of s, decaying from above s, and running backwards in u (u1 < u0
    below s: negative time). quad's own error is 1e-13 relative."""
    s = 2.0
    assert balanced_mode_time(u0, u1, s, 2) == pytest.approx(saxe_time(u0, u1, s), rel=1e-10)


def test_balanced_depth_2_strength_is_saxe():
    s, u0 = 2.0, 1e-3
    t = np.array([0.0, 0.5, 1.7, 4.0, 12.0, 30.0])  # past t ≈ 19 the mode is within one ulp of s
    np.testing.assert_allclose(balanced_mode_strength(t, s, u0, 2), saxe_mode_strength(t, s, u0), rtol=1e-10)


@pytest.mark.parametrize("depth,eps,stated", [(3, 1e-3, 999.15), (4, 1e-2, 4999.7)])
def test_deep_plateau_matches_theory(depth, eps, stated):
    """docs/theory.md §2.8: w_i = ε, f = ½(x − 1)², time to x = ½: 999.15 (N = 3, ε = 1e-3) and 4999.7 (N = 4, ε = 1e-2),
    against the asymptote ε^{−(N−2)}/(N − 2); stated to the digits printed there. The inverse returns x = ½."""
    u0 = eps**depth
    t = balanced_mode_time(u0, 0.5, 1.0, depth)
    assert t == pytest.approx(stated, abs=0.005 if depth == 3 else 0.05)
    assert t == pytest.approx(eps ** -(depth - 2) / (depth - 2), rel=1e-3)
    assert balanced_mode_strength(t, 1.0, u0, depth) == pytest.approx(0.5, rel=1e-10)


def test_scalar_product_balanced_is_the_end_to_end_law():
    """All factors equal: x' = N x^{2−2/N}(y − x), balanced_mode_time, for a moderate and a tiny init (the
    999-long plateau of §2.1). Two quadratures at epsrel 1e-13 in different variables: 1e-10."""
    def f_prime(x: float) -> float:
        return x - 1.0
    for eps in (0.1, 1e-3):
        assert scalar_product_time([eps] * 3, 0.5, f_prime) == pytest.approx(
            balanced_mode_time(eps**3, 0.5, 1.0, 3), rel=1e-10)


@pytest.mark.parametrize("factors,target", [((0.3, 1.2), 0.9), ((-0.5, 0.2), 0.5)])
def test_scalar_product_depth_2_is_the_vector_case(factors, target):
    """N = 2 is §1.6.3 with k = 1, c = (w1² − w2²)²; the second case crosses x = 0."""
    def f_prime(x: float) -> float:
        return x - 1.0
    c = (factors[0] ** 2 - factors[1] ** 2) ** 2
    assert scalar_product_time(list(factors), target, f_prime) == pytest.approx(
        vector_case_time(math.prod(factors), target, 1.0, c), rel=1e-10)


def test_scalar_product_matches_the_ode_with_mixed_signs():
    """N = 3, w = (0.3, −0.8, 1.1), f = log cosh(x − 1): the product goes from −0.264 through 0 to 0.9 (the
    smallest factor crosses 0). Against DOP853 at rtol 1e-12 on the three ODEs ẇ_i = −f'(x)·Π_{j≠i} w_j, with an
    event at x = 0.9; 1e-9 covers the ODE solver's global error."""
    factors, target = [0.3, -0.8, 1.1], 0.9

    def f_prime(x: float) -> float:
        return math.tanh(x - 1.0)

    def rhs(t: float, w: np.ndarray) -> np.ndarray:
        x = w.prod()
        return -f_prime(x) * np.array([w[1] * w[2], w[0] * w[2], w[0] * w[1]])

    def reached(t: float, w: np.ndarray) -> float:
        return w.prod() - target
    reached.terminal = True
    sol = solve_ivp(rhs, (0, 100), np.array(factors), method="DOP853", rtol=1e-12, atol=1e-14, events=reached)
    assert scalar_product_time(factors, target, f_prime) == pytest.approx(sol.t_events[0][0], rel=1e-9)


# --- 3. Infinite-width NTK Grams against the harness's empirical NTK ----------------------------------------

def empirical_ntk(section: dict, x: torch.Tensor, seed: int) -> torch.Tensor:
    """ntk_gram of one member from build_model."""
    model = build_model(section, input_dim=x.shape[1], output_dim=1)
    return ntk_gram(model, model.init_params([gen(seed)]), x[None])[0]


def relative_error(k: torch.Tensor, limit: torch.Tensor) -> float:
    return (torch.linalg.matrix_norm(k - limit) / torch.linalg.matrix_norm(limit)).item()


def probe(seed: int, n: int = 8, d: int = 5) -> torch.Tensor:
    """Gaussian inputs, not unit norm: the diagonal terms of the recursion matter."""
    return randn(gen(seed), n, d)


TWO_LAYER_CASES = [(p, o) for p in ("standard", "ntk") for o in ("trainable", "fixed", "fixed_signs")]


@pytest.mark.parametrize("parameterization,output_layer", TWO_LAYER_CASES)
def test_ntk_two_layer_matches_the_empirical_ntk(parameterization, output_layer):
    """m = 2¹⁴: K (or K/m) is a mean of m i.i.d. terms, so its relative error is ~1/√m; 4/√m is ~4 standard
    errors for these O(1)-spread terms. init_scale 1.3 checks the s² dependence."""
    m, x, scale = 2**14, probe(11), 1.3
    section = {"name": "two_layer", "width": m, "output_layer": output_layer, "init_scale": scale}
    if parameterization != "standard":
        section["parameterization"] = parameterization
    k = empirical_ntk(section, x, seed=12)
    k = k / m if parameterization == "standard" else k
    limit = ntk_two_layer(x, parameterization=parameterization, output_layer=output_layer, init_scale=scale)
    assert relative_error(k, limit) <= 4 / math.sqrt(m)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("depth,width", [(2, 2**12), (3, 2**11)])
def test_ntk_mlp_matches_the_empirical_ntk(parameterization, depth, width):
    """Relative Frobenius error averaged over 2 seeds ≤ 4·√(L/m): each layer adds an O(1/√m) fluctuation."""
    x, scale = probe(13), 1.3
    section = {"name": "mlp", "depth": depth, "width": width, "parameterization": parameterization,
               "init_scale": scale}
    limit = ntk_mlp(x, depth=depth, parameterization=parameterization, init_scale=scale)
    errors = []
    for seed in (14, 15):
        k = empirical_ntk(section, x, seed)
        errors.append(relative_error(k / width if parameterization == "standard" else k, limit))
    assert sum(errors) / len(errors) <= 4 * math.sqrt(depth / width)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_two_layer_with_trainable_output_is_the_depth_2_mlp(parameterization):
    """The same network (two_layer's w, a init is mlp's W1, W2 init), by two formulas."""
    x = probe(16)
    torch.testing.assert_close(ntk_two_layer(x, parameterization=parameterization, init_scale=0.7),
                               ntk_mlp(x, depth=2, parameterization=parameterization, init_scale=0.7),
                               rtol=1e-14, atol=1e-14)


def test_du_gram_is_the_fixed_output_limit():
    x = probe(17)
    h = du_gram(x)
    for output_layer in ("fixed", "fixed_signs"):
        torch.testing.assert_close(ntk_two_layer(x, output_layer=output_layer, init_scale=2.5), h)
    torch.testing.assert_close(x.shape[1] * ntk_two_layer(x, parameterization="ntk", output_layer="fixed_signs"), h)


def test_ntk_options_are_validated():
    with pytest.raises(ValueError, match="parameterization='mup'.*standard, ntk"):
        ntk_two_layer(probe(18), parameterization="mup")
    with pytest.raises(ValueError, match="activation='tanh'.*relu"):
        ntk_two_layer(probe(18), activation="tanh")
