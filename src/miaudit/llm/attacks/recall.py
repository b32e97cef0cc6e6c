"""ReCaLL: how much a non-member prefix lowers the document's likelihood."""

from __future__ import annotations

from miaudit.attacks.registry import register
from miaudit.llm.attacks._common import LLMAttack, need, nonzero_log_likelihood
from miaudit.llm.signals import TokenSignals


def recall_score(sig: TokenSignals) -> float:
    """ReCaLL (Xie et al. 2024): ``ll(x | non-member prefix) / ll(x)`` with mean log-likelihoods over
    the same tokens; a member's likelihood drops more with the prefix, so higher = member."""
    prefix = need(sig, "prefix_logprob", "recall",
                  "mean log-likelihood of the document's tokens after a non-member prefix")
    return float(prefix) / nonzero_log_likelihood(sig, "recall")


@register
class ReCaLL(LLMAttack):
    """``ll(x | non-member prefix) / ll(x)``; needs ``prefix_logprob``: the forward-pass helper scores
    the same tokens again after a prefix of known non-member texts taken out of the evaluation set."""

    name = "recall"
    access = "top-k log-probs"
    needs_reference = "population"  # known non-member texts for the prefix
    signals = ("log_prob", "prefix_logprob")
    citation = ("Xie et al. ReCaLL: Membership Inference via Relative Conditional Log-Likelihoods. "
                "EMNLP 2024")

    def document_score(self, sig: TokenSignals) -> float:
        return recall_score(sig)
