"""ReCaLL: how much a non-member prefix lowers the document's likelihood."""

from __future__ import annotations

from miaudit.attacks.registry import register
from miaudit.llm import scoring
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals


@register
class ReCaLL(LLMAttack):
    """``ll(x | non-member prefix) / ll(x)``; needs ``prefix_logprob``: the forward-pass helper scores
    the same tokens again after a prefix of known non-member texts taken out of the evaluation set."""

    name = "recall"
    access = "top-k log-probs"
    signals = ("log_prob", "prefix_logprob")
    citation = ("Xie et al. ReCaLL: Membership Inference via Relative Conditional Log-Likelihoods. "
                "EMNLP 2024")

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.recall_score(sig)
