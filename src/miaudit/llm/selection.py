"""Honest choice of LLM attack hyper-parameters: ACMIA's inverse temperature ``beta``, Min-K%'s and
Min-K%++'s ``k``, DC-PDD's ``a``.

The ACMIA paper tunes beta on a few labelled samples; its code keeps the best value on the
evaluation set itself. Both are reported here, labelled: the value chosen on a held-out calibration
split (or by k-fold) is the result; the best value on the test labels is the ``"oracle"``, an
optimistic upper bound that no real auditor can reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from miaudit.errors import ConfigError, DataError
from miaudit.evaluation import evaluate, roc_auc
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.signals import TokenSignals


@dataclass
class LLMCalibration:
    """Labelled calibration documents: ``signals`` (n documents) and ``labels`` (n,) 1 = member."""

    signals: Sequence[TokenSignals]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        if len(self.signals) != self.labels.shape[0] or self.labels.ndim != 1:
            raise DataError(f"calibration has {len(self.signals)} documents but labels of shape {self.labels.shape}")
        if not np.isin(self.labels, (0, 1)).all() or self.labels.all() or not self.labels.any():
            raise DataError("calibration labels must be 0/1 with both members and non-members present")


def _tunable(attack: str) -> tuple[type[LLMAttack], str]:
    """The class of LLM attack ``attack`` and the hyper-parameter it declares tunable."""
    from miaudit.attacks.registry import attack_names, get_attack_class

    cls = get_attack_class(attack, "llm")
    if not cls.tunable or not issubclass(cls, LLMAttack):
        tunable = [n for n in attack_names(target_kind="llm") if get_attack_class(n, "llm").tunable]
        raise ConfigError(f"no hyper-parameter to choose for attack {attack!r}; choose from {', '.join(tunable)}")
    return cls, next(iter(cls.tunable))


def default_grid(attack: str, signals: Sequence[TokenSignals]) -> np.ndarray:
    """The attack's declared candidates (:meth:`~miaudit.attacks.base.Attack.candidates`): the authors' k / a,
    or every beta of the documents' grid that the ACMIA variant defines."""
    cls, param = _tunable(attack)
    return cls.candidates(param, signals)


def grid_scores(attack: str, signals: Sequence[TokenSignals], grid: Sequence[float] | np.ndarray | None = None, *,
                fit_data: Any = None, **fixed: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(grid (g,), scores (g, n))``: the attack's scores at every candidate value (higher = member).
    ``fixed``: its other parameters; ``fit_data``: what ``fit`` receives if the attack must be fitted
    (token counts for dc_pdd). A candidate the parameter does not allow is a :class:`ConfigError`."""
    cls, param = _tunable(attack)
    docs = list(signals)
    values = cls.candidates(param, docs) if grid is None else np.asarray(grid, dtype=np.float64)
    for value in values:
        cls.check_param(param, float(value))
    return values, cls.grid_scores(param, values, docs, fit_data=fit_data, **fixed)


def _best(aucs: np.ndarray) -> int:
    """Index of the largest AUC (the first of ties, so the choice is deterministic)."""
    return int(np.argmax(aucs))


def best_value(values: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """``(best value, AUC per value)`` from the scores ``(g, n)`` of labelled documents at each of ``values``
    ``(g,)``: the one rule by which an audit's held-out choice, its oracle and the ``acmia`` attack's ``fit``
    choose (largest AUC, the first of ties)."""
    aucs = np.array([roc_auc(labels, s) for s in scores])
    return float(values[_best(aucs)]), aucs


def choose(attack: str, signals: Sequence[TokenSignals], labels: np.ndarray,
           grid: Sequence[float] | np.ndarray | None = None, *, fit_data: Any = None,
           **fixed: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """``(best value, grid, AUC per grid value)`` on labelled documents (:func:`best_value` of
    :func:`grid_scores`)."""
    values, scores = grid_scores(attack, signals, grid, fit_data=fit_data, **fixed)
    best, aucs = best_value(values, scores, labels)
    return best, values, aucs


@dataclass
class Selection:
    """A held-out choice and the oracle, both evaluated on the same test documents."""

    attack: str
    parameter: str
    method: str
    chosen: float | list[float]  # held-out choice (one per fold for k-fold)
    result: dict[str, Any]  # metrics of the held-out choice (k-fold: per fold and their mean AUC)
    oracle_value: float  # best value on the test labels ("oracle")
    oracle: dict[str, Any]  # metrics of the oracle value on the same test documents
    grid: np.ndarray = field(repr=False)
    calibration_aucs: np.ndarray = field(repr=False)  # (folds or 1, g)
    test_aucs: np.ndarray = field(repr=False)  # (g,)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: held-out value and AUC beside the oracle's, labelled."""
        return {"attack": self.attack, "parameter": self.parameter, "method": self.method,
                "held_out": {"value": self.chosen, "auc": self.result["auc"], "auc_ci": self.result.get("auc_ci")},
                "oracle": {"value": self.oracle_value, "auc": self.oracle["auc"], "auc_ci": self.oracle.get("auc_ci"),
                           "note": "chosen on the test labels: optimistic, not a result"}}


def _stratified_folds(labels: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per document, members and non-members spread evenly over the folds."""
    folds = np.empty(labels.size, dtype=np.int64)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        folds[idx] = np.arange(idx.size) % n_folds
    return folds


def select_and_evaluate(
    attack: str,
    signals: Sequence[TokenSignals],
    labels: np.ndarray,
    *,
    grid: Sequence[float] | np.ndarray | None = None,
    method: Literal["holdout", "kfold"] = "holdout",
    calibration_fraction: float = 0.3,
    n_folds: int = 5,
    seed: int = 0,
    n_bootstrap: int = 1000,
    fit_data: Any = None,
    **fixed: Any,
) -> Selection:
    """Choose the attack's hyper-parameter without looking at the test labels, and report the oracle.

    ``"holdout"``: a stratified ``calibration_fraction`` of the documents picks the value (largest
    AUC); the rest are the test set, on which both the held-out choice and the oracle (best on the test
    labels) are evaluated with bootstrap CIs. ``"kfold"``: each fold is scored with the value chosen on
    the other folds; ``result`` holds per-fold metrics and their mean AUC; the oracle is the value best
    on all documents, evaluated on all of them.
    """
    _, param = _tunable(attack)
    labels = np.asarray(labels)
    docs = list(signals)
    if len(docs) != labels.size:
        raise DataError(f"{len(docs)} documents but {labels.size} labels")
    values, scores = grid_scores(attack, docs, grid, fit_data=fit_data, **fixed)
    rng = np.random.default_rng(seed)
    if method == "holdout":
        if not 0 < calibration_fraction < 1:
            raise ConfigError(f"calibration_fraction must be in (0, 1), got {calibration_fraction!r}")
        calib = np.zeros(labels.size, dtype=bool)
        for cls in (0, 1):  # a stratified calibration_fraction of each class
            idx = rng.permutation(np.flatnonzero(labels == cls))
            calib[idx[:int(round(calibration_fraction * idx.size))]] = True
        test = ~calib
        for part, name in ((calib, "calibration"), (test, "test")):
            if labels[part].all() or not labels[part].any():
                raise DataError(f"the {name} split needs members and non-members; give more documents")
        cal_aucs = np.array([[roc_auc(labels[calib], s[calib]) for s in scores]])
        test_aucs = np.array([roc_auc(labels[test], s[test]) for s in scores])
        pick, best = _best(cal_aucs[0]), _best(test_aucs)
        result = evaluate(labels[test], scores[pick][test], n_bootstrap=n_bootstrap, seed=seed)
        oracle = evaluate(labels[test], scores[best][test], n_bootstrap=n_bootstrap, seed=seed)
        chosen: float | list[float] = float(values[pick])
    elif method == "kfold":
        if n_folds < 2 or min((labels == 0).sum(), (labels == 1).sum()) < n_folds:
            raise DataError(f"k-fold selection needs n_folds >= 2 and at least {n_folds} members and non-members")
        folds = _stratified_folds(labels, n_folds, rng)
        fold_aucs: list[np.ndarray] = []
        per_fold, chosen = [], []
        for f in range(n_folds):
            train, test = folds != f, folds == f
            aucs = np.array([roc_auc(labels[train], s[train]) for s in scores])
            pick = _best(aucs)
            fold_aucs.append(aucs)
            chosen.append(float(values[pick]))
            per_fold.append(evaluate(labels[test], scores[pick][test], n_bootstrap=n_bootstrap, seed=seed + f))
        cal_aucs = np.asarray(fold_aucs)
        test_aucs = np.array([roc_auc(labels, s) for s in scores])
        best = _best(test_aucs)
        result = {"auc": float(np.mean([m["auc"] for m in per_fold])), "folds": per_fold}
        oracle = evaluate(labels, scores[best], n_bootstrap=n_bootstrap, seed=seed)
    else:
        raise ConfigError(f"selection method {method!r} is not allowed; choose holdout or kfold")
    return Selection(attack, param, method, chosen, result, float(values[best]), oracle, values, cal_aucs, test_aucs)
