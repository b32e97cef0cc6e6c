"""Classifier outputs and the per-example signals derived from them.

A :class:`ClassifierOutputs` holds what one model produced on ``n`` examples: logits
``(n, C)``, or probabilities ``(n, C)``, or only predicted labels ``(n,)`` (label-only access),
plus the true labels ``(n,)`` and, optionally, the examples' ids ``(n,)`` (unique; targets add the
ids of the :class:`~miaudit.data.ArrayDataset` they run on), by which attacks line up a target
with its reference models. Derived signals are computed lazily, once, and are pure functions of
those arrays.
"""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Literal

import numpy as np
from scipy.special import log_softmax, logsumexp, softmax

from miaudit.errors import SignalError

EPS = 1e-12
#: what a classifier's outputs give, weakest first
OutputAccess = Literal["label-only", "probabilities", "logits"]
#: signal name -> access level it needs
CLASSIFIER_SIGNALS: dict[str, OutputAccess] = {
    "correctness": "label-only",
    "probs": "probabilities",
    "loss": "probabilities",
    "confidence": "probabilities",
    "entropy": "probabilities",
    "modified_entropy": "probabilities",
    "scaled_logit": "probabilities",
    "logits": "logits",
}


class ClassifierOutputs:
    """One classifier's outputs on ``n`` examples (give exactly one of logits, probs, predictions).

    ``ids`` ``(n,)``: identifiers of the examples, unique (``None``: unknown, and attacks line up
    outputs of different models by position).
    """

    def __init__(self, labels: np.ndarray, *, logits: np.ndarray | None = None, probs: np.ndarray | None = None,
                 predictions: np.ndarray | None = None, ids: np.ndarray | None = None, prob_tolerance: float = 1e-3):
        given = [name for name, v in (("logits", logits), ("probs", probs), ("predictions", predictions))
                 if v is not None]
        if len(given) != 1:
            raise SignalError(f"give exactly one of logits, probs or predictions (got {given or 'none'})")
        self.labels = np.asarray(labels)
        if self.labels.ndim != 1 or self.labels.size == 0:
            raise SignalError(f"labels must be a non-empty 1-D array, got shape {self.labels.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            if not np.all(np.mod(self.labels, 1) == 0):
                raise SignalError("labels must be integer class indices")
            self.labels = self.labels.astype(np.int64)
        n = self.labels.size
        self.ids = _checked_ids(ids, n)
        self.logits: np.ndarray | None = None
        self.probs_given: np.ndarray | None = None
        self.predictions: np.ndarray | None = None
        self.access: OutputAccess
        if predictions is not None:
            self.predictions = np.asarray(predictions).astype(np.int64)
            if self.predictions.shape != (n,):
                raise SignalError(f"predictions have shape {self.predictions.shape}, expected ({n},) to match labels")
            self.access = "label-only"
            return
        array = np.asarray(logits if logits is not None else probs, dtype=np.float64)
        name = given[0]
        if array.ndim != 2 or array.shape[0] != n:
            raise SignalError(f"{name} have shape {array.shape}, expected ({n}, n_classes) to match {n} labels")
        if array.shape[1] < 2:
            raise SignalError(f"{name} have {array.shape[1]} column; a classifier needs at least 2 classes")
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).any(axis=1).sum())
            raise SignalError(f"{name} contain NaN or inf in {bad} rows; fix the model or drop those examples")
        if self.labels.min() < 0 or self.labels.max() >= array.shape[1]:
            raise SignalError(f"labels range over [{self.labels.min()}, {self.labels.max()}] but {name} have "
                              f"{array.shape[1]} classes")
        if probs is not None:
            if (array < -prob_tolerance).any():
                raise SignalError("probabilities are negative; pass logits=... if these are raw scores")
            sums = array.sum(axis=1)
            worst = float(np.abs(sums - 1).max())
            if worst > prob_tolerance:
                raise SignalError(f"probability rows must sum to 1 (largest deviation {worst:.3g}); pass logits=... "
                                  "for unnormalised scores, or normalise them first")
            self.probs_given = np.clip(array, 0.0, 1.0)
            self.access = "probabilities"
        else:
            if _look_like_probabilities(array):
                k = array.shape[1]
                raise SignalError(f"the logits look like probabilities (every row non-negative and summing to 1): a "
                                  f"second softmax would squeeze every confidence into [{1 / (np.e + k - 1):.3f}, "
                                  f"{np.e / (np.e + k - 1):.3f}] ({k} classes); remove the model's final softmax so "
                                  "it returns logits, or give probabilities as probs=... ('probs' in a precomputed "
                                  "file)")
            self.logits = array
            self.access = "logits"

    # -- basics -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.labels.size

    @property
    def n_classes(self) -> int:
        if self.predictions is not None:
            return int(max(self.labels.max(), self.predictions.max()) + 1)
        return self._scores.shape[1]

    @property
    def _scores(self) -> np.ndarray:
        """``(n, C)`` the logits or probabilities the model gave (whichever it gave; none for label-only outputs)."""
        scores = self.logits if self.logits is not None else self.probs_given
        if scores is None:
            raise SignalError("label-only outputs hold no logits or probabilities")
        return scores

    def subset(self, index: np.ndarray) -> ClassifierOutputs:
        """Outputs of the same model on ``index`` (indices or a boolean mask), ids included."""
        ids = None if self.ids is None else self.ids[index]
        if self.predictions is not None:
            return ClassifierOutputs(self.labels[index], predictions=self.predictions[index], ids=ids)
        if self.logits is not None:
            return ClassifierOutputs(self.labels[index], logits=self.logits[index], ids=ids)
        return ClassifierOutputs(self.labels[index], probs=self._scores[index], ids=ids)

    def with_ids(self, ids: np.ndarray | None) -> ClassifierOutputs:
        """The same outputs (arrays shared, not copied) on examples identified by ``ids`` ``(n,)``."""
        out = copy.copy(self)
        out.ids = _checked_ids(ids, len(self))
        return out

    def require(self, signal: str) -> None:
        """Raise :class:`SignalError` if this access level cannot produce ``signal``."""
        if signal not in CLASSIFIER_SIGNALS:
            raise SignalError(f"unknown classifier signal {signal!r}; known: {', '.join(CLASSIFIER_SIGNALS)}")
        levels = ["label-only", "probabilities", "logits"]
        if levels.index(CLASSIFIER_SIGNALS[signal]) > levels.index(self.access):
            raise SignalError(f"signal {signal!r} needs {CLASSIFIER_SIGNALS[signal]} access but this target only "
                              f"gives {self.access}; use a label-only attack or expose more of the model")

    def signal(self, name: str) -> np.ndarray:
        """A named signal, computed once: e.g. ``outputs.signal("loss")`` -> ``(n,)``."""
        self.require(name)
        return getattr(self, name)

    # -- derived signals ----------------------------------------------------------------------
    # From logits every signal is computed in log space: log p and log(1 - p) of the most probable
    # class come from its log-odds a = logsumexp(other logits) - its logit (log p = -softplus(a),
    # log(1 - p) = -softplus(-a)), so a model that is 1 - 1e-20 sure keeps distinct, ordered losses
    # and modified entropies instead of rounding p to 1 (and the scores to ties). From given
    # probabilities (a model the tool only sees through them) the values are read as given.
    @cached_property
    def _logit_logs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(log p, log(1 - p))``, each ``(n, C)``, exact from logits (see above)."""
        z = self.logits
        assert z is not None, "only outputs given as logits are computed in log space"
        rows = np.arange(len(self))
        log_p = log_softmax(z, axis=1)
        with np.errstate(divide="ignore"):
            log_q = np.log1p(-np.exp(log_p))  # accurate for every class but the most probable (p <= 1/2)
        top = z.argmax(axis=1)
        others = z.copy()
        others[rows, top] = -np.inf
        a = logsumexp(others, axis=1) - z[rows, top]  # log((1 - p_top) / p_top)
        log_p[rows, top] = -np.logaddexp(0.0, a)
        log_q[rows, top] = -np.logaddexp(0.0, -a)
        return log_p, log_q

    @cached_property
    def log_probs(self) -> np.ndarray:
        """(n, C) log-probabilities (exact from logits; clipped log of given probabilities)."""
        self.require("probs")
        if self.logits is not None:
            return self._logit_logs[0]
        return np.log(np.clip(self._scores, EPS, 1.0))

    @cached_property
    def probs(self) -> np.ndarray:
        self.require("probs")
        probs: np.ndarray = softmax(self.logits, axis=1) if self.logits is not None else self._scores
        return probs

    @cached_property
    def predicted(self) -> np.ndarray:
        """(n,) predicted class."""
        return self.predictions if self.predictions is not None else self.probs.argmax(axis=1)

    @cached_property
    def correctness(self) -> np.ndarray:
        """(n,) 1.0 where the prediction is right (Yeom et al. 2018 gap attack signal)."""
        return (self.predicted == self.labels).astype(np.float64)

    @cached_property
    def loss(self) -> np.ndarray:
        """(n,) cross-entropy of the true label (exact in log space from logits)."""
        return -self.log_probs[np.arange(len(self)), self.labels]

    @cached_property
    def confidence(self) -> np.ndarray:
        """(n,) probability of the true label. It rounds to 1.0 above 1 - 1e-16 (float64); ``loss`` keeps
        the order of such examples."""
        return self.probs[np.arange(len(self)), self.labels]

    @cached_property
    def entropy(self) -> np.ndarray:
        """(n,) Shannon entropy of the prediction (nats); in log space from logits."""
        if self.logits is not None:
            log_p = self.log_probs
            return -(np.exp(log_p) * log_p).sum(axis=1)
        p = self.probs
        return -(p * np.log(np.clip(p, EPS, 1.0))).sum(axis=1)

    @cached_property
    def modified_entropy(self) -> np.ndarray:
        """(n,) Song & Mittal (2021) Mentr: -(1-p_y) log p_y - sum_{i!=y} p_i log(1-p_i).

        From logits every term is computed in log space (exact at any confidence); from given
        probabilities, as Song & Mittal do, with probabilities clipped to [1e-12, 1 - 1e-12].
        """
        rows = np.arange(len(self))
        if self.logits is not None:
            log_p, log_q = self._logit_logs
            terms = np.exp(log_p) * log_q  # p_i log(1 - p_i)
            terms[rows, self.labels] = np.exp(log_q[rows, self.labels]) * log_p[rows, self.labels]  # (1-p_y) log p_y
            return -terms.sum(axis=1)
        p = np.clip(self.probs, EPS, 1 - EPS)
        p_y = p[rows, self.labels]
        others = p * np.log(1 - p)
        others[rows, self.labels] = 0.0
        return -(1 - p_y) * np.log(p_y) - others.sum(axis=1)

    @cached_property
    def scaled_logit(self) -> np.ndarray:
        """(n,) LiRA's log(p_y / (1 - p_y)) (Carlini et al. 2022); exact from logits via logsumexp."""
        rows = np.arange(len(self))
        if self.logits is not None:
            z = self.logits
            others = z.copy()
            others[rows, self.labels] = -np.inf
            return z[rows, self.labels] - logsumexp(others, axis=1)
        p_y = np.clip(self.probs[rows, self.labels], EPS, 1 - EPS)
        return np.log(p_y) - np.log1p(-p_y)


def _look_like_probabilities(array: np.ndarray) -> bool:
    """Whether every row of ``array`` ``(n, C)`` is non-negative and sums to 1 (to float32 round-off): what a
    softmax gives and real logits never do."""
    return bool((array >= 0).all() and np.abs(array.sum(axis=1) - 1).max() <= 1e-5)


def _checked_ids(ids: np.ndarray | None, n: int) -> np.ndarray | None:
    """``ids`` as an ``(n,)`` array (``None`` stays ``None``); uniqueness is checked where ids are looked up."""
    if ids is None:
        return None
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise SignalError(f"ids have shape {ids.shape}, expected ({n},) to match the labels")
    return ids
