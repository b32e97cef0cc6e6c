"""Running attacks whose signals come from the model itself: label-only queries and gradients.

Most classifier attacks score :class:`~miaudit.classifier.outputs.ClassifierOutputs` from one forward pass.
Label-only robustness attacks (``augmentation_robustness``, ``noise_robustness``,
``boundary_distance``) query the model on perturbed inputs, and white-box attacks
(``gradient_norm``, ``gradient_features``) need its parameters; such attacks have a class attribute
``signal_type`` ("label_only" or "whitebox") and a method ``signal_request()``. This module
computes their signals for the target and for every shadow model with the same request, builds
``AttackReference(shadow=ShadowSignals(...))``, fits and scores::

    from miaudit.classifier.queried import ShadowModel, run_queried_attacks
    shadow = [ShadowModel(model_k, data_k, membership_k) for ...]   # each shadow model on its own examples
    results = run_queried_attacks([("bd", create_attack("boundary_distance", max_queries=200))],
                                  target_model, audited_dataset, shadow=shadow)
    results[0].scores, results[0].cost       # (n,) scores; queries per example, seconds

The target may be a torch module or ``TorchClassifierTarget`` (every attack), or any label-only
target (``BlackBoxTarget(fn, output="labels")``, ``SklearnTarget``, a callable returning labels:
label-only attacks only). Signals shared by several attacks with identical requests are computed once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.classifier.reference import AttackReference
from miaudit.classifier.signals.gradients import gradient_signals
from miaudit.classifier.signals.label_only import label_only_signals
from miaudit.classifier.signals.shadow import ShadowSignals
from miaudit.data.datasets import ArrayDataset
from miaudit.errors import ConfigError, DataError
from miaudit.utils.logs import progress as progress_bar

#: signal type -> the function computing such signals of a model on ``(x, y)``
SIGNAL_FUNCTIONS: dict[str, Callable[..., Any]] = {"label_only": label_only_signals, "whitebox": gradient_signals}


@runtime_checkable
class QueriedAttack(Protocol):
    """What an attack scored on signals computed from the model declares (label-only and white-box attacks)."""

    signal_type: ClassVar[str]  # a key of SIGNAL_FUNCTIONS

    def signal_request(self) -> dict[str, Any]:
        """Keyword arguments of the signal function, from the attack's hyper-parameters."""
        ...


def signal_type(attack: Attack | type[Attack]) -> str | None:
    """"label_only" / "whitebox" for attacks scored on signals computed from the model, else None."""
    return getattr(attack, "signal_type", None)


@dataclass
class ShadowModel:
    """A shadow model, the examples it is scored on, and ``membership`` ``(n,)`` (True = it trained on them)."""

    model: Any
    data: ArrayDataset
    membership: np.ndarray

    def __post_init__(self) -> None:
        self.membership = np.asarray(self.membership, dtype=bool)
        if self.membership.shape != (len(self.data),):
            raise DataError(f"shadow membership has shape {self.membership.shape}, expected ({len(self.data)},)")


def compute_signals(attack: Attack, model: Any, data: ArrayDataset, *, progress: bool = False) -> Any:
    """The signals ``attack`` scores (``LabelOnlySignals`` or ``GradientSignals``) of ``model`` on ``data``."""
    kind = signal_type(attack)
    if kind not in SIGNAL_FUNCTIONS or not isinstance(attack, QueriedAttack):
        raise ConfigError(f"attack {attack.name!r} scores ClassifierOutputs from one forward pass; use "
                          "target.outputs(data) for it, not miaudit.classifier.queried")
    return SIGNAL_FUNCTIONS[kind](model, data.x, data.y, progress=progress, **attack.signal_request())


def shadow_signals(attack: Attack, shadow: Sequence[ShadowModel], *, progress: bool = False) -> ShadowSignals:
    """Signals of every shadow model on its own examples, computed with ``attack``'s request."""
    signals = [compute_signals(attack, s.model, s.data) for s in
               progress_bar(shadow, desc=f"{attack.name} shadow signals", enabled=progress, unit="model")]
    return ShadowSignals(signals, [s.membership for s in shadow])


@dataclass
class QueriedScores:
    """One attack's scores ``(n,)`` on the audited examples, its target signals and what it cost.

    ``seconds``: signal computation (target and shadow models, unless shared with an earlier attack)
    plus fit and score. ``cost``: the target signals' cost (queries per example, seconds) and the
    shadow signals' total seconds.
    """

    key: str
    attack: Attack
    scores: np.ndarray
    signals: Any
    seconds: float
    cost: dict[str, Any] = field(default_factory=dict)


def run_queried_attacks(attacks: Sequence[tuple[str, Attack]], target: Any, audited: ArrayDataset, *,
                        shadow: Sequence[ShadowModel] = (), progress: bool = False,
                        shadow_cache: dict[tuple[str, str], ShadowSignals] | None = None) -> list[QueriedScores]:
    """Compute signals, fit (on ``shadow`` when given) and score each ``(key, attack)`` on ``audited``.

    ``shadow_cache``: the shadow models' signals by request, shared by calls that attack several
    targets with the same shadow models (filled here; a request found there is not computed again).
    """
    cache: dict[tuple[str, str], tuple[Any, ShadowSignals | None, float]] = {}
    shadow_cache = {} if shadow_cache is None else shadow_cache
    results = []
    for key, attack in attacks:
        kind = signal_type(attack)
        if kind not in SIGNAL_FUNCTIONS or not isinstance(attack, QueriedAttack):
            raise ConfigError(f"attack {key!r} ({attack.name}) does not compute its signals from the model; run it on "
                              "ClassifierOutputs instead")
        if attack.needs_reference == "shadow" and not shadow:
            raise DataError(f"attack {key!r} learns from shadow models; give shadow=[ShadowModel(...), ...]")
        start = time.perf_counter()
        request = (kind, repr(sorted(attack.signal_request().items())))
        if request not in cache:
            target_signals = compute_signals(attack, target, audited, progress=progress)
            shadow_part = None
            if shadow:
                if request not in shadow_cache:
                    shadow_cache[request] = shadow_signals(attack, shadow, progress=progress)
                shadow_part = shadow_cache[request]
            shadow_seconds = sum(s.seconds for s in shadow_part.signals) if shadow_part else 0.0
            cache[request] = (target_signals, shadow_part, shadow_seconds)
        target_signals, shadow_part, shadow_seconds = cache[request]
        reference = AttackReference(shadow=shadow_part)  # type: ignore[arg-type]  # ShadowSignals, not ShadowData
        scores = attack.fit(reference).score(target_signals)
        cost = {"target": target_signals.cost(), "shadow_seconds": round(shadow_seconds, 3),
                "n_shadow_models": len(shadow)}
        results.append(QueriedScores(key, attack, scores, target_signals, time.perf_counter() - start, cost))
    return results


__all__ = ["QueriedScores", "SIGNAL_FUNCTIONS", "ShadowModel", "compute_signals", "run_queried_attacks",
           "shadow_signals", "signal_type"]
