"""A :class:`ReferencePool` that remembers how it was built (numpy only, cheap to import).

:func:`miaudit.classifier.reference.pool.train_reference_pool` returns one; attacks accept any
:class:`ReferencePool` and use the extra fields when present (``views`` for LiRA's augmented queries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference.data import ReferencePool
from miaudit.errors import DataError


@dataclass
class TrainedReferencePool(ReferencePool):
    """Reference pool plus provenance.

    - ``views[j][v]``: model ``j`` on query view ``v`` of the ``n`` examples (``v = 0`` is the plain
      query, equal to ``outputs[j]``); ``None`` without augmented queries.
    - ``ids`` (n,) dataset ids of the scored examples; ``train_ids[j]`` the ids model ``j`` trained on;
      ``population_ids`` (n_z,) ids of the population examples.
    - ``models``: the trained modules of the models asked for with ``keep_models`` (in index order), else ``None``.
    - ``fingerprint``: cache key of the recipe + data + seed; ``fidelity``: see
      :func:`miaudit.classifier.reference.fidelity.check_fidelity`; ``seconds`` wall time spent training.
    """

    views: list[list[ClassifierOutputs]] | None = None
    ids: np.ndarray | None = None
    train_ids: list[np.ndarray] | None = None
    population_ids: np.ndarray | None = None
    fingerprint: str = ""
    fidelity: dict[str, Any] | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    models: list[Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.views is not None:
            if len(self.views) != self.n_models or len({len(v) for v in self.views}) != 1:
                raise DataError("views must hold the same number of query views for every reference model")
        if self.ids is not None and len(self.ids) != self.keep.shape[1]:
            raise DataError(f"{len(self.ids)} ids for {self.keep.shape[1]} scored examples")

    @property
    def n_views(self) -> int:
        return 1 if self.views is None else len(self.views[0])

    def select_models(self, index: np.ndarray) -> TrainedReferencePool:
        """The pool made of models ``index`` only (e.g. the first 16 of 64: ``np.arange(16)``)."""
        index = np.asarray(index)
        pick = lambda items: None if items is None else [items[j] for j in index]
        return TrainedReferencePool(
            outputs=[self.outputs[j] for j in index], keep=self.keep[index], population=pick(self.population),
            views=pick(self.views), ids=self.ids, train_ids=pick(self.train_ids), population_ids=self.population_ids,
            fingerprint=self.fingerprint, fidelity=self.fidelity, seconds=self.seconds, info=dict(self.info))

    def subset(self, index: np.ndarray) -> TrainedReferencePool:
        """The same pool restricted to scored examples ``index`` (indices or a boolean mask)."""
        return TrainedReferencePool(
            outputs=[o.subset(index) for o in self.outputs], keep=self.keep[:, index], population=self.population,
            views=None if self.views is None else [[o.subset(index) for o in vs] for vs in self.views],
            ids=None if self.ids is None else self.ids[index], train_ids=self.train_ids,
            population_ids=self.population_ids, fingerprint=self.fingerprint, fidelity=self.fidelity,
            seconds=self.seconds, info=dict(self.info))


__all__ = ["TrainedReferencePool"]
