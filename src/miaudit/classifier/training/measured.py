"""Training one model and recording its cost: in this process, measured in it, or in a fresh one.

A process's peak resident set size never goes down, and memory freed by an earlier model is
reused by the next, so the peak of one training run is measured as ``VmHWM`` after training minus
``VmRSS`` before it, with ``VmHWM`` reset just before (Linux ``/proc/self/clear_refs``). In a
fresh process (:func:`train_isolated`, one interpreter start) nothing trained earlier shares the
address space. On CUDA the allocator's own peak is used in process.

Both return the trained module and a record of what training cost: ``seconds``, ``history`` (one
dict per epoch), ``reports`` (per training plugin, e.g. a DP accountant's epsilon),
``peak_memory_mb`` and ``memory_source`` (how the peak was measured).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch import nn

from miaudit.classifier.training.loop import (
    TrainConfig,
    TrainingPlugin,
    TrainResult,
    build_model_from_config,
    train_classifier,
)
from miaudit.data.datasets import ArrayDataset
from miaudit.utils.processes import exit_when_parent_dies


def _proc_status_mb(key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` in MiB (``None`` without ``/proc``)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (``VmHWM``) to its current RSS (Linux ``clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def training_record(result: TrainResult) -> dict[str, Any]:
    """What training cost, as the module docstring lists (the model itself left out)."""
    return {"seconds": result.seconds, "history": result.history, "reports": result.reports,
            "peak_memory_mb": result.peak_memory_mb, "memory_source": result.memory_source}


def train_model(plugins: Sequence[TrainingPlugin], recipe: TrainConfig, data: ArrayDataset, *,
                progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Build and train ``recipe``'s model on ``data`` with ``plugins`` in this process (no memory measurement)."""
    assert data.n_classes is not None  # ArrayDataset.__post_init__ infers it from the labels
    model = build_model_from_config(recipe, data.input_shape, data.n_classes)
    result = train_classifier(model, data, recipe, plugins=plugins, progress=progress)
    return result.model, training_record(result)


def train_measured(plugins: Sequence[TrainingPlugin], recipe: TrainConfig, data: ArrayDataset, threads: int | None,
                   *, progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Build and train ``recipe``'s model on ``data`` with ``plugins``; measure its own peak memory.

    ``threads``: torch CPU threads to use (``None``: leave as is).
    """
    if threads:
        torch.set_num_threads(threads)
    assert data.n_classes is not None  # ArrayDataset.__post_init__ infers it from the labels
    model = build_model_from_config(recipe, data.input_shape, data.n_classes)
    reset = _reset_peak_rss()
    before = _proc_status_mb("VmRSS")
    result = train_classifier(model, data, recipe, plugins=plugins, progress=progress)
    record = training_record(result)
    peak = _proc_status_mb("VmHWM")
    if reset and before is not None and peak is not None and not result.memory_source.startswith("cuda"):
        record["peak_memory_mb"] = peak - before
        record["memory_source"] = "peak RSS of the training process during training minus its RSS before (VmHWM)"
    return result.model, record


def train_isolated(plugins: Sequence[TrainingPlugin], recipe: TrainConfig, data: ArrayDataset, *,
                   progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`train_measured` in a fresh (spawned) process with this process's torch thread count; the process
    exits when this one dies. ``progress`` is decided here (a spawned process does not inherit ``-q``)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=exit_when_parent_dies,
                             initargs=(os.getpid(),)) as pool:
        return pool.submit(train_measured, plugins, recipe, data, torch.get_num_threads(), progress=progress).result()


__all__ = ["train_isolated", "train_measured", "train_model", "training_record"]
