"""One registry maps attack names to classes, with each attack's taxonomy.

Attacks register with :func:`register`; every module under ``miaudit.attacks`` is imported on first
use, so adding an attack is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from miaudit.attacks.base import Attack
from miaudit.errors import ConfigError

_REGISTRY: dict[str, type[Attack]] = {}
_LOADED = False


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: add ``cls`` under ``cls.name`` (names are unique)."""
    for attr in ("name", "target_kind", "access", "citation"):
        if not hasattr(cls, attr):
            raise TypeError(f"attack class {cls.__qualname__} must define {attr}")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise TypeError(f"attack name {cls.name!r} is registered twice ({existing.__qualname__}, {cls.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import miaudit.attacks as package

    for info in pkgutil.walk_packages(package.__path__, prefix="miaudit.attacks."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # an optional extra is missing: its attacks are simply absent
            missing = getattr(exc, "name", None) or ""
            if missing.split(".")[0] in {"transformers", "tokenizers", "opacus", "ray", "safetensors"}:
                continue
            raise
    _LOADED = True


def attack_names(*, target_kind: str | None = None) -> list[str]:
    _load_all()
    return sorted(n for n, c in _REGISTRY.items() if target_kind is None or c.target_kind == target_kind)


def get_attack_class(name: str) -> type[Attack]:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown attack {name!r}; run 'miaudit list attacks' to see the "
                          f"{len(_REGISTRY)} registered names")
    return _REGISTRY[name]


def create_attack(name: str, **params: Any) -> Attack:
    """Instantiate attack ``name``; unknown parameters are a :class:`ConfigError` naming the allowed ones."""
    cls = get_attack_class(name)
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"attack {name!r} has no parameter {unknown[0]!r}; allowed: "
                          f"{', '.join(allowed) or '(none)'}")
    return cls(**params)


def describe(cls: type[Attack]) -> dict[str, Any]:
    """The taxonomy row shown by ``miaudit list attacks``."""
    return {
        "name": cls.name,
        "target_kind": cls.target_kind,
        "access": cls.access,
        "needs_reference": cls.needs_reference,
        "needs_reference_models": cls.needs_reference in ("shadow", "reference-pool"),
        "params": cls.param_names(),
        "citation": cls.citation,
    }


def list_attacks(*, target_kind: str | None = None) -> list[dict[str, Any]]:
    return [describe(get_attack_class(n)) for n in attack_names(target_kind=target_kind)]
