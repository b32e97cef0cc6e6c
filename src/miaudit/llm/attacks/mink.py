"""Min-K% and Min-K%++: the lowest-scoring fraction k of a document's tokens."""

from __future__ import annotations

import numpy as np

from miaudit.attacks.base import Interval
from miaudit.attacks.registry import register
from miaudit.errors import SignalError
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals

#: the authors' grid of k (Min-K%++ and ACMIA code: 0.1 .. 1.0)
K_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
K_RANGE = Interval(0.0, 1.0, closed="right", what="a fraction of the tokens")


def lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ``max(1, int(T k))`` lowest of ``values`` (T,), ``0 < k <= 1`` (at least one token: the
    authors' ``int(T k)`` can be 0, giving NaN)."""
    n = max(1, int(values.size * k))
    return float(np.mean(np.partition(values, n - 1)[:n]))


def min_k_score(sig: TokenSignals, k: float = 0.2) -> float:
    """Min-K% (Shi et al. 2024): mean of the ``max(1, int(T k))`` lowest token log-probabilities."""
    return lowest_mean(sig.log_prob, k)


def min_k_pp_values(sig: TokenSignals) -> np.ndarray:
    """Min-K%++'s per-token ``(log p(x_t) - mu_t) / sigma_t`` with ``mu, sigma**2`` the mean and
    variance of ``log p`` under ``p``; 0 where ``sigma = 0`` (a one-point distribution), (T,)."""
    if sig.mean_logp is None or sig.var_logp is None:
        raise SignalError(f"Min-K%++ needs the mean and variance of log p over the whole vocabulary, which signals "
                          f"from {sig.access} lack; score a model whose logits you have")
    sigma = np.sqrt(sig.var_logp)
    centred = sig.log_prob - sig.mean_logp
    return np.divide(centred, sigma, out=np.zeros_like(centred), where=sigma > 0)


def min_k_pp_score(sig: TokenSignals, k: float = 0.2) -> float:
    """Min-K%++ (Zhang et al. 2025): mean of the lowest k fraction of :func:`min_k_pp_values`."""
    return lowest_mean(min_k_pp_values(sig), k)


@register
class MinK(LLMAttack):
    """Mean of the ``max(1, int(T k))`` lowest token log-probabilities (``k`` a fraction)."""

    name = "min_k"
    access = "top-k log-probs"
    signals = ("log_prob",)
    citation = "Shi et al. Detecting Pretraining Data from Large Language Models. ICLR 2024"
    param_constraints = {"k": K_RANGE}
    tunable = {"k": K_GRID}

    def __init__(self, *, k: float = 0.2):
        self.k = k

    def document_score(self, sig: TokenSignals) -> float:
        return min_k_score(sig, self.k)


@register
class MinKPlusPlus(LLMAttack):
    """Mean of the lowest fraction ``k`` of ``(log p(x_t) - E_p[log p]) / std_p[log p]``."""

    name = "min_k_pp"
    access = "logits"
    signals = ("log_prob", "mean_logp", "var_logp")
    citation = ("Zhang et al. Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large "
                "Language Models. ICLR 2025")
    param_constraints = {"k": K_RANGE}
    tunable = {"k": K_GRID}

    def __init__(self, *, k: float = 0.2):
        self.k = k

    def document_score(self, sig: TokenSignals) -> float:
        return min_k_pp_score(sig, self.k)
