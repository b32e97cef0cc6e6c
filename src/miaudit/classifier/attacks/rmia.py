"""RMIA: the robust membership inference attack of Zarifzadeh et al. (2024)."""

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
    check_same_examples,
    get_pool,
)
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference.data import AttackReference
from miaudit.errors import ConfigError, DataError


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
    signals = ("loss",)
    requires_fit = True
    citation = ("Zarifzadeh, Liu, Shokri. Low-Cost High-Power Membership Inference Attacks. ICML 2024.")

    def __init__(self, *, online: bool = True, offline_a: float | None = None, gamma: float = 1.0):
        self.online = online
        self.offline_a = offline_a
        self.gamma = gamma

    def _fit(self, reference: AttackReference) -> None:
        if not self.gamma > 0:
            raise ConfigError(f"rmia: gamma={self.gamma!r} must be positive (1 compares ratios directly)")
        if self.offline_a is not None and not 0.0 <= self.offline_a <= 1.0:
            raise ConfigError(f"rmia: offline_a={self.offline_a!r} must lie in [0, 1], or be null to tune it")
        pool = get_pool(reference, self.name)
        target_z = reference.require("population", self.name)
        if pool.population is None:
            raise DataError("attack 'rmia' needs the reference models' outputs on the population z: build the "
                            "pool with population data (train_reference_pool(..., population=...))")
        at_z = _align_population(target_z, pool.population)
        keep = pool.keep
        fix = "use a pool with paired halves (every example IN for half of the models)"
        check_counts(~keep, 1, self.name, "OUT", fix)
        ref_log_p = -pool.signal_matrix("loss")  # (m, n) log Pr(x | reference model)
        ref_log_p_z = -np.stack([o.signal("loss") for o in pool.population])  # (m, n_z)
        if self.online:
            check_counts(keep, 1, self.name, "IN", fix)
            self.offline_a_ = None
        elif self.offline_a is None:
            check_counts(~keep, 2, self.name, "OUT", "tuning offline_a leaves one model out; use more reference "
                                                       "models or set offline_a")
            self.offline_a_, self.tuning_auc_ = F.tune_offline_a(ref_log_p, keep, ref_log_p_z, gamma=self.gamma)
        else:
            self.offline_a_ = float(self.offline_a)
        a = 1.0 if self.offline_a_ is None else self.offline_a_
        self.log_px_ = F.rmia_log_marginal(ref_log_p, keep, online=self.online, offline_a=a)
        log_pz = F.population_marginal(ref_log_p_z, online=self.online, offline_a=a)
        self.log_ratio_z_ = -target_z.signal("loss") - log_pz[at_z]
        self.labels_ = pool.outputs[0].labels
        self.ids_ = pool.outputs[0].ids
        self.n_classes_ = pool.outputs[0].n_classes

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        target = as_queries(signals, self.name)[0]
        at = align_examples(target, self.ids_, self.labels_, self.name)  # the pool's row of each example
        check_classes(self.n_classes_, target.n_classes, self.name)
        return F.rmia_from_log_ratios(-target.signal("loss") - self.log_px_[at], self.log_ratio_z_, self.gamma)


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
