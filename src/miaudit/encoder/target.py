"""``EncoderTarget``: an adapter over a user's encoder (torch module or callable) that returns embeddings.

The wrapped model maps inputs ``(n, ...)`` to embeddings ``(n, d)``. Every batch is checked: the
output must be 2-D with one row per input, finite, and keep the same ``d`` across calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from miaudit.errors import SignalError


class EncoderTarget:
    """Embeddings of an encoder; ``access = "embeddings"``.

    ``model`` is a ``torch.nn.Module`` (run in eval mode under ``torch.no_grad``) or any callable
    taking a float32 tensor ``(b, ...)`` and returning ``(b, d)`` embeddings (array or tensor).
    """

    access = "embeddings"

    def __init__(self, model: torch.nn.Module | Callable[[Any], Any], *, batch_size: int = 512):
        if not callable(model):
            raise SignalError(f"an encoder target must be a torch module or a callable, got {type(model).__name__}")
        if batch_size < 1:
            raise SignalError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.embed_dim_: int | None = None

    def _call(self, xb: torch.Tensor) -> np.ndarray:
        if isinstance(self.model, torch.nn.Module):
            self.model.eval()
            with torch.no_grad():
                out = self.model(xb)
        else:
            out = self.model(xb)
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        try:
            return np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise SignalError(f"the encoder returned {type(out).__name__}; it must return embeddings as an "
                              "array or tensor of shape (n, d)") from None

    def embed(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embeddings ``(n, d)`` of inputs ``x`` ``(n, ...)``, computed in batches and validated."""
        data = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
        if data.ndim < 2 or data.shape[0] == 0:
            raise SignalError(f"encoder inputs must have shape (n, ...) with n >= 1, got {tuple(data.shape)}")
        chunks = []
        for i in range(0, data.shape[0], self.batch_size):
            xb = data[i:i + self.batch_size]
            emb = self._call(xb)
            if emb.ndim != 2 or emb.shape[0] != xb.shape[0]:
                raise SignalError(f"the encoder returned shape {emb.shape} for {xb.shape[0]} inputs; it must "
                                  "return (n, d) embeddings (flatten feature maps first)")
            if self.embed_dim_ is None:
                self.embed_dim_ = emb.shape[1]
            elif emb.shape[1] != self.embed_dim_:
                raise SignalError(f"the encoder's embedding size changed from {self.embed_dim_} to {emb.shape[1]}; "
                                  "it must return embeddings of one fixed size")
            if not np.isfinite(emb).all():
                bad = int((~np.isfinite(emb)).any(axis=1).sum())
                raise SignalError(f"the encoder returned NaN or inf embeddings for {bad} of {xb.shape[0]} inputs "
                                  f"(batch starting at {i}); fix the model or its input scaling")
            chunks.append(emb)
        return np.concatenate(chunks)
