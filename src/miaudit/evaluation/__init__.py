"""Evaluation: pure functions on (labels, scores), labels 1 = member, scores higher = member."""

from miaudit.evaluation.bootstrap import stratified_bootstrap
from miaudit.evaluation.metrics import (
    DEFAULT_FPRS,
    RocCurve,
    best_threshold,
    decision_metrics,
    low_fpr_warnings,
    membership_advantage,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)
from miaudit.evaluation.report import evaluate
from miaudit.evaluation.result import AttackResult

__all__ = [
    "DEFAULT_FPRS", "AttackResult", "RocCurve", "best_threshold", "decision_metrics", "evaluate",
    "low_fpr_warnings", "membership_advantage", "roc_auc", "roc_curve", "stratified_bootstrap", "tpr_at_fpr",
]
