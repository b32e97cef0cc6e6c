"""Executors that train reference models: sequential, vectorised, parallel processes, Ray.

Every executor receives the same :class:`ModelTask`\\ s (model index, recipe with the model's own
seed, training rows) and yields a :class:`ModelResult` per model as soon as it is done, so the pool
can cache it at once (a crash loses at most the models in flight). ``sequential``, ``process`` and
``ray`` run the very same :func:`train_task`, hence give identical weights from the same seeds on
CPU; ``vectorised`` trains groups of models at once (see :mod:`miaudit.classifier.reference.vectorised`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import TYPE_CHECKING

import numpy as np
import torch

from miaudit.classifier.training import (
    TrainConfig,
    TrainingPlugin,
    build_model_from_config,
    predict_logits,
    train_classifier,
)
from miaudit.data import ArrayDataset
from miaudit.errors import ConfigError
from miaudit.utils.processes import exit_when_parent_dies

if TYPE_CHECKING:
    from miaudit.classifier.families import ModelFamily

EXECUTORS = ("sequential", "vectorised", "process", "ray")


@dataclass
class PoolContext:
    """What every model needs: training rows come from ``dataset``; ``queries`` name the inputs to score."""

    dataset: ArrayDataset
    queries: dict[str, np.ndarray]
    plugins: tuple[TrainingPlugin, ...] = ()
    family: ModelFamily | None = None  # the user's own model family instead of the zoo (miaudit.classifier.families)


@dataclass
class ModelTask:
    index: int
    recipe: TrainConfig
    train_index: np.ndarray  # (n_train,) rows of PoolContext.dataset


@dataclass
class ModelResult:
    index: int
    state: dict[str, np.ndarray]  # the model's state dict as arrays
    logits: dict[str, np.ndarray]  # query name -> (n_query, K)
    seconds: float
    history: list[dict] = field(default_factory=list)


def build(context: PoolContext, recipe: TrainConfig) -> torch.nn.Module:
    return build_model_from_config(recipe, context.dataset.input_shape, context.dataset.n_classes)


def score(model: torch.nn.Module, queries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Logits of ``model`` on every named query."""
    return {name: predict_logits(model, x) for name, x in queries.items()}


def to_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def train_task(context: PoolContext, task: ModelTask) -> ModelResult:
    """Train and score one reference model exactly as the target's recipe says (or as its model family does)."""
    if context.family is not None:
        from miaudit.classifier.families import train_family_task

        return train_family_task(context, task)
    start = time.perf_counter()
    model = build(context, task.recipe)
    result = train_classifier(model, context.dataset.subset(task.train_index), task.recipe,
                              plugins=copy.deepcopy(list(context.plugins)), progress=False)
    logits = score(result.model, context.queries)
    return ModelResult(task.index, to_arrays(result.model), logits, time.perf_counter() - start, result.history)


# -- sequential ---------------------------------------------------------------------------------
def run_sequential(context: PoolContext, tasks: Sequence[ModelTask]) -> Iterator[ModelResult]:
    for task in tasks:
        yield train_task(context, task)


# -- vectorised ---------------------------------------------------------------------------------
def run_vectorised(context: PoolContext, tasks: Sequence[ModelTask], *, group_size: int = 16,
                   progress: bool = False) -> Iterator[ModelResult]:
    """Train tasks in groups of ``group_size`` models with equal training-set sizes."""
    from miaudit.classifier.reference.vectorised import train_vectorised

    if context.plugins:
        raise ConfigError("the vectorised executor does not run training plugins (defenses); use executor "
                          "'sequential', 'process' or 'ray'")
    if context.family is not None:
        raise ConfigError(f"the vectorised executor trains zoo models only, not {context.family.name} models; use "
                          "executor 'sequential', 'process' or 'ray' (or training.family: zoo for zoo models)")
    if group_size < 1:
        raise ConfigError(f"vectorised group_size must be >= 1, got {group_size}")
    by_size: dict[int, list[ModelTask]] = {}
    for task in tasks:
        by_size.setdefault(len(task.train_index), []).append(task)
    for same_size in by_size.values():
        for i in range(0, len(same_size), group_size):
            group = same_size[i:i + group_size]
            states, seconds = train_vectorised(context.dataset, [t.train_index for t in group],
                                               [t.recipe for t in group], progress=progress)
            for task, state in zip(group, states):
                model = build(context, task.recipe)
                model.load_state_dict(state)
                yield ModelResult(task.index, to_arrays(model), score(model, context.queries), seconds / len(group))


# -- processes ----------------------------------------------------------------------------------
_WORKER_CONTEXT: PoolContext | None = None


def _init_worker(context: PoolContext, threads: int, parent_pid: int) -> None:
    global _WORKER_CONTEXT
    exit_when_parent_dies(parent_pid)  # a killed driver never leaves its workers behind
    torch.set_num_threads(threads)
    _WORKER_CONTEXT = context


def _worker_task(task: ModelTask) -> ModelResult:
    assert _WORKER_CONTEXT is not None
    return train_task(_WORKER_CONTEXT, task)


def run_process(context: PoolContext, tasks: Sequence[ModelTask], *, n_workers: int | None = None
                ) -> Iterator[ModelResult]:
    """Train in ``n_workers`` spawned processes (one torch thread each); results arrive as they finish."""
    n_workers = n_workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(context, 1, os.getpid()))
    try:
        futures = [pool.submit(_worker_task, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End a pool at once (an error, Ctrl-C, SIGTERM): queued models are dropped, running ones killed."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


# -- Ray ----------------------------------------------------------------------------------------
def _ray_task(context: PoolContext, task: ModelTask) -> ModelResult:
    torch.set_num_threads(1)
    return train_task(context, task)


def run_ray(context: PoolContext, tasks: Sequence[ModelTask], *, n_workers: int | None = None,
            address: str | None = None) -> Iterator[ModelResult]:
    """Train on Ray: a local instance with ``n_workers`` CPUs, or the cluster at ``address``.

    Workers must be able to import ``miaudit`` (install it on every node). Weights and outputs
    come back to the driver, which alone writes the cache.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs Ray: pip install 'miaudit[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=n_workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_ray_task)
        shared = ray.put(context)
        pending = [remote.remote(shared, task) for task in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def run(executor: str, context: PoolContext, tasks: Sequence[ModelTask], *, n_workers: int | None = None,
        ray_address: str | None = None, group_size: int = 16, progress: bool = False) -> Iterator[ModelResult]:
    """Dispatch to the named executor."""
    if executor == "sequential":
        return run_sequential(context, tasks)
    if executor == "vectorised":
        return run_vectorised(context, tasks, group_size=group_size, progress=progress)
    if executor == "process":
        return run_process(context, tasks, n_workers=n_workers)
    if executor == "ray":
        return run_ray(context, tasks, n_workers=n_workers, address=ray_address)
    raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "ModelResult", "ModelTask", "PoolContext", "run", "train_task"]
