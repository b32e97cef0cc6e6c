"""White-box attacks on per-example gradients (:class:`~miaudit.classifier.signals.gradients.GradientSignals`).

- ``gradient_norm``: score ``-||g_i||_2`` (or minus the norm of one layer's gradient, ``layer``):
  training drives members' gradients towards zero. No reference needed; ``fit`` with shadow
  signals learns ``threshold_`` (max shadow TPR - FPR).
- ``gradient_features``: in the spirit of Nasr, Shokri & Houmansadr (IEEE S&P 2019), whose
  white-box attack feeds per-layer gradients, the loss and the label to an attack network trained
  on a shadow model's members and non-members. Here the features are compact and architecture-
  independent in size: ``log(layer norm + 1e-12)`` for every layer, ``log(total norm + 1e-12)``,
  ``log(loss + 1e-12)`` and the 0/1 correctness; standardised, then a logistic regression
  (``classifier="lr"``) or an MLP with one hidden layer of 64 units (``"mlp"``) learns membership
  from the pooled shadow models. The score is the classifier's log-odds of "member"
  (``threshold_ = 0``). Shadow and target models must share the architecture (same layer names).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import register
from miaudit.classifier.attacks.metric import shadow_signals_threshold
from miaudit.classifier.attacks.shokri import member_log_odds
from miaudit.classifier.signals.gradients import GradientSignals
from miaudit.classifier.signals.shadow import check_signals, shadow_from_reference
from miaudit.errors import DataError, SignalError

NASR = ("Nasr, Shokri & Houmansadr, 'Comprehensive Privacy Analysis of Deep Learning: Passive and Active White-box "
        "Inference Attacks against Centralized and Federated Learning', IEEE S&P 2019")
EPS = 1e-12


class WhiteBoxAttack(Attack):
    """An attack on :class:`GradientSignals` (computed with the model's parameters)."""

    target_kind = "classifier"
    access = "white-box"
    fit_input = ("shadow",)
    signal_type: ClassVar[str] = "whitebox"

    def signal_request(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~miaudit.classifier.signals.gradients.gradient_signals` (none are
        attack-specific)."""
        return {}


@register
class GradientNormAttack(WhiteBoxAttack):
    """Score minus the per-example gradient norm (whole model, or one ``layer`` by name or index)."""

    name = "gradient_norm"
    needs_reference = "none"
    requires_fit = False
    citation = NASR

    def __init__(self, *, layer: str | int | None = None):
        self.layer = layer

    def statistic(self, signals: GradientSignals) -> np.ndarray:
        norms = signals.total_norm if self.layer is None else signals.layer_norms[:, signals.layer_index(self.layer)]
        return -norms

    def _fit(self, reference: Any) -> None:
        self.threshold_ = shadow_signals_threshold(reference, GradientSignals, self.statistic, self.name)

    def _score(self, signals: GradientSignals) -> np.ndarray:
        check_signals(signals, GradientSignals, self.name)
        return self.statistic(signals)


def gradient_features(signals: GradientSignals) -> np.ndarray:
    """``(n, L + 3)``: log layer norms, log total norm, log loss, correctness."""
    return np.column_stack([np.log(signals.layer_norms + EPS), np.log(signals.total_norm + EPS),
                            np.log(signals.loss + EPS), signals.correctness])


@register
class GradientFeaturesAttack(WhiteBoxAttack):
    """A classifier on per-layer log gradient norms, log loss and correctness, trained on shadow models."""

    name = "gradient_features"
    needs_reference = "shadow"
    requires_fit = True
    citation = NASR

    def __init__(self, *, classifier: Literal["lr", "mlp"] = "lr", seed: int = 0):
        self.classifier = classifier
        self.seed = seed

    def _fit(self, reference: Any) -> None:
        shadow = shadow_from_reference(reference, GradientSignals, self.name, required=True)
        names = {s.layer_names for s in shadow.signals}
        if len(names) != 1:
            raise DataError("shadow models have different layers; train every shadow model with the same architecture")
        self.layer_names_ = names.pop()
        features, membership = shadow.pooled(gradient_features)
        if self.classifier == "lr":
            head = LogisticRegression(max_iter=2000)
        else:
            head = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_ = make_pipeline(StandardScaler(), head).fit(features, membership)
        self.threshold_ = 0.0  # log-odds 0 = probability 1/2

    def _score(self, signals: GradientSignals) -> np.ndarray:
        check_signals(signals, GradientSignals, self.name)
        if signals.layer_names != self.layer_names_:
            raise SignalError(f"the target's layers ({', '.join(signals.layer_names)}) differ from the shadow models' "
                              f"({', '.join(self.layer_names_)}); use shadow models with the target's architecture")
        features = gradient_features(signals)
        if self.classifier == "lr":
            return self.model_.decision_function(features)
        return member_log_odds(self.model_, features)


__all__ = ["GradientFeaturesAttack", "GradientNormAttack", "WhiteBoxAttack", "gradient_features"]
