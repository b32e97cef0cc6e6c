"""Several targets pooled into one audit (``evaluation.n_targets``), as Carlini et al. (2022) evaluate LiRA.

One target trained on ``n`` examples gives ``n / 2`` non-member scores: too few for a TPR at a low
FPR (1% of 150 non-members is 1.5 false positives). LiRA's authors audit the *training algorithm*
instead: many models trained by the same recipe on random halves of the same examples, each in turn
the target with the others as its reference models, and the scores of all targets pooled.

:func:`pool_layout` says which models to train and which reference models each target uses. The
models are trained in pairs on complementary halves of the audited examples (model ``2i`` on one
random half, ``2i + 1`` on the other: :func:`miaudit.data.paired_keep_matrix`), by the reference
pool's trainer, executors and cache (:func:`miaudit.classifier.reference.pool.build_reference_pool_for_audit`).
Target ``k`` is model ``k``; its reference models are the first ``n_reference / 2`` pairs other than its
own pair, so a target is never its own reference (nor is the model trained on its complement), and
every audited example is IN for exactly half of its reference models, as in a one-target audit.

:func:`pool_scores` concatenates each attack's scores over the targets (``K x n`` points; the ids
repeat, the membership is each target's own) and groups the points by example (or by the examples'
own groups), so the evaluation's cluster bootstrap resamples an example with all its ``K`` scores, and records
which target gave each score, so the empirical epsilon bound is computed per target (independent
records) and the largest is reported with a Bonferroni correction over the targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from miaudit.evaluation.metrics import roc_auc
from miaudit.runs.pipeline import ScoredAttack


def pool_layout(n_targets: int, n_reference: int) -> tuple[int, list[np.ndarray]]:
    """``(n_models, reference)``: models to train in pairs, and ``reference[k]`` the model indices of target ``k``.

    ``n_models = 2 * max(n_reference / 2 + 1, ceil(n_targets / 2))``; ``reference[k]`` ``(n_reference,)``
    holds the first ``n_reference / 2`` pairs that do not contain model ``k``.
    """
    if n_targets < 1 or n_reference < 0 or n_reference % 2:
        raise ValueError(f"need n_targets >= 1 and an even n_reference >= 0, got {n_targets} and {n_reference}")
    n_pairs = max(n_reference // 2 + 1, (n_targets + 1) // 2)
    reference = []
    for k in range(n_targets):
        pairs = [p for p in range(n_pairs) if p != k // 2][:n_reference // 2]
        reference.append(np.array([j for p in pairs for j in (2 * p, 2 * p + 1)], dtype=np.int64))
    return 2 * n_pairs, reference


def pool_scores(per_target: Sequence[Sequence[ScoredAttack]],
                thresholds: Sequence[Sequence[float | None]]) -> list[ScoredAttack]:
    """One pooled :class:`ScoredAttack` per attack from ``per_target[k][i]`` (target ``k``, attack ``i``).

    ``thresholds[k][i]``: attack ``i``'s decision threshold when it scored target ``k``; when they
    differ (a threshold learned from each target's population outputs) the pooled entry has no
    single learned threshold and the evaluation reports its decision metrics at the ``oracle`` one.
    Groups are the examples' groups when they have some, else their ids. ``extra`` keeps the first
    target's ``learned`` state and ``cost`` and adds ``per_target_auc``; ``targets`` ``(K x n,)`` is each
    score's target.
    """
    pooled = []
    for i, first in enumerate(per_target[0]):
        parts = [run[i] for run in per_target]
        assert all(p.key == first.key for p in parts)
        groups = np.concatenate([np.asarray(p.groups if p.groups is not None else p.ids) for p in parts])
        extra: dict[str, Any] = dict(first.extra)
        extra["per_target_auc"] = [round(roc_auc(p.membership, p.scores), 6) for p in parts]
        learned = {t[i] for t in thresholds}
        pooled.append(ScoredAttack(
            first.key, first.attack, np.concatenate([p.ids for p in parts]),
            np.concatenate([p.membership for p in parts]), np.concatenate([p.scores for p in parts]),
            sum(p.seconds for p in parts), extra=extra, groups=groups,
            threshold_from_attack=len(learned) == 1,
            targets=np.concatenate([np.full(len(p.scores), k) for k, p in enumerate(parts)])))
    return pooled


__all__ = ["pool_layout", "pool_scores"]
