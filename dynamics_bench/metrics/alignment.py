"""Student–teacher alignment of input weights (Zhou–Ge–Jin 2021, §6.5 of theory.md).

cos_ji = cosine between student neuron j's input weights and teacher neuron i's (biases excluded), taken
in absolute value when the student's or the teacher's activation is even (|·|: w and −w are one neuron).
"""
from __future__ import annotations

import torch
from torch import Tensor

from dynamics_bench.metrics.base import Metric, Snapshot
from dynamics_bench.models.base import ACTIVATIONS

LIVE_FRACTION = 1e-3  # students with ‖a_j‖·‖w_j‖ below this fraction of the largest are dead or vanishing


def alignment(s: Snapshot) -> dict[str, Tensor]:
    neurons, teacher = s.model.neurons(s.params), s.task.teacher
    w = neurons.w / neurons.w.norm(dim=2, keepdim=True).clamp_min(1e-300)  # (E, m, d); 0 stays 0
    w_star = teacher.weights / teacher.weights.norm(dim=1, keepdim=True)  # (r, d)
    cos = torch.einsum("emd,rd->emr", w, w_star)
    if s.model.activation.even or ACTIVATIONS[teacher.activation].even:
        cos = cos.abs()
    best_student = cos.amax(2)  # (E, m) each student's best teacher
    weight = neurons.a.norm(dim=1) * neurons.w.norm(dim=2)  # (E, m) ‖a_j‖·‖w_j‖
    live = weight > LIVE_FRACTION * weight.amax(1, keepdim=True)
    return {
        "alignment_teacher_min": cos.amax(1).amin(1),
        "alignment_student_mean": (weight * best_student).sum(1) / weight.sum(1),
        "alignment_student_min": torch.where(live, best_student, torch.full_like(best_student, torch.inf))
        .amin(1).nan_to_num(posinf=torch.nan),  # NaN (empty) when no student is live
    }


def _requires(objective, task) -> str | None:
    if task.teacher is None:
        return "needs task=teacher"
    if not hasattr(objective.model, "neurons"):
        return "needs model=two_layer"
    return None


ALIGNMENT = {"alignment": Metric(alignment, _requires)}
