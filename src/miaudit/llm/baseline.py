"""Blind baseline: can the text alone, without the model, tell members from non-members?

A bag-of-words classifier (TF-IDF of word 1-2-grams + logistic regression) is cross-validated with
stratified k-fold; each document is scored by the fold model that did not see it (out-of-fold), and
those scores are evaluated like any attack. An AUC well above 0.5 means members and non-members
differ in distribution (topic, date, length), so an LLM attack's AUC on the same data measures that
shift as much as membership (Das et al. 2024, "Blind Baselines Beat Membership Inference Attacks for
Foundation Models"; Duan et al. 2024, MIMIR).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from miaudit.errors import DataError
from miaudit.evaluation import AttackResult, evaluate


def blind_baseline_scores(
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    n_splits: int = 5,
    seed: int = 0,
    ngram_max: int = 2,
    min_df: int = 2,
    C: float = 1.0,
) -> np.ndarray:
    """Out-of-fold member probabilities ``(n,)`` of a TF-IDF + logistic-regression classifier.

    The vectoriser is fitted inside each training fold, so no vocabulary or IDF statistic leaks from
    the held-out fold.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline

    labels = np.asarray(labels).astype(int)
    if len(texts) != labels.shape[0]:
        raise DataError(f"{len(texts)} texts but {labels.shape[0]} labels")
    smallest = int(min(labels.sum(), (1 - labels).sum()))
    if smallest < n_splits:
        raise DataError(f"the blind baseline's {n_splits}-fold cross-validation needs at least {n_splits} members "
                        f"and non-members; the smaller class has {smallest}. Lower n_splits or add documents")
    texts = np.asarray(list(texts), dtype=object)
    scores = np.zeros(labels.shape[0], dtype=np.float64)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in folds.split(texts, labels):
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min(min_df, len(train)), sublinear_tf=True),
            LogisticRegression(C=C, max_iter=1000),
        )
        model.fit(texts[train], labels[train])
        scores[test] = model.predict_proba(texts[test])[:, 1]
    return scores


def blind_baseline(
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
) -> AttackResult:
    """Out-of-fold scores of the bag-of-words classifier, evaluated (AUC with CI, TPR at low FPR...)."""
    scores = blind_baseline_scores(texts, labels, n_splits=n_splits, seed=seed)
    metrics = evaluate(labels, scores, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    params = {"features": "tfidf word 1-2 grams", "classifier": "logistic regression", "n_splits": n_splits,
              "seed": seed}
    ids = np.arange(len(labels)) if ids is None else np.asarray(ids)
    return AttackResult("blind_baseline", ids, np.asarray(labels), scores, params, metrics)


__all__ = ["blind_baseline", "blind_baseline_scores"]
