"""Student–teacher geometry of a two-layer net on a teacher task (Zhou–Ge–Jin 2021; docs/theory.md §6.4, §6.5).

cos_ji = cosine between student neuron j's input weights and teacher neuron i's (biases excluded), taken
in absolute value when the student's or the teacher's activation is even (|·|: w and −w are one neuron).

`teacher` follows the paper's proof: student j carries the signed output mass c_j = a_j·‖w_j‖ (effective output
weights, so ‖w_j‖² for the norm-tied student) to its closest teacher; T_i is the set of students closest to teacher
i, M_i = Σ_{j∈T_i} c_j should reach ‖w_i*‖ (Lemma 9), the average neuron ŵ_i = Σ_{j∈T_i} c_j·w̄_j should reach w_i*
(Lemma 10), and the misalignment A = Σ_j |c_j|·sin²(min(d_j, π/2)) (d_j the angle to the closest teacher; Lemma
C.6) should vanish.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from dynamics_bench.metrics.base import MAX_UNIT_COLUMNS, Metric, Snapshot
from dynamics_bench.models.base import ACTIVATIONS

LIVE_FRACTION = 1e-3  # students with ‖a_j‖·‖w_j‖ below this fraction of the largest are dead or vanishing
TINY = 1e-300  # a zero student's direction: 0/TINY = 0, not NaN
TEACHER_ACTIVATIONS = ("relu", "abs")  # where the teacher metrics have the paper's meaning


def _geometry(s: Snapshot) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Once per snapshot, for both metrics: the effective output weights a (E, out, m), ‖w_j‖ (E, m),
    w̄_j = w_j/‖w_j‖ (E, m, d; 0 for a zero student), cos_ji (E, m, r) signed, the same in absolute value when an
    activation is even, and each student's best (E, m): its largest (absolute) cosine."""
    def compute() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        neurons, teacher = s.model.neurons(s.params), s.task.teacher
        norms = torch.linalg.vector_norm(neurons.w, dim=2)
        unit = neurons.w / norms.clamp_min(TINY)[..., None]
        cos = unit @ teacher.directions.T
        near = cos.abs() if s.model.activation.even or ACTIVATIONS[teacher.activation].even else cos
        return neurons.a, norms, unit, cos, near, near.amax(2)
    return s.cached("teacher_geometry", compute)


def alignment(s: Snapshot) -> dict[str, Tensor]:
    a, norms, _, _, cos, best_student = _geometry(s)
    weight = torch.linalg.vector_norm(a, dim=1) * norms  # (E, m) ‖a_j‖·‖w_j‖
    live = weight > LIVE_FRACTION * weight.amax(1, keepdim=True)
    return {
        "alignment_teacher_min": cos.amax(1).amin(1),
        "alignment_student_mean": (weight * best_student).sum(1) / weight.sum(1),
        "alignment_student_min": torch.where(live, best_student, torch.full_like(best_student, torch.inf))
        .amin(1).nan_to_num(posinf=torch.nan),  # NaN (empty) when no student is live
    }


def teacher(s: Snapshot) -> dict[str, Tensor]:
    """teacher_mass/i, teacher_mass_error max_i |M_i − ‖w_i*‖|/‖w_i*‖, misalignment A and average_neuron_error
    max_i ‖ŵ_i − w_i*‖/‖w_i*‖. Angles are up to sign for abs (d ∈ [0, π/2]) and signed for relu (d ∈ [0, π]).
    A comes from cosines: sin² d_j = 1 − cos² d_j is accurate to ~2e-16 absolute, so A to ~2e-16·Σ|c_j|."""
    star = s.task.teacher
    a, norms, unit, cos, near, best = _geometry(s)
    c = a[:, 0] * norms  # (E, m) signed output mass c_j = a_j‖w_j‖
    # (E, m, r): c_j on the teacher closest to j, T(j) (the first of tied teachers), 0 on the others
    share = torch.zeros_like(near).scatter_(2, near.argmax(2, keepdim=True), c.unsqueeze(2))
    mass = share.sum(1)  # (E, r) M_i
    if s.model.activation.even:  # w̄_j sign-aligned with the teacher it counts for
        share = share * torch.sign(cos)
    average = torch.bmm(share.transpose(1, 2), unit)  # (E, r, d) ŵ_i = Σ_{j∈T_i} c_j·w̄_j
    weight, aligned = c.abs(), best.clamp(0, 1)  # cos d_j (round-off may pass 1); 0 beyond π/2 (facing away)
    out = {
        "teacher_mass_error": (mass - star.norms).abs_().mul_(star.inverse_norms).amax(1),
        "misalignment": torch.addcmul(weight, weight * aligned, aligned, value=-1).sum(1),  # Σ|c_j| sin² d_j
        "average_neuron_error": torch.linalg.vector_norm(average - star.weights, dim=2).mul_(star.inverse_norms)
        .amax(1),
    }
    if mass.shape[1] <= MAX_UNIT_COLUMNS:
        out.update(zip(_mass_columns(mass.shape[1]), mass.unbind(1)))
    return out


@lru_cache
def _mass_columns(r: int) -> tuple[str, ...]:
    return tuple(f"teacher_mass/{i + 1}" for i in range(r))


def _requires(objective, task) -> str | None:
    if task.teacher is None:
        return "needs task=teacher"
    if not hasattr(objective.model, "neurons"):
        return "needs model=two_layer"
    return None


def _teacher_requires(objective, task) -> str | None:
    reason = _requires(objective, task)
    if reason is not None:
        return reason
    model, activation = objective.model, task.teacher.activation
    if model.output_dim != 1:
        return f"needs a single output (the model has {model.output_dim})"
    if model.bias:
        return "needs model.bias=false: the teacher's neurons have none, so a student's bias has no counterpart"
    if model.activation_name != activation or activation not in TEACHER_ACTIVATIONS:
        return (f"needs the student's activation to equal the teacher's and be relu or abs (model.activation="
                f"{model.activation_name}, task.teacher_activation={activation})")
    return None


ALIGNMENT = {"alignment": Metric(alignment, _requires), "teacher": Metric(teacher, _teacher_requires)}
