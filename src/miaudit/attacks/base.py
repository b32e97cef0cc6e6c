"""The attack interface shared by classifier, language-model, encoder and text-generator attacks.

scikit-learn conventions: ``__init__`` stores hyper-parameters only (keyword arguments, stored
under the same names), learned state ends in ``_``, ``fit`` returns ``self``. ``score`` returns one
finite float per example, **higher = more likely a member**, and is validated here once for all
attacks.

An attack declares, as class attributes, what pipelines need to know about it without looking up
its name:

- its hyper-parameters: types from the ``__init__`` annotations (``Literal[...]`` for choices) and
  value ranges in ``param_constraints`` (:class:`Interval`, :class:`Check`; scikit-learn's
  ``_parameter_constraints`` idea). Every construction (``create_attack``, a config, plain Python)
  validates the given values before ``__init__`` runs: a wrong value is a one-line
  :class:`~miaudit.errors.ConfigError` naming attack, parameter, value and what is allowed, before any
  model is trained or queried;
- ``tunable``: hyper-parameters an audit may choose on held-out labelled data, with their default
  candidates (:meth:`candidates`);
- ``signals``: what it reads from the target's outputs (some need extra model passes);
- ``fit_input``: what ``fit`` receives (calibration documents, token counts of a reference corpus,
  shadow data, a reference pool, population outputs);
- :meth:`learned_state`: a small JSON-able summary of what ``fit`` learned.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_type_hints

import numpy as np

from miaudit.config import convert, type_name
from miaudit.errors import ConfigError, NotFittedError, SignalError
from miaudit.utils.jsonable import jsonable

TargetKind = Literal["classifier", "llm", "encoder", "text_generator", "multimodal"]
#: What an attack reads from the target, weakest first. A new access level is one entry here, in its place.
#: For language models: ``top-k log-probs`` = an API's log-probability of each observed token (and its k most
#: likely alternatives); ``probabilities`` / ``logits`` = the whole next-token distribution; ``white-box`` =
#: weights and gradients.
Access = Literal["label-only", "top-k log-probs", "probabilities", "logits", "embeddings", "white-box"]
ACCESS_LEVELS: tuple[str, ...] = get_args(Access)
#: the chain of output access, least to most informative: a target that gives one level gives every level
#: before it. ``embeddings`` stands apart (it serves only attacks that need embeddings).
ACCESS_ORDER: tuple[str, ...] = tuple(level for level in ACCESS_LEVELS if level != "embeddings")
#: what an attacker needs beyond the records it tests (its taxonomy, shown in reports): data from the
#: population (e.g. known non-members), shadow models, a pool of reference models trained on its own data,
#: a labelled calibration set, or a reference model (a second, independent model of the same kind)
ReferenceNeed = Literal["none", "population", "shadow", "reference-pool", "calibration", "reference-model"]
#: what ``fit`` receives: labelled calibration documents, token counts of a reference corpus, shadow models'
#: outputs (or signals) on their members and non-members, a pool of reference models, the target's outputs
#: on population data
FitInput = Literal["calibration", "token-counts", "shadow", "reference-pool", "population"]

A = TypeVar("A", bound="Attack")


# -- parameter declarations --------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """Numbers from ``low`` to ``high`` (None: unbounded); ``closed`` names the ends that belong.

    On a list-valued parameter it applies to every item; ``None`` (where the type allows it) passes.
    ``what`` names the quantity in messages ("a fraction", "a false-positive rate").
    """

    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"
    what: str = ""

    def allows(self, value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return all(self.allows(v) for v in value)
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        return ((self.low is None or value > self.low or (left and value == self.low))
                and (self.high is None or value < self.high or (right and value == self.high)))

    def describe(self, name: str) -> str:
        low = "" if self.low is None else f"{self.low:g} {'<=' if self.closed in ('both', 'left') else '<'} "
        high = "" if self.high is None else f" {'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        bound = f"{low}{name}{high}"
        return f"{self.what}, {bound}" if self.what else bound


@dataclass(frozen=True)
class Check:
    """A rule no type or range states: ``test(value)`` is True for allowed values, ``allowed`` says which."""

    test: Callable[[Any], bool]
    allowed: str

    def allows(self, value: Any) -> bool:
        return bool(self.test(value))

    def describe(self, name: str) -> str:
        return self.allowed


Constraint = Interval | Check


@dataclass(frozen=True)
class Param:
    """One hyper-parameter as declared: annotation, default, value constraint, default grid if tunable."""

    name: str
    type: Any
    default: Any
    constraint: Constraint | None = None
    grid: tuple[float, ...] | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-able row of ``miaudit list attacks``: name, type, default, allowed values, grid."""
        return {"name": self.name, "type": type_name(self.type), "default": jsonable(self.default),
                "allowed": self.constraint.describe(self.name) if self.constraint is not None else None,
                "grid": list(self.grid) if self.grid is not None else None}


class Attack:
    """Base class. Subclasses set the class attributes and implement ``_score`` (and ``_fit``)."""

    name: ClassVar[str]
    target_kind: ClassVar[TargetKind]
    access: ClassVar[Access]
    needs_reference: ClassVar[ReferenceNeed] = "none"
    citation: ClassVar[str]
    signals: ClassVar[tuple[str, ...]] = ()
    requires_fit: ClassVar[bool] = False
    #: what ``fit`` receives (empty: nothing; with ``requires_fit = False`` the data are optional)
    fit_input: ClassVar[tuple[FitInput, ...]] = ()
    #: value rules beyond the annotated type, by parameter name
    param_constraints: ClassVar[Mapping[str, Constraint]] = {}
    #: hyper-parameters an audit chooses on held-out labelled data unless given, with default candidates
    tunable: ClassVar[Mapping[str, tuple[float, ...]]] = {}

    def __new__(cls: type[A], *args: Any, **kwargs: Any) -> A:
        """Validate the hyper-parameters before ``__init__`` stores them (every way of building an attack)."""
        try:
            given = inspect.signature(cls.__init__).bind(None, *args, **kwargs).arguments
        except TypeError:
            return super().__new__(cls)  # an unknown or positional argument: __init__ raises the usual TypeError
        names = cls.param_names()
        for name, value in given.items():
            if name in names:
                cls.check_param(name, value)
        return super().__new__(cls)

    # -- parameters ---------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @classmethod
    def param_specs(cls) -> dict[str, Param]:
        """Every hyper-parameter with its annotated type, default, constraint and default grid."""
        if cls not in _SPECS:
            _SPECS[cls] = _param_specs(cls)
        return _SPECS[cls]

    @classmethod
    def check_param(cls, name: str, value: Any) -> None:
        """A one-line :class:`ConfigError` unless ``value`` has ``name``'s type and obeys its constraint."""
        specs = cls.param_specs()
        if name not in specs:
            raise ConfigError(f"attack {cls.name!r} has no parameter {name!r}; allowed: {', '.join(specs) or '(none)'}")
        spec = specs[name]
        where = f"attack {cls.name!r} parameter {name!r}"
        convert(value, spec.type, where)  # the config's strict type check: a string is not a number or a boolean
        if value is not None and spec.constraint is not None and not spec.constraint.allows(value):
            raise ConfigError(f"{where}: {value!r} is not allowed; allowed: {spec.constraint.describe(name)}")

    @classmethod
    def candidates(cls, param: str, signals: Any = None) -> np.ndarray:
        """Default candidates ``(g,)`` of tunable ``param``; attacks whose candidates depend on the signals
        (ACMIA's beta: the signals' grid) override this and fall back to ``tunable`` without signals."""
        if param not in cls.tunable:
            raise ConfigError(f"attack {cls.name!r} has no tunable parameter {param!r}; tunable: "
                              f"{', '.join(cls.tunable) or '(none)'}")
        return np.asarray(cls.tunable[param], dtype=np.float64)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given to ``__init__`` (round-trips: ``type(a)(**a.get_params())``)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- learning -----------------------------------------------------------------------------
    def fit(self, reference: Any) -> Attack:
        """Learn from reference data (``fit_input``: shadow / reference models, population, calibration)."""
        self._fit(reference)
        self.fitted_ = True
        return self

    def _fit(self, reference: Any) -> None:
        """Default: nothing to learn."""

    def fit_required(self) -> bool:
        """Whether this attack, with its parameters, must be fitted before it scores (``requires_fit``
        unless a parameter already holds what ``fit`` would learn)."""
        return self.requires_fit

    def check_is_fitted(self) -> None:
        if self.fit_required() and not getattr(self, "fitted_", False):
            raise NotFittedError(
                f"attack {self.name!r} learns from reference data: call fit(reference) before score(); "
                f"it needs {self.needs_reference} data")

    def learned_state(self) -> dict[str, Any]:
        """What the fitted attack learned that a reader needs to interpret its result: small and JSON-able
        (no per-example arrays; empty before ``fit``). The decision threshold is reported apart
        (:attr:`decision_threshold`)."""
        return self._learned_state() if getattr(self, "fitted_", False) else {}

    def _learned_state(self) -> dict[str, Any]:
        """Default: nothing beyond the decision threshold."""
        return {}

    # -- scoring ------------------------------------------------------------------------------
    def score(self, signals: Any) -> np.ndarray:
        """Membership scores of shape ``(n,)``, higher = more likely a member."""
        self.check_is_fitted()
        scores = np.asarray(self._score(signals), dtype=np.float64)
        if scores.ndim != 1:
            raise SignalError(f"attack {self.name!r} produced scores of shape {scores.shape}, expected (n,)")
        bad = ~np.isfinite(scores)
        if bad.any():
            raise SignalError(
                f"attack {self.name!r} produced {int(bad.sum())} non-finite scores (first at index "
                f"{int(np.flatnonzero(bad)[0])}); check the model's outputs for NaN/inf")
        return scores

    def _score(self, signals: Any) -> np.ndarray:
        raise NotImplementedError

    # -- decision -----------------------------------------------------------------------------
    @property
    def decision_threshold(self) -> float | None:
        """Score threshold learned on reference data (predict member when score >= it), if any."""
        return getattr(self, "threshold_", None)


def access_allows(given: str, needed: str) -> bool:
    """Whether a target with ``given`` access can serve an attack that needs ``needed`` (:data:`ACCESS_ORDER`;
    ``embeddings`` serves only ``embeddings``)."""
    if given == needed:
        return True
    if given not in ACCESS_ORDER or needed not in ACCESS_ORDER:
        return False
    return ACCESS_ORDER.index(given) >= ACCESS_ORDER.index(needed)


def check_access(attack: type[Attack] | Attack, given: str, target: str = "this target") -> None:
    """A one-line :class:`ConfigError` when ``attack`` needs more access than ``given``."""
    if not access_allows(given, attack.access):
        raise ConfigError(f"attack {attack.name!r} needs {attack.access} access but {target} gives {given}; "
                          "drop the attack or audit a target that exposes more of the model")


#: parameter declarations by attack class, read once
_SPECS: dict[type[Attack], dict[str, Param]] = {}


def _param_specs(cls: type[Attack]) -> dict[str, Param]:
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name in cls.param_names()]
    hints = get_type_hints(cls.__init__) if params else {}
    specs = {}
    for p in params:
        default = None if p.default is p.empty else p.default
        grid = tuple(float(v) for v in cls.candidates(p.name)) if p.name in cls.tunable else None
        specs[p.name] = Param(p.name, hints.get(p.name, Any), default, cls.param_constraints.get(p.name), grid)
    return specs
