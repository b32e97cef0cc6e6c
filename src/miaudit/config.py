"""Strict YAML configuration: dataclasses filled from ``yaml.safe_load`` output.

Unknown keys, wrong types and bad choices are :class:`ConfigError`\\ s that name the key, what was
given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from miaudit.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping of keys to values at the top level")
    return data


def type_name(tp: Any) -> str:
    """A type as a config user reads it: ``float``, ``list[int] | null``, ``'out' | 'all'``."""
    origin = get_origin(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(o) for o in get_args(tp))
    if origin is Literal:
        return " | ".join(map(repr, get_args(tp)))
    if origin in (list, tuple, Sequence):
        return f"list[{type_name((get_args(tp) or (Any,))[0])}]"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against type ``tp`` strictly (a string is not a number or a boolean; an int is
    accepted for a float), converted where the type asks (float, tuple, dataclass); a :class:`ConfigError`
    that starts with ``where`` otherwise. A ``Sequence[...]`` keeps the list or tuple it was given."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_type, *rest) = get_args(tp) or (Any,)
        items = [convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or (origin is Sequence and isinstance(value, tuple)) else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_type, value_type = get_args(tp) or (Any, Any)
        return {convert(k, key_type, where): convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:  # NumPy integers too (from Python callers); YAML gives plain ints
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(fields))}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) to plain JSON/YAML-able values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


__all__ = ["convert", "from_dict", "load_yaml", "refuse_nested_seed", "resolved_without_seed", "to_dict", "type_name"]


def refuse_nested_seed(data: dict[str, Any], section: str) -> None:
    """Refuse ``<section>.seed``: the top-level ``seed`` derives every model's seed (one seed, one run)."""
    sub = data.get(section)
    if isinstance(sub, dict) and "seed" in sub:
        raise ConfigError(f"config.{section}.seed: remove it; the top-level 'seed' derives every model's seed")


def resolved_without_seed(config: Any, section: str) -> dict[str, Any]:
    """``to_dict(config)`` without ``<section>.seed`` (the config as written to ``config.yaml``)."""
    resolved = to_dict(config)
    resolved[section].pop("seed", None)
    return resolved
