"""Distance to the decision boundary from predicted labels only, under a per-example query budget.

The label-only "boundary distance" attack of Choquette-Choo et al. (ICML 2021) runs HopSkipJump
(Chen, Jordan & Wainwright, IEEE S&P 2020) on every correctly classified example and uses the L2
norm of the adversarial perturbation; misclassified examples get distance 0. This is a compact,
budget-bounded version of that search, vectorised over a chunk of examples:

1. **Starting points**: the nearest *anchor* whose predicted label differs from ``y`` is
   binary-searched on the segment ``[x, anchor]``. Anchors are ``n_anchors`` of the audited inputs
   (a seeded random subset), whose labels the clean queries already revealed, so they cost no
   query; without them, random inputs of a model that maps noise to one class leave that class's
   examples with no starting point (HopSkipJump starts from uniform noise). Then ``n_directions``
   random unit directions ``u``: where no adversarial point is known yet, the candidate
   ``clip(x + R u)`` (``R`` = ``max_radius``, default the diagonal of the ``bounds`` box) is
   queried and, if adversarial, binary-searched; otherwise one query at the best distance so far
   along ``u``, binary-searched only if already adversarial (so the best distance only shrinks).
2. **HopSkipJump iterations** from the best boundary point ``b`` (distance ``r = ||b - x||``):
   estimate the boundary's normal from ``n_grad_samples`` probes ``b + delta u_k`` (``delta = r /
   sqrt(d)``; ``phi_k = +1`` if adversarial else -1, baseline-corrected mean of ``phi_k u_k``), step
   ``b + xi v`` with ``xi = r / sqrt(t)`` halved until adversarial (at most ``max_halvings``
   times), then binary-search back towards ``x``; keep the new point if it is closer.

Every point queried is counted against ``max_queries`` per example (the clean query included) and
no query is sent past it. Binary searches run ``n_binary_steps`` halvings. The reported distance is
that of an input the model actually labelled wrongly, so it is an upper bound on the true
distance. Examples with no adversarial point within the budget are *censored* at ``R``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from miaudit.errors import ConfigError

if TYPE_CHECKING:  # for the annotation only: label_only imports this module
    from miaudit.classifier.signals.label_only import BoundaryConfig


class _Search:
    """Budget-tracking state for one chunk: ``flat`` ``(c, d)`` inputs, ``used`` ``(c,)`` queries so far."""

    def __init__(self, query: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, budget: int,
                 bounds: tuple[float, float] | None, n_binary_steps: int):
        self.query = query
        self.shape = x.shape[1:]
        self.flat = x.reshape(len(x), -1).astype(np.float32)
        self.y = y
        self.budget = budget
        self.bounds = bounds
        self.n_binary_steps = n_binary_steps
        self.used = np.ones(len(x), np.int64)  # the clean query, made by the caller

    def remaining(self, rows: np.ndarray) -> np.ndarray:
        return self.budget - self.used[rows]

    def clip(self, points: np.ndarray) -> np.ndarray:
        """Points as the float32 inputs the model will see, inside the bounds."""
        if self.bounds is not None:
            points = np.clip(points, *self.bounds)
        return points.astype(np.float32)

    def adversarial(self, points: np.ndarray, owners: np.ndarray) -> np.ndarray:
        """``(m,)`` True where the model mislabels ``points`` ``(m, d)`` (row k belongs to example ``owners[k]``)."""
        np.add.at(self.used, owners, 1)
        if (self.used > self.budget).any():  # a bug in this module, never bad input
            raise RuntimeError("boundary search exceeded its query budget")
        labels = self.query(points.reshape(len(points), *self.shape))
        return labels != self.y[owners]

    def bisect(self, rows: np.ndarray, far: np.ndarray) -> np.ndarray:
        """Boundary points ``(r, d)`` on segments ``[x, far]`` (``far`` adversarial), adversarial side kept."""
        x0 = self.flat[rows].astype(np.float64)
        lo, hi = np.zeros(len(rows)), np.ones(len(rows))
        best = far.copy()
        for _ in range(self.n_binary_steps):
            ok = np.flatnonzero(self.remaining(rows) >= 1)
            if ok.size == 0:
                break
            mid = (lo[ok] + hi[ok]) / 2
            points = self.clip(x0[ok] + mid[:, None] * (far[ok] - x0[ok]))
            adv = self.adversarial(points, rows[ok])
            hi[ok[adv]], best[ok[adv]] = mid[adv], points[adv]
            lo[ok[~adv]] = mid[~adv]
        return best


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def boundary_search(query: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, correct: np.ndarray,
                    config: BoundaryConfig, bounds: tuple[float, float] | None, *, seed: int, offset: int,
                    anchors: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(distance (c,), censored (c,), queries (c,))`` for a chunk ``x`` ``(c, ...)`` of examples.

    ``correct`` ``(c,)``: the clean prediction is right (already queried, counted as 1 query);
    ``config``: a :class:`~miaudit.classifier.signals.label_only.BoundaryConfig`; ``offset``: index of the
    chunk's first example (per-example random streams); ``anchors``: inputs ``(a, d)`` and their
    predicted labels ``(a,)``, already known (starting points).
    """
    search = _Search(query, x, y, config.max_queries, bounds, config.n_binary_steps)
    c, d = search.flat.shape
    if config.max_radius is not None:
        radius = float(config.max_radius)
    elif bounds is not None:
        radius = float(np.sqrt(d) * (bounds[1] - bounds[0]))
    else:
        raise ConfigError("boundary search on unbounded inputs needs max_radius (the largest distance searched)")
    rngs = {i: np.random.default_rng([seed, 2, offset + i]) for i in np.flatnonzero(correct)}
    best = search.flat.copy()
    distance = np.full(c, np.inf)
    found = np.zeros(c, bool)

    def update(rows: np.ndarray, points: np.ndarray) -> None:
        new = np.linalg.norm(points.astype(np.float64) - search.flat[rows], axis=1)
        better = new < distance[rows]
        best[rows[better]], distance[rows[better]] = points[better], new[better]
        found[rows[better]] = True

    # 1. starting points: the nearest anchor labelled differently (no query: its label is known), then
    #    random directions (a candidate query only where no adversarial point is known yet)
    rows = np.flatnonzero(correct & (search.remaining(np.arange(c)) >= 1))
    if rows.size and anchors is not None:
        anchor_x, anchor_labels = anchors
        gap = np.linalg.norm(search.flat[rows, None, :].astype(np.float64) - anchor_x[None, :, :], axis=2)
        gap[anchor_labels[None, :] == y[rows, None]] = np.inf
        nearest = gap.argmin(axis=1)
        usable = np.isfinite(gap[np.arange(rows.size), nearest])
        if usable.any():
            update(rows[usable], search.bisect(rows[usable], anchor_x[nearest[usable]].astype(np.float64)))
    if rows.size:
        directions = np.stack([_unit(rngs[i].standard_normal((config.n_directions, d))) for i in rows])
        candidates = search.clip(search.flat[rows, None, :] + radius * directions)  # (r, n_directions, d)
        blind = ~found[rows]
        n_dir = np.where(blind, np.minimum(config.n_directions, search.remaining(rows)), 0)
        tried = np.arange(config.n_directions)[None, :] < n_dir[:, None]
        adv = np.zeros(tried.shape, bool)
        adv[tried] = search.adversarial(candidates[tried], np.repeat(rows, n_dir))
        for j in range(config.n_directions):
            ex, far = rows, candidates[:, j].astype(np.float64)
            length = np.linalg.norm(far - search.flat[ex], axis=1)
            first = adv[:, j] & (~found[ex] | (length <= distance[ex]))  # nothing yet, or the whole candidate is closer
            if first.any():
                update(ex[first], search.bisect(ex[first], far[first]))
            probe = np.flatnonzero(found[ex] & ~first & (length > distance[ex]) & (search.remaining(ex) >= 1))
            if probe.size:  # one query at the best distance so far along this direction
                t = (distance[ex[probe]] / length[probe])[:, None]
                x0 = search.flat[ex[probe]]
                near = search.clip(x0 + t * (far[probe] - x0))
                inside = search.adversarial(near, ex[probe])
                if inside.any():
                    sel = probe[inside]
                    update(ex[sel], search.bisect(ex[sel], near[inside].astype(np.float64)))

    # 2. HopSkipJump iterations
    t = 0
    while True:
        rows = np.flatnonzero(found & (search.remaining(np.arange(c)) >= config.n_grad_samples + 2))
        if rows.size == 0:
            break
        t += 1
        b = best[rows].astype(np.float64)
        r = distance[rows]
        delta = r / np.sqrt(d)
        k = config.n_grad_samples
        u = np.stack([_unit(rngs[i].standard_normal((k, d))) for i in rows])  # (r, k, d)
        probes = search.clip(b[:, None, :] + delta[:, None, None] * u)
        phi = np.where(search.adversarial(probes.reshape(-1, d), np.repeat(rows, k)).reshape(len(rows), k), 1.0, -1.0)
        mean = phi.mean(axis=1, keepdims=True)
        weights = np.where(np.abs(mean) < 1.0, phi - mean, phi)  # baseline only when both signs occur
        v = _unit((weights[:, :, None] * u).mean(axis=1))
        xi = r / np.sqrt(t)
        stepped, target = np.zeros(len(rows), bool), b.copy()
        for _ in range(config.max_halvings + 1):
            todo = np.flatnonzero(~stepped & (search.remaining(rows) >= 2))
            if todo.size == 0:
                break
            points = search.clip(b[todo] + xi[todo, None] * v[todo])
            adv = search.adversarial(points, rows[todo])
            stepped[todo[adv]], target[todo[adv]] = True, points[adv]
            xi[todo[~adv]] /= 2
        moved = np.flatnonzero(stepped)
        if moved.size:
            update(rows[moved], search.bisect(rows[moved], target[moved]))

    censored = correct & ~found
    distance = np.where(found, distance, 0.0)
    distance[censored] = radius
    return distance, censored, search.used.copy()


__all__ = ["boundary_search"]
