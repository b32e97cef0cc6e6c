"""Population attack (Ye et al. 2022, "attack P"): the target's loss against its loss on population data.

Population data are examples from the same distribution that the target never trained on; the
attack needs the target's outputs on them (``AttackReference.population``) and no shadow models.

Score of an audited example with loss ``l`` (``L_pop`` = population losses, of the same true class
when ``per_class=True``)::

    score(l) = mean(L_pop >= l)          in [0, 1]; higher = member

i.e. one minus the empirical CDF just below ``l``: the fraction of population examples the target
fits no better than this one. ``threshold_`` is the smallest score at which at most a fraction
``alpha`` of the population examples themselves is flagged (the attack's FPR on population data),
so the decision rule ``score >= threshold_`` is Ye et al.'s "loss below the alpha-percentile of the
population loss". With ``per_class=True`` each class is compared with its own population losses
(classes absent from the population fall back to all population losses) and one threshold is set on
the pooled per-class population scores.
"""

from __future__ import annotations

import numpy as np

from miaudit.attacks.base import Attack, Interval
from miaudit.attacks.registry import register
from miaudit.classifier.attacks._reference import get_population
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference
from miaudit.errors import DataError


def _fraction_at_least(sorted_pop: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``(n,)`` fraction of ``sorted_pop`` (ascending) that is >= each value."""
    return (sorted_pop.size - np.searchsorted(sorted_pop, values, side="left")) / sorted_pop.size


@register
class PopulationAttack(Attack):
    """Member when the target's loss is low relative to its population loss distribution."""

    name = "population"
    target_kind = "classifier"
    access = "probabilities"
    needs_reference = "population"
    fit_input = ("population",)
    requires_fit = True
    signals = ("loss",)
    citation = ("Ye, Maddi, Murakonda, Bindschaedler & Shokri, 'Enhanced Membership Inference Attacks "
                "against Machine Learning Models', ACM CCS 2022 (attack P)")
    param_constraints = {"alpha": Interval(0.0, 1.0, closed="neither", what="a false-positive rate")}

    def __init__(self, *, alpha: float = 0.05, per_class: bool = False):
        self.alpha = alpha
        self.per_class = per_class

    def _fit(self, reference: AttackReference | None) -> None:
        population = get_population(reference, self.name)
        losses = population.signal("loss")
        self.population_losses_ = np.sort(losses)
        self.class_losses_ = {int(c): np.sort(losses[population.labels == c])
                              for c in np.unique(population.labels)} if self.per_class else {}
        pop_scores = self._quantiles(losses, population.labels)
        candidates = np.unique(pop_scores)  # ascending; the population FPR of ">= t" falls as t grows
        fpr = np.array([(pop_scores >= t).mean() for t in candidates])
        ok = fpr <= self.alpha
        if not ok.any():
            raise DataError(self._unreachable_alpha(losses, population.labels, pop_scores, float(fpr.min())))
        self.threshold_ = float(candidates[np.argmax(ok)])

    def _unreachable_alpha(self, losses: np.ndarray, labels: np.ndarray, pop_scores: np.ndarray, lowest: float) -> str:
        """Why no threshold flags at most ``alpha`` of the population: too few examples (of a class, with
        ``per_class``) when that explains it, otherwise ties at the most member-like score."""
        top = pop_scores == pop_scores.max()
        n_tied, n = int(top.sum()), losses.size
        smallest = int(np.unique(labels, return_counts=True)[1].min()) if self.per_class else n
        if n_tied > 1 and smallest >= np.ceil(1 / self.alpha):
            tied_losses = losses[top]
            value = (f"the loss {tied_losses[0] + 0.0:.3g}" if np.ptp(tied_losses) == 0
                     else f"losses {tied_losses.min():.3g} to {tied_losses.max():.3g}")
            return (f"population attack: {n_tied} of the {n} population examples tie at the most member-like score "
                    f"({value}{', per class' if self.per_class else ''}: the model fits them equally well, e.g. "
                    f"exactly), so every threshold flags at least {lowest:.3g} of the population > alpha={self.alpha}; "
                    f"more population examples will not help: raise alpha above {lowest:.3g}, or attack with a "
                    "signal that separates them (e.g. logits instead of rounded probabilities)")
        where = " of each class (per_class=True)" if self.per_class else ""
        return (f"population attack: the lowest population FPR reachable with {n} population examples is "
                f"{lowest:.3g} > alpha={self.alpha}; give at least {int(np.ceil(1 / self.alpha))} population "
                f"examples{where} or raise alpha")

    def _quantiles(self, losses: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if not self.per_class:
            return _fraction_at_least(self.population_losses_, losses)
        out = np.empty(losses.shape)
        for c in np.unique(labels):
            rows = labels == c
            out[rows] = _fraction_at_least(self.class_losses_.get(int(c), self.population_losses_), losses[rows])
        return out

    def _score(self, signals: ClassifierOutputs) -> np.ndarray:
        return self._quantiles(signals.signal("loss"), signals.labels)
