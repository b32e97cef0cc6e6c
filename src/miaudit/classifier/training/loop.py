"""A readable training loop for classifiers, with plugins for training-time defenses.

Determinism: on CPU the same :class:`TrainConfig` (same ``seed``) gives the same weights. The
batch order comes from a ``torch.Generator`` seeded with ``config.seed``, and everything else that
draws from torch's global RNG inside the loop (dropout, plugins such as mixup or DP noise) runs
under a forked RNG seeded the same way, so the caller's global RNG state is left untouched.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from miaudit.classifier.training.models import build_model
from miaudit.data.datasets import ArrayDataset
from miaudit.errors import ConfigError, DataError
from miaudit.utils.device import resolve_device
from miaudit.utils.logs import progress as progress_bar


@dataclass
class TrainConfig:
    """A training recipe; ``model_options`` go to the model (``channels`` for cnn, ``width``/``norm`` for resnet18).

    ``hidden`` are the fully connected widths of the mlp and of the cnn's head (resnet18 ignores it).
    """

    model: Literal["mlp", "cnn", "resnet18"] = "mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            (self.model in ("mlp", "cnn", "resnet18"), "model", "choose 'mlp', 'cnn' or 'resnet18'"),
            (self.optimizer in ("adam", "sgd"), "optimizer", "choose 'adam' or 'sgd'"),
            (_is_int(self.epochs) and self.epochs >= 1, "epochs", "use an integer >= 1"),
            (_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "use an integer >= 1"),
            (_is_number(self.lr) and self.lr > 0, "lr", "use a number > 0"),
            (_is_number(self.momentum) and 0 <= self.momentum < 1, "momentum", "use a number in [0, 1)"),
            (_is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "use a number >= 0"),
            (_is_int(self.seed), "seed", "use an integer"),
            (all(_is_int(h) and h >= 1 for h in self.hidden), "hidden", "use a list of integers >= 1"),
            (self.device == "cpu" or self.device.startswith("cuda"), "device", "use 'cpu' or 'cuda[:N]'"),
        ]
        for ok, key, fix in checks:
            if not ok:
                raise ConfigError(f"training.{key}={getattr(self, key)!r} is invalid; {fix}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)


def build_model_from_config(config: TrainConfig, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """The zoo model ``config`` names, initialised from ``config.seed``."""
    options = dict(config.model_options)
    if config.model in ("mlp", "cnn"):
        options.setdefault("hidden", tuple(config.hidden))
    return build_model(config.model, input_shape, n_classes, seed=config.seed, **options)


class TrainingPlugin:
    """Hooks a training-time defense into :func:`train_classifier`; every default is identity / no-op.

    Call order: ``setup`` once before the first batch (plugins in the given order, each receiving
    the previous one's result), ``loss`` on every batch (chained: ``base_loss`` is the previous
    plugin's loss, the first sees the cross-entropy), ``on_epoch_end`` after every epoch (a returned
    dict is added to that epoch's history), ``finalize`` after training (return the plain trained
    module, e.g. unwrap an Opacus ``GradSampleModule``), ``report`` at the end (into
    ``TrainResult.reports[plugin.name]``).
    """

    name: str = ""

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              loader: DataLoader) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        return model, optimizer, loader

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
             base_loss: torch.Tensor) -> torch.Tensor:
        return base_loss

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, Any] | None:
        return None

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def report(self) -> dict[str, Any]:
        return {}


@dataclass
class TrainResult:
    """The trained model and what training cost.

    ``history``: one dict per epoch (``epoch``, ``loss``, ``accuracy`` on the training batches,
    ``seconds``, plus what plugins returned). ``peak_memory_mb``: on CPU the process's peak resident
    set size (``resource.getrusage`` ``ru_maxrss``, a high-water mark of the whole process, not only
    this call); on CUDA ``torch.cuda.max_memory_allocated`` during this call. ``memory_source``
    says which.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    seconds: float
    peak_memory_mb: float
    memory_source: str
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def train_classifier(model: nn.Module, dataset: ArrayDataset, config: TrainConfig, *,
                     plugins: Sequence[TrainingPlugin] = (), progress: bool = True) -> TrainResult:
    """Train ``model`` with cross-entropy on ``dataset`` (``x`` ``(n, ...)``, ``y`` ``(n,)``) as ``config`` says."""
    if len(dataset) == 0:
        raise DataError("cannot train on an empty dataset")
    device = resolve_device(config.device, where="training.device")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = model.to(device)
    tensors = TensorDataset(torch.from_numpy(dataset.x), torch.from_numpy(dataset.y))
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        shuffle = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(tensors, batch_size=config.batch_size, shuffle=True, generator=shuffle)
        optimizer = _make_optimizer(model, config)
        trained, opt, loader = model, optimizer, loader
        for plugin in plugins:
            trained, opt, loader = plugin.setup(trained, opt, loader)
        assert dataset.n_classes is not None  # ArrayDataset.__post_init__ infers it from the labels
        history = _run_epochs(trained, opt, loader, dataset.n_classes, config, plugins, progress, device)
        for plugin in plugins:
            trained = plugin.finalize(trained)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak, source = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:
        peak, source = _peak_rss_mb(), "process peak RSS (resource.getrusage)"
    reports = {plugin.name or type(plugin).__name__: plugin.report() for plugin in plugins}
    return TrainResult(trained.eval(), history, seconds, peak, source, reports)


def _run_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, n_classes: int,
                config: TrainConfig, plugins: Sequence[TrainingPlugin], progress: bool,
                device: torch.device) -> list[dict[str, Any]]:
    history = []
    bar = progress_bar(total=config.epochs * len(loader), desc=f"train {config.model}", enabled=progress,
                       leave=False, unit="batch")
    for epoch in range(config.epochs):
        model.train()
        epoch_start, total_loss, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y in loader:
            bar.update()
            if y.numel() == 0:  # Poisson sampling (DP-SGD) can draw an empty batch
                continue
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)  # (B, K)
            if logits.shape[-1] != n_classes:
                raise ConfigError(f"the model outputs {logits.shape[-1]} classes but the data has {n_classes}")
            loss = F.cross_entropy(logits, y)
            for plugin in plugins:
                loss = plugin.loss(model, x, y, logits, loss)
            if not torch.isfinite(loss):
                raise DataError(f"training loss became {loss.item()} in epoch {epoch + 1}; lower training.lr")
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1),
                                  "accuracy": correct / max(seen, 1), "seconds": time.perf_counter() - epoch_start}
        for plugin in plugins:
            record.update(plugin.on_epoch_end(epoch, model) or {})
        history.append(record)
        bar.set_postfix(epoch=epoch + 1, loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
    bar.close()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Logits ``(n, K)`` float32 of ``model`` on inputs ``x`` ``(n, ...)``, in eval mode, in batches."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    try:
        chunks = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not chunks:
        raise DataError("predict_logits got no inputs")
    return torch.cat(chunks).numpy()


def accuracy(model: nn.Module, dataset: ArrayDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    return float((predict_logits(model, dataset.x, batch_size).argmax(1) == dataset.y).mean())
