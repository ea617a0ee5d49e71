"""Config validation: typed dataclass schemas per config option, with errors a user can act on.

Each config option (``model=two_layer``, ``trainer=gd``, ...) owns a dataclass whose fields are the option's
public keys. :func:`parse_section` turns the plain dict Hydra composed into that dataclass, checking every key's
type; range checks live in each dataclass's ``__post_init__`` and raise :class:`ConfigError` through
:func:`require`. Nothing here touches torch: validation finishes before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin


ALLOW_INF = "allow_inf"
AllowInf = Annotated[float, ALLOW_INF]  # schema annotation: a float key that may also be inf


class ConfigError(ValueError):
    """A config value is invalid. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(key, value, allowed) unless ok."""
    if not ok:
        raise ConfigError(key, value, allowed)


def choice(key: str, value: Any, options: typing.Iterable[str]) -> str:
    """Check that value is one of options (e.g. a registry's keys) and return it."""
    options = list(options)
    require(value in options, key, value, "must be one of " + ", ".join(options))
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp)
        return f"a list of ({_type_name(inner)})"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a finite number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Return value converted to annotation tp, or raise ConfigError naming key."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:  # AllowInf: a float that may be ±inf (e.g. a threshold meaning "never")
        base, *marks = get_args(tp)
        if ALLOW_INF in marks and isinstance(value, float) and math.isinf(value):
            return value
        return _coerce(key, value, base)
    if origin is Literal:
        return choice(key, value, get_args(tp))
    if origin in (Union, types.UnionType):
        for arm in get_args(tp):
            try:
                return _coerce(key, value, arm)
            except ConfigError:
                continue
        raise ConfigError(key, value, "must be " + _type_name(tp))
    if origin is list:
        (inner,) = get_args(tp)
        require(isinstance(value, (list, tuple)), key, value, "must be " + _type_name(tp))
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is type(None):
        require(value is None, key, value, "must be null")
        return None
    if tp is bool:
        require(isinstance(value, bool), key, value, "must be true or false")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, value, "must be an integer")
        return value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, key, value, "must be a number")
        require(math.isfinite(value), key, value, "must be a finite number")
        return float(value)
    if tp is str:
        require(isinstance(value, str), key, value, "must be a string")
        return value
    raise TypeError(f"unsupported schema annotation {tp!r} for {key}")


T = typing.TypeVar("T")


def parse_section(schema: type[T], values: dict[str, Any], prefix: str) -> T:
    """Build dataclass `schema` from a plain dict, naming keys as ``prefix.key`` in errors.

    Unknown keys and wrongly typed values raise ConfigError; missing keys take the dataclass default.
    """
    hints = typing.get_type_hints(schema, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}"
        raise ConfigError(key, values[unknown[0]], "unknown key; allowed keys: " + ", ".join(fields))
    kwargs = {}
    for name, field in fields.items():
        if name in values:
            kwargs[name] = _coerce(f"{prefix}.{name}", values[name], hints[name])
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}.{name}", None, "is required")
    return schema(**kwargs)


def read_file(key: str, path: str, load: typing.Callable[[Path], T], what: str) -> T:
    """load(path) (a leading ~ expanded); whatever the reader raises on a truncated or foreign file becomes a
    ConfigError on `key`, saying it cannot be read as `what`, with the reader's first line of explanation."""
    try:
        return load(Path(path).expanduser())
    except Exception as err:  # noqa: BLE001 — readers raise anything from struct.error to UnpicklingError
        lines = str(err).strip().splitlines()  # the first line: torch's messages run to paragraphs
        reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        raise ConfigError(key, path, f"cannot be read as {what} ({reason})") from err


def positive(key: str, value: float | int | None, allow_none: bool = False, allow_inf: bool = False) -> None:
    """Require a finite value > 0 (or None / inf when allowed)."""
    if value is None and allow_none:
        return
    require(value is not None and value > 0, key, value, "must be > 0")
    require(allow_inf or math.isfinite(value), key, value, "must be finite")
