"""``evaluate``: every metric of one attack's scores, with confidence intervals, as a JSON-able dict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from miaudit.evaluation.bootstrap import (
    INTERVAL_METHOD,
    check_groups,
    honest_interval,
    resampling_units,
    stratified_bootstrap,
)
from miaudit.evaluation.metrics import (
    DEFAULT_FPRS,
    _operating_point,
    _tpr_at,
    best_threshold,
    check_labels_scores,
    decision_metrics,
    low_fpr_warnings,
    roc_curve,
    tie_warnings,
    trapezoid,
)

#: fewest groups for which cluster-bootstrap intervals are quoted without a warning
MIN_GROUPS = 10


def _curve_stats(fprs: tuple[float, ...]):
    """``stats(labels, scores) -> [auc, advantage, tpr@fprs...]``, TPRs tie-aware (the bootstrap uses it too)."""
    def stats(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
        curve = roc_curve(labels, scores)
        auc = trapezoid(curve.tpr, curve.fpr)
        return np.array([auc, (curve.tpr - curve.fpr).max(), *[_tpr_at(curve, f) for f in fprs]])
    return stats


def _advantage_from_auc(auc_low: float) -> float:
    """A lower bound on the advantage d implied by a lower bound on the AUC: every ROC with advantage d lies
    under min(1, FPR + d), whose area is 1 - (1 - d)^2 / 2, so d >= 1 - sqrt(2 (1 - AUC))."""
    return max(0.0, 1.0 - math.sqrt(2.0 * max(0.0, 1.0 - auc_low)))


def _threshold_ties(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int] | None:
    """Members and non-members whose score equals the decision threshold, when both classes are there."""
    at = scores == threshold
    members, nonmembers = int((at & labels).sum()), int((at & ~labels).sum())
    return {"members": members, "nonmembers": nonmembers} if members and nonmembers else None


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float | None = None,
    threshold_source: str = "reference",
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """AUC, TPR at each FPR, advantage (each with a confidence interval) and decision metrics.

    ``threshold`` is the attack's own decision threshold, learned on data other than these labels
    (``threshold_source`` says which: ``"reference"`` models or data, an LLM audit's ``"calibration"``
    documents); without one the threshold maximising TPR - FPR on these labels is used and reported as
    ``"oracle"``.
    ``groups`` ``(n,)``: group ids of records that are not independent (passages of one document);
    the bootstrap then resamples whole groups. TPRs at FPRs are tie-aware
    (:func:`~miaudit.evaluation.metrics.tpr_at_fpr`); ``ties_at_fpr`` reports the ties that straddle
    an operating point, ``threshold_ties`` the members and non-members sharing the decision
    threshold's score. Intervals are boundary-honest (:func:`~miaudit.evaluation.bootstrap.honest_interval`);
    ``exact_bounds`` names the figures whose interval uses an exact bound.
    """
    labels, scores = check_labels_scores(labels, scores)
    groups = check_groups(groups, labels.size)
    n_members, n_nonmembers = int(labels.sum()), int((~labels).sum())
    stats = _curve_stats(fprs)
    point = stats(labels, scores)
    low, high = stratified_bootstrap(labels, scores, stats, n_resamples=n_bootstrap, confidence=confidence,
                                     seed=seed, groups=groups) if n_bootstrap else (point.copy(), point.copy())
    key = lambda f: f"{f:g}"
    exact: list[str] = []
    if n_bootstrap:
        units_members, units_nonmembers = resampling_units(labels, groups)
        low[0], high[0], widened = honest_interval(point[0], low[0], high[0], trials=min(units_members,
                                                                                          units_nonmembers),
                                                   confidence=confidence)
        if widened:
            exact.append("auc")
        if low[1] >= point[1] - 1e-12 and _advantage_from_auc(low[0]) < low[1]:
            low[1] = _advantage_from_auc(low[0])
            exact.append("advantage")
        for i, f in enumerate(fprs):
            low[2 + i], high[2 + i], widened = honest_interval(point[2 + i], low[2 + i], high[2 + i],
                                                               trials=units_members, confidence=confidence)
            if widened:
                exact.append(f"tpr@{key(f)}")
    curve = roc_curve(labels, scores)
    points = {key(f): _operating_point(curve, f, n_members, n_nonmembers) for f in fprs}
    source = threshold_source
    if threshold is None:
        threshold, source = best_threshold(labels, scores), "oracle"
    decision = decision_metrics(labels, scores >= threshold)
    warnings = low_fpr_warnings(n_nonmembers, fprs)
    warnings += tie_warnings(list(points.values()))
    threshold_ties = _threshold_ties(labels, scores, float(threshold))
    if threshold_ties and min(threshold_ties.values()) >= max(2, 0.01 * labels.size):
        warnings.append(f"{threshold_ties['members']} members and {threshold_ties['nonmembers']} non-members share "
                        f"the decision threshold's score ({threshold:.6g}); all of them are predicted members")
    resampling = "members and non-members resampled separately"
    if groups is not None:
        n_groups = int(np.unique(groups).size)
        resampling = f"cluster bootstrap over {n_groups} groups of records"
        if n_groups < MIN_GROUPS:
            warnings.append(f"the records form only {n_groups} groups: a cluster bootstrap over fewer than "
                            f"{MIN_GROUPS} groups gives unreliable intervals; group by a finer id (a person, a "
                            "document), not a category")
    out: dict[str, Any] = {
        "auc": float(point[0]),
        "auc_ci": [float(low[0]), float(high[0])],
        "advantage": float(point[1]),
        "advantage_ci": [float(low[1]), float(high[1])],
        "tpr_at_fpr": {key(f): float(point[2 + i]) for i, f in enumerate(fprs)},
        "tpr_at_fpr_ci": {key(f): [float(low[2 + i]), float(high[2 + i])] for i, f in enumerate(fprs)},
        "ties_at_fpr": {k: {"members": p.tied_members, "nonmembers": p.tied_nonmembers, "score": p.score,
                            "tpr_deterministic": [p.tpr_below, p.tpr_above]}
                        for k, p in points.items() if p.tied_members and p.tied_nonmembers},
        "threshold": float(threshold),
        "threshold_source": source,
        **decision,
        "confidence_level": confidence,
        "n_bootstrap": n_bootstrap,
        "interval_method": INTERVAL_METHOD.format(resampling=resampling) if n_bootstrap else "none (n_bootstrap = 0)",
        "exact_bounds": exact,
        "n_members": n_members,
        "n_nonmembers": n_nonmembers,
        "warnings": warnings,
    }
    if threshold_ties:
        out["threshold_ties"] = threshold_ties
    if groups is not None:
        member_groups, nonmember_groups = resampling_units(labels, groups)
        out["grouping"] = {"n_groups": int(np.unique(groups).size), "member_groups": member_groups,
                           "nonmember_groups": nonmember_groups}
    return out
