"""Shadow-model attacks: a classifier learns "member or not" from shadow models' outputs.

Shokri et al. (2017) train k shadow models like the target on disjoint data, label each shadow
model's outputs on its own training set "in" and on held-out data "out", and train one attack
model per true class on those (pooled over shadow models). Salem et al. (2019, ML-Leaks,
adversary 1) show that one shadow model and the three largest (sorted) probabilities suffice.

Features (``features`` parameter, concatenated in the given order; ``C`` classes)::

    probs             (C,)  probability vector (Shokri et al.; meaningful per class)
    sorted_probs      (C,)  probabilities sorted in decreasing order
    top_k             (k,)  the ``top_k`` largest probabilities (k = min(top_k, C))
    loss              (1,)  cross-entropy of the true label
    entropy           (1,)  entropy of the prediction
    modified_entropy  (1,)  Song & Mittal's Mentr
    label             (C,)  one-hot true label

The score is the attack model's predicted probability of "member"; ``threshold_ = 0.5``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from miaudit.attacks.base import Attack, Check, Interval
from miaudit.attacks.registry import register
from miaudit.classifier.attacks._reference import get_shadow
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference, ShadowData
from miaudit.errors import ConfigError, SignalError

Feature = Literal["probs", "sorted_probs", "top_k", "loss", "entropy", "modified_entropy", "label"]
AttackModel = Literal["lr", "mlp", "rf", "gb"]
EPS = 1e-12
SHOKRI = ("Shokri, Stronati, Song & Shmatikov, 'Membership Inference Attacks Against Machine Learning "
          "Models', IEEE S&P 2017")
SALEM = ("Salem, Zhang, Humbert, Berrang, Fritz & Backes, 'ML-Leaks: Model and Data Independent Membership "
         "Inference Attacks and Defenses on Machine Learning Models', NDSS 2019 (adversary 1)")


def attack_features(outputs: ClassifierOutputs, features: Sequence[str], *, top_k: int = 3) -> np.ndarray:
    """``(n, d)`` attack-model inputs built from one model's outputs (see the module docstring)."""
    outputs.require("probs")
    probs = outputs.probs
    n_classes = probs.shape[1]
    columns = []
    for name in features:
        if name == "probs":
            columns.append(probs)
        elif name == "sorted_probs":
            columns.append(-np.sort(-probs, axis=1))
        elif name == "top_k":
            columns.append(-np.sort(-probs, axis=1)[:, :min(top_k, n_classes)])
        elif name == "label":
            columns.append(np.eye(n_classes)[outputs.labels])
        else:  # loss, entropy, modified_entropy
            columns.append(outputs.signal(name)[:, None])
    return np.concatenate(columns, axis=1)


def make_attack_model(kind: str, seed: int) -> Any:
    """An unfitted scikit-learn binary classifier (inputs standardised for lr / mlp)."""
    if kind == "lr":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if kind == "mlp":  # Shokri et al. and Salem et al. use one hidden layer of 64 units
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=500,
                                                             random_state=seed))
    if kind == "rf":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed)
    return GradientBoostingClassifier(random_state=seed)


def member_probability(model: Any, x: np.ndarray) -> np.ndarray:
    """``(n,)`` a fitted binary attack model's probability of "member" (class 1 / True) for inputs ``x`` ``(n, d)``."""
    return model.predict_proba(x)[:, list(model.classes_).index(True)]


def member_log_odds(model: Any, x: np.ndarray) -> np.ndarray:
    """``(n,)`` log-odds of :func:`member_probability` (probabilities clipped to [1e-12, 1 - 1e-12])."""
    p = np.clip(member_probability(model, x), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@register
class ShokriAttack(Attack):
    """Attack classifiers trained on shadow models' member / non-member outputs."""

    name = "shokri"
    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "shadow"
    fit_input = ("shadow",)
    requires_fit = True
    signals = ("probs",)
    citation = SHOKRI
    param_constraints = {"features": Check(lambda features: len(features) > 0, "a non-empty list of features"),
                         "top_k": Interval(1, None, what="a number of probabilities")}

    def __init__(self, *, classifier: AttackModel = "mlp", per_class: bool = True,
                 features: Sequence[Feature] = ("probs",), top_k: int = 3, seed: int = 0):
        self.classifier = classifier
        self.per_class = per_class
        self.features = features
        self.top_k = top_k
        self.seed = seed

    def _train(self, x: np.ndarray, y: np.ndarray) -> Any:
        model = make_attack_model(self.classifier, self.seed)
        with warnings.catch_warnings():  # a not-quite-converged attack MLP is still a valid attack model
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(x, y)

    def _fit(self, reference: AttackReference | None) -> None:
        shadow = get_shadow(reference, self.name)
        widths = {o.n_classes for o in shadow.outputs}
        if len(widths) != 1:
            raise SignalError(f"{self.name} attack: shadow models output different numbers of classes {sorted(widths)}")
        self.n_classes_ = widths.pop()
        x = np.concatenate([attack_features(o, self.features, top_k=self.top_k) for o in shadow.outputs])
        labels = np.concatenate([o.labels for o in shadow.outputs])
        y = np.concatenate(shadow.membership).astype(int)
        self.models_: dict[int, Any] = {}
        if self.per_class:
            for c in range(self.n_classes_):
                rows = labels == c
                if y[rows].any() and not y[rows].all():
                    self.models_[c] = self._train(x[rows], y[rows])
        # the global model; per class it serves classes without both shadow members and non-members
        self.global_model_ = (self._train(x, y) if not self.per_class or len(self.models_) < self.n_classes_
                              else None)
        self.threshold_ = 0.5

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        signals.require("probs")
        if signals.n_classes != self.n_classes_:
            raise SignalError(f"{self.name} attack: the target outputs {signals.n_classes} classes but the shadow "
                              f"models {self.n_classes_}; train shadow models on the target's label set")
        x = attack_features(signals, self.features, top_k=self.top_k)
        if not self.per_class:
            return member_probability(self.global_model_, x)
        scores = np.empty(len(signals))
        for c in np.unique(signals.labels):
            rows = signals.labels == c
            scores[rows] = member_probability(self.models_.get(int(c), self.global_model_), x[rows])
        return scores


@register
class MLLeaksAttack(Attack):
    """ML-Leaks adversary 1: one shadow model, a global attack model on the top-3 sorted probabilities."""

    name = "ml_leaks"
    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "shadow"
    fit_input = ("shadow",)
    requires_fit = True
    signals = ("probs",)
    citation = SALEM
    param_constraints = {"top_k": Interval(1, None, what="a number of probabilities"),
                         "shadow_index": Interval(0, None, what="an index into the shadow models")}

    def __init__(self, *, classifier: Literal["mlp", "lr"] = "mlp", top_k: int = 3, shadow_index: int = 0,
                 seed: int = 0):
        self.classifier = classifier
        self.top_k = top_k
        self.shadow_index = shadow_index
        self.seed = seed

    def _fit(self, reference: AttackReference | None) -> None:
        shadow = get_shadow(reference, self.name)
        if not 0 <= self.shadow_index < shadow.n_models:
            raise ConfigError(f"{self.name} attack: shadow_index={self.shadow_index} but there are "
                              f"{shadow.n_models} shadow models")
        one = ShadowData([shadow.outputs[self.shadow_index]], [shadow.membership[self.shadow_index]])
        self.attack_ = ShokriAttack(classifier=self.classifier, per_class=False, features=("top_k",),
                                    top_k=self.top_k, seed=self.seed).fit(AttackReference(shadow=one))
        self.threshold_ = 0.5

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        return self.attack_.score(signals)
