"""DC-PDD: token probabilities calibrated by their frequency in a reference corpus."""

from __future__ import annotations

from typing import Any

import numpy as np

from miaudit.attacks.registry import register
from miaudit.llm import scoring
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals


@register
class DcPdd(LLMAttack):
    """Mean over first occurrences of ``min(p(x) log(1 / f(x)), a)``.

    ``token_freq``: Laplace-smoothed frequency of each vocabulary id (V,), e.g. from
    :func:`miaudit.llm.scoring.token_frequencies`. Without it, ``fit(counts)`` takes a reference
    corpus's token counts (V,) (:func:`miaudit.llm.scoring.token_counts`) and smooths them.
    """

    name = "dc_pdd"
    access = "top-k log-probs"
    needs_reference = "population"
    requires_fit = True
    signals = ("log_prob", "token_ids")
    citation = ("Zhang et al. Pretraining Data Detection for Large Language Models: A Divergence-based "
                "Calibration Method. EMNLP 2024")

    def __init__(self, *, a: float = 0.01, token_freq: Any = None):
        self.a = a
        self.token_freq = token_freq

    def check_is_fitted(self) -> None:
        if self.token_freq is None:
            super().check_is_fitted()

    def _fit(self, reference: Any) -> None:
        if self.token_freq is None:
            self.token_freq_ = scoring.smooth_counts(np.asarray(reference))

    def document_score(self, sig: TokenSignals) -> float:
        freq = self.token_freq if self.token_freq is not None else self.token_freq_
        return scoring.dc_pdd_score(sig, freq, self.a)
