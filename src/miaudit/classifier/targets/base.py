"""What every target adapter shares: turning ``dataset_or_x, y`` into arrays (and the examples' ids)."""

from __future__ import annotations

from typing import Any

import numpy as np

from miaudit.data.datasets import ArrayDataset
from miaudit.errors import DataError


def unpack(dataset_or_x: ArrayDataset | np.ndarray | Any, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from an :class:`ArrayDataset`, or from an input array plus labels ``y`` ``(n,)``."""
    if isinstance(dataset_or_x, ArrayDataset):
        if y is not None:
            raise DataError("give either a dataset or (x, y), not a dataset and y")
        return dataset_or_x.x, dataset_or_x.y
    if y is None:
        raise DataError("labels are needed to compute signals: pass y=... with x, or pass an ArrayDataset")
    x, y = np.asarray(dataset_or_x), np.asarray(y)
    if y.ndim != 1 or len(x) != len(y):
        raise DataError(f"x has {len(x)} rows but y has shape {y.shape}; give one label per row")
    if len(y) == 0:
        raise DataError("no examples to score")
    return x, y


def example_ids(dataset_or_x: ArrayDataset | np.ndarray | Any) -> np.ndarray | None:
    """The ids of an :class:`ArrayDataset` (the outputs on it carry them); ``None`` for bare arrays."""
    return dataset_or_x.ids if isinstance(dataset_or_x, ArrayDataset) else None
