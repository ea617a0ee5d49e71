"""Conserved imbalances of gradient flow and their drift, a live gauge of how close a run is to the flow.

Deep linear nets conserve C_i = W_iW_iᵀ − W_{i+1}ᵀW_{i+1} for any cost (de Oliveira–Jatkar–Sontag 2025,
Prop. 2; Du–Hu–Lee 2018, Thm 2.2). Two-layer nets with a trainable output layer conserve, per hidden neuron,
q_j = ‖a_j‖² − h_j: with a homogeneous activation h_j = ‖w_j‖² + b_j² on any data (Du–Hu–Lee 2018, Thm 2.1); with
any activation that has a potential H (H' = 2σ/σ') and the single input x = 1, h_j = H(w_j), or ½H(w_j + b_j) with
a bias, whatever the loss (d/dt ‖a_j‖² = d/dt h_j = −2σ·a_jᵀ∇ℓ; paper (1), Prop. 8 for σ = z/√(1+z²), whose
C = a² − ½(1+w²)² is −½ at the origin). In the vector case (depth 2, scalar input and output)
c = 2tr(C²) − tr(C)² rescales flow time (paper (1), Prop. 7).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.metrics.base import MAX_UNIT_COLUMNS, Metric, Snapshot
from dynamics_bench.models.base import ACTIVATIONS, Activation, Model, Neurons, Params
from dynamics_bench.models.deep_linear import DeepLinear
from dynamics_bench.models.two_layer import TwoLayer
from dynamics_bench.tasks.base import Task

# (model, params) -> (conserved quantities (E, G, ...) grouped as the metric reports them, scale (E, G))
Groups = Callable[[Model, Params], tuple[Tensor, Tensor]]
Reason = Callable[[Model, Task], "str | None"]  # None when the model conserves its groups on this task, else why not


def layer_imbalances(model: DeepLinear, params: Params) -> tuple[Tensor, Tensor]:
    """C_i (E, N−1, k, k) and ‖W_i‖²_F + ‖W_{i+1}‖²_F (E, N−1)."""
    w = model.layer_matrices(params)
    c = torch.stack([a @ a.mT - b.mT @ b for a, b in zip(w[:-1], w[1:])], dim=1)
    sq = [m.flatten(1).pow(2).sum(1) for m in w]
    return c, torch.stack([a + b for a, b in zip(sq[:-1], sq[1:])], dim=1)


def neuron_imbalances(model: TwoLayer, params: Params) -> tuple[Tensor, Tensor]:
    """q_j = ‖a_j‖² − h_j (E, m) and the sizes of its two terms ‖a_j‖² + |h_j| (E, m), the scale q_j's
    round-off and a relative drift are measured against (|q_j| itself may be 0, and H has no fixed constant)."""
    n = model.stored_neurons(params)  # stored: the conserved variables (also under parameterization=ntk)
    a_sq, h = n.a.pow(2).sum(1), _incoming_term(model.activation, n)  # (E, m)
    return a_sq - h, a_sq + h.abs()


def _incoming_term(activation: Activation, n: Neurons) -> Tensor:
    """h_j (E, m): ‖w_j‖² + b_j² for a homogeneous σ (any data), else H(w_j) or ½H(w_j + b_j) (input x = 1)."""
    if activation.homogeneous:
        h = n.w.pow(2).sum(2)
        return h if n.b is None else h + n.b.pow(2)
    z = n.w[..., 0]  # (E, m): the pre-activation on the input 1
    return activation.potential(z) if n.b is None else 0.5 * activation.potential(z + n.b)


def _unit_input_shortfall(task: Task) -> str | None:
    """None when training sees nothing but the fixed input x = 1 (task=matrix_cost with input size 1), else
    what it sees instead."""
    if task.online:
        return "fresh samples every step (task.online)"
    x, _ = task.data()
    if tuple(x.shape) != (1, 1):
        return f"{x.shape[0]} inputs of size {x.shape[1]}"
    return None if x.item() == 1 else f"the single input x = {x.item():g}"


def _two_layer_reason(model: TwoLayer, task: Task) -> str | None:
    if model.output_layer != "trainable":
        return "needs model.output_layer=trainable"
    act, name = model.activation, model.activation_name
    if act.homogeneous:
        return None
    if act.potential is None:
        missing = f"{name} has no known potential"
    else:
        shortfall = _unit_input_shortfall(task)
        if shortfall is None:
            return None
        missing = f"{name} is trained on {shortfall}"
    homogeneous = ", ".join(k for k, a in ACTIVATIONS.items() if a.homogeneous)
    return (f"needs a homogeneous activation ({homogeneous}), or a single input x = 1 (task=matrix_cost with input "
            f"size 1) and an activation with a known potential; {missing}")


_GROUPS: dict[type, tuple[Groups, Reason]] = {
    DeepLinear: (layer_imbalances, lambda m, task: None if m.depth >= 2 else "needs model.depth >= 2"),
    TwoLayer: (neuron_imbalances, _two_layer_reason),
}


def _requires(objective, task) -> str | None:
    if objective.frozen:  # the conservation law pairs each layer with the next: both must move
        return "needs every parameter trained (model.train_layers freezes " + ", ".join(objective.frozen) + ")"
    if objective.config.linearize:  # the Taylor model lacks the rescaling symmetry behind the law
        return "does not apply to a linearized model (model.linearize=true)"
    entry = _GROUPS.get(type(objective.model))
    return entry[1](objective.model, task) if entry else "needs model=deep_linear or model=two_layer"


def _group_norm(c: Tensor) -> Tensor:
    return c.reshape(*c.shape[:2], -1).norm(dim=2)  # (E, G): Frobenius per layer, |·| per neuron


def _neuron_ratio(drift: Tensor, scale: Tensor) -> Tensor:
    """drift/scale per neuron; a neuron with both terms 0 that never moved (a fixed point of the flow) has
    drifted 0, not 0/0. NaN drift (a diverged member) stays NaN."""
    return torch.where(drift == 0, 0.0, drift / scale)


def imbalance(s: Snapshot) -> dict[str, Tensor]:
    groups = _GROUPS[type(s.model)][0]
    c, _ = groups(s.model, s.params)
    c0, scale0 = groups(s.model, s.params0)
    size, drift = _group_norm(c), _group_norm(c - c0)  # (E, G)
    out = {"imbalance": size.amax(1), "imbalance_drift": drift.amax(1)}
    if isinstance(s.model, DeepLinear):
        out["imbalance_drift_rel"] = drift.amax(1) / scale0.amax(1)
        out.update({f"imbalance/{i + 1}": v for i, v in enumerate(size.unbind(1))})
        if s.model.vector_case:
            cm = c[:, 0]  # (E, k, k)
            tr = torch.diagonal(cm, dim1=1, dim2=2).sum(1)
            out["imbalance_c"] = 2 * (cm * cm.mT).sum((1, 2)) - tr**2  # 2tr(C²) − tr(C)²
    else:  # per neuron: each against the sizes of its own two terms, so a small neuron's drift is not hidden
        out["imbalance_drift_rel"] = _neuron_ratio(drift, scale0).amax(1)
        if s.model.width <= MAX_UNIT_COLUMNS:
            out.update({f"imbalance/{j + 1}": q for j, q in enumerate(c.unbind(1))})
    return out


IMBALANCE = {"imbalance": Metric(imbalance, _requires)}
