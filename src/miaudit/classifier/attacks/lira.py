"""LiRA: the likelihood-ratio attack of Carlini et al. (2022).

The pure, vectorised score functions come first (numpy in, numpy out). Shapes: ``n`` audited
examples, ``m`` reference models, ``k`` queries per example (augmented views; ``k = 1`` without
augmentation). ``keep[j, i]`` is True when reference model ``j`` trained on example ``i``. Scores are
``(n,)``, higher = more likely a member. :class:`LiRA` validates its inputs and calls them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy.special import log_ndtr

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import register
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
from miaudit.classifier.outputs import EPS, ClassifierOutputs
from miaudit.classifier.reference.data import AttackReference, ReferencePool
from miaudit.utils.jsonable import finite_jsonable

#: smallest standard deviation used by LiRA's Gaussians (a constant reference signal has std 0)
MIN_STD = 1e-6
#: fewest IN (online) / OUT reference models per example for per-example variances
MIN_MODELS_PER_EXAMPLE = 4
Center = Literal["median", "mean"]
Variance = Literal["per_example", "global"]


# -- score functions ---------------------------------------------------------------------------------
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


def saturation(outputs: ClassifierOutputs) -> np.ndarray:
    """``(n,)`` +1 where given probabilities put exactly 1 on the true label, -1 where exactly 0, else 0.

    Only given probabilities saturate (a tree ensemble's votes, a float32 ``predict_proba``): the
    scaled logit from logits is exact (``logsumexp``) and never clipped.
    """
    if outputs.probs_given is None:
        return np.zeros(len(outputs), dtype=np.int8)
    p_y = outputs.probs_given[np.arange(len(outputs)), outputs.labels]
    return (p_y >= 1 - EPS).astype(np.int8) - (p_y <= EPS).astype(np.int8)


def saturation_edges(values: np.ndarray, saturated: np.ndarray) -> tuple[float, float] | None:
    """The scaled logits that stand for probabilities of exactly 0 and 1: ``(low, high)``, or ``None``.

    ``log(p / (1 - p))`` is infinite at 0 and 1; clipped at ``EPS`` it becomes +-27.6, far beyond the
    values a model with finite resolution gives otherwise (a 50-tree forest: at most log(49) = 3.9
    below 1). Those points would dominate LiRA's Gaussians. Instead a saturated value is placed one
    resolution step beyond the most extreme unsaturated one: ``max + (max - second largest)``
    over the reference models' distinct unsaturated values (``values`` ``(m, n, k)`` with
    ``saturated`` of the same shape), and the same below. Nothing is fitted on membership.
    ``None`` when nothing saturates (or fewer than 2 distinct unsaturated values exist).
    """
    if not saturated.any():
        return None
    distinct = np.unique(values[saturated == 0])
    if distinct.size < 2:
        return None
    return float(distinct[0] - (distinct[1] - distinct[0])), float(distinct[-1] + (distinct[-1] - distinct[-2]))


def desaturate(values: np.ndarray, saturated: np.ndarray, edges: tuple[float, float] | None) -> np.ndarray:
    """``values`` with saturated entries (``saturated`` +1 / -1, same shape) replaced by ``edges`` (high / low)."""
    if edges is None:
        return values
    return np.where(saturated > 0, edges[1], np.where(saturated < 0, edges[0], values))


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


def _pool_saturation(pool: ReferencePool) -> np.ndarray:
    """``(m, n, k)`` :func:`saturation` of every model and query view of the pool (as ``pool_views``)."""
    views = getattr(pool, "views", None) or [[o] for o in pool.outputs]
    return np.stack([np.stack([saturation(o) for o in model_views], axis=1) for model_views in views])


# -- the attack --------------------------------------------------------------------------------------
@register
class LiRA(Attack):
    """Gaussian likelihood ratio of the target's scaled logit ``log(p_y / (1 - p_y))``.

    For each example, fit Gaussians to the scaled logits of reference models that trained on it
    (IN) and that did not (OUT). Online: ``log N(t; IN) - log N(t; OUT)``; offline (OUT models only):
    ``-log Pr(Z > t)`` with ``Z ~ N(OUT)``. ``variance="per_example"`` fits one variance per example
    (needs >= 4 models of each kind); ``"global"`` pools the residuals of all examples (the paper's
    "fixed variance", better with few models). Several query views (augmentations) are scored
    separately and their log-ratios averaged. Given probabilities of exactly 1 or 0 (tree
    ensembles) get a finite scaled logit one resolution step beyond the most extreme other value
    (:func:`saturation_edges`), not +-27.6.
    """

    name = "lira"
    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "reference-pool"
    fit_input = ("reference-pool",)
    signals = ("scaled_logit",)
    requires_fit = True
    #: ``score`` accepts a list of ClassifierOutputs, one per query view (miaudit.classifier.reference.views)
    accepts_query_views = True
    citation = ("Carlini, Chien, Nasr, Song, Terzis, Tramer. Membership Inference Attacks From First "
                "Principles. IEEE S&P 2022.")

    def __init__(self, *, online: bool = True, variance: Variance = "per_example", center: Center = "median"):
        self.online = online
        self.variance = variance
        self.center = center

    def models_per_example(self) -> tuple[int, str]:
        """:data:`MIN_MODELS_PER_EXAMPLE` IN / OUT models per example with per-example variances, else 1."""
        if self.variance == "per_example":
            fix = f"use more reference models (paired halves: m >= {2 * MIN_MODELS_PER_EXAMPLE}) or variance='global'"
            return MIN_MODELS_PER_EXAMPLE, fix
        return 1, "use a pool with paired halves (every example IN for half of the models)"

    def _fit(self, reference: AttackReference) -> None:
        pool = get_pool(reference, self.name)
        keep = pool.keep
        minimum, fix = self.models_per_example()
        if self.online:
            check_counts(keep, minimum, self.name, "IN", fix)
        check_counts(~keep, minimum, self.name, "OUT", fix)
        values = pool_views(pool, "scaled_logit")  # (m, n, k)
        saturated = _pool_saturation(pool)  # (m, n, k): probabilities of exactly 1 / 0 (see saturation_edges)
        self.saturation_edges_ = saturation_edges(values, saturated)
        self.saturated_fraction_ = float(np.mean(saturated != 0))
        values = desaturate(values, saturated, self.saturation_edges_)
        self.mu_out_, self.std_out_ = gaussian_fit(values, ~keep, center=self.center, variance=self.variance)
        if self.online:
            self.mu_in_, self.std_in_ = gaussian_fit(values, keep, center=self.center, variance=self.variance)
        self.labels_ = pool.outputs[0].labels
        self.ids_ = pool.outputs[0].ids
        self.n_classes_ = pool.outputs[0].n_classes

    def _learned_state(self) -> dict[str, Any]:
        """``variance`` mode, ``n_views``, and the Gaussians' standard deviations: ``std_in_`` / ``std_out_``
        (pooled) for ``variance="global"``, their medians over examples (``std_in_median`` /
        ``std_out_median``) for ``"per_example"``."""
        out: dict[str, Any] = {"variance": self.variance, "n_views": int(self.std_out_.shape[1])}
        if self.saturation_edges_ is not None:
            out["saturated_fraction"] = self.saturated_fraction_
            out["saturated_scaled_logits"] = finite_jsonable(list(self.saturation_edges_))
        pooled = self.variance == "global"
        for name in ("std_in_", "std_out_"):
            std = getattr(self, name, None)
            if std is not None:
                out[name if pooled else f"{name}median"] = finite_jsonable(std.flat[0] if pooled else np.median(std))
        return out

    def _score(self, signals: Queries) -> np.ndarray:
        queries = as_queries(signals, self.name)
        at = align_examples(queries[0], self.ids_, self.labels_, self.name)  # the pool's row of each example
        check_classes(self.n_classes_, queries[0].n_classes, self.name)
        k = match_views(len(queries), self.mu_out_.shape[1], self.name)
        target = np.stack([desaturate(q.signal("scaled_logit"), saturation(q), self.saturation_edges_)
                           for q in queries[:k]], axis=1)  # (n, k)
        if self.online:
            return lira_log_ratio(target, self.mu_in_[at, :k], self.std_in_[at, :k], self.mu_out_[at, :k],
                                  self.std_out_[at, :k])
        return lira_one_sided(target, self.mu_out_[at, :k], self.std_out_[at, :k])
