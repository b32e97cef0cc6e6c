"""Loss calibrated per example by reference models: Watson et al. (2022) and Ye et al. (2022) attack R.

The pure, vectorised score functions come first (numpy in, numpy out): ``n`` audited examples, ``m``
reference models, masks ``(m, n)`` of the models to use for each example; scores ``(n,)``, higher =
more likely a member.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from miaudit.attacks.base import Attack, Interval
from miaudit.attacks.registry import register
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
from miaudit.errors import DataError


# -- score functions ---------------------------------------------------------------------------------
def difficulty_calibration(target_loss: np.ndarray, ref_loss: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Watson et al. (2022): ``-(loss_target - mean loss of the reference models in mask)`` (n,)."""
    mean_ref = np.where(mask, ref_loss, 0.0).sum(axis=0) / mask.sum(axis=0)
    return -(target_loss - mean_ref)


def interpolated_cdf(target: np.ndarray, ref: np.ndarray, mask: np.ndarray, *, low: float, high: float
                     ) -> np.ndarray:
    """Per-example piecewise-linear CDF (n,) of the values ``ref[mask]`` (m, n), anchored at ``low``/``high``.

    The inverse of ``np.quantile(method="linear")`` over each example's reference values with
    ``low`` and ``high`` appended, as in Ye et al.'s ``linear_itp_threshold_func``: a value below
    every reference value still gets a CDF above 0 instead of a tie.
    """
    n = target.shape[0]
    counts = mask.sum(axis=0)
    cols = np.where(mask, ref, np.inf)
    cols = np.vstack([np.full((1, n), low), np.sort(cols, axis=0), np.full((1, n), np.inf)])
    cols[counts + 1, np.arange(n)] = high
    size = counts + 2  # points per column, the last one is `high`
    t = np.clip(target, low, high)
    # index of the first point >= t, at least 1
    pos = np.maximum((cols < t[None]).sum(axis=0), 1)
    pos = np.minimum(pos, size - 1)
    x0, x1 = cols[pos - 1, np.arange(n)], cols[pos, np.arange(n)]
    width = x1 - x0
    frac = np.where(width > 0, (t - x0) / np.where(width > 0, width, 1.0), 1.0)
    return (pos - 1 + frac) / (size - 1)


def reference_threshold(target_loss: np.ndarray, ref_loss: np.ndarray, out_mask: np.ndarray, *,
                        loss_max: float = 1000.0) -> np.ndarray:
    """Ye et al. (2022) attack R as a score: ``-F_x(loss_target)`` (n,).

    ``F_x`` is the interpolated CDF of example ``x``'s losses under the reference models that did
    not train on it. The attack at level ``alpha`` predicts member when ``loss <= Q_x(alpha)``,
    i.e. ``F_x(loss) <= alpha``, i.e. score ``>= -alpha``.
    """
    if (target_loss > loss_max).any() or (ref_loss[out_mask] > loss_max).any():
        raise DataError(f"losses above loss_max={loss_max:g}; raise loss_max")
    return -interpolated_cdf(target_loss, ref_loss, out_mask, low=0.0, high=loss_max)


# -- the attacks -------------------------------------------------------------------------------------
class _PoolLossAttack(Attack):
    """Shared fit/score plumbing: reference losses ``(m, n)`` and the mask of models to use."""

    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "reference-pool"
    fit_input = ("reference-pool",)
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

    def __init__(self, *, reference_models: Literal["out", "all"] = "out"):
        self.reference_models = reference_models

    def _mask(self, keep: np.ndarray) -> np.ndarray:
        return ~keep if self.reference_models == "out" else np.ones_like(keep)

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        loss, at = self._target_loss(signals)
        return difficulty_calibration(loss, self.ref_loss_[:, at], self.mask_[:, at])


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
    param_constraints = {"alpha": Interval(0.0, 1.0, closed="neither", what="the targeted false-positive rate"),
                         "loss_max": Interval(0.0, None, closed="neither", what="the largest loss")}

    def __init__(self, *, alpha: float = 0.05, loss_max: float = 1000.0):
        self.alpha = alpha
        self.loss_max = loss_max

    def _fit(self, reference: AttackReference) -> None:
        super()._fit(reference)
        self.threshold_ = -float(self.alpha)

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        loss, at = self._target_loss(signals)
        return reference_threshold(loss, self.ref_loss_[:, at], self.mask_[:, at], loss_max=self.loss_max)
