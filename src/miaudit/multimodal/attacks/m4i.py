"""M4I, multi-modal models membership inference (Hu, Wang, Sun, Wang, Xue, NeurIPS 2022), for dual encoders.

M4I attacks image-to-text models through the text a model outputs for an image. A dual encoder
outputs text by retrieval: its "output text" for an image is the caption it ranks highest among
the record's own captions and the attacker's gallery captions (:func:`~miaudit.multimodal.signals.retrieve`).
A model that memorised a pair retrieves the pair's own caption; on unseen images it retrieves
some other, merely similar caption. Both variants train a binary classifier on a shadow model's
features for its own members and non-members (the target's labels are never used) and score the
target's records with it; score = the classifier's logit, decision threshold 0.

- ``m4i_metric`` (metric-based, MB M4I): ROUGE-1, ROUGE-2 and ROUGE-L F1 between the ``top_k``
  retrieved captions and the record's reference captions (averaged over the references, then
  over the ``k`` retrieved captions), as in the authors' code; classifier: logistic regression on
  the standardised metrics (the authors use a linear SVM; both are linear).
- ``m4i_feature`` (feature-based, FB M4I): the attacker's own multimodal feature extractor (MFE,
  a dual encoder trained on the attacker's disjoint data, fixed for shadow and target alike)
  embeds the image and the retrieved caption; the feature is ``|MFE_img(x) - MFE_txt(t_out)|``
  (``e`` values); classifier: an MLP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from miaudit.attacks.base import Attack, Check, Interval
from miaudit.attacks.registry import register
from miaudit.errors import SignalError
from miaudit.evaluation import roc_auc
from miaudit.multimodal.attacks._common import as_reference, as_signals
from miaudit.multimodal.signals import PairSignals, retrieve
from miaudit.multimodal.textmetrics import rouge_scores

CITATION = ("Hu, Wang, Sun, Wang, Xue. M^4I: Multi-modal Models Membership Inference. NeurIPS 2022; for dual "
            "encoders the output text is the top retrieved caption")


def retrieved_texts(signals: PairSignals, own: np.ndarray, index: np.ndarray) -> list[list[str]]:
    """Texts of retrieved captions ``(n, k)`` (:func:`retrieve`'s output)."""
    return [[signals.captions[j] if o else signals.gallery_captions[j] for o, j in zip(own_r, idx_r)]
            for own_r, idx_r in zip(own, index)]


def metric_features(signals: PairSignals, top_k: int = 1) -> np.ndarray:
    """``(n, 3)`` ROUGE-1/2/L F1 of the model's ``top_k`` retrieved captions against each record's captions."""
    own, index = retrieve(signals, top_k)
    references: list[list[str]] = [[] for _ in range(len(signals))]
    for caption, r in zip(signals.captions, signals.owner):
        references[r].append(caption)
    out = np.empty((len(signals), 3))
    for r, texts in enumerate(retrieved_texts(signals, own, index)):
        out[r] = np.mean([rouge_scores(t, references[r]) for t in texts], axis=0)
    return out


def mfe_features(signals: PairSignals) -> np.ndarray:
    """``(n, e)`` ``|MFE_img(x) - MFE_txt(top-1 retrieved caption)|``."""
    if signals.mfe is None:
        raise SignalError("attack 'm4i_feature' needs the attacker's feature extractor (MFE) embeddings in the "
                          "signals; train one (config.split.n_mfe > 0) or pass PairSignals(mfe=MFEEmbeddings(...))")
    own, index = retrieve(signals, 1)
    is_own, top = own[:, 0], index[:, 0]
    retrieved = np.where(is_own[:, None], signals.mfe.text[np.where(is_own, top, 0)],
                         signals.mfe.gallery_text[np.where(is_own, 0, top)])
    return np.abs(signals.mfe.image - retrieved)


def _logit(model: Pipeline, x: np.ndarray) -> np.ndarray:
    p = np.clip(model.predict_proba(x)[:, 1], 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


class _M4I(Attack):
    target_kind = "multimodal"
    access = "embeddings"
    needs_reference = "shadow"
    fit_input = ("shadow",)
    requires_fit = True
    citation = CITATION

    def _features(self, signals: PairSignals) -> np.ndarray:
        raise NotImplementedError

    def _classifier(self) -> Pipeline:
        raise NotImplementedError

    def _fit(self, reference: Any) -> None:
        shadow = as_reference(reference, self.name, need="shadow")
        x = np.concatenate([self._features(s) for s in shadow.shadow])
        y = np.concatenate(shadow.shadow_membership)
        self.model_ = self._classifier().fit(x, y)
        self.n_features_ = x.shape[1]
        self.shadow_auc_ = float(roc_auc(y, _logit(self.model_, x)))
        self.threshold_ = 0.0  # logit 0 = probability 1/2

    def _learned_state(self) -> dict[str, Any]:
        """The classifier's AUC on the shadow records it was fitted on (far above the target's: over-fitting)."""
        return {"n_features": self.n_features_, "shadow_train_auc": self.shadow_auc_}

    def _score(self, signals: Any) -> np.ndarray:
        x = self._features(as_signals(signals, self.name))
        if x.shape[1] != self.n_features_:
            raise SignalError(f"attack {self.name!r} was fitted on {self.n_features_} features but got {x.shape[1]}; "
                              "use the same feature extractor for shadow and target")
        return _logit(self.model_, x)


@register
class M4IMetric(_M4I):
    """MB M4I: logistic regression on ROUGE-1/2/L of the retrieved caption(s) vs the record's captions."""

    name = "m4i_metric"
    signals = ("retrieval", "rouge")
    param_constraints = {"top_k": Interval(1, None, what="retrieved captions per image"),
                         "C": Interval(0, None, closed="neither", what="inverse regularisation strength")}

    def __init__(self, *, top_k: int = 1, C: float = 1.0):
        self.top_k = top_k
        self.C = C

    def _features(self, signals: PairSignals) -> np.ndarray:
        return metric_features(signals, self.top_k)

    def _classifier(self) -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))


@register
class M4IFeature(_M4I):
    """FB M4I: MLP on ``|MFE_img(x) - MFE_txt(retrieved caption)|`` (the attacker's fixed feature extractor)."""

    name = "m4i_feature"
    signals = ("retrieval", "mfe")
    param_constraints = {"hidden": Check(lambda h: len(h) > 0 and all(v >= 1 for v in h),
                                         "a non-empty list of positive hidden-layer sizes"),
                         "alpha": Interval(0, None, what="L2 penalty"),
                         "max_iter": Interval(1, None, what="training epochs")}

    def __init__(self, *, hidden: Sequence[int] = (64,), alpha: float = 1e-3, max_iter: int = 300, seed: int = 0):
        self.hidden = hidden
        self.alpha = alpha
        self.max_iter = max_iter
        self.seed = seed

    def _features(self, signals: PairSignals) -> np.ndarray:
        return mfe_features(signals)

    def _classifier(self) -> Pipeline:
        hidden = tuple(int(h) for h in self.hidden)
        return make_pipeline(StandardScaler(), MLPClassifier(hidden, alpha=self.alpha, max_iter=self.max_iter,
                                                             early_stopping=True, random_state=self.seed))
