"""Strict YAML configuration: dataclasses filled from ``yaml.safe_load`` output.

Unknown keys, wrong types and bad choices are :class:`ConfigError`\\ s that name the key, what was
given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from miaudit.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: a config dataclass type filled by :func:`from_dict`
T = TypeVar("T", bound="DataclassInstance")


#: largest config file read (bytes)
MAX_CONFIG_BYTES = 4 * 2**20
#: most values (mappings, lists and scalars) a config may hold once YAML anchors and aliases are expanded
MAX_CONFIG_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops once merge keys (``<<: *anchor``) have copied too many entries."""

    merged = 0

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        super().flatten_mapping(node)
        self.merged += len(node.value)
        if self.merged > MAX_CONFIG_NODES:
            raise _TooLarge()


class _TooLarge(Exception):
    pass


def _expanded_size(data: Any) -> int:
    """Number of values in ``data`` with every alias expanded, stopping past :data:`MAX_CONFIG_NODES`.

    Shared sub-trees (YAML aliases) are counted once per use but measured once; a structure that
    contains itself raises ``_TooLarge``.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        obj, done = stack.pop()
        if not isinstance(obj, (dict, list)):
            continue
        ident = id(obj)
        children = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        if done:
            active.discard(ident)
            total = 1 + sum(sizes.get(id(c), 1) if isinstance(c, (dict, list)) else 1 for c in children)
            sizes[ident] = min(total, MAX_CONFIG_NODES + 1)
            continue
        if ident in sizes:
            continue
        if ident in active:
            raise _TooLarge("refers to itself")
        active.add(ident)
        stack.append((obj, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in sizes)
    return sizes.get(id(data), 1)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely; a one-line :class:`ConfigError` for a file that is missing, not UTF-8,
    not valid YAML (with line and column), too large, or an alias bomb (expanded past
    :data:`MAX_CONFIG_NODES` values)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {path.stat().st_size / 2**20:.1f} MiB; a config is at most "
                          f"{MAX_CONFIG_BYTES // 2**20} MiB (put data in files and name them in the config)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} on line "
                          f"{line}); save it with UTF-8 encoding") from None
    loader = _BoundedLoader(text)
    try:
        data = loader.get_single_data()
        too_large = _expanded_size(data) > MAX_CONFIG_NODES
    except yaml.MarkedYAMLError as exc:
        def at(mark: Any) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"

        mark = exc.problem_mark or exc.context_mark
        text = f"{at(mark)}: " if mark is not None else ""
        text += exc.problem or "syntax error"
        if exc.context:
            text += f" ({exc.context}" + (f" that starts at {at(exc.context_mark)}" if exc.context_mark else "") + ")"
        raise ConfigError(f"config file {path} is not valid YAML: {text}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except (_TooLarge, RecursionError):
        too_large = True
    finally:
        loader.dispose()
    if too_large:
        raise ConfigError(f"config file {path} expands to more than {MAX_CONFIG_NODES} values (YAML anchors and "
                          "aliases that copy each other, or nesting that refers to itself); refusing to read it")
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
    that starts with ``where`` otherwise. A ``Sequence[...]`` keeps the list or tuple it was given. A
    dataclass with a ``NAME_SHORTHAND`` field name takes a bare string as that field (``- loss`` in a list
    of attacks reads as ``- {name: loss}``)."""
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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        shorthand = getattr(tp, "NAME_SHORTHAND", None)
        if shorthand is not None and isinstance(value, str):
            value = {shorthand: value}
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
        if isinstance(value, os.PathLike):  # a path from a Python caller (pathlib.Path) for a path field
            return os.fspath(value)
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
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], fields)}; allowed keys are "
                          f"{', '.join(sorted(fields))}")
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
