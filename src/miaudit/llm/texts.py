"""Checks and helpers on the documents an LLM target scores, shared by every target (weights or API)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from miaudit.errors import DataError
from miaudit.utils.logs import progress as progress_bar


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list; a one-line :class:`DataError` for no documents or an empty / non-string one."""
    texts = list(texts)
    if not texts:
        raise DataError("no documents to score; give at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"document {i} is empty or whitespace-only ({text!r:.30}); remove it before scoring")
    return texts


def neighbour_log_likelihoods(texts: Sequence[str], perturb: Callable[[str], Sequence[str]],
                              mean_log_likelihoods: Callable[..., np.ndarray], *, progress: bool = False
                              ) -> list[np.ndarray]:
    """Mean log-likelihoods of the neighbours ``perturb(text)`` of each text (Mattern et al. 2023): one
    ``(n_neighbours,)`` array per text, all neighbours scored in one call of the target's
    ``mean_log_likelihoods(texts, desc=...)``. ``perturb`` is the user's perturbation model (e.g. a
    masked LM replacing words); it must return at least one non-empty text."""
    texts = check_texts(texts)
    neighbours = []
    for i, text in enumerate(progress_bar(texts, desc="perturb", unit="doc", enabled=progress, leave=False)):
        found = list(perturb(text))
        if not found or not all(isinstance(n, str) and n.strip() for n in found):
            raise DataError(f"the perturbation callable returned no neighbours (or an empty one) for document "
                            f"{i}; it must return a list of non-empty texts")
        neighbours.append(found)
    flat = mean_log_likelihoods([n for group in neighbours for n in group], desc="neighbours")
    bounds = np.cumsum([0] + [len(g) for g in neighbours])
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(texts))]


__all__ = ["check_texts", "neighbour_log_likelihoods"]
