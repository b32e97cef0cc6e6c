"""Executors that train reference models: sequential, vectorised, parallel processes, Ray.

Every executor receives the same :class:`ModelTask`\\ s (model index, recipe with the model's own
seed, training rows) and yields a :class:`ModelResult` per model as soon as it is done, so the pool
can cache it at once (a crash loses at most the models in flight). ``sequential``, ``process`` and
``ray`` run the very same :func:`train_task`, hence give identical weights from the same seeds on
CPU; ``vectorised`` trains groups of models at once (see :mod:`miaudit.classifier.reference.vectorised`).

Numerics (part of every cached model's key): ``"exact"`` for the executors that run
:func:`train_task`; ``"vectorised"`` / ``"vectorised-per-model"`` for the vectorised executor's two
batchings, which differ from sequential training (and from each other) in summation order.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

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
from miaudit.utils.device import resolve_device
from miaudit.utils.processes import exit_when_parent_dies
from miaudit.utils.ray_session import init_ray

if TYPE_CHECKING:
    from miaudit.classifier.families import ModelFamily, TorchFamily

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
    """A fresh model of ``recipe``'s seed: the zoo model, or the user's class of a vectorisable family."""
    if context.family is not None:
        return _user_class(context.family).factory.build(recipe.seed)
    n_classes = context.dataset.n_classes
    assert n_classes is not None  # ArrayDataset infers it when not given
    return build_model_from_config(recipe, context.dataset.input_shape, n_classes)


def _user_class(family: ModelFamily) -> TorchFamily:
    """``family`` as the torch family of a user's class trained by miaudit's loop (what :func:`vectorisable` allows)."""
    from miaudit.classifier.families import TorchFamily

    assert isinstance(family, TorchFamily) and family.function is None
    return family


def vectorisable(family: ModelFamily | None) -> bool:
    """Whether the vectorised executor trains this family's models: the zoo (``None``) and torch classes trained by
    miaudit's loop; not estimator clones nor models trained by the user's training function."""
    from miaudit.classifier.families import TorchFamily

    return family is None or (isinstance(family, TorchFamily) and family.function is None)


def group_batching(context: PoolContext, batching: str) -> str:
    """``batching`` for a group: "per-model" for the user's own class when "auto" (it runs as written, without
    ``vmap``, whose restrictions an arbitrary module may not meet)."""
    return "per-model" if batching == "auto" and context.family is not None else batching


def numerics(executor: str, context: PoolContext, recipe: TrainConfig, batching: str = "auto") -> str:
    """How ``executor`` computes: "exact" (bit-identical to sequential) or the vectorised batching it uses."""
    if executor != "vectorised" or not vectorisable(context.family):  # other families: refused by run_vectorised
        return "exact"
    from miaudit.classifier.reference.vectorised import BATCHINGS, choose_batching

    if batching not in BATCHINGS:
        raise ConfigError(f"unknown vectorised batching {batching!r}; choose one of {', '.join(BATCHINGS)}")
    batching = group_batching(context, batching)
    if batching == "auto":
        batching = choose_batching(build(context, recipe), resolve_device(recipe.device, where="training.device"))
    return "vectorised" if batching == "stacked" else f"vectorised-{batching}"


def score(model: torch.nn.Module, queries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Logits of ``model`` on every named query."""
    return {name: predict_logits(model, x) for name, x in queries.items()}


def rescore(numerics: str, model: torch.nn.Module, queries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Logits of a model loaded from cached weights, computed as the executor that trained it scored it."""
    if numerics != "vectorised-per-model":
        return score(model, queries)
    from miaudit.classifier.reference.vectorised import score_per_model

    device = next(model.parameters()).device
    return {name: score_per_model([model], torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device))[0]
            .cpu().numpy() for name, x in queries.items()}


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


def _in_processes(context: PoolContext, n_workers: int, work: Callable[..., Any], jobs: Sequence[tuple]
                  ) -> Iterator[Any]:
    """``work(*job)`` for every job in ``n_workers`` spawned processes (one torch thread each, holding
    ``context``), yielded as they finish. An error, Ctrl-C, SIGTERM or a consumer that stops early ends
    the pool at once: queued jobs are dropped, running workers killed."""
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(context, 1, os.getpid()))
    try:
        futures = [pool.submit(work, *job) for job in jobs]
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


def run_process(context: PoolContext, tasks: Sequence[ModelTask], *, n_workers: int | None = None
                ) -> Iterator[ModelResult]:
    """Train in ``n_workers`` spawned processes (one torch thread each); results arrive as they finish."""
    yield from _in_processes(context, n_workers or os.cpu_count() or 1, _worker_task, [(task,) for task in tasks])


# -- vectorised ---------------------------------------------------------------------------------
GroupSize = int | str  # a number of models, or "auto"


def _train_group(context: PoolContext, group: Sequence[ModelTask], batching: str, progress: bool
                 ) -> list[ModelResult]:
    """Train and score ``group`` at once. The user's own class (a vectorisable family) is built by its factory with
    the family's recipe, as :func:`~miaudit.classifier.families.train_family_task` does, and, like it, keeps no
    weights in the result."""
    from miaudit.classifier.reference.vectorised import train_vectorised

    family = None if context.family is None else _user_class(context.family)
    recipes = [t.recipe if family is None else dataclasses.replace(family.factory.recipe, seed=t.recipe.seed)
               for t in group]
    result = train_vectorised(context.dataset, [t.train_index for t in group], recipes, queries=context.queries,
                              batching=group_batching(context, batching), progress=progress,
                              build=None if family is None else lambda recipe: build(context, recipe))
    return [ModelResult(task.index, {k: v.numpy() for k, v in state.items()} if family is None else {}, logits,
                        result.seconds / len(group), history)
            for task, state, logits, history in zip(group, result.states, result.logits, result.histories)]


def _worker_group(group: list[ModelTask], batching: str) -> list[ModelResult]:
    assert _WORKER_CONTEXT is not None
    return _train_group(_WORKER_CONTEXT, group, batching, False)


def vectorised_groups(context: PoolContext, tasks: Sequence[ModelTask], group_size: GroupSize, batching: str,
                      n_workers: int) -> list[list[ModelTask]]:
    """Tasks split into groups of equal training-set size; ``"auto"``: as many models as the device's free
    memory holds (shared by ``n_workers`` processes), and at most an equal share per worker."""
    from miaudit.classifier.reference.vectorised import auto_group_size, choose_batching

    if group_size != "auto" and (not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1):
        raise ConfigError(f"vectorised group_size must be an integer >= 1 or 'auto', got {group_size!r}")
    by_size: dict[int, list[ModelTask]] = {}
    for task in tasks:
        by_size.setdefault(len(task.train_index), []).append(task)
    groups = []
    for same_size in by_size.values():
        size = group_size
        if size == "auto":
            recipe = same_size[0].recipe
            template, device = build(context, recipe), resolve_device(recipe.device, where="training.device")
            chosen = group_batching(context, batching)
            chosen = choose_batching(template, device) if chosen == "auto" else chosen
            share = -(-len(same_size) // n_workers)  # ceil: every worker gets a group
            size = auto_group_size(template, context.dataset.input_shape, recipe, share, chosen,  # type: ignore[arg-type]
                                   device, n_workers=n_workers)
        assert isinstance(size, int)
        groups += [same_size[i:i + size] for i in range(0, len(same_size), size)]
    return groups


def run_vectorised(context: PoolContext, tasks: Sequence[ModelTask], *, group_size: GroupSize = "auto",
                   batching: str = "auto", n_workers: int | None = None, progress: bool = False
                   ) -> Iterator[ModelResult]:
    """Train tasks in groups (:func:`vectorised_groups`); with ``n_workers`` > 1 (CPU only) the groups are
    trained in that many spawned processes of one torch thread each, results arriving as groups finish."""
    if context.plugins:
        raise ConfigError("the vectorised executor does not run training plugins (defenses); use executor "
                          "'sequential', 'process' or 'ray'")
    if not vectorisable(context.family):
        assert context.family is not None
        raise ConfigError(f"the vectorised executor trains zoo models and your torch class trained by miaudit's "
                          f"loop, not {context.family.describe()}; use executor 'sequential', 'process' or 'ray'")
    workers = n_workers or 1
    if workers < 1:
        raise ConfigError(f"n_workers must be >= 1, got {n_workers}")
    if workers > 1 and tasks and resolve_device(tasks[0].recipe.device, where="training.device").type != "cpu":
        raise ConfigError("the vectorised executor runs in one process on a GPU (one group at a time fills it); "
                          "remove n_workers")
    groups = vectorised_groups(context, tasks, group_size, batching, workers)
    if workers == 1 or len(groups) == 1:
        for group in groups:
            yield from _train_group(context, group, batching, progress)
        return
    for results in _in_processes(context, workers, _worker_group, [(group, batching) for group in groups]):
        yield from results


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
        local = {} if address else {"num_cpus": n_workers or os.cpu_count() or 1, "include_dashboard": False}
        init_ray(address=address, where="reference.ray_address", log_to_driver=False, **local)
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
        ray_address: str | None = None, group_size: GroupSize = "auto", batching: str = "auto",
        progress: bool = False) -> Iterator[ModelResult]:
    """Dispatch to the named executor."""
    if executor == "sequential":
        return run_sequential(context, tasks)
    if executor == "vectorised":
        return run_vectorised(context, tasks, group_size=group_size, batching=batching, n_workers=n_workers,
                              progress=progress)
    if executor == "process":
        return run_process(context, tasks, n_workers=n_workers)
    if executor == "ray":
        return run_ray(context, tasks, n_workers=n_workers, address=ray_address)
    raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "ModelResult", "ModelTask", "PoolContext", "numerics", "rescore", "run", "train_task"]
