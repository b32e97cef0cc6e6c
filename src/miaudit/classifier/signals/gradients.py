"""White-box signals: per-example gradient norms of the loss, layer by layer.

For example ``(x_i, y_i)`` and the cross-entropy loss ``l_i = -log softmax(f(x_i))_{y_i}``, the
gradient ``g_i = d l_i / d theta`` is computed for every parameter tensor with ``torch.func``
(``vmap`` over ``grad`` of a ``functional_call``, one backward pass per batch, no Python loop over
examples). Models with data-dependent control flow that ``vmap`` cannot trace (Hugging Face
transformers inspect the attention mask's values) fall back to the same ``grad`` one example at a
time: identical values, one parameter-sized gradient in memory, slower. Parameters are grouped by
the module that owns them (``net.1.weight`` and ``net.1.bias`` -> layer ``net.1``); the layer norm
is ``sqrt(sum of squared entries)`` over the layer's parameters and the total norm
``sqrt(sum of squared layer norms)`` = ``||g_i||_2``.

Training drives members' losses, hence their gradients, towards zero, so small gradient norms
indicate members (Nasr, Shokri & Houmansadr, IEEE S&P 2019, use per-layer gradients as features of
their white-box attack). Only models whose parameters are at hand qualify: torch modules or
``TorchClassifierTarget``; anything else (label-only or probability-only targets) is an error.
The model runs in eval mode (BatchNorm uses its running statistics, dropout is off).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from miaudit.errors import ConfigError, DataError, SignalError
from miaudit.utils.logs import progress as progress_bar

log = logging.getLogger(__name__)
#: model classes already reported as needing the per-example loop
_LOOPED: set[str] = set()


@dataclass
class GradientSignals:
    """One model's white-box signals on ``n`` examples.

    ``labels`` ``(n,)``; ``layer_norms`` ``(n, L)`` per-layer gradient norms, columns named by
    ``layer_names``; ``loss`` ``(n,)`` cross-entropy; ``correctness`` ``(n,)`` 1.0 where the argmax
    is right; ``seconds`` wall-clock time.
    """

    labels: np.ndarray
    layer_norms: np.ndarray
    layer_names: tuple[str, ...]
    loss: np.ndarray
    correctness: np.ndarray
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = self.labels.size
        if self.labels.ndim != 1 or n == 0:
            raise SignalError(f"labels must be a non-empty 1-D array, got shape {self.labels.shape}")
        self.layer_norms = np.asarray(self.layer_norms, dtype=np.float64)
        self.layer_names = tuple(self.layer_names)
        if self.layer_norms.shape != (n, len(self.layer_names)) or not self.layer_names:
            raise SignalError(f"layer_norms have shape {self.layer_norms.shape}, expected "
                              f"({n}, {len(self.layer_names)}) for the named layers (at least one)")
        self.loss = np.asarray(self.loss, dtype=np.float64)
        self.correctness = np.asarray(self.correctness, dtype=np.float64)
        for name in ("loss", "correctness"):
            if getattr(self, name).shape != (n,):
                raise SignalError(f"{name} has shape {getattr(self, name).shape}, expected ({n},)")
        for name in ("layer_norms", "loss"):
            value = getattr(self, name)
            if not np.isfinite(value).all():
                raise SignalError(f"gradient signal {name} contains NaN or inf; check the model and inputs")
        if (self.layer_norms < 0).any():
            raise SignalError("gradient norms must be >= 0")

    def __len__(self) -> int:
        return self.labels.size

    @property
    def total_norm(self) -> np.ndarray:
        """``(n,)`` L2 norm of the whole per-example gradient."""
        return np.sqrt((self.layer_norms ** 2).sum(axis=1))

    def cost(self) -> dict[str, float]:
        """Compute cost: examples, seconds, seconds per example."""
        return {"n_examples": len(self), "seconds": round(self.seconds, 3),
                "seconds_per_example": self.seconds / len(self)}

    def layer_index(self, layer: str | int) -> int:
        """Column of ``layer`` (a name in ``layer_names`` or an index, negative from the end)."""
        if isinstance(layer, str):
            if layer not in self.layer_names:
                raise ConfigError(f"layer {layer!r} is not one of {', '.join(self.layer_names)}")
            return self.layer_names.index(layer)
        if not -len(self.layer_names) <= layer < len(self.layer_names):
            raise ConfigError(f"layer index {layer} is out of range for {len(self.layer_names)} layers")
        return layer % len(self.layer_names)


def torch_module(model: Any) -> nn.Module:
    """The ``nn.Module`` behind ``model`` (a module or a target wrapping one); SignalError otherwise."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    access = getattr(model, "access", None)
    what = f"a target with {access} access" if access else f"a {type(model).__name__}"
    raise SignalError(f"gradients need white-box access to a torch model's parameters, but got {what}; pass the "
                      "torch module (or TorchClassifierTarget), or use a label-only / black-box attack")


def layer_groups(module: nn.Module) -> tuple[list[str], list[str]]:
    """``(parameter names, layer name of each)`` for parameters that require gradients, in module order."""
    names = [name for name, p in module.named_parameters() if p.requires_grad]
    if not names:
        raise SignalError("the model has no trainable parameters; white-box gradient signals need some")
    return names, [name.rsplit(".", 1)[0] if "." in name else name for name in names]


def gradient_signals(model: Any, x: np.ndarray, y: np.ndarray, *, batch_size: int = 128,
                     progress: bool = False) -> GradientSignals:
    """Per-example gradient norms by layer, loss and correctness of ``model`` on ``x`` ``(n, ...)``, ``y`` ``(n,)``."""
    module = torch_module(model)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim < 2 or y.shape != (len(x),) or len(x) == 0:
        raise DataError(f"inputs of shape {x.shape} and labels of shape {y.shape}: give x (n, ...) and y (n,), n >= 1")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    names, layers = layer_groups(module)
    layer_names = list(dict.fromkeys(layers))
    column = torch.tensor([layer_names.index(name) for name in layers])
    device = next(module.parameters()).device
    params = {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in module.named_parameters() if not p.requires_grad}
    buffers = {name: b.detach() for name, b in module.named_buffers()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor):
        logits = functional_call(module, ({**p, **frozen}, buffers), (xi.unsqueeze(0),))  # (1, K)
        loss = F.cross_entropy(logits, yi.unsqueeze(0))
        return loss, (loss, logits.squeeze(0).argmax() == yi)

    one_grad = grad(loss_one, has_aux=True)
    vectorised = vmap(one_grad, in_dims=(None, 0, 0))

    def looped(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor):
        results = [one_grad(p, xi, yi) for xi, yi in zip(xb, yb)]
        grads = {name: torch.stack([g[name] for g, _ in results]) for name in p}
        return grads, (torch.stack([aux[0] for _, aux in results]), torch.stack([aux[1] for _, aux in results]))

    per_example: Callable[..., Any] = vectorised
    norms, losses, correct = [], [], []
    start = time.perf_counter()
    was_training = module.training
    module.eval()
    try:
        for lo in progress_bar(range(0, len(x), batch_size), desc="per-example gradients", enabled=progress,
                               unit="batch"):
            xb = torch.from_numpy(x[lo:lo + batch_size]).to(device)
            yb = torch.from_numpy(y[lo:lo + batch_size]).to(device)
            try:
                grads, (loss, right) = per_example(params, xb, yb)
            except RuntimeError as exc:
                if per_example is looped or "vmap" not in str(exc):
                    raise
                if type(module).__name__ not in _LOOPED:  # once per model class, not for every shadow model
                    _LOOPED.add(type(module).__name__)
                    log.info("%s branches on its inputs' values, which vmap cannot trace; computing per-example "
                             "gradients one example at a time (slower, same values)", type(module).__name__)
                per_example = looped
                grads, (loss, right) = per_example(params, xb, yb)
            squares = torch.stack([grads[name].flatten(1).pow(2).sum(1) for name in names], dim=1)  # (B, P)
            by_layer = torch.zeros(len(xb), len(layer_names), dtype=squares.dtype, device=device)
            by_layer.index_add_(1, column.to(device), squares)
            norms.append(by_layer.sqrt().double().cpu().numpy())
            losses.append(loss.double().cpu().numpy())
            correct.append(right.cpu().numpy())
    finally:
        module.train(was_training)
    return GradientSignals(y, np.concatenate(norms), tuple(layer_names), np.concatenate(losses),
                           np.concatenate(correct).astype(np.float64), time.perf_counter() - start)


__all__ = ["GradientSignals", "gradient_signals", "layer_groups", "torch_module"]
