"""Blind baseline: can the records alone, without the model, tell members from non-members?

A classifier that never queries the audited model (logistic regression on features of the records
themselves: a text's words, a tabular or image record's values and label) is cross-validated with
stratified k-fold (stratified *group* k-fold when records come in groups, so that no group is on
both sides of a split); each record is scored by the fold model that did not see it (out-of-fold),
and those scores are evaluated like any attack. An AUC well above 0.5 means members and non-members
differ in distribution (topic, date, source, preprocessing), so an attack's AUC on the same records
measures that shift as much as membership (Das et al. 2024, "Blind Baselines Beat Membership
Inference Attacks for Foundation Models"; Duan et al. 2024, MIMIR). A kind supplies the features
(``featurize``: fitted on each training fold only); everything else is here.

The verdict. The bootstrap interval of the baseline's AUC treats its out-of-fold scores as fixed,
so it misses the variance of fitting the classifier and of the cross-validation split: on a truly
random split, 20 random relabellings of the same 1,000 texts gave AUCs from 0.451 to 0.561 while
one run's interval was [0.507, 0.600]. The verdict therefore compares the observed AUC with a
permutation null (Ojala & Garriga 2010, "Permutation tests for studying classifier performance"):
the same procedure (same folds and features) run on ``n_permutations`` random relabellings that keep
every fold's class counts, as the stratified folds of the observed labels do (permuting whole groups'
labels when every group is all-member or all-non-member). "The label groups
differ in distribution" only when the permutation p-value is at most ``1 - confidence`` *and* the
AUC's interval excludes 0.5; otherwise there is no evidence of a shift.

Each attack is compared with the baseline on the same records by a paired bootstrap of the AUC
difference (:func:`compare_with_baseline`): it "beats the baseline" when the interval of
``AUC(attack) - AUC(baseline)`` lies above 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from miaudit.data.splits import stratified_sample
from miaudit.errors import ConfigError, DataError
from miaudit.evaluation.bootstrap import check_groups, stratified_bootstrap
from miaudit.evaluation.metrics import roc_auc
from miaudit.evaluation.report import _curve_stats, evaluate
from miaudit.evaluation.result import AttackResult

log = logging.getLogger(__name__)

#: the baseline's classifier, as recorded in metrics.json
CLASSIFIER = "logistic regression (liblinear, C = 1)"
VERDICT_RULE = ("members and non-members differ in distribution when the permutation p-value (the share of random "
                "relabellings on which the same cross-validated classifier reaches at least the observed AUC) is at "
                "most 1 - confidence and the AUC's confidence interval excludes 0.5")

Folds = list[tuple[np.ndarray, np.ndarray]]
#: ``(training rows, held-out rows) -> (training features, held-out features)``, fitted on the training rows only
Featurize = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]


@dataclass
class BaselineSettings:
    """A kind's ``blind_baseline:`` config section: ``enabled``, ``n_splits``-fold cross-validation, a verdict
    against ``n_permutations`` random relabellings (0: no verdict), and, in the field a subclass names in
    :attr:`limit_option`, the most records it runs on (a seeded stratified subsample above it; ``None``: all)."""

    #: the subclass's field holding the most records the baseline runs on
    limit_option: ClassVar[str]

    enabled: bool = True
    n_splits: int = 5
    n_permutations: int = 99

    def __post_init__(self) -> None:
        limit = getattr(self, self.limit_option)
        if self.n_splits < 2:
            raise ConfigError(f"config.blind_baseline.n_splits: must be >= 2, got {self.n_splits}")
        if limit is not None and limit < 10 * self.n_splits:
            raise ConfigError(f"config.blind_baseline.{self.limit_option}: must be at least {10 * self.n_splits} "
                              f"(10 per fold) or null for all, got {limit}")
        if self.n_permutations < 0:
            raise ConfigError(f"config.blind_baseline.n_permutations: must be >= 0, got {self.n_permutations}")


def cross_validation_folds(labels: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int) -> Folds:
    """Stratified k-fold (stratified group k-fold with ``groups``) ``(train, test)`` row indices."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(min(labels.sum(), (1 - labels).sum()))
    if smallest < n_splits:
        raise DataError(f"the blind baseline's {n_splits}-fold cross-validation needs at least {n_splits} members "
                        f"and non-members; the smaller class has {smallest}. Lower blind_baseline.n_splits or add "
                        "records")
    if groups is None:
        return list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(labels, labels))
    n_groups = np.unique(groups).size
    if n_groups < n_splits:
        raise DataError(f"the blind baseline's grouped {n_splits}-fold cross-validation needs at least {n_splits} "
                        f"groups; the records form {n_groups}. Lower blind_baseline.n_splits, or group by a finer "
                        "column (a paper, book or person id, not a topic)")
    folds = list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(labels, labels, groups))
    for train, _ in folds:
        if labels[train].all() or not labels[train].any():
            raise DataError("a grouped cross-validation fold trains on one class only (groups hold a single class "
                            "and are too few); add groups or lower blind_baseline.n_splits")
    return folds


def fold_features(folds: Folds, featurize: Featurize) -> list[tuple[Any, Any]]:
    """Each fold's ``(training, held-out)`` features. They do not depend on labels, so the permutation null
    reuses them."""
    return [featurize(train, test) for train, test in folds]


def out_of_fold_scores(features: list[tuple[Any, Any]], folds: Folds, labels: np.ndarray, C: float = 1.0
                       ) -> np.ndarray:
    """``(n,)`` member probabilities, each from the fold model that did not see the record."""
    from sklearn.linear_model import LogisticRegression

    scores = np.full(labels.shape[0], 0.5)
    for (x_train, x_test), (train, test) in zip(features, folds):
        y = labels[train]
        if y.all() or not y.any():  # a relabelling can leave a training fold with one class: no information
            continue
        model = LogisticRegression(C=C, solver="liblinear", max_iter=1000)
        scores[test] = model.fit(x_train, y).predict_proba(x_test)[:, 1]
    return scores


def _relabel(labels: np.ndarray, groups: np.ndarray | None, folds: Folds, rng: np.random.Generator) -> np.ndarray:
    """A random relabelling that keeps every fold's class counts: labels permuted among each fold's held-out
    records (among its groups when every group holds one class).

    The observed labels were cross-validated with stratified folds, so every training fold has the
    overall class balance; a relabelling must too. Permuting across folds would unbalance the training
    folds, shift each fold model's scores against its held-out fold's class balance and bias the null
    AUC below 0.5, which makes the test claim shifts too often.
    """
    out = labels.copy()
    pure = False
    if groups is not None:
        _, inverse = np.unique(groups, return_inverse=True)
        share = np.bincount(inverse, weights=labels) / np.bincount(inverse)
        pure = bool(np.all((share == 0) | (share == 1)))
    for _, test in folds:
        if pure:
            names, local = np.unique(inverse[test], return_inverse=True)
            out[test] = rng.permutation(share[names])[local].astype(int)
        else:
            out[test] = rng.permutation(labels[test])
    return out


def permutation_null(features: list[tuple[Any, Any]], folds: Folds, labels: np.ndarray, groups: np.ndarray | None,
                     *, n_permutations: int, seed: int, observed: float | None, C: float = 1.0) -> dict[str, Any]:
    """AUCs of the baseline procedure on ``n_permutations`` random relabellings (same folds, same features).

    Returns ``{"n_permutations", "aucs": (n_permutations,) list, "mean", "quantile_95", "max", "p_value"}``;
    ``p_value`` (with ``observed``) is ``(1 + #{null AUC >= observed}) / (1 + n_permutations)``.
    """
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_permutations):
        relabelled = _relabel(labels, groups, folds, rng)
        aucs.append(roc_auc(relabelled, out_of_fold_scores(features, folds, relabelled, C)))
    null = np.asarray(aucs)
    out: dict[str, Any] = {"n_permutations": n_permutations, "aucs": null.tolist(),
                           "mean": float(null.mean()) if null.size else None,
                           "quantile_95": float(np.quantile(null, 0.95)) if null.size else None,
                           "max": float(null.max()) if null.size else None}
    if observed is not None:
        out["p_value"] = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations))
    return out


def baseline_verdict(auc: float, auc_ci: Sequence[float], null: dict[str, Any], confidence: float, *,
                     evidence: str = "the text", unit: str = "documents") -> dict[str, Any]:
    """``{"shift": bool | None, "text", "rule"}`` from the AUC, its interval and the permutation null;
    ``evidence``: what the baseline sees ("the text", "the records"), ``unit``: what it scores ("documents",
    "records").

    ``shift`` is None (undecided) without permutations.
    """
    ci = f"AUC {auc:.3f} [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}]"
    if not null.get("n_permutations"):
        return {"shift": None, "rule": VERDICT_RULE,
                "text": f"blind baseline {ci}; no permutation null was computed (blind_baseline.n_permutations = 0), "
                        "so no verdict on a distribution shift"}
    p, alpha = null["p_value"], 1.0 - confidence
    chance = (f"chance level of this procedure: AUC {null['mean']:.3f} on average, up to {null['max']:.3f} over "
              f"{null['n_permutations']} random relabellings; p = {p:.3g}")
    if p <= alpha + 1e-12 and auc_ci[0] > 0.5:
        return {"shift": True, "rule": VERDICT_RULE,
                "text": f"members and non-members differ in distribution: a classifier on {evidence} alone "
                        f"separates them ({ci}; "
                        f"{chance}), so attack AUCs on these {unit} measure that shift as well as membership"}
    return {"shift": False, "rule": VERDICT_RULE,
            "text": f"no evidence that members and non-members differ in distribution ({ci}; {chance})"}


def baseline_sample(labels: np.ndarray, groups: np.ndarray | None, max_records: int | None, seed: int
                    ) -> np.ndarray:
    """Sorted positions of the records the baseline runs on: all ``(n,)`` of them, or at most
    ``max_records`` drawn at random with members and non-members in their proportion (with ``groups``:
    whole groups in random order, as many as fit)."""
    labels = np.asarray(labels).astype(int)
    n = labels.shape[0]
    if max_records is None or n <= max_records:
        return np.arange(n)
    if groups is None:
        return stratified_sample(labels, max_records, seed)
    _, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse)
    order = np.random.default_rng(seed).permutation(sizes.size)
    taken = order[:max(1, int(np.searchsorted(np.cumsum(sizes[order]), max_records, side="right")))]
    return np.flatnonzero(np.isin(inverse, taken))


def blind_baseline(
    labels: np.ndarray,
    featurize: Featurize,
    *,
    features: str,
    evidence: str,
    unit: str,
    ids: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    n_permutations: int = 99,
) -> AttackResult:
    """Out-of-fold scores of the baseline classifier on ``featurize``'s features (described by ``features``),
    evaluated (AUC with CI, TPR at low FPR...), with the permutation null (``metrics["null"]``) and the
    verdict (``metrics["verdict"]``, naming ``evidence``, what the classifier sees, and ``unit``, what it scores)."""
    labels = np.asarray(labels).astype(int)
    groups = check_groups(groups, labels.shape[0])
    folds = cross_validation_folds(labels, groups, n_splits, seed)
    per_fold = fold_features(folds, featurize)
    scores = out_of_fold_scores(per_fold, folds, labels)
    metrics = evaluate(labels, scores, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, groups=groups)
    null = permutation_null(per_fold, folds, labels, groups, n_permutations=n_permutations, seed=seed,
                            observed=metrics["auc"])
    metrics["null"] = {k: v for k, v in null.items() if k != "aucs"}
    metrics["verdict"] = baseline_verdict(metrics["auc"], metrics["auc_ci"], null, confidence, evidence=evidence,
                                          unit=unit)
    cv = "stratified k-fold" if groups is None else f"stratified group k-fold ({np.unique(groups).size} groups)"
    params = {"features": features, "classifier": CLASSIFIER, "n_splits": n_splits, "cross_validation": cv,
              "n_permutations": n_permutations, "seed": seed}
    ids = np.arange(len(labels)) if ids is None else np.asarray(ids)
    return AttackResult("blind_baseline", ids, labels, scores, params, metrics, groups=groups)


def compare_with_baseline(labels: np.ndarray, attack_scores: np.ndarray, baseline_scores: np.ndarray, *,
                          groups: np.ndarray | None = None, n_bootstrap: int = 1000, confidence: float = 0.95,
                          seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of ``AUC(attack) - max(AUC(baseline), 0.5)`` on the same records ``(n,)``.

    The baseline counts as at least chance: a cross-validated classifier on labels it cannot predict
    often lands below 0.5 (each fold's training labels lean against its test labels), and a margin over
    such a baseline would credit an attack with beating noise. So "beats the baseline" also means
    "beats chance". Returns ``{"auc_difference", "auc_difference_ci", "beats"}``: ``beats`` is True when
    the interval lies above 0, False otherwise (None without bootstrap resamples).
    """
    labels = np.asarray(labels).astype(bool)
    attack_scores, baseline_scores = np.asarray(attack_scores, float), np.asarray(baseline_scores, float)
    auc = _curve_stats(())

    def difference(resample_labels: np.ndarray, index: np.ndarray) -> np.ndarray:
        idx = index.astype(np.int64)
        return auc(resample_labels, attack_scores[idx])[:1] - np.maximum(auc(resample_labels, baseline_scores[idx])[:1],
                                                                          0.5)

    point = float(difference(labels, np.arange(labels.size, dtype=float))[0])
    if not n_bootstrap:
        return {"auc_difference": point, "auc_difference_ci": None, "beats": None}
    low, high = stratified_bootstrap(labels, np.arange(labels.size, dtype=float), difference,
                                     n_resamples=n_bootstrap, confidence=confidence, seed=seed, groups=groups)
    return {"auc_difference": point, "auc_difference_ci": [float(low[0]), float(high[0])], "beats": bool(low[0] > 0)}


class ScoredEntry(Protocol):
    """What :func:`run_beside_attacks` reads and writes of an audit's scored attack: its scores on the audited
    records and the extra fields of its ``metrics.json`` entry."""

    scores: np.ndarray
    extra: dict[str, Any]


def run_beside_attacks(labels: np.ndarray, ids: np.ndarray, groups: np.ndarray | None,
                       features_of: Callable[[np.ndarray], tuple[Featurize, str]], attacks: Sequence[ScoredEntry],
                       settings: BaselineSettings, *, evidence: str, unit: str, folder: Path, seed: int,
                       n_bootstrap: int, confidence: float, warnings: list[str]) -> dict[str, Any] | None:
    """An audit's blind baseline: on the audited records ``(n,)`` (a seeded subsample of at most the settings'
    limit), with the features ``features_of(sample positions)`` gives and describes; its scores saved in
    ``folder/scores``, each attack's paired comparison in its ``extra["vs_blind_baseline"]``, a shift and a
    failure added to ``warnings``. Returns the ``blind_baseline`` section of ``metrics.json``, or ``None``
    when there are too few records (or groups) for the folds: the audit itself does not need the baseline,
    and it is found only after every record was scored."""
    start = time.perf_counter()
    labels = np.asarray(labels).astype(int)
    limit = getattr(settings, settings.limit_option)
    sample = baseline_sample(labels, groups, limit, seed)
    groups = None if groups is None else np.asarray(groups)[sample]
    featurize, features = features_of(sample)
    try:
        baseline = blind_baseline(labels[sample], featurize, features=features, evidence=evidence, unit=unit,
                                  ids=np.asarray(ids)[sample], groups=groups, n_splits=settings.n_splits,
                                  seed=seed, n_bootstrap=n_bootstrap, confidence=confidence,
                                  n_permutations=settings.n_permutations)
    except DataError as exc:
        warnings.append(f"no blind baseline: {exc}; the {unit} were not checked for a distribution shift")
        return None
    baseline.save(folder / "scores")
    for attack in attacks:
        attack.extra["vs_blind_baseline"] = compare_with_baseline(
            labels[sample], attack.scores[sample], baseline.scores, groups=groups, n_bootstrap=n_bootstrap,
            confidence=confidence, seed=seed)
    if baseline.metrics["verdict"]["shift"]:
        warnings.append(baseline.metrics["verdict"]["text"])
    option = f"blind_baseline.{settings.limit_option}"
    log.info("blind baseline on %d%s %s in %.1f s: AUC %.3f", sample.size,
             f" of the {labels.size} ({option})" if sample.size < labels.size else "", unit,
             time.perf_counter() - start, baseline.metrics["auc"])
    scope = {"inputs": f"{evidence.removeprefix('the ')} only", "unit": unit, "n_used": int(sample.size),
             "n_evaluated": int(labels.size), "subsample": bool(sample.size < labels.size), "limit_option": option}
    return {**baseline.params, **scope, **baseline.metrics}


__all__ = ["CLASSIFIER", "VERDICT_RULE", "BaselineSettings", "Featurize", "ScoredEntry", "baseline_sample",
           "baseline_verdict", "blind_baseline", "compare_with_baseline", "cross_validation_folds", "fold_features",
           "out_of_fold_scores", "permutation_null", "run_beside_attacks"]
