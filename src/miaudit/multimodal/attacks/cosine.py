"""The cosine-similarity attack on image-text pairs (Ko et al., ICCV 2023) and its calibrated variant.

``cosine_similarity``: a CLIP-style model is trained to raise the cosine similarity of its training
pairs, so score = ``cos(f(x), g(t))`` (averaged over a record's captions). No reference data is
needed; when shadow data is passed to ``fit`` it supplies a decision threshold (best TPR - FPR on
the shadow records, never the target's labels).

``cosine_calibrated``: some pairs are easy (a dog photo and "a dog runs") and score high under any
model. Difficulty calibration (Watson et al., ICLR 2022) subtracts what a reference model that
never trained on the record gives it: score = ``cos_target(x, t) - cos_reference(x, t)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import register
from miaudit.errors import SignalError
from miaudit.multimodal.attacks._common import as_reference, as_signals, shadow_threshold
from miaudit.multimodal.signals import PairSignals, pair_cosine, per_record

KO_ET_AL = ("Ko, Jin, Wang, Jia. Practical Membership Inference Attacks Against Large-Scale Multi-Modal Models: "
            "A Pilot Study. ICCV 2023")


def record_cosine(signals: PairSignals) -> np.ndarray:
    """``(n,)`` mean cosine similarity of each record's image with its captions."""
    return per_record(pair_cosine(signals), signals.owner, len(signals))


@register
class CosineSimilarity(Attack):
    """Ko et al.'s baseline: the cosine similarity of the pair's image and text embeddings."""

    name = "cosine_similarity"
    target_kind = "multimodal"
    access = "embeddings"
    needs_reference = "none"  # shadow data is optional: it only supplies a decision threshold
    fit_input = ("shadow",)
    signals = ("cosine",)
    citation = KO_ET_AL

    def _fit(self, reference: Any) -> None:
        self.threshold_ = shadow_threshold(reference, record_cosine)

    def _score(self, signals: Any) -> np.ndarray:
        return record_cosine(as_signals(signals, self.name))


@register
class CalibratedCosine(Attack):
    """``cos_target - cos_reference`` on the same records; the reference model never trained on them."""

    name = "cosine_calibrated"
    target_kind = "multimodal"
    access = "embeddings"
    needs_reference = "shadow"
    fit_input = ("shadow",)  # the shadow model's signals on the audited records (MultimodalReference.calibration)
    signals = ("cosine",)
    requires_fit = True
    citation = (f"{KO_ET_AL}; difficulty calibration: Watson, Guo, Cormode, Sablayrolles. On the Importance of "
                "Difficulty Calibration in Membership Inference Attacks. ICLR 2022")

    def _fit(self, reference: Any) -> None:
        calibration = as_reference(reference, self.name, need="calibration").calibration
        assert calibration is not None
        self.reference_ids_ = calibration.ids
        self.reference_cosine_ = record_cosine(calibration)

    def _learned_state(self) -> dict[str, Any]:
        return {"mean_reference_cosine": float(self.reference_cosine_.mean())}

    def _score(self, signals: Any) -> np.ndarray:
        target = as_signals(signals, self.name)
        if target.ids.shape != self.reference_ids_.shape or (target.ids != self.reference_ids_).any():
            raise SignalError(f"attack {self.name!r} was fitted with reference signals on {self.reference_ids_.size} "
                              f"other records; compute the reference model's signals on the same audited records, in "
                              "the same order")
        return record_cosine(target) - self.reference_cosine_
