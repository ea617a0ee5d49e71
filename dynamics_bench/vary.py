"""Sweeps inside one batched run: ``ensemble.vary={key: [values], ...}``.

The members are the Cartesian product of the values (the first key slowest) times ``ensemble.size`` seeds: member
c·E + k is seed k of combination c, started from seed ``seed·E + k`` exactly as member k of the multirun job
whose overrides are combination c (E = ensemble.size, the seeds per combination). Each combination's config is
that job's config (:meth:`Sweep.config`), so every value is validated by the schema its key has in any run, and
the experiment builds each combination's init model, trainer schedule and metric settings from it
(:meth:`Sweep.per_combination`). Only the keys in :data:`VARIABLE` may vary: those that change a member's start,
its step size, its stopping level or a metric's reference, never what the batch shares (data, model shape,
number of steps).
"""
from __future__ import annotations

import copy
import itertools
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

from dynamics_bench.config import ConfigError, require

# key -> the runs it applies to (for the error message); the model's keys apply where its init reads them
VARIABLE: dict[str, str] = {
    "trainer.lr": "trainer=gd or sgd",
    "model.init_scale": "any model",
    "model.init_product": "model=deep_linear model.init=imbalanced",
    "model.init_imbalance": "model=deep_linear model.init=imbalanced",
    "model.init_offset": "model=deep_linear model.init=centre_stable",
    "model.init_angle": "model=two_layer model.init=near_teacher",
    "model.init_mode_strength": "model=deep_linear model.init=decoupled",
    "metrics.loss_floor": "the lojasiewicz metric",
    "trainer.target_loss": "any trainer",
}
KEY = "ensemble.vary"

T = TypeVar("T")


def _allowed() -> str:
    return "ensemble.vary takes only " + ", ".join(f"{k} ({where})" for k, where in VARIABLE.items())


def label(value: Any) -> str:
    """A value as an override writes it: 0.01, null, [1,2]."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Sweep:
    """The varied keys with their values (in the order given) and the seeds per combination. Without
    ensemble.vary there is one combination, {}, and the members are the seeds."""

    values: dict[str, list[Any]]
    seeds: int  # ensemble.size
    combinations: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        points = itertools.product(*self.values.values())  # the first key slowest, as Hydra's multirun jobs
        object.__setattr__(self, "combinations", [dict(zip(self.values, p)) for p in points])

    @property
    def keys(self) -> list[str]:
        return list(self.values)

    @property
    def size(self) -> int:
        """Members in the batch: combinations × seeds."""
        return len(self.combinations) * self.seeds

    def members(self, combination: int) -> range:
        return range(combination * self.seeds, (combination + 1) * self.seeds)

    def per_member(self, per_combination: list[T]) -> list[T]:
        """Each combination's item repeated for its seeds: one per member."""
        return [item for item in per_combination for _ in range(self.seeds)]

    def member_seeds(self, seed: int) -> list[int]:
        """Member c·E + k's init seed: seed·E + k, as member k of combination c's multirun job."""
        return [seed * self.seeds + k for _ in self.combinations for k in range(self.seeds)]

    def member_values(self) -> list[dict[str, Any]]:
        """The varied values of each member, keyed as a multirun's override columns (trainer.lr, ...)."""
        return self.per_member(self.combinations)

    def name(self, combination: int) -> str:
        """The combination as overrides: trainer.lr=0.01,model.init_scale=0.1."""
        return ",".join(f"{k}={label(v)}" for k, v in self.combinations[combination].items())

    def config(self, plain: dict[str, Any], combination: int) -> dict[str, Any]:
        """The config of combination's multirun job: `plain` with its values set and no ensemble.vary."""
        out = copy.deepcopy(plain)
        out.setdefault("ensemble", {})["vary"] = None
        for key, value in self.combinations[combination].items():
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
        return out

    def per_combination(self, plain: dict[str, Any], build: Callable[[dict[str, Any]], T], section: str) -> list[T]:
        """build(config) for each combination's config, built once per distinct set of values of the varied keys
        in `section` (a model, say, only once per combination of the model keys' values)."""
        built: dict[str, T] = {}
        out = []
        for c, combination in enumerate(self.combinations):
            mine = label({k: v for k, v in combination.items() if k.startswith(section + ".")})
            if mine not in built:
                built[mine] = build(self.config(plain, c))
            out.append(built[mine])
        return out

    @contextmanager
    def naming(self) -> Iterator[None]:
        """A ConfigError on a varied key re-raised as one on ensemble.vary.<key> (the values came from there),
        naming its values and the error."""
        try:
            yield
        except ConfigError as err:
            key = next((k for k in self.values if err.key == k or err.key.startswith((k + ".", k + "["))), None)
            if key is None:
                raise
            raise ConfigError(f"{KEY}.{key}", self.values[key], f"{err.key}={err.value!r}: {err.allowed}") from err


def parse_vary(value: Any, seeds: int) -> Sweep:
    """ensemble.vary (null, or {key: non-empty list of distinct values}) with ensemble.size seeds per combination.
    Checks the keys and the lists; the values themselves are checked where each combination is built."""
    if value is None:
        return Sweep({}, seeds)
    require(isinstance(value, dict), KEY, value, "must be a mapping {key: [values]}; " + _allowed())
    for key, values in value.items():
        require(key in VARIABLE, f"{KEY}.{key}", values, "cannot vary inside a run: " + _allowed())
        require(isinstance(values, list) and len(values) > 0, f"{KEY}.{key}", values,
                "must be a non-empty list of values, e.g. [0.01,0.05]")
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise ConfigError(f"{KEY}.{key}", values, f"lists {label(repeated[0])} twice (its members would be "
                              "trained twice)")
    return Sweep(dict(value), seeds)
