"""Classifier outputs cached on disk, keyed by fingerprints of the model and of the data.

One ``.npz`` per (model, data) pair at ``root/<model_fp>-<data_fp>.npz`` with ``labels`` and
exactly one of ``logits``, ``probs`` or ``predictions`` (whatever the target gave), so every
derived signal (loss, confidence, entropy, LiRA's scaled logit, ...) is recomputed exactly from
it. Entries are verified files (:mod:`miaudit.utils.cache`: written to a temporary file, synced and
renamed into place, with a content hash): a truncated, zero-byte, edited or foreign entry is
reported with a warning naming the file, then recomputed and replaced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.errors import ConfigError, MiauditError, SignalError
from miaudit.utils.cache import load_verified_npz, save_verified_npz, warn_damaged

_KEY = re.compile(r"^[A-Za-z0-9_.]+$")
#: the arrays a model's answers come as; outputs hold exactly one of them
OUTPUT_KEYS = ("logits", "probs", "predictions")


def output_arrays(outputs: ClassifierOutputs) -> dict[str, np.ndarray]:
    """``labels`` plus whichever of ``logits`` / ``probs`` / ``predictions`` the outputs hold."""
    arrays = {"labels": outputs.labels}
    for key, value in (("logits", outputs.logits), ("probs", outputs.probs_given),
                       ("predictions", outputs.predictions)):
        if value is not None:
            arrays[key] = value
    return arrays


def outputs_from_arrays(arrays: Mapping[str, np.ndarray]) -> ClassifierOutputs:
    """The inverse of :func:`output_arrays`: ``labels``, one of :data:`OUTPUT_KEYS` and optionally ``ids``; a
    :class:`SignalError` names any other array."""
    other = sorted(set(arrays) - {"labels", "ids", *OUTPUT_KEYS})
    if other or "labels" not in arrays:
        raise SignalError(f"expected labels and one of {', '.join(OUTPUT_KEYS)}, got arrays {', '.join(arrays)}")
    return ClassifierOutputs(arrays["labels"], logits=arrays.get("logits"), probs=arrays.get("probs"),
                             predictions=arrays.get("predictions"), ids=arrays.get("ids"))


def save_outputs(path: str | Path, outputs: ClassifierOutputs) -> None:
    """Write ``outputs`` to ``path`` as a verified cache file (atomic, synced, with a content hash)."""
    save_verified_npz(path, output_arrays(outputs), key=Path(path).stem)


def load_outputs(path: str | Path) -> ClassifierOutputs | None:
    """Outputs written by :func:`save_outputs` (no pickles); None, with a warning naming the file, for a
    missing, damaged, edited or foreign entry."""
    arrays = load_verified_npz(path, key=Path(path).stem)
    if arrays is None:
        return None
    try:
        return outputs_from_arrays(arrays)
    except MiauditError as exc:
        warn_damaged(path, f"not a set of classifier outputs ({exc})")
        return None


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
        outputs = load_outputs(path)  # None when missing or not usable (reported): recomputed and replaced below
        if outputs is not None:
            self.hits += 1
            return outputs
        self.misses += 1
        outputs = compute_fn()
        if not isinstance(outputs, ClassifierOutputs):
            raise ConfigError(f"compute_fn must return ClassifierOutputs, got {type(outputs).__name__}")
        save_outputs(path, outputs)
        return outputs
