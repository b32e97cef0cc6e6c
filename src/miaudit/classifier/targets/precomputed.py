"""Outputs computed elsewhere, read from a file: audit a model the tool cannot load.

File format (``.npz``, written e.g. with ``numpy.savez``): exactly one of ``logits`` ``(n, K)``,
``probs`` ``(n, K)`` (rows sum to 1) or ``predictions`` ``(n,)`` (label-only); ``labels`` ``(n,)``
true classes; ``membership`` ``(n,)`` 1/True = the model trained on that example; optional ``ids``
``(n,)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.signals.cache import OUTPUT_KEYS, output_arrays, outputs_from_arrays
from miaudit.data.datasets import ArrayDataset, read_npz
from miaudit.errors import DataError, SignalError
from miaudit.utils.fingerprint import fingerprint


def _check_numeric(path: Path, key: str, array: np.ndarray) -> None:
    """Outputs, labels and membership are real numbers (membership may be boolean): a clear error for strings,
    complex numbers, booleans where numbers belong, and objects."""
    kind = array.dtype.kind
    if kind == "b" and key in ("membership", "predictions"):
        return
    if kind not in "iuf":
        found = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes", "O": "objects"}.get(
            kind, f"dtype {array.dtype}")
        raise DataError(f"{path}: {key} holds {found}; it must hold real numbers: convert it (e.g. "
                        "numpy.asarray(values, dtype=float)) before numpy.savez")


class PrecomputedTarget:
    """Fixed outputs on ``n`` examples plus their membership ground truth ``(n,)`` bool (and, from a file
    that has them, the examples' ``groups`` ``(n,)``)."""

    groups: np.ndarray | None = None

    def __init__(self, outputs: ClassifierOutputs, membership: np.ndarray, *, ids: np.ndarray | None = None,
                 source: str = "precomputed"):
        membership = np.asarray(membership)
        if membership.shape != (len(outputs),):
            raise DataError(f"{source}: membership has shape {membership.shape}, expected ({len(outputs)},) "
                            "to match the outputs")
        if membership.dtype != bool and not np.isin(membership, (0, 1)).all():
            raise DataError(f"{source}: membership must be boolean or 0/1")
        self.membership = membership.astype(bool)
        if self.membership.all() or not self.membership.any():
            kind = "non-member" if self.membership.all() else "member"
            raise DataError(f"{source}: there is no {kind} example; an audit needs both members and non-members")
        if ids is None:
            ids = np.arange(len(outputs)) if outputs.ids is None else outputs.ids
        self.ids = np.asarray(ids)
        if self.ids.shape != self.membership.shape:
            raise DataError(f"{source}: ids have shape {self.ids.shape}, expected {self.membership.shape}")
        values, counts = np.unique(self.ids, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"{source}: {int((counts > 1).sum())} ids occur more than once (e.g. "
                            f"{values[counts > 1][0].item()!r}); each example needs its own id")
        self._outputs = outputs.with_ids(self.ids)
        self.source = source
        self.access = outputs.access

    @classmethod
    def from_npz(cls, path: str | Path) -> PrecomputedTarget:
        """Read and validate a file in the format above; each problem is a one-line :class:`DataError`."""
        path = Path(path)
        arrays = read_npz(path)
        given = [k for k in OUTPUT_KEYS if k in arrays]
        if len(given) != 1:
            raise DataError(f"{path} must hold exactly one of {', '.join(OUTPUT_KEYS)} (found "
                            f"{', '.join(given) or 'none'}; keys: {', '.join(arrays) or 'none'})")
        missing = [k for k in ("labels", "membership") if k not in arrays]
        if missing:
            raise DataError(f"{path} lacks {' and '.join(missing)} (keys: {', '.join(arrays)}); add the true labels "
                            "and membership (1 = trained on) arrays")
        for key in (given[0], "labels", "membership"):
            _check_numeric(path, key, arrays[key])
        n = len(arrays["labels"])
        for key in (given[0], "membership", "ids"):
            if key in arrays and (arrays[key].ndim == 0 or arrays[key].shape[0] != n):
                raise DataError(f"{path}: {key} has shape {arrays[key].shape} but labels has {n} rows; "
                                "every array needs one row per example")
        try:
            outputs = outputs_from_arrays({"labels": arrays["labels"], given[0]: arrays[given[0]]})
        except SignalError as exc:
            raise DataError(f"{path}: {exc}") from None
        target = cls(outputs, arrays["membership"], ids=arrays.get("ids"), source=str(path))
        if "groups" in arrays:
            if arrays["groups"].shape != (n,):
                raise DataError(f"{path}: groups has shape {arrays['groups'].shape} but labels has {n} rows; give one "
                                "group id per example")
            target.groups = arrays["groups"]
        return target

    @staticmethod
    def save_npz(path: str | Path, outputs: ClassifierOutputs, membership: np.ndarray,
                 ids: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
        """Write ``outputs`` and ``membership`` (and ``ids``, ``groups``) in the format :meth:`from_npz` reads."""
        arrays = {**output_arrays(outputs), "membership": np.asarray(membership, dtype=bool)}
        if ids is not None:
            arrays["ids"] = np.asarray(ids)
        if groups is not None:
            arrays["groups"] = np.asarray(groups)
        objects = [key for key, array in arrays.items() if array.dtype == object]
        if objects:  # from_npz never unpickles, so it could not read them back
            raise DataError(f"{' and '.join(objects)} hold Python objects, which {path} cannot store without pickles; "
                            "give numbers or strings")
        np.savez(path, allow_pickle=False, **arrays)

    def fingerprint(self) -> str:
        """Fingerprint of the stored outputs and membership."""
        o = self._outputs
        return fingerprint(o.labels, o.logits, o.probs_given, o.predictions, self.membership)

    def outputs(self, dataset_or_x: ArrayDataset | np.ndarray | None = None,
                y: np.ndarray | None = None) -> ClassifierOutputs:
        """The stored outputs; pass integer row indices (or a boolean mask) to select rows, not inputs."""
        if y is not None or isinstance(dataset_or_x, ArrayDataset):
            raise DataError("a precomputed target cannot run on new inputs; call outputs() with no data "
                            "or with row indices")
        if dataset_or_x is None:
            return self._outputs
        index = np.asarray(dataset_or_x)
        if index.dtype != bool and not np.issubdtype(index.dtype, np.integer):
            raise DataError("a precomputed target selects rows by integer indices or a boolean mask, not by inputs")
        return self._outputs.subset(index)
