"""Turn NumPy values, paths and nested containers into plain JSON / YAML values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Recursively convert NumPy scalars / arrays and paths; other values pass through unchanged."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def finite_jsonable(value: Any) -> Any:
    """NumPy scalars / arrays as plain bools, ints, floats and lists, with non-finite floats as None
    (strict JSON has no NaN or infinity)."""
    if isinstance(value, np.ndarray):
        return [finite_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)``: NumPy and paths converted, anything else as its string."""
    converted = jsonable(obj)
    return str(converted) if converted is obj else converted
