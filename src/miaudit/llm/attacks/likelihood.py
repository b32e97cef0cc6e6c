"""Likelihood attacks: LOSS, Zlib, Lowercase and the reference-model difference."""

from __future__ import annotations

from miaudit.attacks.registry import register
from miaudit.llm import scoring
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals


@register
class Loss(LLMAttack):
    """Mean token log-likelihood (minus the LM loss)."""

    name = "loss"
    access = "top-k log-probs"
    signals = ("log_prob",)
    citation = ("Yeom, Giacomelli, Fredrikson, Jha. Privacy Risk in Machine Learning: Analyzing the Connection "
                "to Overfitting. CSF 2018")

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.loss_score(sig)


@register
class Zlib(LLMAttack):
    """Mean log-likelihood / zlib-compressed length of the text in bytes (needs ``text``)."""

    name = "zlib"
    access = "top-k log-probs"
    signals = ("log_prob", "text")
    citation = "Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021"

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.zlib_score(sig)


@register
class Lowercase(LLMAttack):
    """Ratio of log-likelihoods of the lowercased and the original text (needs ``lowercase_logprob``)."""

    name = "lowercase"
    access = "top-k log-probs"
    signals = ("log_prob", "lowercase_logprob")
    citation = "Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021"

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.lowercase_score(sig)


@register
class Ref(LLMAttack):
    """Target minus reference-model mean log-likelihood (needs ``ref_logprob`` from a second, local
    model with the same tokenizer)."""

    name = "ref"
    access = "top-k log-probs"
    signals = ("log_prob", "ref_logprob")
    citation = ("Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021; "
                "Duan et al. Do Membership Inference Attacks Work on Large Language Models? (MIMIR) COLM 2024")

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.ref_score(sig)
