"""Metric attacks: one per-example signal, oriented so that higher = more likely a member.

Yeom et al. (2018) threshold the loss (and use correctness, the "gap attack"); Song & Mittal (2021)
threshold correctness, confidence (probability of the true label), entropy and modified entropy,
with thresholds learned on shadow models, globally or per class.

Scores (``p`` = predicted probabilities, ``y`` = true label)::

    correctness       1[argmax p == y]                      (label-only access suffices)
    loss              -(-log p_y)
    confidence        p_y
    entropy           -(-sum_i p_i log p_i)
    modified_entropy  -Mentr,  Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)

Without shadow data the score is the oriented signal and there is no threshold. ``fit`` with shadow
data learns the threshold maximising shadow TPR - FPR (equivalently balanced accuracy, Song &
Mittal's ``_thre_setting``) over the pooled shadow models:

- ``per_class=False``: ``threshold_ = t``; the score is unchanged.
- ``per_class=True``: one threshold ``t_c`` per true class (``class_thresholds_``); the score
  becomes ``s - t_{y}`` so that scores of different classes are comparable, and ``threshold_ = 0``.
  Classes without both shadow members and non-members use the global threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from miaudit.attacks.base import Access, Attack
from miaudit.attacks.registry import register
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference
from miaudit.classifier.signals.shadow import shadow_from_reference
from miaudit.errors import NotFittedError
from miaudit.evaluation import roc_curve
from miaudit.utils.jsonable import finite_jsonable

SONG_MITTAL = ("Song & Mittal, 'Systematic Evaluation of Privacy Risks of Machine Learning Models', "
               "USENIX Security 2021")
YEOM = ("Yeom, Giacomelli, Fredrikson & Jha, 'Privacy Risk in Machine Learning: Analyzing the "
        "Connection to Overfitting', IEEE CSF 2018")


def shadow_threshold(values: np.ndarray, membership: np.ndarray) -> float:
    """Observed value ``t`` maximising TPR - FPR of the rule ``value >= t`` (highest ``t`` among ties).

    ``values`` ``(n,)`` oriented scores, ``membership`` ``(n,)`` bool; both classes must be present.
    """
    curve = roc_curve(membership.astype(int), values)
    gain = (curve.tpr - curve.fpr)[1:]  # index 0 is the +inf threshold (predict nobody)
    return float(curve.thresholds[1 + int(np.argmax(gain))])


def shadow_signals_threshold(reference: Any, signal_type: type, statistic: Callable[[Any], np.ndarray],
                             attack: str) -> float | None:
    """:func:`shadow_threshold` of ``statistic`` ``(n_k,)`` over the shadow models' ``signal_type`` signals in
    ``reference`` (``AttackReference(shadow=ShadowSignals(...))``); None when the reference has no shadow signals."""
    shadow = shadow_from_reference(reference, signal_type, attack, required=False)
    if shadow is None:
        return None
    values, membership = shadow.pooled(statistic)
    return shadow_threshold(values, membership)


class _MetricAttack(Attack):
    """An oriented signal, with an optional (class-dependent) threshold learned on shadow data."""

    target_kind = "classifier"
    access: ClassVar[Access] = "probabilities"
    needs_reference = "none"  # shadow data is optional: it only supplies a decision threshold
    fit_input = ("shadow",)
    requires_fit = False
    sign: ClassVar[float]  # +1 if a high signal means member, -1 if a low one does

    def __init__(self, *, per_class: bool = False):
        self.per_class = per_class

    def oriented(self, outputs: ClassifierOutputs) -> np.ndarray:
        """``(n,)`` the signal with higher = member, before any class threshold."""
        return self.sign * outputs.signal(self.signals[0])

    def _fit(self, reference: AttackReference | None) -> None:
        self.threshold_ = None
        self.class_thresholds_ = None
        shadow = reference.shadow if reference is not None else None
        if shadow is None:
            if self.per_class:
                (reference or AttackReference()).require("shadow", f"{self.name} (per_class=True)")
            return
        values = np.concatenate([self.oriented(o) for o in shadow.outputs])
        labels = np.concatenate([o.labels for o in shadow.outputs])
        membership = np.concatenate(shadow.membership)
        global_t = shadow_threshold(values, membership)
        if not self.per_class:
            self.threshold_ = global_t
            return
        n_classes = max(o.n_classes for o in shadow.outputs)
        thresholds = np.full(n_classes, global_t)
        for c in range(n_classes):
            in_c = labels == c
            if membership[in_c].any() and not membership[in_c].all():
                thresholds[c] = shadow_threshold(values[in_c], membership[in_c])
        self.class_thresholds_ = thresholds
        self.global_threshold_ = global_t
        self.threshold_ = 0.0

    def _learned_state(self) -> dict[str, Any]:
        """With ``per_class=True``: ``class_thresholds_`` (one per class, learned on shadow data) and
        ``global_threshold_`` (for classes without one)."""
        if self.class_thresholds_ is None:
            return {}
        return {"class_thresholds_": finite_jsonable(self.class_thresholds_),
                "global_threshold_": finite_jsonable(self.global_threshold_)}

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        values = self.oriented(signals)
        if not self.per_class:
            return values
        thresholds: np.ndarray | None = getattr(self, "class_thresholds_", None)
        if thresholds is None:
            raise NotFittedError(f"attack {self.name!r} with per_class=True needs class thresholds: call "
                                 "fit(reference) with shadow data before score()")
        known = signals.labels < thresholds.size
        t = np.full(values.shape, self.global_threshold_)
        t[known] = thresholds[signals.labels[known]]
        return values - t


@register
class CorrectnessAttack(_MetricAttack):
    """Member iff the prediction is correct (Yeom et al. gap attack); works with label-only access."""

    name = "correctness"
    access = "label-only"
    citation = f"{YEOM}; {SONG_MITTAL}"
    signals = ("correctness",)
    sign = 1.0


@register
class LossAttack(_MetricAttack):
    """Score ``-loss`` (cross-entropy of the true label): low loss = member."""

    name = "loss"
    citation = YEOM
    signals = ("loss",)
    sign = -1.0


@register
class ConfidenceAttack(_MetricAttack):
    """Score ``p_y``, the probability of the true label: high confidence = member."""

    name = "confidence"
    citation = SONG_MITTAL
    signals = ("confidence",)
    sign = 1.0


@register
class EntropyAttack(_MetricAttack):
    """Score ``-entropy`` of the prediction: a peaked prediction = member."""

    name = "entropy"
    citation = ("Salem et al., 'ML-Leaks: Model and Data Independent Membership Inference Attacks', NDSS "
                f"2019; {SONG_MITTAL}")
    signals = ("entropy",)
    sign = -1.0


@register
class ModifiedEntropyAttack(_MetricAttack):
    """Score ``-Mentr`` (Song & Mittal): low modified entropy (confident *and* correct) = member."""

    name = "modified_entropy"
    citation = SONG_MITTAL
    signals = ("modified_entropy",)
    sign = -1.0
