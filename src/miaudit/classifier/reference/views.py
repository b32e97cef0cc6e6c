"""Augmented query views for LiRA (Carlini et al. 2022, Sec. VI-A: mirror and shift the query).

Each view is the whole input array transformed the same way; the target and every reference
model are queried on the same views, and LiRA averages its per-view log-likelihood ratios.
"""

from __future__ import annotations

import numpy as np

from miaudit.errors import ConfigError

VIEW_KINDS = ("none", "flip", "shift", "flip_shift")


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate images ``(n, C, H, W)`` by ``(dy, dx)`` pixels, filling with zeros."""
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def query_views(x: np.ndarray, kind: str = "none", *, shift: int = 2) -> list[np.ndarray]:
    """The query views of inputs ``x`` ``(n, ...)``; the first is always ``x`` itself.

    ``"flip"``: ``x`` and its horizontal mirror (2 views). ``"shift"``: ``x`` and 4 translations by
    ``shift`` pixels (5 views). ``"flip_shift"``: both, combined (10 views). Augmented views need
    images ``(n, C, H, W)``.
    """
    if kind not in VIEW_KINDS:
        raise ConfigError(f"query views {kind!r} are not known; choose one of {', '.join(VIEW_KINDS)}")
    if kind == "none":
        return [x]
    if x.ndim != 4:
        raise ConfigError(f"query views {kind!r} need images (n, C, H, W), got inputs of shape {x.shape}; "
                          "use views: none for tabular data")
    mirrors = [x, x[..., ::-1].copy()] if kind in ("flip", "flip_shift") else [x]
    offsets = [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if "shift" in kind else [])
    return [m if (dy, dx) == (0, 0) else _shift(m, dy, dx) for m in mirrors for dy, dx in offsets]


__all__ = ["VIEW_KINDS", "query_views"]
