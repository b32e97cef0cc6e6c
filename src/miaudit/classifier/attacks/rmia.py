"""RMIA: the robust membership inference attack of Zarifzadeh et al. (2024).

The pure, vectorised score functions come first (numpy in, numpy out). Shapes: ``n`` audited
examples, ``m`` reference models, ``n_z`` population examples; ``keep[j, i]`` is True when reference
model ``j`` trained on example ``i``. Scores are ``(n,)``, higher = more likely a member. :class:`RMIA`
validates its inputs and calls them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from miaudit.attacks.base import Attack, Interval
from miaudit.attacks.registry import register
from miaudit.classifier.attacks._reference import (
    Index,
    align_examples,
    as_queries,
    check_classes,
    check_counts,
    check_same_examples,
    get_pool,
    get_population,
)
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference.data import AttackReference
from miaudit.errors import DataError
from miaudit.evaluation import roc_auc
from miaudit.utils.jsonable import finite_jsonable


# -- score functions ---------------------------------------------------------------------------------
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


# -- the attack --------------------------------------------------------------------------------------
@register
class RMIA(Attack):
    """Pairwise likelihood ratios against population samples ``z``.

    ``LR(x, z) = (Pr(x|target) / Pr(x)) / (Pr(z|target) / Pr(z))`` with ``Pr(.|model)`` the
    probability of the true label and ``Pr(.)`` its mean over reference models; the score is the
    fraction of ``z`` with ``LR(x, z) > gamma``. Online: ``Pr(x)`` averages IN and OUT models.
    Offline: ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2``; with ``offline_a=None`` the value of
    ``a`` is chosen on the reference models (each one attacked by the others), never on the
    target's members; the chosen value is ``offline_a_``.

    Needs ``reference.pool.population`` (reference models on ``z``) and ``reference.population``
    (the target on the same ``z``).
    """

    name = "rmia"
    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "reference-pool"
    fit_input = ("reference-pool", "population")
    signals = ("loss",)
    requires_fit = True
    citation = ("Zarifzadeh, Liu, Shokri. Low-Cost High-Power Membership Inference Attacks. ICML 2024.")
    param_constraints = {
        "offline_a": Interval(0.0, 1.0, what="an interpolation weight (null: tuned on the reference models)"),
        "gamma": Interval(0.0, None, closed="neither", what="a likelihood-ratio threshold (1 compares ratios)"),
    }

    def __init__(self, *, online: bool = True, offline_a: float | None = None, gamma: float = 1.0):
        self.online = online
        self.offline_a = offline_a
        self.gamma = gamma

    def models_per_example(self) -> tuple[int, str]:
        """One IN / OUT model per example; two OUT when ``offline_a`` is tuned (leave-one-model-out)."""
        if not self.online and self.offline_a is None:
            return 2, "tuning offline_a leaves one model out; use more reference models or set offline_a"
        return 1, "use a pool with paired halves (every example IN for half of the models)"

    def _fit(self, reference: AttackReference) -> None:
        pool = get_pool(reference, self.name)
        target_z = get_population(reference, self.name)
        if pool.population is None:
            raise DataError("attack 'rmia' needs the reference models' outputs on the population z: build the "
                            "pool with population data (train_reference_pool(..., population=...))")
        at_z = _align_population(target_z, pool.population)
        keep = pool.keep
        minimum, fix = self.models_per_example()
        check_counts(~keep, minimum, self.name, "OUT", fix)
        ref_log_p = -pool.signal_matrix("loss")  # (m, n) log Pr(x | reference model)
        ref_log_p_z = -np.stack([o.signal("loss") for o in pool.population])  # (m, n_z)
        if self.online:
            check_counts(keep, 1, self.name, "IN", fix)
            self.offline_a_ = None
        elif self.offline_a is None:
            self.offline_a_, self.tuning_auc_ = tune_offline_a(ref_log_p, keep, ref_log_p_z, gamma=self.gamma)
        else:
            self.offline_a_ = float(self.offline_a)
        a = 1.0 if self.offline_a_ is None else self.offline_a_
        self.log_px_ = rmia_log_marginal(ref_log_p, keep, online=self.online, offline_a=a)
        log_pz = population_marginal(ref_log_p_z, online=self.online, offline_a=a)
        self.log_ratio_z_ = -target_z.signal("loss") - log_pz[at_z]
        self.labels_ = pool.outputs[0].labels
        self.ids_ = pool.outputs[0].ids
        self.n_classes_ = pool.outputs[0].n_classes

    def _learned_state(self) -> dict[str, Any]:
        """Offline: ``offline_a_``, and when it was tuned ``tuning_auc_`` (``{"0": auc, ..., "1": auc}``, the mean
        AUC of each candidate attacking each reference model with the others: chosen there, never on the
        target's members)."""
        out: dict[str, Any] = {}
        if self.offline_a_ is not None:
            out["offline_a_"] = finite_jsonable(self.offline_a_)
        tuning = getattr(self, "tuning_auc_", None)
        if tuning is not None:
            out["tuning_auc_"] = {f"{a:g}": finite_jsonable(v) for a, v in zip(OFFLINE_A_GRID, np.asarray(tuning))}
        return out

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        target = as_queries(signals, self.name)[0]
        at = align_examples(target, self.ids_, self.labels_, self.name)  # the pool's row of each example
        check_classes(self.n_classes_, target.n_classes, self.name)
        return rmia_from_log_ratios(-target.signal("loss") - self.log_px_[at], self.log_ratio_z_, self.gamma)


def _align_population(target_z: ClassifierOutputs, pool_z: list[ClassifierOutputs]) -> Index:
    """The pool's position of each of the target's population examples ``z`` (by ids, or by position)."""
    what = "population examples z"
    at_z = align_examples(target_z, pool_z[0].ids, pool_z[0].labels, "rmia", what)
    for j, outputs in enumerate(pool_z):
        check_same_examples(target_z.labels, outputs.labels[at_z], "rmia", what)
        if outputs.n_classes != target_z.n_classes:
            raise DataError(f"attack 'rmia': reference model {j} has {outputs.n_classes} classes on z, the target "
                            f"{target_z.n_classes}")
    return at_z
