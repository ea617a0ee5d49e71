"""Paper (2)'s claims (dynamics_bench.claims.local): every verdict on synthetic data that must pass and data that must
fail, and the helpers against independent computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynamics_bench.claims import local
from dynamics_bench.theory import population_loss


def verdicts(checks) -> dict[str, bool]:
    return {c.id: c.passed for c in checks}


def test_subclaim_ids_match_judges():
    makers = {"p2_1_closed_form": p2_1_data, "p2_2_local_convergence": p2_2_data, "p2_3_rates": p2_3_data,
              "p2_4_claim2": p2_4_data, "p2_5_fig1": p2_5_data}
    assert [p.id for p in local.PREDICTIONS] == list(makers)
    for prediction in local.PREDICTIONS:
        assert [c.id for c in prediction.judge(makers[prediction.id](good=True))] == list(prediction.subclaims)


# helpers ---------------------------------------------------------------------------------------------------------
def test_familywise_z_is_three_sigma_for_one_comparison_and_grows():
    assert local.familywise_z(1) == pytest.approx(3.0, abs=1e-12)
    assert 4.0 < local.familywise_z(100) < 4.5


def test_folded_angles_against_arccos_and_sign():
    rng = np.random.default_rng(0)
    w, teachers = rng.normal(size=(7, 4)), rng.normal(size=(3, 4))
    cos = np.abs(w @ teachers.T) / np.outer(np.linalg.norm(w, axis=1), np.linalg.norm(teachers, axis=1))
    assert np.allclose(local.folded_angles(w, teachers), np.arccos(cos.max(axis=1)), atol=1e-12)
    assert local.folded_angles(-3 * teachers[:1], teachers)[0] == pytest.approx(0.0, abs=1e-15)


def test_claim2_starts_sum_to_the_teacher_at_angle_delta():
    teacher = torch.tensor([0.6, 0.8], dtype=torch.float64)
    deltas = torch.tensor([0.05, 0.2], dtype=torch.float64)
    starts = local.claim2_starts(teacher, deltas)
    pair = starts["pair"]
    weighted = (pair.norm(dim=-1, keepdim=True) * pair).sum(1)  # Σ‖w_j‖w_j
    assert torch.allclose(weighted, teacher.expand(2, 2), atol=1e-15)
    angles = local.folded_angles(starts["single"][:, 0].numpy(), teacher[None].numpy())
    assert np.allclose(angles, deltas.numpy(), atol=1e-14)
    loss = population_loss(pair, pair.norm(dim=-1)[:, None, :], teacher[None], "abs")
    assert torch.all(loss < 1e-2)


def test_matched_angle_reproduces_the_loss():
    target = local._initial_loss("p2_3_rates", 6, 0.15)
    angle = local.matched_angle("p2_3_rates", 12, target)
    assert local._initial_loss("p2_3_rates", 12, angle) == pytest.approx(target, rel=1e-4)


def test_movement_cluster_and_two_thirds_helpers():
    teachers = np.array([[1.0, 0.0], [0.0, 1.0]])
    w = np.array([[2.0, 0.0], [0.0, -1.0], [0.1, 0.1]])  # masses 4, 1, 0.02; the last 45° off
    assert local.clustered_mass(w, teachers) == pytest.approx(5 / 5.02)
    paths = np.stack([w, 1.1 * w])
    assert np.allclose(local.relative_movement(paths), 0.1)
    loss = np.geomspace(1e-2, 1e-9, 30)
    assert local.two_thirds_spread({"loss": loss, "grad_norm": 1.5 * loss ** (2 / 3)}) == pytest.approx(0, abs=1e-12)
    assert local.two_thirds_spread({"loss": loss, "grad_norm": loss ** 0.5}) > 0.2


def test_linear_window_spans_the_decades_of_an_exponential():
    t = np.arange(0, 400, 2.0)
    fit, span = local.linear_window({"t": t, "loss": 1e-2 * np.exp(-0.1 * t)})
    assert fit.slope == pytest.approx(-0.1) and fit.r2 == pytest.approx(1.0) and span > 8


# P2.1 ------------------------------------------------------------------------------------------------------------
def p2_1_data(good: bool) -> dict:
    rng = np.random.default_rng(1)
    points = []
    for k in range(3):
        grad = rng.normal(size=(6, 5))
        se = np.full((6, 5), 1e-3)
        mc = grad + se * rng.normal(size=grad.shape) * (1 if good else 20)
        fd = grad + (1e-10 if good else 1e-4) * rng.normal(size=grad.shape)
        loss = 1.0 + k
        points.append({"point": f"p{k}", "loss": loss, "mc_loss": loss + (0.5e-3 if good else 1e-2),
                       "mc_loss_se": 1e-3, "grad": grad, "mc_grad": mc, "mc_grad_se": se, "fd_grad": fd})
    return {"n": 10**6, "points": points}


def test_p2_1_passes_and_fails():
    assert all(verdicts(local.judge_p2_1(p2_1_data(good=True))).values())
    assert not any(verdicts(local.judge_p2_1(p2_1_data(good=False))).values())


# P2.2 ------------------------------------------------------------------------------------------------------------
def p2_2_run(good: bool) -> dict:
    return {"final_loss": 1e-9 if good else 1e-6,
            "final": {"misalignment": 1e-6 if good else 1e-3, "teacher_mass_error": 1e-4 if good else 1e-2},
            "curves": {"misalignment": [0.05, 1e-3, 1e-6 if good else 1e-3]},
            "student_masses": [0.5, 0.5, 1e-5], "student_angles": [1e-3 if good else 0.1, 2e-3, 1.0],
            "teacher_norms": [1.0, 1.0, 1.0]}


def p2_2_data(good: bool) -> dict:
    return {"widths": [3, 6], "steps": 10, "runs": {"3": p2_2_run(True), "6": p2_2_run(good)}}


def test_p2_2_passes_and_fails():
    assert all(verdicts(local.judge_p2_2(p2_2_data(good=True))).values())
    assert not any(verdicts(local.judge_p2_2(p2_2_data(good=False))).values())


def test_p2_2_negligible_student_is_ignored():
    data = p2_2_data(good=True)  # the third student (mass 1e-5 < 1e-3) is 1 rad off, and passes
    assert verdicts(local.judge_p2_2(data))["p2_2_d_students_aligned"]


# P2.3 ------------------------------------------------------------------------------------------------------------
def p2_3_curve(t: np.ndarray, loss: np.ndarray, grad: np.ndarray, kappa=None, pl=None) -> dict:
    return {"t": t, "loss": loss, "grad_norm": grad, "kappa": grad / loss if kappa is None else kappa,
            "pl_ratio": grad**2 / loss if pl is None else pl}


def p2_3_data(good: bool) -> dict:
    t_exact = np.arange(0, 300.0, 1.0)
    exact_loss = 1e-2 * np.exp(-0.1 * t_exact) if good else 1e-2 * np.exp(-0.01 * t_exact)
    t = np.concatenate([[0.0], np.geomspace(0.05, 1000, 100)])
    over = {}
    for m, scale in (("6", 1.0), ("12", 1.0 if good else 20.0)):
        loss = 1e-2 / (1 + scale * t) ** 3 if good else 1e-2 / (1 + scale * t)
        grad = 1.5 * loss ** (2 / 3) if good else loss**0.5
        kappa = None if good else np.geomspace(10, 1, len(t))
        over[m] = p2_3_curve(t, loss, grad, kappa=kappa)
    return {"r": 3, "start_loss": 1e-2, "angles": {"6": 0.15, "12": 0.1},
            "exact": p2_3_curve(t_exact, exact_loss, np.sqrt(0.5 * exact_loss)), "over": over}


def test_p2_3_passes_and_fails():
    assert all(verdicts(local.judge_p2_3(p2_3_data(good=True))).values())
    assert not any(verdicts(local.judge_p2_3(p2_3_data(good=False))).values())


def test_p2_3_short_linear_window_fails():
    data = p2_3_data(good=True)
    data["exact"]["loss"] = np.maximum(data["exact"]["loss"], 1e-9)  # only 5 decades below 1e-4
    assert not verdicts(local.judge_p2_3(data))["p2_3_a_linear_exact"]


# P2.4 ------------------------------------------------------------------------------------------------------------
def p2_4_data(good: bool) -> dict:
    deltas = np.geomspace(0.0125, 0.2, 9)
    pair, single = 0.1 * deltas**3, 0.5 * deltas**2
    return {"deltas": deltas, "losses": {"pair": pair if good else single, "single": single if good else pair}}


def test_p2_4_passes_and_fails():
    assert all(verdicts(local.judge_p2_4(p2_4_data(good=True))).values())
    assert not any(verdicts(local.judge_p2_4(p2_4_data(good=False))).values())


# P2.5 ------------------------------------------------------------------------------------------------------------
def p2_5_data(good: bool) -> dict:
    rng = np.random.default_rng(2)
    teachers = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [-0.5, math.sqrt(3) / 2]])
    start = 1e-3 * rng.normal(size=(20, 2))
    on_teachers = teachers[np.arange(20) % 3] * 0.4
    mean_field = np.stack([start, on_teachers if good else rng.normal(size=(20, 2))])
    lazy0 = rng.normal(size=(20, 2))
    lazy = np.stack([lazy0, lazy0 * (1.02 if good else 1.5)])
    turn = np.array([[math.cos(0.01), -math.sin(0.01)], [math.sin(0.01), math.cos(0.01)]])
    local_end = on_teachers if good else on_teachers @ turn.T
    local_paths = np.stack([on_teachers @ turn.T, local_end])
    return {"teachers": teachers, "mean_field": {"paths": mean_field, "final_loss": 1e-8, "steps": 1},
            "lazy": {"paths": lazy, "final_loss": 1e-2, "steps": 1},
            "local": {"paths": local_paths, "final_loss": 1e-9, "steps": 1}}


def test_p2_5_passes_and_fails():
    assert all(verdicts(local.judge_p2_5(p2_5_data(good=True))).values())
    assert not any(verdicts(local.judge_p2_5(p2_5_data(good=False))).values())


def test_draws_return_figures():
    from matplotlib.figure import Figure

    makers = {"p2_1_closed_form": p2_1_data, "p2_2_local_convergence": p2_2_data, "p2_3_rates": p2_3_data,
              "p2_4_claim2": p2_4_data, "p2_5_fig1": p2_5_data}
    for prediction in local.PREDICTIONS:
        data = makers[prediction.id](good=True)
        if prediction.id == "p2_2_local_convergence":
            for run in data["runs"].values():
                run["curves"].update({"t": [0.0, 1.0, 2.0], "loss": [1e-2, 1e-5, 1e-9],
                                      "teacher_mass_error": [1e-16, 1e-3, 1e-4]})
        assert isinstance(prediction.draw(data, prediction.judge(data)), Figure)
