"""The loss attack on the contrastive loss of a dual encoder.

Yeom et al.'s loss threshold applied to CLIP's training objective: a model minimises the
symmetric InfoNCE loss of its training pairs, so score = ``-loss(x, t)``, the loss of the pair
against the attacker's gallery pairs as negatives at the model's own logit scale (averaged over a
record's captions). Unlike the cosine alone, the loss also accounts for how close the image and
the caption are to everything else (a "hub" image similar to every caption scores lower).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import register
from miaudit.multimodal.attacks._common import as_signals, shadow_threshold
from miaudit.multimodal.signals import PairSignals, pair_contrastive_loss, per_record


def record_loss_score(signals: PairSignals) -> np.ndarray:
    """``(n,)`` negative mean contrastive loss of each record's pairs."""
    return -per_record(pair_contrastive_loss(signals), signals.owner, len(signals))


@register
class ContrastiveLoss(Attack):
    """Score = ``-InfoNCE(x, t)`` with the gallery as negatives (higher = member)."""

    name = "contrastive_loss"
    target_kind = "multimodal"
    access = "embeddings"
    needs_reference = "none"  # shadow data is optional: it only supplies a decision threshold
    fit_input = ("shadow",)
    signals = ("contrastive_loss",)
    citation = ("Yeom, Giacomelli, Fredrikson, Jha. Privacy Risk in Machine Learning: Analyzing the Connection to "
                "Overfitting. IEEE CSF 2018; contrastive loss: Radford et al. Learning Transferable Visual Models From "
                "Natural Language Supervision. ICML 2021")

    def _fit(self, reference: Any) -> None:
        self.threshold_ = shadow_threshold(reference, record_loss_score)

    def _score(self, signals: Any) -> np.ndarray:
        return record_loss_score(as_signals(signals, self.name))
