"""One registry maps attack names to classes, with each attack's taxonomy.

Attacks register with :func:`register`; each model kind imports its ``attacks`` package when it is
loaded (:mod:`miaudit.kinds`, on first use of the registry), so adding an attack is adding a file
there. A name is unique within a target kind; two kinds may
share one (``loss`` exists for classifiers and for language models). Pass ``target_kind`` to pick;
without it, a shared name means the first kind of ``KIND_ORDER`` that has it (classifier first).
"""

from __future__ import annotations

from typing import Any

from miaudit.attacks.base import ACCESS_LEVELS, Attack
from miaudit.errors import ConfigError, did_you_mean

_REGISTRY: dict[tuple[str, str], type[Attack]] = {}  # (target_kind, name) -> class
#: which kind an unqualified shared name resolves to
KIND_ORDER = ("classifier", "llm", "encoder", "text_generator")


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: add ``cls`` under ``(cls.target_kind, cls.name)`` (unique per target kind)."""
    for attr in ("name", "target_kind", "access", "citation"):
        if not hasattr(cls, attr):
            raise TypeError(f"attack class {cls.__qualname__} must define {attr}")
    if cls.access not in ACCESS_LEVELS:
        raise TypeError(f"attack class {cls.__qualname__}: access {cls.access!r} is not one of "
                        f"{', '.join(ACCESS_LEVELS)}")
    key = (cls.target_kind, cls.name)
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not cls:
        raise TypeError(f"attack name {cls.name!r} is registered twice for {cls.target_kind} targets "
                        f"({existing.__qualname__}, {cls.__qualname__})")
    _REGISTRY[key] = cls
    return cls


def _load_all() -> None:
    from miaudit.kinds import load_kinds

    load_kinds()


def attack_names(*, target_kind: str | None = None) -> list[str]:
    _load_all()
    return sorted({n for k, n in _REGISTRY if target_kind is None or k == target_kind})


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def get_attack_class(name: str, target_kind: str | None = None) -> type[Attack]:
    """The class of attack ``name`` for ``target_kind`` (module doc: shared names without a kind)."""
    _load_all()
    kinds = {k: c for (k, n), c in _REGISTRY.items() if n == name}
    if not kinds:
        names = {n for (k, n) in _REGISTRY if target_kind is None or k == target_kind}
        raise ConfigError(f"unknown attack {name!r}{did_you_mean(name, names)}; run 'miaudit list attacks' to see the "
                          f"{len(_REGISTRY)} registered names")
    if target_kind is None:
        return kinds[min(kinds, key=_kind_rank)]
    if target_kind not in kinds:
        raise ConfigError(f"attack {name!r} is for {', '.join(sorted(kinds))} targets, not {target_kind}; run "
                          f"'miaudit list attacks --kind {target_kind}'")
    return kinds[target_kind]


def create_attack(name: str, *, target_kind: str | None = None, **params: Any) -> Attack:
    """Instantiate attack ``name`` (of ``target_kind``); an unknown parameter or a value of the wrong type
    or out of range is a :class:`ConfigError` naming what is allowed."""
    cls = get_attack_class(name, target_kind)
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"attack {name!r} has no parameter {unknown[0]!r}{did_you_mean(unknown[0], allowed)}; "
                          f"allowed: {', '.join(allowed) or '(none)'}")
    return cls(**params)


def describe(cls: type[Attack]) -> dict[str, Any]:
    """The taxonomy row shown by ``miaudit list attacks``: access, reference data, what ``fit`` takes, the
    signals read, and every parameter with its type, default, allowed values and grid (if tunable)."""
    return {
        "name": cls.name,
        "target_kind": cls.target_kind,
        "access": cls.access,
        "needs_reference": cls.needs_reference,
        "needs_reference_models": cls.needs_reference in ("shadow", "reference-pool"),
        "fit_input": list(cls.fit_input),
        "requires_fit": cls.requires_fit,
        "signals": list(cls.signals),
        "params": [spec.describe() for spec in cls.param_specs().values()],
        "citation": cls.citation,
    }


def list_attacks(*, target_kind: str | None = None) -> list[dict[str, Any]]:
    """One taxonomy row per registered attack (a name shared by two kinds gives two rows)."""
    _load_all()
    keys = sorted((n, _kind_rank(k), k) for k, n in _REGISTRY if target_kind is None or k == target_kind)
    return [describe(_REGISTRY[(k, n)]) for n, _, k in keys]
