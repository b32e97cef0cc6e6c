"""The defense registry and the checks that run before any training.

:func:`build_chain` turns a list of ``(name, params)`` components into a :class:`DefenseChain`:
training plugins (ordered by stage) and output post-processors (in the given order). It rejects,
with one-line :class:`~miaudit.defenses.base.DefenseError`\\ s: unknown names and parameters,
repeated defenses, two defenses that both replace the cross-entropy, two training procedures,
DP-SGD / LADP combined with a defense that breaks their per-example accounting, a post-processor
that needs probabilities after ``label_only``, defenses that need reference data when there is
none, and each defense's own checks (an unreachable epsilon, for one).
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any

from miaudit.attacks.base import access_allows
from miaudit.defenses.base import DefenseContext, DefenseError, OutputDefense, TrainingDefense, _Defense
from miaudit.errors import did_you_mean

_REGISTRY: dict[str, type[_Defense]] = {}
_MODULES = ("regularizers", "procedures", "dp", "outputs")
#: name for "no defense" in configs
NONE = "none"


def register(cls: type[_Defense]) -> type[_Defense]:
    """Class decorator: add ``cls`` under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"defense name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(f"miaudit.defenses.{module}")


def defense_names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_defense_class(name: str) -> type[_Defense]:
    _load()
    if name not in _REGISTRY:
        raise DefenseError(f"unknown defense {name!r}{did_you_mean(name, [NONE, *_REGISTRY])}; choose one of {NONE}, "
                           f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_defense(name: str, params: dict[str, Any] | None = None) -> _Defense:
    """Instantiate defense ``name``; unknown parameters are an error naming the allowed ones."""
    cls = get_defense_class(name)
    params = dict(params or {})
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise DefenseError(f"defense {name!r} has no parameter {unknown[0]!r}{did_you_mean(unknown[0], allowed)}; "
                           f"allowed: {', '.join(allowed) or '(none)'}")
    return cls(**params)


def describe(name: str) -> dict[str, Any]:
    """Name, kind, parameters with defaults, citation (for ``miaudit list`` style output and docs)."""
    import inspect

    cls = get_defense_class(name)
    sig = inspect.signature(cls.__init__)
    return {"name": name, "kind": "training" if issubclass(cls, TrainingDefense) else "output",
            "params": {p: sig.parameters[p].default for p in cls.param_names()},
            "needs_reference": bool(create_defense(name).needs_reference), "citation": cls.citation}


def list_defenses() -> list[dict[str, Any]]:
    """One row per registered defense, by name: :func:`describe` (``miaudit list defenses``)."""
    return [describe(name) for name in defense_names()]


@dataclass
class DefenseChain:
    """One composed defense: training plugins (prototypes, copied per model) and output post-processors."""

    label: str
    training: list[TrainingDefense] = field(default_factory=list)
    outputs: list[OutputDefense] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def plugins(self) -> list[TrainingDefense]:
        """Fresh plugin instances for one model (state never crosses models)."""
        return [copy.deepcopy(p) for p in self.training]

    def postprocessors(self) -> list[OutputDefense]:
        """Fresh, unfitted post-processors for one model."""
        return [copy.deepcopy(p) for p in self.outputs]

    @property
    def output_access(self) -> str:
        """Access level the defended model gives ("logits" without post-processors)."""
        return self.outputs[-1].output_access if self.outputs else "logits"

    def training_key(self) -> list[Any]:
        """What determines the trained weights (chains with equal keys share trained models)."""
        return [p.fingerprint() for p in self.training]

    def components(self) -> list[dict[str, Any]]:
        return [{"name": d.name, "kind": "training" if isinstance(d, TrainingDefense) else "output",
                 "params": d.get_params(), "citation": d.citation} for d in [*self.training, *self.outputs]]


def build_chain(components: list[tuple[str, dict[str, Any]]], context: DefenseContext, *,
                label: str = "defense") -> DefenseChain:
    """Create, bind and check every component; raise :class:`DefenseError` for anything that cannot run.

    ``components``: ``[(name, params), ...]``; an empty list (or only ``"none"``) is the undefended model.
    """
    where = f"defense {label!r}"
    named = [(n, p) for n, p in components if n != NONE]
    if len(named) != len(components) and named:
        raise DefenseError(f"{where}: '{NONE}' cannot be combined with other defenses")
    names = [n for n, _ in named]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DefenseError(f"{where}: {repeated[0]!r} appears twice; give it once")
    defenses = []
    for name, params in named:
        try:
            defenses.append(create_defense(name, params))
        except DefenseError as exc:
            raise DefenseError(f"{where}: {exc}") from None
    training = [d for d in defenses if isinstance(d, TrainingDefense)]
    outputs = [d for d in defenses if isinstance(d, OutputDefense)]
    _check_training(training, where)
    _check_outputs(outputs, where)
    notes_before = len(context.notes)
    for d in defenses:
        if isinstance(d, TrainingDefense):
            d.bind(context)
        try:
            d.check(context)
        except DefenseError as exc:
            raise DefenseError(f"{where}: {exc}") from None
    notes = context.notes[notes_before:]
    del context.notes[notes_before:]
    return DefenseChain(label, sorted(training, key=lambda d: d.stage), outputs, notes)


def _check_training(training: list[TrainingDefense], where: str) -> None:
    replacing = [d.name for d in training if d.loss_role == "replaces"]
    if len(replacing) > 1:
        raise DefenseError(f"{where}: {replacing[0]!r} and {replacing[1]!r} both replace the cross-entropy loss; "
                           "keep one of them")
    procedures = [d.name for d in training if d.stage == 1]
    if len(procedures) > 1:
        raise DefenseError(f"{where}: {procedures[0]!r} and {procedures[1]!r} both replace the training procedure; "
                           "keep one of them")
    private = [d.name for d in training if d.stage == 3]
    if len(private) > 1:
        raise DefenseError(f"{where}: {private[0]!r} and {private[1]!r} are both private optimisers; keep one")
    if private:
        broken = [d.name for d in training if d.stage != 3 and not d.dp_compatible]
        if broken:
            raise DefenseError(f"{where}: {broken[0]!r} cannot run under {private[0]!r}: it uses data or loss terms "
                               "outside the clipped per-example gradients, which the privacy accounting does not "
                               "cover (for weight decay under DP, set training.weight_decay instead of 'l2')")


def _check_outputs(outputs: list[OutputDefense], where: str) -> None:
    access = "logits"
    for d in outputs:
        if not access_allows(access, d.min_access):
            raise DefenseError(f"{where}: {d.name!r} needs {d.min_access} outputs but comes after a post-processor "
                               f"that returns {access}; put it earlier or drop it (e.g. MemGuard cannot defend a "
                               "label-only target)")
        access = d.output_access


__all__ = ["NONE", "DefenseChain", "build_chain", "create_defense", "defense_names", "describe",
           "get_defense_class", "list_defenses", "register"]
