"""What attacks that learn receive in ``fit``.

- :class:`ShadowData`: shadow models (Shokri et al. 2017) scored on their own members and non-members
  (a :class:`~miaudit.attacks.shadow.ShadowSet` of :class:`ClassifierOutputs`).
- :class:`ReferencePool`: ``m`` reference models scored on the *audited* examples, with
  ``keep[m, n]`` saying which examples each model trained on (LiRA, RMIA, calibration attacks).
- ``population``: the target's outputs on data known not to be members (population attacks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from miaudit.attacks.shadow import ShadowSet
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.errors import DataError


class ShadowData(ShadowSet[ClassifierOutputs]):
    """Each shadow model's outputs on its own examples and their membership (True = trained on)."""

    def __init__(self, outputs: Sequence[ClassifierOutputs], membership: Sequence[np.ndarray]):
        super().__init__(outputs, membership)

    @property
    def outputs(self) -> list[ClassifierOutputs]:
        """``outputs[k]``: shadow model k's outputs on its own examples."""
        return self.signals


@dataclass
class ReferencePool:
    """``m`` reference models' outputs on the ``n`` audited examples; ``keep[m, n]`` True = trained on it.

    ``population`` optionally holds each reference model's outputs on population examples ``z``
    (RMIA), aligned with ``AttackReference.population`` (the target's outputs on the same ``z``).
    Outputs that carry ids must carry the same ids for every model; attacks then line the target
    up with the pool by ids (:func:`miaudit.classifier.attacks._reference.align_examples`), else by
    position.
    """

    outputs: list[ClassifierOutputs]
    keep: np.ndarray
    population: list[ClassifierOutputs] | None = None

    def __post_init__(self) -> None:
        self.keep = np.asarray(self.keep, dtype=bool)
        m = len(self.outputs)
        if m == 0:
            raise DataError("reference pool is empty; train reference models first")
        n = len(self.outputs[0])
        if self.keep.shape != (m, n):
            raise DataError(f"keep matrix has shape {self.keep.shape}, expected ({m}, {n}) for {m} models on {n} "
                            "examples")
        if any(len(o) != n for o in self.outputs):
            raise DataError("every reference model must be scored on the same audited examples")
        _check_same_ids(self.outputs, "audited examples")
        if self.population is not None:
            if len(self.population) != m:
                raise DataError(f"population outputs for {len(self.population)} models, expected {m}")
            _check_same_ids(self.population, "population examples z")

    @property
    def n_models(self) -> int:
        return len(self.outputs)

    def signal_matrix(self, signal: str) -> np.ndarray:
        """``(m, n)`` matrix of one signal across reference models."""
        return np.stack([o.signal(signal) for o in self.outputs])


def _check_same_ids(outputs: list[ClassifierOutputs], what: str) -> None:
    """Every model's outputs carry the same ids in the same order, or none carries ids."""
    first = outputs[0].ids
    for j, o in enumerate(outputs[1:], 1):
        same = o.ids is None if first is None else o.ids is not None and np.array_equal(o.ids, first)
        if not same:
            raise DataError(f"reference model {j} was scored on other {what} than model 0 (their ids differ); score "
                            "every reference model on the same examples in the same order")


@dataclass
class AttackReference:
    """Everything an attack may learn from; each attack uses the parts it needs."""

    shadow: ShadowData | None = None
    pool: ReferencePool | None = None
    population: ClassifierOutputs | None = None

    def require(self, part: str, attack: str) -> object:
        value = getattr(self, part)
        if value is None:
            hints = {"shadow": "add shadow models (shadow.n_models in the config)",
                     "pool": "add a reference pool (reference.n_models in the config)",
                     "population": "give population data the target did not train on"}
            raise DataError(f"attack {attack!r} needs {part} data: {hints.get(part, part)}")
        return value
