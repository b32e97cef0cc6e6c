"""What attacks that learn receive in ``fit``.

- :class:`ShadowData`: shadow models (Shokri et al. 2017) scored on their own members and non-members.
- :class:`ReferencePool`: ``m`` reference models scored on the *audited* examples, with
  ``keep[m, n]`` saying which examples each model trained on (LiRA, RMIA, calibration attacks).
- ``population``: the target's outputs on data known not to be members (population attacks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.errors import DataError


@dataclass
class ShadowData:
    """Each shadow model's outputs on its own examples and their membership (True = trained on)."""

    outputs: list[ClassifierOutputs]
    membership: list[np.ndarray]

    def __post_init__(self) -> None:
        if not self.outputs:
            raise DataError("shadow data is empty; train at least one shadow model")
        if len(self.outputs) != len(self.membership):
            raise DataError(f"{len(self.outputs)} shadow outputs but {len(self.membership)} membership arrays")
        self.membership = [np.asarray(m, dtype=bool) for m in self.membership]
        for k, (o, m) in enumerate(zip(self.outputs, self.membership)):
            if m.shape != (len(o),):
                raise DataError(f"shadow model {k}: membership shape {m.shape} does not match {len(o)} outputs")
            if m.all() or not m.any():
                raise DataError(f"shadow model {k} needs both member and non-member examples")

    @property
    def n_models(self) -> int:
        return len(self.outputs)

    def pooled(self, signal: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, true labels, membership)`` of ``signal`` over all shadow models, concatenated."""
        values = np.concatenate([o.signal(signal) for o in self.outputs])
        labels = np.concatenate([o.labels for o in self.outputs])
        return values, labels, np.concatenate(self.membership)


@dataclass
class ReferencePool:
    """``m`` reference models' outputs on the ``n`` audited examples; ``keep[m, n]`` True = trained on it.

    ``population`` optionally holds each reference model's outputs on population examples ``z``
    (RMIA), aligned with ``AttackReference.population`` (the target's outputs on the same ``z``).
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
        if self.population is not None and len(self.population) != m:
            raise DataError(f"population outputs for {len(self.population)} models, expected {m}")

    @property
    def n_models(self) -> int:
        return len(self.outputs)

    def signal_matrix(self, signal: str) -> np.ndarray:
        """``(m, n)`` matrix of one signal across reference models."""
        return np.stack([o.signal(signal) for o in self.outputs])


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
