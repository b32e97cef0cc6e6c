"""Pure, vectorised score functions of the reference-model attacks (numpy in, numpy out).

Shapes: ``n`` audited examples, ``m`` reference models, ``k`` queries per example (augmented
views; ``k = 1`` without augmentation), ``n_z`` population examples. ``keep[j, i]`` is True when
reference model ``j`` trained on example ``i``. Every function returns ``(n,)`` scores,
higher = more likely a member. The attack classes in this package validate inputs and call these.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import log_ndtr, logsumexp

from miaudit.errors import DataError
from miaudit.evaluation import roc_auc

#: smallest standard deviation used by LiRA's Gaussians (a constant reference signal has std 0)
MIN_STD = 1e-6
Center = Literal["median", "mean"]
Variance = Literal["per_example", "global"]


# -- LiRA (Carlini et al. 2022) ----------------------------------------------------------------
def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values`` (m, n, k) with entries where ``mask`` (m, n) is False set to NaN."""
    return np.where(mask[:, :, None], values, np.nan)


def gaussian_fit(values: np.ndarray, mask: np.ndarray, *, center: Center = "median",
                 variance: Variance = "per_example") -> tuple[np.ndarray, np.ndarray]:
    """Per-example location and scale of ``values`` (m, n, k) over the models where ``mask`` (m, n).

    Location: median (the authors' default) or mean over models. Scale: the standard deviation over
    models (``"per_example"``), or one pooled standard deviation of the residuals around each
    example's location over all examples (``"global"``, the "fixed variance" of the paper and
    TensorFlow Privacy's ``compute_score_lira``). Returns ``(loc, scale)``, each ``(n, k)``.
    """
    data = _masked(values, mask)
    loc = np.nanmedian(data, axis=0) if center == "median" else np.nanmean(data, axis=0)
    if variance == "per_example":
        scale = np.nanstd(data, axis=0)
    else:
        scale = np.full(loc.shape, np.nanstd(data - loc[None]))
    return loc, np.maximum(scale, MIN_STD)


def _norm_logpdf(x: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (x - loc) / scale
    return -0.5 * z * z - np.log(scale) - 0.5 * np.log(2 * np.pi)


def lira_log_ratio(target: np.ndarray, mu_in: np.ndarray, std_in: np.ndarray, mu_out: np.ndarray,
                   std_out: np.ndarray) -> np.ndarray:
    """Online LiRA score ``mean_k [log N(t; mu_in, s_in) - log N(t; mu_out, s_out)]`` (n,); inputs (n, k)."""
    return (_norm_logpdf(target, mu_in, std_in) - _norm_logpdf(target, mu_out, std_out)).mean(axis=1)


def lira_one_sided(target: np.ndarray, mu_out: np.ndarray, std_out: np.ndarray) -> np.ndarray:
    """Offline LiRA, the paper's one-sided test: ``mean_k [-log Pr(Z > t)]``, ``Z ~ N(mu_out, s_out)`` (n,).

    Monotone in ``1 - Pr(Z > t)`` (the paper's statistic) but keeps resolution deep in the tail.
    """
    return (-log_ndtr(-(target - mu_out) / std_out)).mean(axis=1)


def lira_online(target: np.ndarray, values: np.ndarray, keep: np.ndarray, *, center: Center = "median",
                variance: Variance = "per_example") -> np.ndarray:
    """Online LiRA from raw signals: ``target`` (n, k) the target's scaled logits on each query view,
    ``values`` (m, n, k) the reference models', ``keep`` (m, n)."""
    mu_in, std_in = gaussian_fit(values, keep, center=center, variance=variance)
    mu_out, std_out = gaussian_fit(values, ~keep, center=center, variance=variance)
    return lira_log_ratio(target, mu_in, std_in, mu_out, std_out)


def lira_offline(target: np.ndarray, values: np.ndarray, keep: np.ndarray, *, center: Center = "median",
                 variance: Variance = "per_example") -> np.ndarray:
    """Offline LiRA from raw signals (OUT models only); shapes as :func:`lira_online`."""
    mu_out, std_out = gaussian_fit(values, ~keep, center=center, variance=variance)
    return lira_one_sided(target, mu_out, std_out)


# -- RMIA (Zarifzadeh et al. 2024) -------------------------------------------------------------
def _log_mean_exp(log_values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log of the mean of ``exp(log_values)`` (m, n) over rows where ``mask`` (m, n) is True."""
    masked = np.where(mask, log_values, -np.inf)
    return logsumexp(masked, axis=0) - np.log(mask.sum(axis=0))


def offline_marginal(log_out: np.ndarray, offline_a: float) -> np.ndarray:
    """``log(((1 + a) exp(log_out) + (1 - a)) / 2)``: RMIA's offline estimate of ``log Pr(x)``."""
    if offline_a >= 1.0:
        return log_out
    return np.logaddexp(np.log1p(offline_a) + log_out, np.log1p(-offline_a)) - np.log(2.0)


def rmia_log_marginal(log_p: np.ndarray, keep: np.ndarray, *, online: bool, offline_a: float) -> np.ndarray:
    """``log Pr(x)`` (n,) from reference models' ``log Pr(x | theta_j)`` (m, n).

    Online: ``(mean_IN + mean_OUT) / 2`` (the mean over a paired pool, robust to unbalanced ``keep``).
    Offline: ``((1 + a) mean_OUT + (1 - a)) / 2``, the paper's linear approximation of the IN mean.
    """
    log_out = _log_mean_exp(log_p, ~keep)
    if online:
        return np.logaddexp(_log_mean_exp(log_p, keep), log_out) - np.log(2.0)
    return offline_marginal(log_out, offline_a)


def population_marginal(ref_log_p_z: np.ndarray, *, online: bool, offline_a: float) -> np.ndarray:
    """``log Pr(z)`` (n_z,) for population examples that no reference model (m, n_z) trained on:
    the plain mean over models online, the offline formula offline."""
    log_mean = logsumexp(ref_log_p_z, axis=0) - np.log(ref_log_p_z.shape[0])
    return log_mean if online else offline_marginal(log_mean, offline_a)


def rmia_from_log_ratios(log_ratio_x: np.ndarray, log_ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of population ``z`` with ``ratio_x / ratio_z > gamma`` for each ``x`` (n,)."""
    sorted_z = np.sort(log_ratio_z)
    below = np.searchsorted(sorted_z, log_ratio_x - np.log(gamma), side="left")
    return below / sorted_z.size


def rmia(target_log_p: np.ndarray, ref_log_p: np.ndarray, keep: np.ndarray, target_log_p_z: np.ndarray,
         ref_log_p_z: np.ndarray, *, online: bool = True, offline_a: float = 0.3, gamma: float = 1.0
         ) -> np.ndarray:
    """RMIA score: ``mean_z 1[(Pr(x|t)/Pr(x)) / (Pr(z|t)/Pr(z)) > gamma]``.

    ``target_log_p`` (n,) and ``ref_log_p`` (m, n): log-probability of the true label of each
    audited example under the target and the reference models; ``target_log_p_z`` (n_z,) and
    ``ref_log_p_z`` (m, n_z): the same on population examples ``z``, which no reference model
    trained on, so ``Pr(z)`` is the plain mean over all models online and the offline formula offline.
    """
    log_px = rmia_log_marginal(ref_log_p, keep, online=online, offline_a=offline_a)
    log_pz = population_marginal(ref_log_p_z, online=online, offline_a=offline_a)
    return rmia_from_log_ratios(target_log_p - log_px, target_log_p_z - log_pz, gamma)


#: RMIA's candidate offline interpolation values (the authors' grid 0, 0.1, ..., 1)
OFFLINE_A_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def tune_offline_a(ref_log_p: np.ndarray, keep: np.ndarray, ref_log_p_z: np.ndarray, *, gamma: float = 1.0,
                   grid: tuple[float, ...] = OFFLINE_A_GRID) -> tuple[float, np.ndarray]:
    """Choose RMIA's offline ``a`` on the reference models alone, never on the target's members.

    Each reference model ``j`` in turn plays the target and is attacked by offline RMIA with the
    other models; its own ``keep[j]`` gives the labels (the authors attack a held-out paired model
    the same way). Returns the ``a`` with the best mean AUC and the mean AUC of each candidate.
    """
    m = keep.shape[0]
    aucs = np.zeros((m, len(grid)))
    for j in range(m):
        rest = np.arange(m) != j
        log_out_x = _log_mean_exp(ref_log_p[rest], ~keep[rest])
        log_out_z = population_marginal(ref_log_p_z[rest], online=True, offline_a=1.0)
        for c, a in enumerate(grid):
            scores = rmia_from_log_ratios(ref_log_p[j] - offline_marginal(log_out_x, a),
                                          ref_log_p_z[j] - offline_marginal(log_out_z, a), gamma)
            aucs[j, c] = roc_auc(keep[j].astype(int), scores)
    mean_auc = aucs.mean(axis=0)
    return float(grid[int(np.argmax(mean_auc))]), mean_auc


# -- calibrated losses -------------------------------------------------------------------------
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


__all__ = [
    "MIN_STD", "difficulty_calibration", "gaussian_fit", "interpolated_cdf", "lira_log_ratio", "lira_offline",
    "lira_one_sided", "lira_online",
    "OFFLINE_A_GRID", "offline_marginal", "reference_threshold", "rmia", "rmia_from_log_ratios",
    "population_marginal", "rmia_log_marginal", "tune_offline_a",
]
