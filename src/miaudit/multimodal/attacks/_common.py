"""Checks and helpers shared by the image-text attacks."""

from __future__ import annotations

from typing import Any

import numpy as np

from miaudit.errors import DataError, SignalError
from miaudit.evaluation import best_threshold
from miaudit.multimodal.signals import MultimodalReference, PairSignals


def as_signals(signals: Any, attack: str) -> PairSignals:
    if not isinstance(signals, PairSignals):
        raise SignalError(f"attack {attack!r} scores PairSignals (a dual encoder's embeddings of image-caption "
                          f"records), got {type(signals).__name__}")
    return signals


def as_reference(reference: Any, attack: str, *, need: str) -> MultimodalReference:
    """``reference`` as :class:`MultimodalReference` that has ``need`` ("shadow" or "calibration")."""
    if not isinstance(reference, MultimodalReference):
        raise DataError(f"attack {attack!r} learns from a shadow / reference dual encoder: pass a MultimodalReference, "
                        f"got {type(reference).__name__}")
    if need == "shadow" and not reference.shadow:
        raise DataError(f"attack {attack!r} needs a shadow model's signals on its own members and non-members; "
                        "train a shadow model (config.split.n_shadow_members > 0)")
    if need == "calibration" and reference.calibration is None:
        raise DataError(f"attack {attack!r} needs a reference model's signals on the audited records; train a shadow "
                        "model (it never sees the target's records) or pass MultimodalReference(calibration=...)")
    return reference


def shadow_threshold(reference: Any, score: Any) -> float | None:
    """Decision threshold maximising TPR - FPR on the shadow records, if ``reference`` has shadow data.

    ``score`` maps PairSignals to ``(n,)`` scores; the target's labels are never used.
    """
    if not isinstance(reference, MultimodalReference) or not reference.shadow:
        return None
    values = np.concatenate([score(s) for s in reference.shadow])
    return best_threshold(np.concatenate(reference.shadow_membership).astype(int), values)
