"""A readable training loop for classifiers, with plugins for training-time defenses.

Determinism: on CPU the same :class:`TrainConfig` (same ``seed``) gives the same weights. The
batch order comes from a ``torch.Generator`` seeded with ``config.seed``, and everything else that
draws from torch's global RNG inside the loop (dropout, plugins such as mixup or DP noise) runs
under a forked RNG seeded the same way, so the caller's global RNG state is left untouched.

Speed: the batch order is drawn by the same ``DataLoader`` machinery as always
(:func:`shuffled_batches`), but only as index tensors; the examples are gathered from tensors held
on the training device (one indexing operation per batch instead of one ``__getitem__`` per
example). The zoo's models are updated by :class:`~miaudit.classifier.training.flat.FlatOptimizer` (torch's
fused Adam over one flat buffer: one kernel per step, and per entry the update a vectorised reference group
computes); users' own models, and models or optimisers a plugin wrapped (DP-SGD), by ``torch.optim``'s
``foreach`` optimiser (:func:`make_optimizer`). A plugin that replaces the ``DataLoader`` (DP-SGD's Poisson
sampling, distillation's transfer set) is iterated as given.
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from miaudit.classifier.training.flat import FlatOptimizer
from miaudit.classifier.training.models import ZOO_MODELS, build_model
from miaudit.data.datasets import ArrayDataset
from miaudit.errors import ConfigError, DataError
from miaudit.utils.device import resolve_device
from miaudit.utils.logs import progress as progress_bar

PRECISIONS = ("float32", "bfloat16")


@dataclass
class TrainConfig:
    """A training recipe; ``model_options`` go to the model (``channels`` for cnn, ``width``/``norm`` for resnet18).

    ``hidden`` are the fully connected widths of the mlp and of the cnn's head (resnet18 ignores it).
    ``device``: "cpu", "cuda[:N]", "mps" or "auto" (a GPU when there is one; checked by
    :func:`miaudit.utils.device.resolve_device` when training starts). ``precision``: "float32", or
    "bfloat16" for mixed precision (forward pass and loss under ``torch.autocast`` in bfloat16;
    weights, gradients, optimiser state and every scoring pass stay float32). Reference pools
    follow the recipe, so the target and its reference models are trained with the same numerics.
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
    precision: Literal["float32", "bfloat16"] = "float32"

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
            (_is_device_name(self.device), "device", "use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"),
            (self.precision in PRECISIONS, "precision", "choose 'float32' or 'bfloat16'"),
        ]
        for ok, key, fix in checks:
            if not ok:
                raise ConfigError(f"training.{key}={getattr(self, key)!r} is invalid; {fix}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)


def _is_device_name(value: Any) -> bool:
    """A device :func:`miaudit.utils.device.resolve_device` understands: cpu, cuda, cuda:N, mps or auto."""
    if not isinstance(value, str):
        return False
    kind, colon, index = value.partition(":")
    if kind in ("cpu", "mps", "auto"):
        return not colon
    return kind == "cuda" and (not colon or index.isdigit())


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The mixed-precision context of a training step: bfloat16 autocast, or disabled for float32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


class _Positions(Dataset):
    """Row numbers ``0..n-1``, fetched a whole batch at a time (``__getitems__``) as one index tensor."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor(indices, dtype=torch.int64)


def _keep(batch: Any) -> Any:
    return batch  # the batch of indices ``_Positions.__getitems__`` made: no collation


def _loader_order(n: int, batch_size: int, seed: int, epochs: int) -> list[list[torch.Tensor]]:
    """The batches of ``DataLoader(range(n), batch_size, shuffle=True, generator seeded with seed)``, iterated."""
    loader = DataLoader(_Positions(n), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), collate_fn=_keep)
    return [list(loader) for _ in range(epochs)]


def _drawn_order(n: int, batch_size: int, seed: int, epochs: int) -> list[list[torch.Tensor]]:
    """The same batches from the generator draws the ``DataLoader`` makes per epoch, without its machinery
    (about 10x cheaper): the iterator's base seed, the sampler's permutation, and the sampler's trailing
    (empty) permutation drawn when it is exhausted."""
    generator = torch.Generator().manual_seed(seed)
    order = []
    for _ in range(epochs):
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        permutation = torch.randperm(n, generator=generator)
        torch.randperm(n, generator=generator)
        order.append(list(permutation.split(batch_size)))
    return order


@functools.cache
def _draws_match_the_loader() -> bool:
    """Whether :func:`_drawn_order` reproduces this torch version's ``DataLoader`` (checked once per process)."""
    cases = [(10, 3, 0, 3), (8, 4, 1, 2), (5, 8, 2, 2)]
    return all(len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
               for case in cases for a, b in zip(_drawn_order(*case), _loader_order(*case)))


def shuffled_batches(n: int, batch_size: int, seed: int, epochs: int) -> list[list[torch.Tensor]]:
    """Per epoch, the index batches (int64 tensors) of a shuffled ``DataLoader`` seeded with ``seed``.

    Exactly the order :func:`train_classifier` has always used: ``DataLoader(data,
    batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))`` iterated ``epochs``
    times; only the indices are materialised, not the examples. They are drawn directly from the
    generator when that is checked to give the ``DataLoader``'s order, else by iterating one.
    """
    order = _drawn_order if _draws_match_the_loader() else _loader_order
    return order(n, batch_size, seed, epochs)


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


def make_optimizer(params: Iterable[torch.Tensor], config: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params``, in its ``foreach`` form (the same updates as the per-tensor loop)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           foreach=True)


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
        given = DataLoader(tensors, batch_size=config.batch_size, shuffle=True, generator=shuffle)
        trained, opt, loader = _set_up(model, config, plugins, given)
        if loader is given:  # nobody replaced the sampling: gather batches from tensors on the device
            epochs = _gathered_batches(tensors.tensors, config, device)
            steps = len(given)
        else:
            epochs, steps = _loader_batches(loader, config.epochs, device), len(loader)
        n_classes = dataset.n_classes
        assert n_classes is not None  # ArrayDataset infers it when not given
        history = _run_epochs(trained, opt, epochs, steps, n_classes, config, plugins, progress, device)
        for plugin in plugins:
            trained = plugin.finalize(trained)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak, source = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:
        peak, source = _peak_rss_mb(), "process peak RSS (resource.getrusage)"
    reports = {plugin.name or type(plugin).__name__: plugin.report() for plugin in plugins}
    return TrainResult(trained.eval(), history, seconds, peak, source, reports)


def _set_up(model: nn.Module, config: TrainConfig, plugins: Sequence[TrainingPlugin], loader: DataLoader
            ) -> tuple[nn.Module, torch.optim.Optimizer | FlatOptimizer, DataLoader]:
    """The model, optimiser and loader to train with, after the plugins' ``setup`` (which gets ``torch.optim``'s
    per-parameter optimiser). The zoo's models get :class:`FlatOptimizer` (the same update as in a vectorised
    reference group) unless a plugin wrapped the model or the optimiser (DP-SGD does)."""
    zoo = isinstance(model, ZOO_MODELS)
    if not plugins:
        return model, (FlatOptimizer if zoo else make_optimizer)(model.parameters(), config), loader
    per_parameter = make_optimizer(model.parameters(), config)
    trained, wrapped = model, per_parameter
    for plugin in plugins:
        trained, wrapped, loader = plugin.setup(trained, wrapped, loader)
    if zoo and trained is model and wrapped is per_parameter:
        return model, FlatOptimizer(model.parameters(), config), loader
    return trained, wrapped, loader


Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> (x (B, ...), y (B,)) on device


def gather_rows(data: torch.Tensor, index: torch.Tensor, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """``data[index]`` ``(*index.shape, *data.shape[1:])`` with row-major strides, as ``torch.stack`` gives.

    Plain indexing may give a size-1 channel dimension the strides of channels-last memory format,
    and convolution kernels choose their algorithm (and so their rounding) from the strides.
    ``buffer``: a contiguous tensor of at least ``index.numel()`` rows to write into (and return a view
    of) instead of a fresh allocation.
    """
    rows = index.numel()
    out = data.new_empty((rows, *data.shape[1:])) if buffer is None else buffer[:rows]
    return torch.index_select(data, 0, index.flatten(), out=out).view(*index.shape, *data.shape[1:])


def _gathered_batches(tensors: tuple[torch.Tensor, ...], config: TrainConfig, device: torch.device) -> Batches:
    """The loop's own shuffled batches, gathered from ``x``, ``y`` moved to ``device`` once."""
    x_all, y_all = (t.to(device) for t in tensors)
    orders = shuffled_batches(len(y_all), config.batch_size, config.seed, config.epochs)

    def epoch(e: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for index in orders[e]:
            index = index.to(device)
            yield gather_rows(x_all, index), y_all[index]

    return epoch


def _loader_batches(loader: Iterable, epochs: int, device: torch.device) -> Batches:
    """Batches of a loader a plugin supplied, moved to ``device``; the loader is iterated once per epoch."""
    def epoch(e: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:
            yield x.to(device), y.to(device)

    return epoch


def _run_epochs(model: nn.Module, optimizer: torch.optim.Optimizer | FlatOptimizer, batches: Batches, steps: int,
                n_classes: int, config: TrainConfig, plugins: Sequence[TrainingPlugin], progress: bool,
                device: torch.device) -> list[dict[str, Any]]:
    history = []
    bar = progress_bar(total=config.epochs * steps, desc=f"train {config.model}", enabled=progress,
                       leave=False, unit="batch")
    for epoch in range(config.epochs):
        model.train()
        epoch_start, total_loss, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y in batches(epoch):
            bar.update()
            if y.numel() == 0:  # Poisson sampling (DP-SGD) can draw an empty batch
                continue
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, config.precision):
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


def scoring_batch_size(device: torch.device) -> int:
    """Examples per forward pass when scoring: 128 on CPU, 512 on an accelerator.

    Measured on 2 CPU cores (torch 2.13, the zoo's models, the same logits bit for bit): chunks of 128
    instead of 512 scored a group-norm ResNet-18 (width 16) 1.7x faster with two threads and 1.1x with
    one, the small CNN (8 and 16 channels) 1.15-1.3x; the MLP the same. A chunk's activations then stay
    in the caches. An accelerator keeps the earlier 512 (larger launches; not measured here).
    """
    return 128 if device.type == "cpu" else 512


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    """Logits ``(n, K)`` float32 of ``model`` on inputs ``x`` ``(n, ...)``, in eval mode, in batches of
    ``batch_size`` (default :func:`scoring_batch_size` for the model's device)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    batch_size = scoring_batch_size(device) if batch_size is None else batch_size
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
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


def accuracy(model: nn.Module, dataset: ArrayDataset, batch_size: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    return float((predict_logits(model, dataset.x, batch_size).argmax(1) == dataset.y).mean())
