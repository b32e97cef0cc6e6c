"""LiRA: the likelihood-ratio attack of Carlini et al. (2022)."""

from __future__ import annotations

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import register
from miaudit.classifier.attacks import reference_math as F
from miaudit.classifier.attacks._reference import (
    Queries,
    align_examples,
    as_queries,
    check_classes,
    check_counts,
    get_pool,
    match_views,
    pool_views,
)
from miaudit.classifier.reference.data import AttackReference
from miaudit.errors import ConfigError

#: fewest IN (online) / OUT reference models per example for per-example variances
MIN_MODELS_PER_EXAMPLE = 4


@register
class LiRA(Attack):
    """Gaussian likelihood ratio of the target's scaled logit ``log(p_y / (1 - p_y))``.

    For each example, fit Gaussians to the scaled logits of reference models that trained on it
    (IN) and that did not (OUT). Online: ``log N(t; IN) - log N(t; OUT)``; offline (OUT models only):
    ``-log Pr(Z > t)`` with ``Z ~ N(OUT)``. ``variance="per_example"`` fits one variance per example
    (needs >= 4 models of each kind); ``"global"`` pools the residuals of all examples (the paper's
    "fixed variance", better with few models). Several query views (augmentations) are scored
    separately and their log-ratios averaged.
    """

    name = "lira"
    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "reference-pool"
    signals = ("scaled_logit",)
    requires_fit = True
    #: ``score`` accepts a list of ClassifierOutputs, one per query view (miaudit.classifier.reference.views)
    accepts_query_views = True
    citation = ("Carlini, Chien, Nasr, Song, Terzis, Tramer. Membership Inference Attacks From First "
                "Principles. IEEE S&P 2022.")

    def __init__(self, *, online: bool = True, variance: str = "per_example", center: str = "median"):
        self.online = online
        self.variance = variance
        self.center = center

    def _check_params(self) -> None:
        if self.variance not in ("per_example", "global"):
            raise ConfigError(f"lira: variance={self.variance!r}; choose 'per_example' or 'global'")
        if self.center not in ("median", "mean"):
            raise ConfigError(f"lira: center={self.center!r}; choose 'median' or 'mean'")

    def _fit(self, reference: AttackReference) -> None:
        self._check_params()
        pool = get_pool(reference, self.name)
        keep = pool.keep
        minimum = MIN_MODELS_PER_EXAMPLE if self.variance == "per_example" else 1
        fix = ("use more reference models (paired halves: m >= 8) or variance='global'"
               if self.variance == "per_example" else "use a pool with paired halves (every example IN for half)")
        if self.online:
            check_counts(keep, minimum, self.name, "IN", fix)
        check_counts(~keep, minimum, self.name, "OUT", fix)
        values = pool_views(pool, "scaled_logit")  # (m, n, k)
        self.mu_out_, self.std_out_ = F.gaussian_fit(values, ~keep, center=self.center, variance=self.variance)
        if self.online:
            self.mu_in_, self.std_in_ = F.gaussian_fit(values, keep, center=self.center, variance=self.variance)
        self.labels_ = pool.outputs[0].labels
        self.ids_ = pool.outputs[0].ids
        self.n_classes_ = pool.outputs[0].n_classes

    def _score(self, signals: Queries) -> np.ndarray:
        queries = as_queries(signals, self.name)
        at = align_examples(queries[0], self.ids_, self.labels_, self.name)  # the pool's row of each example
        check_classes(self.n_classes_, queries[0].n_classes, self.name)
        k = match_views(len(queries), self.mu_out_.shape[1], self.name)
        target = np.stack([q.signal("scaled_logit") for q in queries[:k]], axis=1)  # (n, k)
        if self.online:
            return F.lira_log_ratio(target, self.mu_in_[at, :k], self.std_in_[at, :k], self.mu_out_[at, :k],
                                    self.std_out_[at, :k])
        return F.lira_one_sided(target, self.mu_out_[at, :k], self.std_out_[at, :k])
