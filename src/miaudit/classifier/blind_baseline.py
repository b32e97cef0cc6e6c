"""Blind baseline for classifier records: do the member and non-member files differ without the model?

When the user gives the members and non-members (their own model's training data and other data),
nothing guarantees that the two files come from one distribution: another date, source, class
balance or preprocessing lets an attack separate them without any memorisation. The records
alone (inputs and labels, no model) are classified by :mod:`miaudit.evaluation.blind_baseline`'s
cross-validated logistic regression on :func:`record_features`; a shift makes the run inconclusive,
and every attack is compared with the baseline on the same records. A split the tool drew at random
needs no such check: the baseline runs only on the user's files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.classifier.config import RecordBaselineConfig
from miaudit.data import ArrayDataset
from miaudit.errors import DataError
from miaudit.evaluation import blind_baseline as core
from miaudit.runs.pipeline import ScoredAttack

log = logging.getLogger(__name__)

#: at most this many principal components of the standardised inputs (fitted on each training fold) are the
#: baseline's features beside the one-hot label, so that its 500 logistic-regression fits stay cheap on images
MAX_COMPONENTS = 50
#: inputs with more values than this (large images) are read at a seeded random subset of this many positions,
#: so that the baseline's copies stay small (5,000 records: 164 MB in float64)
MAX_INPUT_VALUES = 4096


def record_features(x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[core.Featurize, str]:
    """Per fold: the inputs flattened (at a seeded random :data:`MAX_INPUT_VALUES` of their positions when they
    have more) and standardised on the training fold, reduced to at most :data:`MAX_COMPONENTS` principal
    components of the training fold, beside the one-hot label; and a description for ``metrics.json``."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    flat = np.asarray(x).reshape(len(x), -1)
    n_values = flat.shape[1]
    if n_values > MAX_INPUT_VALUES:
        positions = np.sort(np.random.default_rng(0).choice(n_values, MAX_INPUT_VALUES, replace=False))
        flat = flat[:, positions]
    flat = flat.astype(np.float64)
    labels = np.eye(n_classes)[np.asarray(y, dtype=np.int64)]
    reduce = flat.shape[1] > MAX_COMPONENTS

    def featurize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scaler = StandardScaler().fit(flat[train])
        fitted, held_out = scaler.transform(flat[train]), scaler.transform(flat[test])
        if reduce:
            pca = PCA(n_components=min(MAX_COMPONENTS, len(train) - 1), svd_solver="randomized", random_state=0)
            fitted, held_out = pca.fit_transform(fitted), pca.transform(held_out)
        return np.hstack([fitted, labels[train]]), np.hstack([held_out, labels[test]])

    inputs = (f"at most {MAX_COMPONENTS} principal components of the standardised inputs" if reduce
              else "the standardised inputs")
    if n_values > MAX_INPUT_VALUES:
        inputs += f" (at a seeded random {MAX_INPUT_VALUES:,} of their {n_values:,} values)"
    return featurize, f"{inputs} and the one-hot label"


def record_baseline(settings: RecordBaselineConfig, audited: ArrayDataset, scored: list[ScoredAttack], *,
                    folder: Path, seed: int, n_bootstrap: int, confidence: float,
                    warnings: list[str]) -> dict[str, Any] | None:
    """The blind baseline on the audited records (its scores saved beside the attacks'), its verdict, and each
    attack's paired comparison with it (``vs_blind_baseline`` in the attack's entry); the section of
    ``metrics.json``. Too few records for its cross-validation leave a warning instead (``None``): the audit
    itself does not need the baseline."""
    start = time.perf_counter()
    membership = scored[0].membership.astype(int)
    groups = audited.groups
    sample = core.baseline_sample(membership, groups, settings.max_records, seed)
    labels = membership[sample]
    groups = None if groups is None else np.asarray(groups)[sample]
    n_classes = audited.n_classes
    assert n_classes is not None  # an ArrayDataset infers it
    featurize, features = record_features(audited.x[sample], audited.y[sample], n_classes)
    try:
        baseline = core.blind_baseline(labels, featurize, features=features, evidence="the records",
                                       unit="records", ids=np.asarray(scored[0].ids)[sample], groups=groups,
                                       n_splits=settings.n_splits, seed=seed, n_bootstrap=n_bootstrap,
                                       confidence=confidence, n_permutations=settings.n_permutations)
    except DataError as exc:  # too few records (or groups) for the folds
        warnings.append(f"no blind baseline: {exc}; the member and non-member files were not checked for a "
                        "distribution shift")
        return None
    baseline.save(folder / "scores")
    for attack in scored:
        attack.extra["vs_blind_baseline"] = core.compare_with_baseline(
            labels, attack.scores[sample], baseline.scores, groups=groups, n_bootstrap=n_bootstrap,
            confidence=confidence, seed=seed)
    if baseline.metrics["verdict"]["shift"]:
        warnings.append(baseline.metrics["verdict"]["text"])
    log.info("blind baseline on %d%s audited records in %.1f s: AUC %.3f", sample.size,
             f" of the {membership.size} (blind_baseline.max_records)" if sample.size < membership.size else "",
             time.perf_counter() - start, baseline.metrics["auc"])
    scope = {"inputs": "records only", "unit": "records", "n_used": int(sample.size),
             "n_evaluated": int(membership.size), "subsample": bool(sample.size < membership.size),
             "limit_option": "blind_baseline.max_records"}
    return {**baseline.params, **scope, **baseline.metrics}


__all__ = ["MAX_COMPONENTS", "MAX_INPUT_VALUES", "record_baseline", "record_features"]
