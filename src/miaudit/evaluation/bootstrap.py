"""Confidence intervals: bootstrap resampling members and non-members separately (or whole groups of
records, when records come in groups), and exact binomial bounds where the bootstrap cannot see.

Percentile bootstrap. Each resample draws, with replacement, as many members as there are members
and as many non-members as there are non-members (a *stratified* bootstrap: every resample keeps
the class sizes). With ``groups`` (one group id per record: passages of one paper, images of one
person) whole groups are drawn instead (a *cluster* bootstrap, Davison & Hinkley 1997, Sec. 3.8):
groups whose records are all members, all non-members, or mixed form three strata, and each stratum
is resampled with replacement keeping its number of groups. Records of a group are not independent,
so resampling them one by one understates the uncertainty; with every record its own group the two
bootstraps are the same (same random draws, same intervals).

Boundary-honest intervals (:func:`honest_interval`). A percentile bound that equals the point
estimate is not a confidence statement: it happens when every resample reproduces the estimate, as
for an AUC of 1.000 (perfect separation) or a TPR of 0 among few records. Such a bound is replaced
by the exact (Clopper-Pearson) binomial bound on the number of independent trials behind the figure
(members for a TPR; disjoint member / non-member pairs, i.e. the smaller class, for an AUC; groups
instead of records when records are grouped), which never collapses: perfect separation of 40
non-member records gives "AUC >= 0.912 with 95% confidence", not [1.000, 1.000].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.stats

from miaudit.errors import DataError
from miaudit.evaluation.metrics import check_labels_scores

#: how the intervals of :func:`miaudit.evaluation.evaluate` are computed, as the reports state it
INTERVAL_METHOD = ("percentile bootstrap ({resampling}); a bound equal to the point estimate (the bootstrap "
                   "cannot see past it, e.g. an AUC of 1) is replaced by the exact Clopper-Pearson bound on the "
                   "independent trials behind the figure")


def check_groups(groups: np.ndarray | None, n: int) -> np.ndarray | None:
    """``groups`` as an ``(n,)`` array of group ids (None stays None); a :class:`DataError` otherwise."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise DataError(f"groups have shape {groups.shape}, expected ({n},): one group id per record")
    if groups.dtype.kind == "f" and not np.isfinite(groups).all():
        raise DataError("group ids contain NaN or infinite values; give every record a group id")
    return groups


def _strata(labels: np.ndarray, groups: np.ndarray | None) -> list[list[np.ndarray]]:
    """Record indices of each resampling unit, by stratum: [member units, non-member units, mixed units]."""
    if groups is None:
        return [[np.array([i]) for i in np.flatnonzero(labels)], [np.array([i]) for i in np.flatnonzero(~labels)], []]
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    units = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    out: list[list[np.ndarray]] = [[], [], []]
    for unit in units:
        share = labels[unit].mean()
        out[0 if share == 1 else 1 if share == 0 else 2].append(unit)
    return out


def stratified_bootstrap(
    labels: np.ndarray,
    scores: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray | float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``statistic(labels, scores)`` (scalar or vector) over resamples.

    Returns ``(low, high)`` arrays shaped like the statistic. Without ``groups`` members and
    non-members are resampled with replacement within their own class (every resample keeps the
    class sizes); with ``groups`` ``(n,)`` whole groups are resampled (module docstring). A resample
    that lacks a class (possible only with mixed groups) is drawn again.
    """
    labels, scores = check_labels_scores(labels, scores)
    groups = check_groups(groups, labels.size)
    rng = np.random.default_rng(seed)
    if groups is None:  # the plain stratified bootstrap, kept draw for draw
        members, nonmembers = np.flatnonzero(labels), np.flatnonzero(~labels)
        resample_labels = np.r_[np.ones(members.size, bool), np.zeros(nonmembers.size, bool)]
        values: list[np.ndarray] = []
        for _ in range(n_resamples):
            idx = np.r_[rng.choice(members, members.size), rng.choice(nonmembers, nonmembers.size)]
            values.append(np.atleast_1d(statistic(resample_labels, scores[idx])))
    else:
        strata = [s for s in _strata(labels, groups) if s]
        values = []
        while len(values) < n_resamples:
            idx = np.concatenate([unit for units in strata for unit in
                                  (units[j] for j in rng.integers(0, len(units), len(units)))])
            resample_labels = labels[idx]
            if resample_labels.all() or not resample_labels.any():
                continue
            values.append(np.atleast_1d(statistic(resample_labels, scores[idx])))
    samples = np.asarray(values)
    alpha = (1 - confidence) / 2
    return np.quantile(samples, alpha, axis=0), np.quantile(samples, 1 - alpha, axis=0)


def resampling_units(labels: np.ndarray, groups: np.ndarray | None) -> tuple[int, int]:
    """Independent units behind the members and the non-members: records, or groups holding that class."""
    labels = np.asarray(labels).astype(bool)
    if groups is None:
        return int(labels.sum()), int((~labels).sum())
    groups = np.asarray(groups)
    return int(np.unique(groups[labels]).size), int(np.unique(groups[~labels]).size)


def exact_interval(proportion: float, trials: int, confidence: float) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a proportion observed as ``proportion`` of ``trials``.

    ``proportion * trials`` successes may be fractional (an interpolated TPR); the beta quantiles
    take real parameters. Bounds at 0 and 1 are exact: 0 successes give ``[0, 1 - (alpha/2)^(1/n)]``.
    """
    alpha = (1.0 - confidence) / 2.0
    k = min(max(proportion, 0.0), 1.0) * trials
    low = 0.0 if k <= 0 else float(scipy.stats.beta.ppf(alpha, k, trials - k + 1))
    high = 1.0 if k >= trials else float(scipy.stats.beta.ppf(1 - alpha, k + 1, trials - k))
    return low, high


def honest_interval(point: float, low: float, high: float, *, trials: int, confidence: float
                    ) -> tuple[float, float, bool]:
    """``(low, high, widened)``: the percentile interval, a bound equal to ``point`` replaced by the exact
    bound of :func:`exact_interval` on ``trials`` (never narrower than the percentile bound)."""
    if trials < 1:
        return low, high, False
    exact_low, exact_high = exact_interval(point, trials, confidence)
    widened = False
    if low >= point - 1e-12 and exact_low < low:
        low, widened = exact_low, True
    if high <= point + 1e-12 and exact_high > high:
        high, widened = exact_high, True
    return low, high, widened


__all__ = ["INTERVAL_METHOD", "check_groups", "exact_interval", "honest_interval", "resampling_units",
           "stratified_bootstrap"]
