"""Threshold-free and decision metrics on (labels, scores); pure functions.

``labels`` is ``(n,)`` with 1 = member and 0 = non-member; ``scores`` is ``(n,)``, higher = member.
The ROC keeps every operating point (one per distinct score, ties moving together), so TPR at a low
FPR is never read off a curve that dropped points. Scores are never transformed.

Ties. Examples with equal scores move together: a deterministic threshold flags all of them or none.
TPR at a target FPR is the TPR of the *randomised* threshold that reaches exactly that FPR, i.e. the
linear interpolation between the two ROC vertices around it: the expected TPR when the tied
examples that straddle the operating point are split at random (Fawcett 2006, "An introduction to
ROC analysis", Sec. 4 and 7). When no tie holding a member straddles it, this is the TPR of the
last vertex at or below the target, as a deterministic threshold gives. AUC counts ties one half
(the area under the same interpolated curve); the advantage max(TPR - FPR) is reached at a vertex,
so randomising cannot raise it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from miaudit.errors import DataError

DEFAULT_FPRS = (0.001, 0.01, 0.05)


class RocCurve(NamedTuple):
    fpr: np.ndarray  # (k,) non-decreasing, starts at 0
    tpr: np.ndarray  # (k,) non-decreasing, starts at 0
    thresholds: np.ndarray  # (k,) predict member when score >= threshold; first is +inf


def check_labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(labels as bool, scores as float64)``."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise DataError(f"labels {labels.shape} and scores {scores.shape} must be 1-D arrays of the same length")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise DataError("membership labels must be 0 (non-member) or 1 (member)")
    if not np.isfinite(scores).all():
        raise DataError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite; fix the attack's inputs")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise DataError(f"need both members and non-members to evaluate; got {int(labels.sum())} members "
                        f"and {int((~labels).sum())} non-members")
    return labels, scores


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> RocCurve:
    """Full ROC: one point per distinct score (equivalent to scikit-learn's ``drop_intermediate=False``)."""
    labels, scores = check_labels_scores(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # end of each block of equal scores
    tp = np.cumsum(y)[last_of_run]
    fp = (last_of_run + 1) - tp
    fpr = np.r_[0.0, fp / (~labels).sum()]
    tpr = np.r_[0.0, tp / labels.sum()]
    return RocCurve(fpr, tpr, np.r_[np.inf, s[last_of_run]])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the full ROC (ties count one half)."""
    curve = roc_curve(labels, scores)
    return trapezoid(curve.tpr, curve.fpr)


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The area under ``y(x)`` by the trapezoid rule: ``np.trapezoid`` (numpy >= 2.0), else ``np.trapz``."""
    name = "trapezoid" if hasattr(np, "trapezoid") else "trapz"
    integrate: Callable[[np.ndarray, np.ndarray], Any] = getattr(np, name)
    return float(integrate(y, x))


class OperatingPoint(NamedTuple):
    """The tie-aware operating point at a target FPR (:func:`operating_point`).

    ``tpr`` is the expected TPR of the randomised threshold reaching exactly ``fpr``; ``tpr_below``
    / ``tpr_above`` are the deterministic TPRs of the ROC vertices around it (FPR at most / above
    ``fpr``; equal to ``tpr`` when no tie holding a member straddles the operating point);
    ``tied_members`` / ``tied_nonmembers`` count the examples sharing the score that straddles it
    (0 and 0 when none does); ``score`` is that score (None when none straddles).
    """

    fpr: float
    tpr: float
    tpr_below: float
    tpr_above: float
    tied_members: int
    tied_nonmembers: int
    score: float | None

    @property
    def tie_decides(self) -> bool:
        """True when splitting the straddling tie gives at least half of the reported TPR."""
        return self.tpr > 0 and self.tpr - self.tpr_below >= 0.5 * self.tpr


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, *, fpr: float) -> float:
    """TPR of the randomised threshold whose FPR is exactly ``fpr`` (ties split at random; see the module)."""
    return _tpr_at(roc_curve(labels, scores), fpr)


def _straddle(curve: RocCurve, fpr: float) -> int:
    """Index ``i`` of the last vertex with FPR at most ``fpr`` (the next vertex, if any, lies above it)."""
    return int(np.searchsorted(curve.fpr, fpr + 1e-12, side="right")) - 1


def _tpr_at(curve: RocCurve, fpr: float) -> float:
    i = _straddle(curve, fpr)
    if i + 1 >= curve.fpr.size:
        return float(curve.tpr[i])
    f0, f1, t0, t1 = curve.fpr[i], curve.fpr[i + 1], curve.tpr[i], curve.tpr[i + 1]
    return float(t0 + (t1 - t0) * max(fpr - f0, 0.0) / (f1 - f0))


def operating_point(labels: np.ndarray, scores: np.ndarray, *, fpr: float) -> OperatingPoint:
    """The tie-aware operating point at ``fpr``, with the tie that straddles it (if any)."""
    labels, scores = check_labels_scores(labels, scores)
    curve = roc_curve(labels, scores)
    return _operating_point(curve, fpr, int(labels.sum()), int((~labels).sum()))


def _operating_point(curve: RocCurve, fpr: float, n_members: int, n_nonmembers: int) -> OperatingPoint:
    i = _straddle(curve, fpr)
    tpr = _tpr_at(curve, fpr)
    if i + 1 >= curve.fpr.size or curve.tpr[i + 1] == curve.tpr[i] or curve.fpr[i] >= fpr - 1e-12:
        return OperatingPoint(fpr, tpr, tpr, tpr, 0, 0, None)
    tied_members = int(round((curve.tpr[i + 1] - curve.tpr[i]) * n_members))
    tied_nonmembers = int(round((curve.fpr[i + 1] - curve.fpr[i]) * n_nonmembers))
    return OperatingPoint(fpr, tpr, float(curve.tpr[i]), float(curve.tpr[i + 1]), tied_members, tied_nonmembers,
                          float(curve.thresholds[i + 1]))


def membership_advantage(labels: np.ndarray, scores: np.ndarray) -> float:
    """max over thresholds of TPR - FPR (Yeom et al. 2018); 0.5 + advantage/2 is the best balanced accuracy."""
    curve = roc_curve(labels, scores)
    return float((curve.tpr - curve.fpr).max())


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising TPR - FPR on these labels (an *oracle* choice if these are the evaluation labels)."""
    curve = roc_curve(labels, scores)
    i = 1 + int(np.argmax((curve.tpr - curve.fpr)[1:]))  # a finite threshold even for a worse-than-random attack
    return float(curve.thresholds[i])


def decision_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision / recall / F1 (member class, macro, weighted) of 0/1 predictions."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(predictions).astype(bool)
    out: dict[str, float] = {"accuracy": float((labels == pred).mean())}
    per_class = {}
    for cls, name in ((True, "member"), (False, "nonmember")):
        tp = float(((pred == cls) & (labels == cls)).sum())
        n_pred = float((pred == cls).sum())
        n_true = float((labels == cls).sum())
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = (precision, recall, f1, n_true)
    out["balanced_accuracy"] = 0.5 * (per_class["member"][1] + per_class["nonmember"][1])
    out["precision"], out["recall"], out["f1"] = per_class["member"][:3]
    total = sum(v[3] for v in per_class.values())
    for i, metric in enumerate(("precision", "recall", "f1")):
        out[f"{metric}_macro"] = float(np.mean([v[i] for v in per_class.values()]))
        out[f"{metric}_weighted"] = float(sum(v[i] * v[3] for v in per_class.values()) / total)
    return out


def tie_warnings(points: list[OperatingPoint]) -> list[str]:
    """One message per tie that decides the TPR at one or more of ``points`` (:attr:`OperatingPoint.tie_decides`)."""
    by_tie: dict[float, list[OperatingPoint]] = {}
    for p in points:
        if p.tie_decides and p.score is not None:
            by_tie.setdefault(p.score, []).append(p)
    out = []
    for score, tied in by_tie.items():
        first = tied[0]
        figures = ", ".join(f"{p.tpr:.3f} at {p.fpr:g} FPR" for p in tied)
        out.append(f"a tie decides TPR {figures}: {first.tied_members} members and {first.tied_nonmembers} "
                   f"non-members share the score {score:.6g}, and the figure is the expected TPR when the tie is "
                   f"split at random (a deterministic threshold gives {first.tpr_below:.3f} below the tie or "
                   f"{first.tpr_above:.3f} above it)")
    return out


def low_fpr_warnings(n_nonmembers: int, fprs: tuple[float, ...] = DEFAULT_FPRS, *, min_false_positives: int = 10
                     ) -> list[str]:
    """Messages for FPR targets that allow fewer than ``min_false_positives`` false positives."""
    out = []
    for f in fprs:
        if n_nonmembers * f < min_false_positives:
            out.append(f"TPR at {f:g} FPR rests on {n_nonmembers * f:.1f} false positives ({n_nonmembers} "
                       f"non-members); it is not meaningful below {int(min_false_positives / f)} non-members")
    return out

