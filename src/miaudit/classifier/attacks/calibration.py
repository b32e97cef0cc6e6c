"""Loss calibrated per example by reference models: Watson et al. (2022) and Ye et al. (2022) attack R."""

from __future__ import annotations

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import register
from miaudit.classifier.attacks import reference_math as F
from miaudit.classifier.attacks._reference import (
    Index,
    align_examples,
    as_queries,
    check_classes,
    check_counts,
    get_pool,
)
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference.data import AttackReference
from miaudit.errors import ConfigError


class _PoolLossAttack(Attack):
    """Shared fit/score plumbing: reference losses ``(m, n)`` and the mask of models to use."""

    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "reference-pool"
    signals = ("loss",)
    requires_fit = True

    def _mask(self, keep: np.ndarray) -> np.ndarray:
        return ~keep

    def _fit(self, reference: AttackReference) -> None:
        pool = get_pool(reference, self.name)
        self.mask_ = self._mask(pool.keep)
        check_counts(self.mask_, 1, self.name, "OUT" if not self.mask_[pool.keep].any() else "usable",
                     "use a pool with paired halves (every example OUT for half of the models)")
        self.ref_loss_ = pool.signal_matrix("loss")
        self.labels_ = pool.outputs[0].labels
        self.ids_ = pool.outputs[0].ids
        self.n_classes_ = pool.outputs[0].n_classes

    def _target_loss(self, signals: ClassifierOutputs) -> tuple[np.ndarray, Index]:
        """The target's loss ``(n,)`` and the pool's column of each of its examples."""
        target = as_queries(signals, self.name)[0]
        at = align_examples(target, self.ids_, self.labels_, self.name)
        check_classes(self.n_classes_, target.n_classes, self.name)
        return target.signal("loss"), at


@register
class DifficultyCalibration(_PoolLossAttack):
    """``-(loss_target(x) - mean_j loss_j(x))``: the target's loss relative to how hard ``x`` is.

    ``reference_models="out"`` averages the models that did not train on ``x`` (the paper's
    reference models trained on other data); ``"all"`` averages every model of the pool.
    """

    name = "difficulty_calibration"
    citation = ("Watson, Guo, Cormode, Sablayrolles. On the Importance of Difficulty Calibration in "
                "Membership Inference Attacks. ICLR 2022.")

    def __init__(self, *, reference_models: str = "out"):
        self.reference_models = reference_models

    def _mask(self, keep: np.ndarray) -> np.ndarray:
        if self.reference_models not in ("out", "all"):
            raise ConfigError(f"difficulty_calibration: reference_models={self.reference_models!r}; "
                              "choose 'out' or 'all'")
        return ~keep if self.reference_models == "out" else np.ones_like(keep)

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        loss, at = self._target_loss(signals)
        return F.difficulty_calibration(loss, self.ref_loss_[:, at], self.mask_[:, at])


@register
class ReferenceThreshold(_PoolLossAttack):
    """Ye et al.'s attack R: a per-example loss threshold at the ``alpha`` quantile of OUT losses.

    The score is ``-F_x(loss_target)`` with ``F_x`` the linearly interpolated CDF of ``x``'s losses
    under the models that did not train on it (anchored at 0 and ``loss_max``, as the authors'
    ``linear_itp_threshold_func``); sweeping it traces the ROC over ``alpha``. The decision at
    ``alpha`` (member when ``loss <= Q_x(alpha)``) is ``score >= -alpha`` (``threshold_``).
    """

    name = "reference_threshold"
    citation = ("Ye, Maddi, Murakonda, Bindschaedler, Shokri. Enhanced Membership Inference Attacks "
                "against Machine Learning Models. ACM CCS 2022 (attack R).")

    def __init__(self, *, alpha: float = 0.05, loss_max: float = 1000.0):
        self.alpha = alpha
        self.loss_max = loss_max

    def _fit(self, reference: AttackReference) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"reference_threshold: alpha={self.alpha!r} must lie in (0, 1) (the targeted FPR)")
        super()._fit(reference)
        self.threshold_ = -float(self.alpha)

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        loss, at = self._target_loss(signals)
        return F.reference_threshold(loss, self.ref_loss_[:, at], self.mask_[:, at], loss_max=self.loss_max)
