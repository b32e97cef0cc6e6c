"""Shadow models' signals of any type, for attacks whose signals are not :class:`ClassifierOutputs`.

:class:`miaudit.classifier.reference.ShadowData` holds each shadow model's ``ClassifierOutputs`` (one forward
pass). Label-only robustness signals (queries on perturbed inputs) and white-box gradient signals
need the model itself, so they come as :class:`~miaudit.classifier.signals.label_only.LabelOnlySignals` or
:class:`~miaudit.classifier.signals.gradients.GradientSignals`; :class:`ShadowSignals` holds those, one per
shadow model, with the same membership convention, and goes into
``AttackReference(shadow=ShadowSignals(...))``.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from miaudit.attacks.shadow import ShadowSet
from miaudit.errors import DataError, SignalError


class ShadowSignals(ShadowSet[Any]):
    """``signals[k]``: shadow model k's signals on its own examples; ``membership[k]`` ``(n_k,)`` True = trained on."""


def check_signals(signals: Any, expected: type, attack: str) -> None:
    """SignalError unless ``signals`` is an ``expected`` instance (e.g. refuse ClassifierOutputs)."""
    if not isinstance(signals, expected):
        raise SignalError(f"attack {attack!r} scores {expected.__name__} computed from the model itself, got "
                          f"{type(signals).__name__}; compute them with "
                          "miaudit.classifier.queried.compute_signals(attack, model, data) or run the attack with "
                          "miaudit.classifier.queried.run_queried_attacks")


@overload
def shadow_from_reference(reference: Any, expected: type, attack: str, *, required: Literal[True]) -> ShadowSignals:
    ...


@overload
def shadow_from_reference(reference: Any, expected: type, attack: str, *, required: bool) -> ShadowSignals | None:
    ...


def shadow_from_reference(reference: Any, expected: type, attack: str, *, required: bool) -> ShadowSignals | None:
    """The ``ShadowSignals`` of ``expected`` signals in ``reference.shadow``; None if absent and not ``required``."""
    shadow = getattr(reference, "shadow", None)
    if shadow is None:
        if required:
            raise DataError(f"attack {attack!r} learns from shadow models: give "
                            f"AttackReference(shadow=ShadowSignals(...)) holding their {expected.__name__} "
                            "(miaudit.classifier.queried.shadow_signals computes them)")
        return None
    if not isinstance(shadow, ShadowSignals) or not issubclass(shadow.signal_type, expected):
        got = type(shadow).__name__ if not isinstance(shadow, ShadowSignals) else shadow.signal_type.__name__
        raise SignalError(f"attack {attack!r} learns from shadow models' {expected.__name__}, but the reference holds "
                          f"{got}; build AttackReference(shadow=ShadowSignals(...)) with "
                          "miaudit.classifier.queried.shadow_signals")
    return shadow


__all__ = ["ShadowSignals", "check_signals", "shadow_from_reference"]
