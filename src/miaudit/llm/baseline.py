"""Blind baseline for text: can the text alone, without the model, tell members from non-members?

The features of :mod:`miaudit.evaluation.blind_baseline` for documents: TF-IDF of word 1-2-grams, the
vectoriser fitted inside each training fold (no vocabulary or IDF statistic leaks from the held-out
fold); character 1-3-grams instead for texts written without spaces between words (Chinese, Japanese,
Thai: there a whole sentence is one "word", shared by no other document), decided once from the texts
alone (:func:`text_analyzer`). Cross-validation, the permutation verdict and the paired comparison
with each attack are the core module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from miaudit.errors import DataError
from miaudit.evaluation import AttackResult
from miaudit.evaluation import blind_baseline as core
from miaudit.evaluation.blind_baseline import (
    VERDICT_RULE,
    baseline_sample,
    baseline_verdict,
    compare_with_baseline,
)
from miaudit.evaluation.bootstrap import check_groups

Analyzer = Literal["word", "char"]
#: the baseline's features by analyzer, as recorded in metrics.json
FEATURES: dict[str, str] = {"word": "tfidf word 1-2 grams",
                            "char": "tfidf character 1-3 grams (texts without spaces between words)"}
CHAR_NGRAMS = (1, 3)


def text_analyzer(texts: Sequence[str], *, min_df: int = 2) -> Analyzer:
    """``"word"`` when at least half the documents hold a word that another document holds too, else ``"char"``
    (texts written without spaces between words). Decided from the texts alone, never the labels."""
    from sklearn.feature_extraction.text import CountVectorizer

    texts = list(texts)
    try:
        counts = CountVectorizer(min_df=min(min_df, len(texts))).fit_transform(texts)
    except ValueError:  # no word at all, or none that min_df documents share
        return "char"
    return "word" if 2 * np.count_nonzero(counts.getnnz(axis=1)) >= len(texts) else "char"


def tfidf_features(texts: Sequence[str], *, ngram_max: int = 2, min_df: int = 2,
                   analyzer: Analyzer = "word") -> core.Featurize:
    """Per fold: a TF-IDF vectoriser fitted on the training fold's texts, of word 1-``ngram_max``-grams or (with
    ``analyzer="char"``) of character :data:`CHAR_NGRAMS`-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    array = np.asarray(list(texts), dtype=object)
    options = ({"analyzer": "word", "ngram_range": (1, ngram_max)} if analyzer == "word"
               else {"analyzer": "char_wb", "ngram_range": CHAR_NGRAMS})

    def featurize(train: np.ndarray, test: np.ndarray) -> tuple[Any, Any]:
        vectoriser = TfidfVectorizer(min_df=min(min_df, len(train)), sublinear_tf=True, **options)
        return vectoriser.fit_transform(array[train]), vectoriser.transform(array[test])

    return featurize


def text_features(texts: Sequence[str], *, ngram_max: int = 2, min_df: int = 2) -> tuple[core.Featurize, str]:
    """The baseline's features for ``texts`` (the analyzer chosen by :func:`text_analyzer`) and their description."""
    analyzer = text_analyzer(texts, min_df=min_df)
    return tfidf_features(texts, ngram_max=ngram_max, min_df=min_df, analyzer=analyzer), FEATURES[analyzer]


def _checked_labels(texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).astype(int)
    if len(texts) != labels.shape[0]:
        raise DataError(f"{len(texts)} texts but {labels.shape[0]} labels")
    return labels


def _prepared(texts: Sequence[str], labels: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int,
              ngram_max: int, min_df: int) -> tuple[np.ndarray, np.ndarray | None, core.Folds, list[tuple[Any, Any]]]:
    labels = _checked_labels(texts, labels)
    groups = check_groups(groups, labels.shape[0])
    folds = core.cross_validation_folds(labels, groups, n_splits, seed)
    featurize, _ = text_features(texts, ngram_max=ngram_max, min_df=min_df)
    return labels, groups, folds, core.fold_features(folds, featurize)


def blind_baseline_scores(texts: Sequence[str], labels: np.ndarray, *, groups: np.ndarray | None = None,
                          n_splits: int = 5, seed: int = 0, ngram_max: int = 2, min_df: int = 2,
                          C: float = 1.0) -> np.ndarray:
    """Out-of-fold member probabilities ``(n,)`` of a TF-IDF + logistic-regression classifier; with ``groups``
    ``(n,)`` no group is split across folds."""
    labels, _, folds, features = _prepared(texts, labels, groups, n_splits, seed, ngram_max, min_df)
    return core.out_of_fold_scores(features, folds, labels, C)


def permutation_null(texts: Sequence[str], labels: np.ndarray, *, groups: np.ndarray | None = None,
                     n_splits: int = 5, seed: int = 0, n_permutations: int = 99, observed: float | None = None,
                     ngram_max: int = 2, min_df: int = 2, C: float = 1.0) -> dict[str, Any]:
    """AUCs of the text baseline on ``n_permutations`` random relabellings (same folds, same features); see
    :func:`miaudit.evaluation.blind_baseline.permutation_null`."""
    labels, groups, folds, features = _prepared(texts, labels, groups, n_splits, seed, ngram_max, min_df)
    return core.permutation_null(features, folds, labels, groups, n_permutations=n_permutations, seed=seed,
                                 observed=observed, C=C)


def blind_baseline(texts: Sequence[str], labels: np.ndarray, *, ids: np.ndarray | None = None,
                   groups: np.ndarray | None = None, n_splits: int = 5, seed: int = 0, n_bootstrap: int = 1000,
                   confidence: float = 0.95, n_permutations: int = 99) -> AttackResult:
    """Out-of-fold scores of the bag-of-words classifier, evaluated, with the permutation null
    (``metrics["null"]``) and the verdict (``metrics["verdict"]``)."""
    featurize, features = text_features(texts)
    return core.blind_baseline(_checked_labels(texts, labels), featurize, features=features,
                               evidence="the text", unit="documents", ids=ids, groups=groups, n_splits=n_splits,
                               seed=seed, n_bootstrap=n_bootstrap, confidence=confidence,
                               n_permutations=n_permutations)


__all__ = ["FEATURES", "VERDICT_RULE", "baseline_sample", "baseline_verdict", "blind_baseline", "blind_baseline_scores",
           "compare_with_baseline", "permutation_null", "text_analyzer", "text_features", "tfidf_features"]
