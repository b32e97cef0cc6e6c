"""Classifier outputs cached on disk, keyed by fingerprints of the model and of the data.

One ``.npz`` per (model, data) pair at ``root/<model_fp>-<data_fp>.npz`` with ``labels`` and
exactly one of ``logits``, ``probs`` or ``predictions`` (whatever the target gave), so every
derived signal (loss, confidence, entropy, LiRA's scaled logit, ...) is recomputed exactly from
it. Writes go to a temporary file in the same folder and are renamed into place, so a crash never
leaves a half-written entry; an unreadable entry is recomputed and replaced.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.errors import ConfigError, MiauditError
from miaudit.utils.atomic import save_npz_atomic

_KEY = re.compile(r"^[A-Za-z0-9_.]+$")


def output_arrays(outputs: ClassifierOutputs) -> dict[str, np.ndarray]:
    """``labels`` plus whichever of ``logits`` / ``probs`` / ``predictions`` the outputs hold."""
    arrays = {"labels": outputs.labels}
    for key, value in (("logits", outputs.logits), ("probs", outputs.probs_given),
                       ("predictions", outputs.predictions)):
        if value is not None:
            arrays[key] = value
    return arrays


def save_outputs(path: str | Path, outputs: ClassifierOutputs) -> None:
    """Write ``outputs`` to ``path`` atomically (temporary file + rename)."""
    save_npz_atomic(path, output_arrays(outputs))


def load_outputs(path: str | Path) -> ClassifierOutputs:
    """Read outputs written by :func:`save_outputs` (no pickles)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    labels = arrays.pop("labels")
    return ClassifierOutputs(labels, **arrays)


class SignalCache:
    """``get_or_compute(model_fp, data_fp, compute_fn)``: outputs from disk, or computed once and stored.

    Fingerprints come from :mod:`miaudit.utils.fingerprint` (e.g. ``target.fingerprint()`` and
    ``fingerprint(dataset.x, dataset.y)``). ``hits`` / ``misses`` count lookups in this process.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, model_fp: str, data_fp: str) -> Path:
        for name, value in (("model_fp", model_fp), ("data_fp", data_fp)):
            if not isinstance(value, str) or not _KEY.match(value):
                raise ConfigError(f"{name} {value!r} must be a non-empty fingerprint string of letters, digits, "
                                  "'_' or '.'; use miaudit.utils.fingerprint")
        return self.root / f"{model_fp}-{data_fp}.npz"

    def get_or_compute(self, model_fp: str, data_fp: str,
                       compute_fn: Callable[[], ClassifierOutputs]) -> ClassifierOutputs:
        path = self.path(model_fp, data_fp)
        if path.is_file():
            try:
                outputs = load_outputs(path)
            except (OSError, ValueError, KeyError, EOFError, MiauditError):
                outputs = None  # corrupt or foreign file: recompute and overwrite it below
            if outputs is not None:
                self.hits += 1
                return outputs
        self.misses += 1
        outputs = compute_fn()
        if not isinstance(outputs, ClassifierOutputs):
            raise ConfigError(f"compute_fn must return ClassifierOutputs, got {type(outputs).__name__}")
        save_outputs(path, outputs)
        return outputs
