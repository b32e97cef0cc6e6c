"""The attack interface shared by classifier, language-model, encoder and text-generator attacks.

scikit-learn conventions: ``__init__`` stores hyper-parameters only (keyword arguments, stored
under the same names), learned state ends in ``_``, ``fit`` returns ``self``. ``score`` returns one
finite float per example, **higher = more likely a member**, and is validated here once for all
attacks.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import numpy as np

from miaudit.errors import ConfigError, NotFittedError, SignalError

TargetKind = Literal["classifier", "llm", "encoder", "text_generator"]
Access = Literal["label-only", "top-k log-probs", "probabilities", "logits", "embeddings", "white-box"]
#: output access from least to most informative ("embeddings" stands apart). For language models:
#: ``top-k log-probs`` = an API's log-probability of each observed token (and its k most likely
#: alternatives); ``probabilities`` / ``logits`` = the whole next-token distribution; ``white-box`` =
#: weights and gradients. An attack runs on a target whose access is at least the attack's.
ACCESS_ORDER: tuple[str, ...] = ("label-only", "top-k log-probs", "probabilities", "logits", "white-box")
ReferenceNeed = Literal["none", "population", "shadow", "reference-pool", "calibration"]


class Attack:
    """Base class. Subclasses set the class attributes and implement ``_score`` (and ``_fit``)."""

    name: ClassVar[str]
    target_kind: ClassVar[TargetKind]
    access: ClassVar[Access]
    needs_reference: ClassVar[ReferenceNeed] = "none"
    citation: ClassVar[str]
    signals: ClassVar[tuple[str, ...]] = ()
    requires_fit: ClassVar[bool] = False

    # -- parameters ---------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given to ``__init__`` (round-trips: ``type(a)(**a.get_params())``)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- learning -----------------------------------------------------------------------------
    def fit(self, reference: Any) -> Attack:
        """Learn from reference data (shadow / reference models, population, calibration split)."""
        self._fit(reference)
        self.fitted_ = True
        return self

    def _fit(self, reference: Any) -> None:
        """Default: nothing to learn."""

    def check_is_fitted(self) -> None:
        if self.requires_fit and not getattr(self, "fitted_", False):
            raise NotFittedError(
                f"attack {self.name!r} learns from reference data: call fit(reference) before score(); "
                f"it needs {self.needs_reference} data")

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
