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

from pathlib import Path
from typing import Any

import numpy as np

from miaudit.classifier.config import RecordBaselineConfig
from miaudit.data import ArrayDataset
from miaudit.evaluation import blind_baseline as core
from miaudit.runs.pipeline import ScoredAttack

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
    """The blind baseline on the audited records beside the scored attacks
    (:func:`~miaudit.evaluation.blind_baseline.run_beside_attacks`): the ``blind_baseline`` section of
    ``metrics.json``, or ``None`` (with a warning) when the records are too few for its folds."""
    n_classes = audited.n_classes
    assert n_classes is not None  # an ArrayDataset infers it
    return core.run_beside_attacks(
        scored[0].membership, scored[0].ids, audited.groups,
        lambda sample: record_features(audited.x[sample], audited.y[sample], n_classes), scored, settings,
        evidence="the records", unit="records", folder=folder, seed=seed, n_bootstrap=n_bootstrap,
        confidence=confidence, warnings=warnings)


__all__ = ["MAX_COMPONENTS", "MAX_INPUT_VALUES", "record_baseline", "record_features"]
