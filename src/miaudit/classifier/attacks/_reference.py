"""Input checks shared by the reference-model attacks: pools, queries, model counts, example alignment."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference.data import AttackReference, ReferencePool, ShadowData
from miaudit.errors import DataError

Queries = ClassifierOutputs | Sequence[ClassifierOutputs]
#: positions in the pool of the target's examples: an index array, or ``slice(None)`` when they line up as they are
Index = np.ndarray | slice
Part = TypeVar("Part")


@runtime_checkable
class CountsReferenceModels(Protocol):
    """An attack that needs a number of IN and OUT reference models for every example."""

    def models_per_example(self) -> tuple[int, str]:
        """Fewest reference models every example needs on each side it uses (IN, OUT), and how to need fewer
        or have more: checked before an audit trains its pool (paired halves give ``n_models / 2`` of each)."""
        ...


def get_pool(reference: AttackReference, attack: str) -> ReferencePool:
    """``reference.pool`` or a clear error."""
    if not isinstance(reference, AttackReference):
        raise DataError(f"attack {attack!r} is fitted on an AttackReference(pool=ReferencePool(...)), "
                        f"got {type(reference).__name__}")
    return _require(reference, "pool", ReferencePool, attack)


def get_shadow(reference: AttackReference | None, attack: str) -> ShadowData:
    """``reference.shadow`` (shadow models' :class:`ClassifierOutputs`) or a clear error."""
    return _require(reference, "shadow", ShadowData, attack)


def get_population(reference: AttackReference | None, attack: str) -> ClassifierOutputs:
    """``reference.population`` (the target's outputs on population data) or a clear error."""
    return _require(reference, "population", ClassifierOutputs, attack)


def _require(reference: AttackReference | None, part: str, kind: type[Part], attack: str) -> Part:
    """``reference``'s ``part``, which must be a ``kind``: a DataError when it is missing or of another type."""
    value = (reference or AttackReference()).require(part, attack)
    if not isinstance(value, kind):
        raise DataError(f"attack {attack!r} needs {part} data as {kind.__name__}, got {type(value).__name__}")
    return value


def as_queries(signals: Queries, attack: str) -> list[ClassifierOutputs]:
    """One or several query views of the same examples, as a list of :class:`ClassifierOutputs`."""
    queries = [signals] if isinstance(signals, ClassifierOutputs) else list(signals)
    if not queries or not all(isinstance(q, ClassifierOutputs) for q in queries):
        raise DataError(f"attack {attack!r} scores ClassifierOutputs (or a list of them, one per query view)")
    for q in queries[1:]:
        same_ids = q.ids is None or queries[0].ids is None or np.array_equal(q.ids, queries[0].ids)
        if not same_ids or not np.array_equal(q.labels, queries[0].labels):
            raise DataError(f"attack {attack!r}: every query view must cover the same examples with the same labels")
    return queries


def align_examples(target: ClassifierOutputs, pool_ids: np.ndarray | None, pool_labels: np.ndarray, attack: str,
                   what: str = "audited examples") -> Index:
    """Where each of the target's ``n`` examples sits among the pool's: by ids, or by position without them.

    When the target's outputs and the pool's both carry ids, every target example is looked up by
    its id (the target may cover a subset of the pool's examples, in any order) and a
    :class:`DataError` names the ids the pool lacks; when either side has no ids, the two line up
    by position and must have the same count. Either way the labels must then agree. Returns
    ``slice(None)`` when the examples already line up, else an ``(n,)`` index into the pool.
    """
    if target.ids is None or pool_ids is None:
        check_same_examples(target.labels, pool_labels, attack, what)
        return slice(None)
    if target.ids.shape == pool_ids.shape and np.array_equal(target.ids, pool_ids):
        index: Index = slice(None)
    else:
        index = _positions(target.ids, pool_ids, attack, what)
    check_same_examples(target.labels, pool_labels[index], attack, what)
    return index


def _shown(ids: np.ndarray) -> str:
    """Up to three ids for a message, with how many more there are."""
    more = f" (+{ids.size - 3} more)" if ids.size > 3 else ""
    return ", ".join(repr(str(i)) for i in ids[:3]) + more


def _positions(ids: np.ndarray, pool_ids: np.ndarray, attack: str, what: str) -> np.ndarray:
    """``(n,)`` position of each of ``ids`` in ``pool_ids`` (compared as strings); a DataError names ids the pool
    lacks, and ids that repeat on either side (they cannot be looked up)."""
    wanted, pool = ids.astype(str), pool_ids.astype(str)
    order = np.argsort(pool, kind="stable")
    ordered = pool[order]
    for side, sorted_ids in (("reference pool's", ordered), ("target's", np.sort(wanted))):
        repeated = np.unique(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]])
        if repeated.size:
            raise DataError(f"attack {attack!r}: ids of the {side} {what} repeat ({_shown(repeated)}); give every "
                            "example its own id")
    found = np.searchsorted(ordered, wanted).clip(max=pool.size - 1)
    missing = wanted[ordered[found] != wanted]
    if missing.size:
        raise DataError(f"attack {attack!r}: {missing.size} of the target's {ids.size} {what} are not among the "
                        f"reference pool's {pool.size} (ids {_shown(missing)}); score the pool on the target's "
                        "examples (the same ids)")
    return order[found]


def check_same_examples(labels: np.ndarray, pool_labels: np.ndarray, attack: str, what: str = "audited examples"
                        ) -> None:
    """The target was queried on the examples the pool was scored on (same count, same labels)."""
    if labels.shape != pool_labels.shape:
        raise DataError(f"attack {attack!r}: target outputs on {labels.size} {what} but the reference pool was "
                        f"scored on {pool_labels.size}; score the pool on the same examples as the target")
    if not np.array_equal(labels, pool_labels):
        bad = int((labels != pool_labels).sum())
        raise DataError(f"attack {attack!r}: labels of {bad} {what} differ between target and reference pool; "
                        "score the pool on the same examples in the same order")


def check_classes(pool_classes: int, n_classes: int, attack: str) -> None:
    """Target and reference models predict the same number of classes."""
    if pool_classes != n_classes:
        raise DataError(f"attack {attack!r}: target has {n_classes} classes but the reference models have "
                        f"{pool_classes}; train the pool with the target's recipe and label set")


def check_counts(mask: np.ndarray, minimum: int, attack: str, what: str, fix: str) -> None:
    """Every example needs at least ``minimum`` models in ``mask`` (m, n)."""
    counts = mask.sum(axis=0)
    if counts.min() < minimum:
        short = int((counts < minimum).sum())
        raise DataError(f"attack {attack!r} needs at least {minimum} {what} reference models per example; "
                        f"{short} examples have only {int(counts.min())}: {fix}")


def pool_views(pool: ReferencePool, signal: str) -> np.ndarray:
    """``(m, n, k)`` values of ``signal`` for every model and query view of the pool."""
    views = getattr(pool, "views", None)
    if views is None:
        return pool.signal_matrix(signal)[:, :, None]
    return np.stack([np.stack([o.signal(signal) for o in model_views], axis=1) for model_views in views])


def match_views(n_target: int, n_pool: int, attack: str) -> int:
    """How many query views to use: all when target and pool agree; the plain one (with a warning) when
    the target gave one view and the pool several; otherwise an error."""
    if n_target == n_pool:
        return n_pool
    if n_target == 1:
        warnings.warn(f"attack {attack!r}: the pool has {n_pool} query views but the target only 1; using the "
                      "plain query only (give the target's outputs on every view to average them)", stacklevel=3)
        return 1
    raise DataError(f"attack {attack!r}: the target has {n_target} query views but the reference pool {n_pool}; "
                    "score target and pool on the same augmented views")
