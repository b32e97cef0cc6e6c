"""Neighbourhood attack: the document's likelihood against perturbed neighbours of it."""

from __future__ import annotations

import numpy as np

from miaudit.attacks.registry import register
from miaudit.errors import SignalError
from miaudit.llm.attacks._common import LLMAttack, mean_log_likelihood, need
from miaudit.llm.signals import TokenSignals


def neighbourhood_score(sig: TokenSignals) -> float:
    """Neighbourhood attack (Mattern et al. 2023): ``ll(x) - mean_n ll(neighbour_n)`` (mean
    log-likelihoods); the neighbours come from a perturbation model the user supplies."""
    neighbours = need(sig, "neighbour_logprobs", "neighbourhood",
                      "mean log-likelihoods of perturbed neighbours of the text")
    if neighbours.size == 0 or not np.isfinite(neighbours).all():
        raise SignalError("neighbour_logprobs must be a non-empty array of finite log-likelihoods")
    return mean_log_likelihood(sig) - float(np.mean(neighbours))


@register
class Neighbourhood(LLMAttack):
    """``ll(x) - mean ll(neighbours)``; needs ``neighbour_logprobs``: the target's mean log-likelihoods
    of neighbours that a perturbation model of the user's choice generated from the text."""

    name = "neighbourhood"
    access = "probabilities"
    signals = ("log_prob", "neighbour_logprobs")
    citation = ("Mattern et al. Membership Inference Attacks against Language Models via Neighbourhood "
                "Comparison. Findings of ACL 2023")

    def document_score(self, sig: TokenSignals) -> float:
        return neighbourhood_score(sig)
