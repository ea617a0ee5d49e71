"""Conserved imbalances of gradient flow and their drift, a live gauge of how close a run is to the flow.

Deep linear nets conserve C_i = W_iW_iᵀ − W_{i+1}ᵀW_{i+1} for any cost (de Oliveira–Jatkar–Sontag 2025,
Prop. 2; Du–Hu–Lee 2018, Thm 2.2). Two-layer nets with a homogeneous activation and a trainable output layer
conserve a_j² − ‖w_j‖² (− b_j² with a bias) per hidden neuron (Du–Hu–Lee 2018, Thm 2.1). In the vector case
(depth 2, scalar input and output) c = 2tr(C²) − tr(C)² rescales flow time (paper (1), Prop. 7).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.metrics.base import Metric, Snapshot
from dynamics_bench.models.base import Model, Params
from dynamics_bench.models.deep_linear import DeepLinear
from dynamics_bench.models.two_layer import TwoLayer

# (model, params) -> (conserved quantities (E, G, ...) grouped as the metric reports them, scale (E, G))
Groups = Callable[[Model, Params], tuple[Tensor, Tensor]]


def layer_imbalances(model: DeepLinear, params: Params) -> tuple[Tensor, Tensor]:
    """C_i (E, N−1, k, k) and ‖W_i‖²_F + ‖W_{i+1}‖²_F (E, N−1)."""
    w = model.layer_matrices(params)
    c = torch.stack([a @ a.mT - b.mT @ b for a, b in zip(w[:-1], w[1:])], dim=1)
    sq = [m.flatten(1).pow(2).sum(1) for m in w]
    return c, torch.stack([a + b for a, b in zip(sq[:-1], sq[1:])], dim=1)


def neuron_imbalances(model: TwoLayer, params: Params) -> tuple[Tensor, Tensor]:
    """a_j² − ‖w_j‖² − b_j² (E, m) and ‖a_j‖² + ‖w_j‖² (+ b_j²) (E, m)."""
    n = model.neurons(params)
    a_sq, w_sq = n.a.pow(2).sum(1), n.w.pow(2).sum(2)  # (E, m)
    if n.b is not None:
        w_sq = w_sq + n.b.pow(2)
    return a_sq - w_sq, a_sq + w_sq


def _two_layer_reason(model: TwoLayer) -> str | None:
    if model.output_layer != "trainable":
        return "needs model.output_layer=trainable"
    if not model.activation.homogeneous:
        return f"needs a homogeneous activation (relu, abs, linear), not {model.activation_name}"
    return None


_GROUPS: dict[type, tuple[Groups, Callable[[Model], str | None]]] = {
    DeepLinear: (layer_imbalances, lambda m: None if m.depth >= 2 else "needs model.depth >= 2"),
    TwoLayer: (neuron_imbalances, _two_layer_reason),
}


def _requires(objective, task) -> str | None:
    entry = _GROUPS.get(type(objective.model))
    return entry[1](objective.model) if entry else "needs model=deep_linear or model=two_layer"


def _group_norm(c: Tensor) -> Tensor:
    return c.reshape(*c.shape[:2], -1).norm(dim=2)  # (E, G): Frobenius per layer, |·| per neuron


def imbalance(s: Snapshot) -> dict[str, Tensor]:
    groups = _GROUPS[type(s.model)][0]
    c, _ = groups(s.model, s.params)
    c0, scale0 = groups(s.model, s.params0)
    drift = _group_norm(c - c0).amax(1)
    out = {"imbalance": _group_norm(c).amax(1), "imbalance_drift": drift,
           "imbalance_drift_rel": drift / scale0.amax(1)}
    if isinstance(s.model, DeepLinear):
        out.update({f"imbalance/{i + 1}": v for i, v in enumerate(_group_norm(c).unbind(1))})
        if s.model.depth == 2 and s.model.input_dim == 1 and s.model.output_dim == 1:
            cm = c[:, 0]  # (E, k, k)
            tr = torch.diagonal(cm, dim1=1, dim2=2).sum(1)
            out["imbalance_c"] = 2 * (cm * cm.mT).sum((1, 2)) - tr**2  # 2tr(C²) − tr(C)²
    return out


IMBALANCE = {"imbalance": Metric(imbalance, _requires)}
