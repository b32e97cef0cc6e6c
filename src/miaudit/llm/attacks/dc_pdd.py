"""DC-PDD: token probabilities calibrated by their frequency in a reference corpus."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from miaudit.attacks.base import Interval
from miaudit.attacks.registry import register
from miaudit.errors import SignalError
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals

#: candidate caps ``a`` (ACMIA's code)
A_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def token_counts(sequences: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Occurrences of each vocabulary id in token-id sequences, (V,) int64."""
    counts = np.zeros(int(vocab_size), dtype=np.int64)
    for seq in sequences:
        ids = np.asarray(seq, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise SignalError(f"reference corpus token ids range over [{ids.min()}, {ids.max()}] outside the "
                              f"vocabulary of {vocab_size}; tokenise it with the target's tokenizer")
        counts += np.bincount(ids, minlength=vocab_size)
    return counts


def smooth_counts(counts: np.ndarray) -> np.ndarray:
    """DC-PDD's Laplace smoothing of token counts: ``(c + 1) / (sum(c) + V)``, (V,) float64."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any() or not np.isfinite(counts).all():
        raise SignalError("token counts must be a 1-D array of non-negative counts, one per vocabulary id")
    return (counts + 1.0) / (counts.sum() + counts.size)


def token_frequencies(sequences: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Laplace-smoothed token frequencies ``(count + 1) / (total + V)`` of a reference corpus, (V,)."""
    return smooth_counts(token_counts(sequences, vocab_size))


def _check_freq(token_freq: Any, sig: TokenSignals) -> np.ndarray:
    freq = np.asarray(token_freq, dtype=np.float64)
    if freq.ndim != 1 or freq.size <= int(sig.token_ids.max()):
        raise SignalError(f"token_freq must be a 1-D array with one frequency per vocabulary id (got shape "
                          f"{freq.shape}, the document uses id {int(sig.token_ids.max())})")
    if not (np.isfinite(freq).all() and (freq > 0).all() and (freq <= 1).all()):
        raise SignalError("token_freq must hold frequencies in (0, 1] (Laplace-smoothed, see token_frequencies)")
    return freq


def dc_pdd_score(sig: TokenSignals, token_freq: Any, a: float = 0.01) -> float:
    """DC-PDD (Zhang et al. 2024): mean over the first occurrence of each token of
    ``min(p(x_t) log(1 / f(x_t)), a)``, ``f`` the reference-corpus frequency (authors' default a = 0.01,
    ``a > 0``)."""
    freq = _check_freq(token_freq, sig)
    first = sig.first_occurrence
    cross = np.exp(sig.log_prob[first]) * -np.log(freq[sig.token_ids[first]])
    return float(np.mean(np.minimum(cross, a)))


@register
class DcPdd(LLMAttack):
    """Mean over first occurrences of ``min(p(x) log(1 / f(x)), a)``.

    ``token_freq``: Laplace-smoothed frequency of each vocabulary id (V,), e.g. from
    :func:`token_frequencies`. Without it, ``fit(counts)`` takes a reference corpus's token counts (V,)
    (:func:`token_counts`) and smooths them.
    """

    name = "dc_pdd"
    access = "probabilities"
    needs_reference = "population"
    requires_fit = True
    fit_input = ("token-counts",)
    signals = ("log_prob", "token_ids")
    citation = ("Zhang et al. Pretraining Data Detection for Large Language Models: A Divergence-based "
                "Calibration Method. EMNLP 2024")
    param_constraints = {"a": Interval(0.0, None, closed="neither", what="a cap on each token's score")}
    tunable = {"a": A_GRID}

    def __init__(self, *, a: float = 0.01, token_freq: Any = None):
        self.a = a
        self.token_freq = token_freq

    def fit_required(self) -> bool:
        return self.token_freq is None

    def _fit(self, reference: Any) -> None:
        if self.token_freq is None:
            self.token_freq_ = smooth_counts(np.asarray(reference))

    def document_score(self, sig: TokenSignals) -> float:
        freq = self.token_freq if self.token_freq is not None else self.token_freq_
        return dc_pdd_score(sig, freq, self.a)
