"""A fitted scikit-learn classifier as an audit target (probabilities, or labels only)."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from typing import Any

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.targets.base import example_ids, unpack
from miaudit.data.datasets import ArrayDataset
from miaudit.errors import ConfigError, SignalError


def class_indices(classes: Any) -> bool:
    """True when an estimator's ``classes_`` are class indices (non-negative integers), False for class names
    (strings, or other values: then class ``k`` is ``classes_[k]``, the ``k``-th column of ``predict_proba``)."""
    classes = np.asarray(classes)
    return bool(np.issubdtype(classes.dtype, np.integer) and classes.size and classes.min() >= 0)


class SklearnTarget:
    """Wraps a fitted estimator; inputs with more than 2 dimensions are flattened to ``(n, d)``.

    ``output``: "probabilities" (``predict_proba``), "labels" (``predict``, label-only access) or
    "auto" (probabilities when the estimator has ``predict_proba``). ``predict_proba`` columns follow
    ``estimator.classes_``; they are placed at those class indices in an ``(n, K)`` array, so a model
    fitted on a subset of the classes still lines up with the labels. An estimator fitted on class names
    ("no", "yes") has class ``k`` = ``classes_[k]``: labels must then be those positions. ``columns_matched``:
    the caller put the inputs' columns in the order of the estimator's ``feature_names_in_`` (or warned that it
    could not), so scikit-learn's "X does not have valid feature names" warning on each call is silenced.
    """

    def __init__(self, estimator: Any, *, output: str = "auto", n_classes: int | None = None,
                 columns_matched: bool = False):
        if output not in ("auto", "probabilities", "labels"):
            raise ConfigError(f"SklearnTarget output {output!r} is not allowed; choose 'auto', 'probabilities' or "
                              "'labels'")
        if output == "auto":
            output = "probabilities" if hasattr(estimator, "predict_proba") else "labels"
        if output == "probabilities" and not hasattr(estimator, "predict_proba"):
            raise ConfigError(f"{type(estimator).__name__} has no predict_proba; use output='labels'")
        self.estimator = estimator
        self.output = output
        self.n_classes = n_classes
        self.access = "probabilities" if output == "probabilities" else "label-only"
        self.columns_matched = columns_matched

    def fingerprint(self) -> str:
        """Hash of the pickled estimator (its parameters and fitted state)."""
        return hashlib.sha256(pickle.dumps(self.estimator)).hexdigest()[:16]

    def outputs(self, dataset_or_x: ArrayDataset | np.ndarray, y: np.ndarray | None = None) -> ClassifierOutputs:
        x, y = unpack(dataset_or_x, y)
        ids = example_ids(dataset_or_x)
        x = x.reshape(len(x), -1)
        classes = getattr(self.estimator, "classes_", None)
        if classes is None:
            raise SignalError(f"{type(self.estimator).__name__} is not fitted; call fit before auditing it")
        with warnings.catch_warnings():
            if self.columns_matched:
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if self.output == "labels":
                predicted = np.asarray(self.estimator.predict(x))
                if not class_indices(classes):  # class names: their positions in classes_
                    predicted = np.searchsorted(np.asarray(classes), predicted)
                return ClassifierOutputs(y, predictions=predicted, ids=ids)
            proba = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)  # (n, len(classes_))
        positions = np.asarray(classes) if class_indices(classes) else np.arange(len(classes))
        n_classes = self.n_classes or int(max(positions.max(), y.max())) + 1
        if n_classes <= positions.max():
            raise SignalError(f"estimator knows class {positions.max()} but n_classes={n_classes}")
        probs = np.zeros((len(x), n_classes))
        probs[:, positions] = proba
        return ClassifierOutputs(y, probs=probs, ids=ids)
