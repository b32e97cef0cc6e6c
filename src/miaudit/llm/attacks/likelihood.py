"""Likelihood attacks: LOSS, Zlib, Lowercase and the reference-model difference."""

from __future__ import annotations

import zlib

from miaudit.attacks.registry import register
from miaudit.llm.attacks._common import LLMAttack, mean_log_likelihood, need, nonzero_log_likelihood
from miaudit.llm.signals import TokenSignals

CARLINI = "Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021"


def loss_score(sig: TokenSignals) -> float:
    """LOSS (Yeom et al. 2018): the mean log-likelihood."""
    return mean_log_likelihood(sig)


def zlib_length(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (Carlini et al.'s "zlib entropy")."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(sig: TokenSignals) -> float:
    """Zlib (Carlini et al. 2021): mean log-likelihood / zlib-compressed length in bytes.

    Carlini et al. rank by log-perplexity / zlib entropy (low = memorised); the mean log-likelihood is
    minus the log-perplexity, so this ratio is higher for members, exactly as in MIMIR, Min-K%++'s and
    ACMIA's code (``ll / len(zlib.compress(bytes(text, 'utf-8')))``)."""
    text = need(sig, "text", "zlib", "the document's text")
    return mean_log_likelihood(sig) / zlib_length(text)


def lowercase_score(sig: TokenSignals) -> float:
    """Lowercase (Carlini et al. 2021): ``ll(lowercased text) / ll(text)`` with mean log-likelihoods,
    i.e. their ratio of log-perplexities; lowercasing hurts a memorised text more, so higher = member
    (ACMIA's code: ``lower_loss / ll``)."""
    lower = need(sig, "lowercase_logprob", "lowercase",
                 "mean per-token log-likelihood of the lowercased text, from a second forward pass")
    return float(lower) / nonzero_log_likelihood(sig, "lowercase")


def ref_score(sig: TokenSignals) -> float:
    """Reference model (Carlini et al. 2021; MIMIR): ``ll_target - ll_reference`` (mean log-likelihoods)."""
    ref = need(sig, "ref_logprob", "ref", "mean per-token log-likelihood under a reference model")
    return mean_log_likelihood(sig) - float(ref)


@register
class Loss(LLMAttack):
    """Mean token log-likelihood (minus the LM loss)."""

    name = "loss"
    access = "top-k log-probs"
    signals = ("log_prob",)
    citation = ("Yeom, Giacomelli, Fredrikson, Jha. Privacy Risk in Machine Learning: Analyzing the Connection "
                "to Overfitting. CSF 2018")

    def document_score(self, sig: TokenSignals) -> float:
        return loss_score(sig)


@register
class Zlib(LLMAttack):
    """Mean log-likelihood / zlib-compressed length of the text in bytes (needs ``text``)."""

    name = "zlib"
    access = "top-k log-probs"
    signals = ("log_prob", "text")
    citation = CARLINI

    def document_score(self, sig: TokenSignals) -> float:
        return zlib_score(sig)


@register
class Lowercase(LLMAttack):
    """Ratio of log-likelihoods of the lowercased and the original text (needs ``lowercase_logprob``)."""

    name = "lowercase"
    access = "top-k log-probs"
    signals = ("log_prob", "lowercase_logprob")
    citation = CARLINI

    def document_score(self, sig: TokenSignals) -> float:
        return lowercase_score(sig)


@register
class Ref(LLMAttack):
    """Target minus reference-model mean log-likelihood (needs ``ref_logprob`` from a second, local
    model with the same tokenizer)."""

    name = "ref"
    access = "top-k log-probs"
    needs_reference = "reference-model"
    signals = ("log_prob", "ref_logprob")
    citation = ("Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021; "
                "Duan et al. Do Membership Inference Attacks Work on Large Language Models? (MIMIR) COLM 2024")

    def document_score(self, sig: TokenSignals) -> float:
        return ref_score(sig)
