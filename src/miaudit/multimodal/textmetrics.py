"""Caption similarity metrics of M4I's metric-based attack: ROUGE-1, ROUGE-2 and ROUGE-L F1 (Lin, 2004).

Texts are compared as lower-cased word sequences (:func:`miaudit.multimodal.model.words`).

- ROUGE-N: clipped n-gram overlap ``o``; precision ``o / #cand n-grams``, recall ``o / #ref n-grams``.
- ROUGE-L: longest common subsequence ``l``; precision ``l / len(cand)``, recall ``l / len(ref)``.

Each reports ``F1 = 2 P R / (P + R)`` (0 when either is 0). Against several references (a
Flickr8k image has five captions) the F1 scores are averaged over the references, as M4I does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from miaudit.multimodal.model import words

ROUGE_NAMES = ("rouge1", "rouge2", "rougeL")


def _f1(overlap: float, n_cand: int, n_ref: int) -> float:
    if overlap == 0 or n_cand == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_cand, overlap / n_ref
    return 2 * p * r / (p + r)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    cand, ref = _ngrams(candidate, n), _ngrams(reference, n)
    return _f1(sum((cand & ref).values()), sum(cand.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) len(b)))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    return _f1(lcs_length(candidate, reference), len(candidate), len(reference))


def rouge_scores(candidate: str, references: Sequence[str]) -> np.ndarray:
    """``(3,)`` ROUGE-1, ROUGE-2, ROUGE-L F1 of ``candidate``, each averaged over ``references``."""
    cand = words(candidate)
    rows = []
    for reference in references:
        ref = words(reference)
        rows.append((rouge_n(cand, ref, 1), rouge_n(cand, ref, 2), rouge_l(cand, ref)))
    return np.mean(np.asarray(rows, dtype=np.float64), axis=0)


__all__ = ["ROUGE_NAMES", "lcs_length", "rouge_l", "rouge_n", "rouge_scores"]
