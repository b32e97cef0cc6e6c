"""Bootstrap confidence intervals that resample members and non-members separately."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from miaudit.evaluation.metrics import check_labels_scores


def stratified_bootstrap(
    labels: np.ndarray,
    scores: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray | float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``statistic(labels, scores)`` (scalar or vector) over stratified resamples.

    Returns ``(low, high)`` arrays shaped like the statistic. Members and non-members are resampled
    with replacement within their own group, so every resample keeps the original class sizes.
    """
    labels, scores = check_labels_scores(labels, scores)
    rng = np.random.default_rng(seed)
    members, nonmembers = np.flatnonzero(labels), np.flatnonzero(~labels)
    resample_labels = np.r_[np.ones(members.size, bool), np.zeros(nonmembers.size, bool)]
    values = []
    for _ in range(n_resamples):
        idx = np.r_[rng.choice(members, members.size), rng.choice(nonmembers, nonmembers.size)]
        values.append(np.atleast_1d(statistic(resample_labels, scores[idx])))
    values = np.asarray(values)
    alpha = (1 - confidence) / 2
    return np.quantile(values, alpha, axis=0), np.quantile(values, 1 - alpha, axis=0)
