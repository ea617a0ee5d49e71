"""Models: a registry from ``model.name`` to (config dataclass, model class), and :func:`build_model`."""
from __future__ import annotations

import dataclasses
from typing import Any

from dynamics_bench.config import choice, parse_section
from dynamics_bench.models.base import Model
from dynamics_bench.models.deep_linear import DeepLinear, DeepLinearConfig
from dynamics_bench.models.mlp import MLP, MLPConfig
from dynamics_bench.models.two_layer import TwoLayer, TwoLayerConfig

MODELS: dict[str, tuple[type, type[Model]]] = {
    "deep_linear": (DeepLinearConfig, DeepLinear),
    "two_layer": (TwoLayerConfig, TwoLayer),
    "mlp": (MLPConfig, MLP),
}


def build_model(section: dict[str, Any], *, input_dim: int, output_dim: int) -> Model:
    """Validate the plain dict of the ``model`` config group (with "name") and build the model.

    Raises ConfigError naming the offending ``model.*`` key before any tensor is made.
    """
    name = choice("model.name", section.get("name"), MODELS)
    config_cls, model_cls = MODELS[name]
    kwargs = dataclasses.asdict(parse_section(config_cls, section, "model"))
    del kwargs["name"]
    return model_cls(**kwargs, input_dim=input_dim, output_dim=output_dim)
