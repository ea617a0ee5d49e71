"""How far training has moved from the initialization, layer by layer: each weight matrix in Frobenius and
spectral norm, each first-layer neuron, and the ReLU/|·| units whose sign pattern changed (Du et al. 2019;
Allen-Zhu–Li–Song 2019; docs/theory.md §5.2, §5.4, P3.3–P3.5). Which norm matters is part of the claim: a wide net's
m×m layers move by O(1/m) relative to their Frobenius norm but O(1/√m) relative to their spectral norm.

Weight matrices are the parameters that are matrices per member, named as in final_params.pt (w and a of
two_layer, W1.. of deep_linear and mlp; biases are vectors), as stored (under an NTK parameterization the stored
weights, which training moves). First-layer neurons are the rows of the first matrix (input weights, biases
excluded).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
from torch import Tensor

from dynamics_bench.metrics.base import Memory, Metric, Snapshot, Values, finite_members_only, relative
from dynamics_bench.models.base import Params


def weight_matrices(params: Params) -> dict[str, Tensor]:
    """The matrices among the parameters, (E, out, in) each, in forward order."""
    return {k: v for k, v in params.items() if v.dim() == 3}


def _spectral(matrices: Tensor) -> Tensor:
    """‖W‖₂ per member (E,), by SVD; NaN for a member with non-finite entries."""
    return finite_members_only(lambda w: torch.linalg.matrix_norm(w, ord=2), matrices)


def _inverse(norms: Tensor) -> Tensor:
    """1/‖W(0)‖ (E, layers); NaN (a relative change left empty) for a matrix that starts at 0."""
    return relative(torch.ones_like(norms), norms)


@lru_cache
def _columns(prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}{kind}/{k}" for kind in ("", "_rel") for k in names)


def _per_layer(names: tuple[str, ...], prefix: str, change: Tensor, inverse: Tensor) -> Values:
    return dict(zip(_columns(prefix, names), (*change.unbind(1), *(change * inverse).unbind(1))))


def _change_by_layer(s: Snapshot, memory: Memory, norm: Callable[[Tensor], Tensor],
                     prefix: str) -> tuple[Values, Memory, Params]:
    """<prefix>/<name> norm(W(t) − W(0)) and <prefix>_rel/<name> (÷ norm(W(0)), kept from the first row) per
    weight matrix; also the matrices' changes."""
    changes = weight_matrices(s.changes())
    if not memory:
        start = weight_matrices(s.trainable(s.params0)).values()
        memory = {"inverse_norm0": _inverse(torch.stack([norm(w) for w in start], 1))}
    change = torch.stack([norm(d) for d in changes.values()], 1)  # (E, layers)
    return _per_layer(tuple(changes), prefix, change, memory["inverse_norm0"]), memory, changes


def layer_change(s: Snapshot, memory: Memory) -> tuple[Values, Memory]:
    """layer_change/<name> ‖W(t) − W(0)‖_F, layer_change_rel/<name> (÷ ‖W(0)‖_F), neuron_change_max."""
    values, memory, changes = _change_by_layer(s, memory, torch.linalg.matrix_norm, "layer_change")
    name = next(iter(weight_matrices(s.params)))  # the first layer, trained or not
    first = changes.get(name, torch.zeros_like(s.params[name]))  # (E, m, d): row j is neuron j's move
    values["neuron_change_max"] = torch.linalg.vector_norm(first, dim=2).amax(1)
    return values, memory


def layer_change_spec(s: Snapshot, memory: Memory) -> tuple[Values, Memory]:
    """layer_change_spec/<name> ‖W(t) − W(0)‖₂ and layer_change_spec_rel/<name> (÷ ‖W(0)‖₂); exact (SVD)."""
    values, memory, _ = _change_by_layer(s, memory, _spectral, "layer_change_spec")
    return values, memory


def activation_flips(s: Snapshot, memory: Memory) -> tuple[Values, Memory]:
    """activation_flips/<l>: the fraction of (probe sample, unit) pairs of hidden layer l (1 = the first) whose
    pre-activation sign differs from θ_0's."""
    signs = [torch.sign(z) for z in s.model.preactivations(s.params, s.probe()[0])]  # (E, N, units) each
    layers = _layers(len(signs))
    if not memory:
        memory = dict(zip(layers, signs))
    return {f"activation_flips/{layer}": (sign != memory[layer]).sum((1, 2), dtype=s.x.dtype)
            / (sign.shape[1] * sign.shape[2]) for layer, sign in zip(layers, signs)}, memory


@lru_cache
def _layers(count: int) -> tuple[str, ...]:
    return tuple(str(l + 1) for l in range(count))


def _kinked_hidden_units(objective, task) -> str | None:
    activation = objective.model.activation
    if activation is None or activation.smooth:
        return "needs hidden relu or abs units (model=two_layer or mlp with model.activation=relu or abs)"
    return None


def _trained_matrix(objective, task) -> str | None:
    shapes = objective.model.param_shapes
    if any(len(shapes[k]) == 2 for k in objective.trainable):
        return None
    return "needs a trained weight matrix (model.train_layers names none)"


MOVEMENT: dict[str, Metric] = {
    "layer_change": Metric(layer_change, _trained_matrix, remembers=True),
    "layer_change_spec": Metric(layer_change_spec, _trained_matrix, heavy=True, remembers=True),
    "activation_flips": Metric(activation_flips, _kinked_hidden_units, remembers=True),
}
