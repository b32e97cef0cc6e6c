"""Neighbourhood attack: the document's likelihood against perturbed neighbours of it."""

from __future__ import annotations

from miaudit.attacks.registry import register
from miaudit.llm import scoring
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals


@register
class Neighbourhood(LLMAttack):
    """``ll(x) - mean ll(neighbours)``; needs ``neighbour_logprobs``: the target's mean log-likelihoods
    of neighbours that a perturbation model of the user's choice generated from the text."""

    name = "neighbourhood"
    access = "top-k log-probs"
    signals = ("log_prob", "neighbour_logprobs")
    citation = ("Mattern et al. Membership Inference Attacks against Language Models via Neighbourhood "
                "Comparison. Findings of ACL 2023")

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.neighbourhood_score(sig)
