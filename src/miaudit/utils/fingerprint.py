"""Stable content fingerprints for caching signals and reference models."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def _update(h: hashlib._Hash, obj: Any) -> None:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        h.update(f"nd{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    elif hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor
        _update(h, obj.detach().cpu().numpy())
    elif isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=str):
            h.update(str(key).encode())
            _update(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for item in obj:
            _update(h, item)
        h.update(b"]")
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def fingerprint(*objects: Any, length: int = 16) -> str:
    """Hex digest over arrays, tensors, dicts, lists and JSON-able values (order-sensitive)."""
    h = hashlib.sha256()
    for obj in objects:
        _update(h, obj)
    return h.hexdigest()[:length]


def module_fingerprint(module: Any) -> str:
    """Fingerprint of a torch module's class and weights (its ``state_dict``)."""
    return fingerprint(type(module).__qualname__, dict(module.state_dict()))
