"""``evaluate``: every metric of one attack's scores, with confidence intervals, as a JSON-able dict."""

from __future__ import annotations

from typing import Any

import numpy as np

from miaudit.evaluation.bootstrap import stratified_bootstrap
from miaudit.evaluation.metrics import (
    DEFAULT_FPRS,
    _tpr_at,
    best_threshold,
    check_labels_scores,
    decision_metrics,
    low_fpr_warnings,
    roc_curve,
)


def _curve_stats(fprs: tuple[float, ...]):
    def stats(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
        curve = roc_curve(labels, scores)
        auc = np.trapezoid(curve.tpr, curve.fpr) if hasattr(np, "trapezoid") else np.trapz(curve.tpr, curve.fpr)
        return np.array([auc, (curve.tpr - curve.fpr).max(), *[_tpr_at(curve, f) for f in fprs]])
    return stats


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float | None = None,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC, TPR at each FPR, advantage (each with a bootstrap CI) and decision metrics.

    ``threshold`` is the attack's own decision threshold learned on reference data; without one
    the threshold maximising TPR - FPR on these labels is used and reported as ``"oracle"``.
    """
    labels, scores = check_labels_scores(labels, scores)
    stats = _curve_stats(fprs)
    point = stats(labels, scores)
    low, high = stratified_bootstrap(labels, scores, stats, n_resamples=n_bootstrap,
                                     confidence=confidence, seed=seed) if n_bootstrap else (point, point)
    source = "reference"
    if threshold is None:
        threshold, source = best_threshold(labels, scores), "oracle"
    decision = decision_metrics(labels, scores >= threshold)
    key = lambda f: f"{f:g}"
    return {
        "auc": float(point[0]),
        "auc_ci": [float(low[0]), float(high[0])],
        "advantage": float(point[1]),
        "advantage_ci": [float(low[1]), float(high[1])],
        "tpr_at_fpr": {key(f): float(point[2 + i]) for i, f in enumerate(fprs)},
        "tpr_at_fpr_ci": {key(f): [float(low[2 + i]), float(high[2 + i])] for i, f in enumerate(fprs)},
        "threshold": float(threshold),
        "threshold_source": source,
        **decision,
        "confidence_level": confidence,
        "n_bootstrap": n_bootstrap,
        "n_members": int(labels.sum()),
        "n_nonmembers": int((~labels).sum()),
        "warnings": low_fpr_warnings(int((~labels).sum()), fprs),
    }
