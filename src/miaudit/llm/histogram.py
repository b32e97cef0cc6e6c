"""Compiled kernels of the signal engine's fast path (numba), used when numba is installed.

The fast path (see :mod:`miaudit.llm.signals`) needs, per row of logits, the moments
``sum delta**j``, ``j = 0..3``, of every token's offset ``delta = u / BIN_WIDTH**2 - k**2`` inside its
sqrt-spaced bin ``k = round(sqrt(u) / BIN_WIDTH)``, with ``u = max(logits) - logits``. In eager
torch that takes about ten passes over the (rows, V) block and two scatters; here it is one pass
that bins and accumulates in float64 (``u`` is computed in float64 from the float32 logits, so it is
exact). The kernel releases the GIL, so the engine's worker threads run it in parallel.

Without numba (``AVAILABLE`` is False) the engine uses its torch implementation of the same moments.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

numba: ModuleType | None
try:
    import numba
except ImportError:  # the torch implementation in miaudit.llm.signals is used instead
    numba = None

AVAILABLE = numba is not None


def _accumulate(x: np.ndarray, top: np.ndarray, scale: float, n_bins: int, out: np.ndarray) -> None:
    """Add each token of ``x`` (rows, V) float32 to ``out`` (rows, n_bins + 1, 4) float64: in row i,
    bin ``k = min(round(sqrt(u)), n_bins)`` of ``u = (top[i] - x) * scale`` gains ``delta**j``,
    ``j = 0..3``, with ``delta = u - k**2``; bin ``n_bins`` collects the tokens beyond the last bin."""
    rows, vocab = x.shape
    bins = np.empty(vocab, np.int64)
    deltas = np.empty(vocab)
    limit = np.float64(n_bins)
    for i in range(rows):
        t = top[i]
        for v in range(vocab):  # vectorised: sqrt and rounding of the whole row
            u = (t - np.float64(x[i, v])) * scale
            k = min(np.floor(np.sqrt(u) + 0.5), limit)  # u = +inf (logit -inf): the last bin
            bins[v] = np.int64(k)
            deltas[v] = u - k * k
        acc = out[i]
        for v in range(vocab):
            k, d = bins[v], deltas[v]
            d2 = d * d
            acc[k, 0] += 1.0
            acc[k, 1] += d
            acc[k, 2] += d2
            acc[k, 3] += d2 * d


def _compile(function: Callable[..., None]) -> Callable[..., None]:
    """Compile with numba, cached on disk where numba finds a writable place (else once per process)."""
    assert numba is not None  # called only when AVAILABLE
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # "no locator available": read-only install and no writable user cache
        return numba.njit(nogil=True)(function)


#: the compiled :func:`_accumulate`; None without numba (the engine then never asks for it)
accumulate: Callable[..., None] | None = _compile(_accumulate) if AVAILABLE else None

__all__ = ["AVAILABLE", "accumulate"]
