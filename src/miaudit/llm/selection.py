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
from miaudit.llm.scoring import acmia_grid
from miaudit.llm.signals import TokenSignals

#: attack -> the hyper-parameter chosen here
TUNED = {"ac": "beta", "deriv_ac": "beta", "norm_ac": "beta", "min_k": "k", "min_k_pp": "k", "dc_pdd": "a"}
#: the authors' grids (Min-K%++ and ACMIA code: k = 0.1 .. 1.0; DC-PDD a in ACMIA's code)
K_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
A_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


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


def _check_attack(attack: str) -> str:
    if attack not in TUNED:
        raise ConfigError(f"no hyper-parameter to choose for attack {attack!r}; choose from {', '.join(TUNED)}")
    return TUNED[attack]


def default_grid(attack: str, signals: Sequence[TokenSignals]) -> np.ndarray:
    """Candidates: every beta of the documents' grid that the variant defines, or the authors' k / a."""
    param = _check_attack(attack)
    if param == "beta":
        betas = acmia_grid(signals[:1])[attack].betas
        # AC is identically 0 at beta = 1 (p_1 = p): a constant scorer is never a candidate
        return betas[~np.isclose(betas, 1.0)] if attack == "ac" else betas
    return np.asarray(K_GRID if param == "k" else A_GRID, dtype=np.float64)


def grid_scores(attack: str, signals: Sequence[TokenSignals], grid: Sequence[float] | None = None,
                **fixed: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(grid (g,), scores (g, n))``: the attack's scores at every candidate value (higher = member).
    ACMIA variants read their whole grid from one :func:`acmia_grid` call. ``fixed``: other parameters
    (``token_freq`` for dc_pdd)."""
    from miaudit.attacks.registry import create_attack

    param = _check_attack(attack)
    docs = list(signals)
    values = default_grid(attack, docs) if grid is None else np.asarray(grid, dtype=np.float64)
    if param == "beta":
        table = acmia_grid(docs)[attack]
        columns = []
        for b in values:
            hits = np.flatnonzero(np.isclose(table.betas, b, rtol=1e-9, atol=0))
            if hits.size == 0:
                raise ConfigError(f"{attack}: beta {b!r} is not on the signals' grid for this variant")
            columns.append(int(hits[0]))
        return values, table.scores[:, columns].T.copy()
    scores = [create_attack(attack, target_kind="llm", **{param: float(v)}, **fixed).score(docs) for v in values]
    return values, np.asarray(scores)


def _best(aucs: np.ndarray) -> int:
    """Index of the largest AUC (the first of ties, so the choice is deterministic)."""
    return int(np.argmax(aucs))


def choose(attack: str, signals: Sequence[TokenSignals], labels: np.ndarray, grid: Sequence[float] | None = None,
           **fixed: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """``(best value, grid, AUC per grid value)`` on labelled documents."""
    values, scores = grid_scores(attack, signals, grid, **fixed)
    aucs = np.array([roc_auc(labels, s) for s in scores])
    return float(values[_best(aucs)]), values, aucs


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
    grid: Sequence[float] | None = None,
    method: Literal["holdout", "kfold"] = "holdout",
    calibration_fraction: float = 0.3,
    n_folds: int = 5,
    seed: int = 0,
    n_bootstrap: int = 1000,
    **fixed: Any,
) -> Selection:
    """Choose the attack's hyper-parameter without looking at the test labels, and report the oracle.

    ``"holdout"``: a stratified ``calibration_fraction`` of the documents picks the value (largest
    AUC); the rest are the test set, on which both the held-out choice and the oracle (best on the test
    labels) are evaluated with bootstrap CIs. ``"kfold"``: each fold is scored with the value chosen on
    the other folds; ``result`` holds per-fold metrics and their mean AUC; the oracle is the value best
    on all documents, evaluated on all of them.
    """
    param = _check_attack(attack)
    labels = np.asarray(labels)
    docs = list(signals)
    if len(docs) != labels.size:
        raise DataError(f"{len(docs)} documents but {labels.size} labels")
    values, scores = grid_scores(attack, docs, grid, **fixed)
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
        cal_aucs, per_fold, chosen = [], [], []
        for f in range(n_folds):
            train, test = folds != f, folds == f
            aucs = np.array([roc_auc(labels[train], s[train]) for s in scores])
            pick = _best(aucs)
            cal_aucs.append(aucs)
            chosen.append(float(values[pick]))
            per_fold.append(evaluate(labels[test], scores[pick][test], n_bootstrap=n_bootstrap, seed=seed + f))
        cal_aucs = np.asarray(cal_aucs)
        test_aucs = np.array([roc_auc(labels, s) for s in scores])
        best = _best(test_aucs)
        result = {"auc": float(np.mean([m["auc"] for m in per_fold])), "folds": per_fold}
        oracle = evaluate(labels, scores[best], n_bootstrap=n_bootstrap, seed=seed)
    else:
        raise ConfigError(f"selection method {method!r} is not allowed; choose holdout or kfold")
    return Selection(attack, param, method, chosen, result, float(values[best]), oracle, values, cal_aucs, test_aucs)
