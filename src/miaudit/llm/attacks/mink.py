"""Min-K% and Min-K%++: the lowest-scoring fraction k of a document's tokens."""

from __future__ import annotations

from miaudit.attacks.registry import register
from miaudit.llm import scoring
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals


@register
class MinK(LLMAttack):
    """Mean of the ``max(1, int(T k))`` lowest token log-probabilities (``k`` a fraction)."""

    name = "min_k"
    access = "top-k log-probs"
    signals = ("log_prob",)
    citation = "Shi et al. Detecting Pretraining Data from Large Language Models. ICLR 2024"

    def __init__(self, *, k: float = 0.2):
        self.k = k

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.min_k_score(sig, self.k)


@register
class MinKPlusPlus(LLMAttack):
    """Mean of the lowest fraction ``k`` of ``(log p(x_t) - E_p[log p]) / std_p[log p]``."""

    name = "min_k_pp"
    access = "logits"
    signals = ("log_prob", "mean_logp", "var_logp")
    citation = ("Zhang et al. Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large "
                "Language Models. ICLR 2025")

    def __init__(self, *, k: float = 0.2):
        self.k = k

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.min_k_pp_score(sig, self.k)
