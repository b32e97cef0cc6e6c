"""AuditMI (Song & Shmatikov, KDD 2019): was this *user's* text used to train a text-generation model?

Signals are :class:`~miaudit.text_generator.features.UserRanks` (the target's next-token ranks on
each user's texts). ``fit`` takes :class:`~miaudit.text_generator.features.TextShadowData` (shadow
models trained on users the auditor knows to be in or out). Each user's feature vector is the
histogram of their ranks; as in the authors' code it is L2-normalised per user, standardised, and
classified by a linear SVM. Score = the classifier's decision function (higher = member), decision
threshold 0.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC

from miaudit.attacks.base import Attack, Interval
from miaudit.attacks.registry import register
from miaudit.errors import DataError, SignalError
from miaudit.text_generator.features import TextShadowData, UserRanks, bin_edges, rank_histograms


@register
class AuditMI(Attack):
    """User-level audit from rank histograms; ``max_rank`` None = the target's vocabulary size - 1.

    ``max_texts`` uses only each user's first ``max_texts`` texts (shadow and target alike).
    """

    name = "auditmi"
    target_kind = "text_generator"
    access = "probabilities"
    needs_reference = "shadow"
    fit_input = ("shadow",)
    requires_fit = True
    citation = "Song, Shmatikov. Auditing Data Provenance in Text-Generation Models. KDD 2019"
    param_constraints = {"n_bins": Interval(1, None), "max_rank": Interval(1, None, what="a token rank"),
                         "max_texts": Interval(1, None, what="texts per user")}

    def __init__(self, *, n_bins: int = 100, max_rank: int | None = None, binning: Literal["linear", "log"] = "linear",
                 classifier: Literal["linear_svm", "logistic"] = "linear_svm", max_texts: int | None = None,
                 seed: int = 0):
        self.n_bins = n_bins
        self.max_rank = max_rank
        self.binning = binning
        self.classifier = classifier
        self.max_texts = max_texts
        self.seed = seed

    def _features(self, ranks: UserRanks) -> np.ndarray:
        return rank_histograms(ranks.flat(self.max_texts), self.edges_, self.max_rank_)

    def _fit(self, reference: Any) -> None:
        shadow = getattr(reference, "shadow", reference)
        if not isinstance(shadow, TextShadowData):
            raise DataError(f"attack {self.name!r} learns from shadow text models: pass TextShadowData (their ranks "
                            f"on member and non-member users), got {type(shadow).__name__}")
        if len({r.vocab_size for r in shadow.ranks}) != 1:
            raise DataError("all shadow models must have the same vocabulary size")
        self.vocab_size_ = shadow.ranks[0].vocab_size
        self.max_rank_ = self.max_rank if self.max_rank is not None else self.vocab_size_ - 1
        self.edges_ = bin_edges(self.n_bins, self.max_rank_, self.binning)
        if self.classifier == "linear_svm":
            clf = LinearSVC(random_state=self.seed)
        else:
            clf = LogisticRegression(max_iter=2000, random_state=self.seed)
        x = np.concatenate([self._features(r) for r in shadow.ranks])
        y = np.concatenate(shadow.membership)
        self.model_ = make_pipeline(Normalizer(norm="l2"), StandardScaler(), clf).fit(x, y)
        self.threshold_ = 0.0

    def _score(self, signals: Any) -> np.ndarray:
        if not isinstance(signals, UserRanks):
            raise SignalError(f"attack {self.name!r} scores UserRanks (next-token ranks of the target on each user's "
                              f"texts), got {type(signals).__name__}")
        if signals.vocab_size != self.vocab_size_ and self.max_rank is None:
            raise SignalError(f"the target's vocabulary ({signals.vocab_size}) differs from the shadow models' "
                              f"({self.vocab_size_}); train shadows with the same vocabulary size or set max_rank")
        return self.model_.decision_function(self._features(signals))
