"""Evaluation: pure functions on (labels, scores), labels 1 = member, scores higher = member."""

from miaudit.evaluation.bootstrap import exact_interval, honest_interval, stratified_bootstrap
from miaudit.evaluation.metrics import (
    DEFAULT_FPRS,
    OperatingPoint,
    RocCurve,
    best_threshold,
    decision_metrics,
    low_fpr_warnings,
    membership_advantage,
    operating_point,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)
from miaudit.evaluation.report import evaluate
from miaudit.evaluation.result import AttackResult

__all__ = [
    "DEFAULT_FPRS", "AttackResult", "OperatingPoint", "RocCurve", "best_threshold", "decision_metrics", "evaluate",
    "exact_interval", "honest_interval", "low_fpr_warnings", "membership_advantage", "operating_point", "roc_auc",
    "roc_curve", "stratified_bootstrap", "tpr_at_fpr",
]
