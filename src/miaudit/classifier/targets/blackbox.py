"""Any callable as an audit target: the model is only reachable through its outputs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.targets.base import example_ids, unpack
from miaudit.data.datasets import ArrayDataset
from miaudit.errors import ConfigError, SignalError

OUTPUTS = {"probabilities": "probabilities", "logits": "logits", "labels": "label-only"}


class BlackBoxTarget:
    """``fn(x (n, ...)) -> (n, K)`` probabilities (or logits), or ``(n,)`` predicted labels.

    Every answer is checked: the shape matches the queries, values are finite, probabilities are
    non-negative and each row sums to 1 (within ``tolerance``), labels are whole numbers >= 0.
    ``batch_size`` splits large query sets into several calls.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], *, output: str = "probabilities",
                 batch_size: int | None = None, tolerance: float = 1e-3):
        if output not in OUTPUTS:
            raise ConfigError(f"BlackBoxTarget output {output!r} is not allowed; choose {', '.join(OUTPUTS)}")
        if not callable(fn):
            raise ConfigError("BlackBoxTarget needs a callable that maps inputs to outputs")
        self.fn = fn
        self.output = output
        self.batch_size = batch_size
        self.tolerance = tolerance
        self.access = OUTPUTS[output]

    def _query(self, x: np.ndarray) -> np.ndarray:
        step = self.batch_size or len(x)
        answers = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            try:
                answer = np.asarray(self.fn(chunk), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise SignalError(f"black-box output could not be read as numbers: {exc}") from None
            expected = f"({len(chunk)},)" if self.output == "labels" else f"({len(chunk)}, n_classes)"
            ok_ndim = 1 if self.output == "labels" else 2
            if answer.ndim != ok_ndim or answer.shape[0] != len(chunk):
                raise SignalError(f"black-box returned shape {answer.shape} for {len(chunk)} queries, expected "
                                  f"{expected} {self.output}; fix the callable or the output= option")
            answers.append(answer)
        out = np.concatenate(answers)
        if not np.isfinite(out).all():
            bad_rows = int((~np.isfinite(out)).reshape(len(out), -1).any(1).sum())
            raise SignalError(f"black-box returned NaN or inf in {bad_rows} rows; fix the model or drop those examples")
        if self.output == "labels" and (np.any(out < 0) or np.any(np.mod(out, 1) != 0)):
            raise SignalError("black-box labels must be whole numbers >= 0 (class indices)")
        if self.output == "probabilities":
            if (out < -self.tolerance).any():
                raise SignalError("black-box returned negative probabilities; use output='logits' for raw scores")
            worst = float(np.abs(out.sum(axis=1) - 1).max())
            if worst > self.tolerance:
                raise SignalError(f"black-box probability rows must sum to 1 (largest deviation {worst:.3g}); "
                                  "use output='logits' for unnormalised scores")
        return out

    def outputs(self, dataset_or_x: ArrayDataset | np.ndarray, y: np.ndarray | None = None) -> ClassifierOutputs:
        x, y = unpack(dataset_or_x, y)
        answer, ids = self._query(x), example_ids(dataset_or_x)
        if self.output == "labels":
            return ClassifierOutputs(y, predictions=answer.astype(np.int64), ids=ids)
        key = "probs" if self.output == "probabilities" else "logits"
        return ClassifierOutputs(y, **{key: answer}, ids=ids, prob_tolerance=self.tolerance)
