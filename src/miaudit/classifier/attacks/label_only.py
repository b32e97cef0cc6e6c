"""Label-only attacks of Choquette-Choo, Tramèr, Carlini & Papernot (ICML 2021).

A model's predictions are more robust around its training points. With predicted labels only, the
attacker queries perturbed copies of each example (:mod:`miaudit.classifier.signals.label_only`) and scores:

- ``augmentation_robustness``: fraction of augmented views classified correctly (signal
  ``augmentation (n, k)``), or, with ``attack_model="mlp"``, an attack network's log-odds on the
  0/1 vector, trained on shadow signals.
- ``noise_robustness``: mean over noise levels of the fraction of noisy copies classified
  correctly (``noise (n, s)``; 0 where the clean prediction is wrong).
- ``boundary_distance``: L2 distance to the decision boundary (``boundary_distance (n,)``; 0 where
  misclassified): members lie farther from it.

The paper thresholds the noise robustness and the boundary distance, with the threshold chosen on
a shadow ("source") model (``get_threshold`` in the authors' code: member iff value > t), and
trains a small attack network on the augmentation vectors of the shadow model. Here the scores need
no shadow model; ``fit`` with ``AttackReference(shadow=ShadowSignals(...))`` of
:class:`LabelOnlySignals` learns ``threshold_`` (max shadow TPR - FPR), or for
``attack_model="mlp"`` the attack network (one global network with hidden layers (10, 10), where the
authors train one per class). The gap attack (correct = member, Yeom et al. 2018) is the
``correctness`` attack of :mod:`miaudit.classifier.attacks.metric`; it is the special case of these
attacks with no perturbation.

Signal parameters (``max_shift``, ``levels``, ``max_queries``, ``bounds``, ``seed``, ...) are
hyper-parameters of the attack: :meth:`signal_request` turns them into the arguments of
:func:`~miaudit.classifier.signals.label_only.label_only_signals`, and the same request must be used for the
target and for the shadow models (``miaudit.classifier.queried`` does this).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from miaudit.attacks.base import Attack, Check, Interval
from miaudit.attacks.registry import register
from miaudit.classifier.attacks.metric import shadow_signals_threshold
from miaudit.classifier.attacks.shokri import member_log_odds
from miaudit.classifier.signals.label_only import (
    AugmentationConfig,
    BoundaryConfig,
    LabelOnlySignals,
    NoiseConfig,
    Perturbation,
    check_bounds,
)
from miaudit.classifier.signals.shadow import check_signals, shadow_from_reference
from miaudit.errors import ConfigError, NotFittedError

CHOQUETTE_CHOO = ("Choquette-Choo, Tramèr, Carlini & Papernot, 'Label-Only Membership Inference Attacks', "
                  "ICML 2021")
HSJ = "Chen, Jordan & Wainwright, 'HopSkipJumpAttack: A Query-Efficient Decision-Based Attack', IEEE S&P 2020"


class LabelOnlyAttack(Attack):
    """A robustness statistic of :class:`LabelOnlySignals`, with an optional threshold learned on shadow signals."""

    target_kind = "classifier"
    access = "label-only"
    needs_reference = "none"  # shadow signals are optional: they only supply a decision threshold
    fit_input = ("shadow",)
    requires_fit = False
    signal_type: ClassVar[str] = "label_only"
    part: ClassVar[str]

    def signal_request(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~miaudit.classifier.signals.label_only.label_only_signals` for this attack."""
        raise NotImplementedError

    def statistic(self, signals: LabelOnlySignals) -> np.ndarray:
        """``(n,)`` the threshold-free score."""
        raise NotImplementedError

    def _fit(self, reference: Any) -> None:
        self.threshold_ = shadow_signals_threshold(reference, LabelOnlySignals, self.statistic, self.name)

    def _score(self, signals: LabelOnlySignals) -> np.ndarray:
        check_signals(signals, LabelOnlySignals, self.name)
        return self.statistic(signals)


@register
class AugmentationRobustnessAttack(LabelOnlyAttack):
    """Correctness on fixed augmented views (translations / flips; tabular: bit flips or noise)."""

    name = "augmentation_robustness"
    citation = CHOQUETTE_CHOO
    part = "augmentation"
    param_constraints = {"max_shift": Interval(0, None, what="pixels"), "n_views": Interval(0, None),
                         "n_features": Interval(0, None), "sigma": Interval(0.0, None, what="a noise scale")}

    def __init__(self, *, max_shift: int = 1, flip: bool = False, n_views: int = 8, n_features: int = 2,
                 sigma: float = 0.1, perturbation: Perturbation = "auto",
                 attack_model: Literal["threshold", "mlp"] = "threshold", bounds: Sequence[float] | None = (0.0, 1.0),
                 seed: int = 0):
        self.max_shift = max_shift
        self.flip = flip
        self.n_views = n_views
        self.n_features = n_features
        self.sigma = sigma
        self.perturbation = perturbation
        self.attack_model = attack_model
        self.bounds = bounds
        self.seed = seed
        self.signal_request()  # validates the signal parameters now, not after hours of training

    def signal_request(self) -> dict[str, Any]:
        config = AugmentationConfig(max_shift=self.max_shift, flip=self.flip, n_views=self.n_views,
                                    n_features=self.n_features, sigma=self.sigma, perturbation=self.perturbation)
        return {"augmentation": config, "bounds": check_bounds(self.bounds), "seed": self.seed}

    def statistic(self, signals: LabelOnlySignals) -> np.ndarray:
        return signals.require("augmentation", self.name).mean(axis=1)

    def _fit(self, reference: Any) -> None:
        self.model_ = None
        if self.attack_model == "threshold":
            super()._fit(reference)
            return
        shadow = shadow_from_reference(reference, LabelOnlySignals, f"{self.name} (attack_model='mlp')", required=True)
        vectors, membership = shadow.pooled(lambda s: s.require("augmentation", self.name))
        model = MLPClassifier(hidden_layer_sizes=(10, 10), max_iter=500, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_ = model.fit(vectors, membership)
        self.threshold_ = 0.0  # log-odds 0 = probability 1/2

    def _score(self, signals: LabelOnlySignals) -> np.ndarray:
        check_signals(signals, LabelOnlySignals, self.name)
        if self.attack_model == "threshold":
            return self.statistic(signals)
        model = getattr(self, "model_", None)
        if model is None:
            raise NotFittedError(f"attack {self.name!r} with attack_model='mlp' needs fit(reference) with shadow "
                                 "signals")
        vectors = signals.require("augmentation", self.name)
        if vectors.shape[1] != model.n_features_in_:
            raise ConfigError(f"{vectors.shape[1]} augmented views but the attack model was fitted on "
                              f"{model.n_features_in_}; compute target and shadow signals with the same request")
        return member_log_odds(model, vectors)


@register
class NoiseRobustnessAttack(LabelOnlyAttack):
    """Fraction of noisy copies classified correctly, averaged over noise levels."""

    name = "noise_robustness"
    citation = CHOQUETTE_CHOO
    part = "noise"
    param_constraints = {
        "levels": Check(lambda levels: len(levels) > 0 and all(v > 0 for v in levels),
                        "a non-empty list of noise levels > 0, or null for the defaults"),
        "n_samples": Interval(1, None)}

    def __init__(self, *, levels: Sequence[float] | None = None, n_samples: int = 20,
                 perturbation: Perturbation = "auto", bounds: Sequence[float] | None = (0.0, 1.0), seed: int = 0):
        self.levels = levels
        self.n_samples = n_samples
        self.perturbation = perturbation
        self.bounds = bounds
        self.seed = seed
        self.signal_request()

    def signal_request(self) -> dict[str, Any]:
        config = NoiseConfig(levels=None if self.levels is None else tuple(self.levels), n_samples=self.n_samples,
                             perturbation=self.perturbation)
        return {"noise": config, "bounds": check_bounds(self.bounds), "seed": self.seed}

    def statistic(self, signals: LabelOnlySignals) -> np.ndarray:
        return signals.require("noise", self.name).mean(axis=1)


@register
class BoundaryDistanceAttack(LabelOnlyAttack):
    """L2 distance to the decision boundary, estimated with at most ``max_queries`` label queries per example."""

    name = "boundary_distance"
    citation = f"{CHOQUETTE_CHOO}; {HSJ}"
    part = "boundary_distance"
    param_constraints = {"max_queries": Interval(1, None, what="label queries per example, the clean one included"),
                         "n_directions": Interval(1, None), "n_binary_steps": Interval(1, None),
                         "n_grad_samples": Interval(2, None), "n_anchors": Interval(0, None),
                         "max_radius": Interval(0.0, None, closed="neither", what="a distance")}

    def __init__(self, *, max_queries: int = 300, n_directions: int = 10, n_binary_steps: int = 15,
                 n_grad_samples: int = 50, max_radius: float | None = None, n_anchors: int = 64,
                 bounds: Sequence[float] | None = (0.0, 1.0), seed: int = 0):
        self.max_queries = max_queries
        self.n_directions = n_directions
        self.n_binary_steps = n_binary_steps
        self.n_grad_samples = n_grad_samples
        self.max_radius = max_radius
        self.n_anchors = n_anchors
        self.bounds = bounds
        self.seed = seed
        self.signal_request()

    def signal_request(self) -> dict[str, Any]:
        config = BoundaryConfig(max_queries=self.max_queries, n_directions=self.n_directions,
                                n_binary_steps=self.n_binary_steps, n_grad_samples=self.n_grad_samples,
                                max_radius=self.max_radius, n_anchors=self.n_anchors)
        bounds = check_bounds(self.bounds)
        if bounds is None and self.max_radius is None:
            raise ConfigError("boundary_distance with bounds=null needs max_radius (the largest distance searched)")
        return {"boundary": config, "bounds": bounds, "seed": self.seed}

    def statistic(self, signals: LabelOnlySignals) -> np.ndarray:
        return signals.require("boundary_distance", self.name)


__all__ = ["AugmentationRobustnessAttack", "BoundaryDistanceAttack", "LabelOnlyAttack", "NoiseRobustnessAttack"]
