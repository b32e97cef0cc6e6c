"""Reference pools: ``m`` models trained with the target's recipe on paired halves, cached and resumable.

:func:`train_reference_pool` trains model ``j`` on the rows ``keep[j]`` of a dataset with the
target's :class:`~miaudit.classifier.training.TrainConfig` (its own seed derived from the pool seed and
``j``), scores it on the dataset (and on augmented query views and population data when given) and
returns a :class:`~miaudit.classifier.reference.trained.TrainedReferencePool` for the attacks.

Cache: with ``cache_dir`` every model is written as soon as it is trained (weights
``<key>.pt``, loaded with ``torch.load(weights_only=True)``; logits ``<key>.<queries>.npz``; a
readable ``<key>.json`` with the weights' SHA-256), each file atomically (temporary file, fsync,
rename). Logits carry a content hash (:mod:`miaudit.utils.cache`); a truncated, zero-byte or edited
file is reported (naming it) and the model is scored or trained again. ``key`` fingerprints the
recipe (device and precision included), the training plugins (with the data they train on, e.g. a
distillation transfer set: see ``TrainingDefense.fingerprint``), the dataset, the model's seed and
training rows, and the executor's numerics (exact, or which vectorised batching); so an interrupted
run resumes with the first missing model, a bigger pool reuses the models of a smaller one with the
same seed, and a changed recipe, defense or dataset never reuses anything. Group size and worker
count do not change a model's numbers (tested), so they are not in the key.

:func:`build_reference_pool_for_audit` is the entry point for an audit pipeline: it trains the pool
on the audited examples of a :class:`~miaudit.data.MembershipSplit`, checks the data, and runs the
fidelity check against the target.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miaudit.classifier.families import ModelFamily
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import executors
from miaudit.classifier.reference.executors import ModelResult, ModelTask, PoolContext
from miaudit.classifier.reference.fidelity import FidelityWarning, check_fidelity
from miaudit.classifier.reference.trained import TrainedReferencePool
from miaudit.classifier.reference.views import query_views
from miaudit.classifier.training import TrainConfig, TrainingPlugin
from miaudit.config import to_dict
from miaudit.data import ArrayDataset, MembershipSplit, paired_keep_matrix
from miaudit.errors import ConfigError, DataError
from miaudit.utils.atomic import atomic_write, sweep_stale_temporaries, write_text_atomic
from miaudit.utils.cache import file_sha256, load_verified_npz, save_verified_npz, warn_damaged
from miaudit.utils.device import resolve_device
from miaudit.utils.fingerprint import fingerprint
from miaudit.utils.logs import progress as progress_bar

#: 2: verified files (content hashes); reference-data defenses keyed by their data.
#: 3: recipes gained ``precision``; the vectorised executor's numerics changed (in-place optimiser, batched MLP
#: products, per-model batching of conv nets on CPU, channels-last scoring), so no older model is reused.
#: 4: the zoo's models are trained with fused Adam over a flat buffer (FlatOptimizer), sequential and vectorised
CACHE_VERSION = 4


def model_seed(seed: int, index: int) -> int:
    """Seed of reference model ``index`` in a pool seeded with ``seed`` (independent of the pool size)."""
    return int(fingerprint("reference-model", seed, index), 16) % (2**31)


def _plugin_fingerprint(plugins: Sequence[TrainingPlugin]) -> list[Any]:
    """Plugins identify themselves by ``fingerprint()`` if they have one, else by class and public attributes."""
    out = []
    for plugin in plugins:
        own = getattr(plugin, "fingerprint", None)
        if callable(own):
            out.append(own())
        else:
            public = {k: v for k, v in vars(plugin).items() if not k.startswith("_")}
            out.append([type(plugin).__module__, type(plugin).__qualname__, public])
    return out


class _Cache:
    """One folder of per-model files named by fingerprint; ``None`` folder means no caching.

    Logits are verified ``.npz`` files (:mod:`miaudit.utils.cache`); weights are checked against the
    SHA-256 recorded in ``<key>.json``. A damaged or edited file is reported and the model is
    scored or trained again.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            sweep_stale_temporaries(self.folder)

    def load_logits(self, key: str, query_key: str) -> dict[str, np.ndarray] | None:
        if self.folder is None:
            return None
        return load_verified_npz(self.folder / f"{key}.{query_key}.npz", key=f"{key}.{query_key}")

    def load_state(self, key: str) -> dict[str, torch.Tensor] | None:
        if self.folder is None or not (self.folder / f"{key}.pt").is_file():
            return None
        weights = self.folder / f"{key}.pt"
        try:
            expected = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8")).get("weights_sha256")
        except (OSError, ValueError, AttributeError):
            expected = None
        if expected is None or file_sha256(weights) != expected:
            warn_damaged(weights, "not verifiable or modified (its SHA-256 differs from the one in "
                                  f"{key}.json)", "training the model again")
            return None
        try:
            return torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
            warn_damaged(weights, f"unreadable ({type(exc).__name__})", "training the model again")
            return None

    def save_logits(self, key: str, query_key: str, logits: dict[str, np.ndarray]) -> None:
        if self.folder is not None:
            save_verified_npz(self.folder / f"{key}.{query_key}.npz", logits, key=f"{key}.{query_key}")

    def save(self, key: str, query_key: str, result: ModelResult, meta: dict[str, Any]) -> None:
        """Outputs, readable metadata and (zoo models: ``result.state`` not empty) the weights of one model."""
        if self.folder is None:
            return
        if result.state:
            state = {k: torch.from_numpy(v) for k, v in result.state.items()}
            weights = atomic_write(self.folder / f"{key}.pt", lambda handle: torch.save(state, handle))
            meta = {**meta, "weights_sha256": file_sha256(weights)}
        self.save_logits(key, query_key, result.logits)
        text = json.dumps({**meta, "seconds": result.seconds, "history": result.history}, indent=1, default=str)
        write_text_atomic(self.folder / f"{key}.json", text)


# -- training -----------------------------------------------------------------------------------
def _check_keep(keep: np.ndarray, n: int) -> np.ndarray:
    keep = np.asarray(keep)
    if keep.dtype != bool or keep.ndim != 2 or keep.shape[1] != n:
        raise DataError(f"keep must be a boolean (n_models, {n}) matrix, got {keep.dtype} {keep.shape}")
    empty = np.flatnonzero(~keep.any(axis=1))
    if empty.size:
        raise DataError(f"reference model {int(empty[0])} has no training examples in keep; use "
                        "paired_keep_matrix(n_models, n_examples, seed)")
    return keep


def train_reference_pool(
    dataset: ArrayDataset,
    keep: np.ndarray,
    recipe: TrainConfig,
    *,
    population: ArrayDataset | None = None,
    views: str = "none",
    plugins: Sequence[TrainingPlugin] = (),
    seed: int | None = None,
    executor: str = "sequential",
    n_workers: int | None = None,
    ray_address: str | None = None,
    group_size: int | str = "auto",
    cache_dir: str | Path | None = None,
    keep_models: Sequence[int] = (),
    progress: bool = True,
    family: ModelFamily | None = None,
    device: str | None = None,
    batching: str = "auto",
) -> TrainedReferencePool:
    """Train ``keep.shape[0]`` reference models on the rows ``keep[j]`` of ``dataset`` and score them.

    ``dataset``: ``n`` examples (for an audit: the audited members and non-members); ``keep``
    ``(m, n)`` bool, e.g. :func:`miaudit.data.paired_keep_matrix`; ``recipe``: the target's
    training recipe (model ``j`` uses ``model_seed(seed, j)`` instead of ``recipe.seed``; ``seed``
    defaults to ``recipe.seed``); ``plugins``: the target's training-time defenses (copied for
    each model). Scores every model on ``dataset`` (and its query ``views``, see
    :func:`miaudit.classifier.reference.views.query_views`) and on ``population`` (RMIA's ``z``).
    ``executor``: "sequential", "vectorised" (``group_size`` models at once, "auto": as many as
    free memory holds; ``batching`` "auto", "stacked" or "per-model", see
    :mod:`miaudit.classifier.reference.vectorised`), "process" (``n_workers`` processes) or "ray"
    (local with ``n_workers`` CPUs, or ``ray_address``). ``device`` ("cpu", "cuda", "cuda:N", "mps",
    "auto") replaces the recipe's device for the pool; the device ("auto" resolved) is part of every
    model's cache key. ``keep_models``: indices of models whose trained modules the pool keeps
    (``pool.models[j]``, e.g. targets that attacks query); a cached one is loaded from its weights, or
    trained again when they are missing or damaged. ``family``: train models of the user's own family
    instead of ``recipe``'s zoo model (:mod:`miaudit.classifier.families`: clones of an estimator give
    probabilities; the seeds are the same); their outputs are cached, not their weights. Plugins need
    zoo models.
    """
    if family is not None and plugins:
        raise ConfigError(f"training plugins (defenses) need zoo models; {family.name} models cannot run them")
    if executor not in executors.EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(executors.EXECUTORS)}")
    keep = _check_keep(keep, len(dataset))
    seed = recipe.seed if seed is None else seed
    if device is not None:
        recipe = dataclasses.replace(recipe, device=device)
    torch_device = resolve_device(recipe.device, where="training.device")
    if recipe.device == "auto":  # the cache key names the device that trains the models
        recipe = dataclasses.replace(recipe, device=str(torch_device))
    start = time.perf_counter()
    queries = {f"view{i}": x for i, x in enumerate(query_views(dataset.x, views))}
    if population is not None:
        if population.n_classes != dataset.n_classes:
            raise DataError(f"population has {population.n_classes} classes, the dataset {dataset.n_classes}")
        queries["population"] = population.x
    context = PoolContext(dataset, queries, tuple(plugins), family)
    numerics = executors.numerics(executor, context, recipe, batching)
    model_key = to_dict(dataclasses.replace(recipe, seed=0)) if family is None else family.fingerprint()
    base_key = fingerprint(CACHE_VERSION, model_key, _plugin_fingerprint(plugins), dataset.x, dataset.y, numerics)
    query_key = fingerprint(sorted(queries), list(queries.values()))[:12]
    cache = _Cache(cache_dir)

    logits: dict[int, dict[str, np.ndarray]] = {}
    kept: dict[int, torch.nn.Module] = {}
    wanted = {int(j) for j in keep_models}
    keys, tasks, n_cached = [], [], 0
    for j in range(keep.shape[0]):
        task = ModelTask(j, dataclasses.replace(recipe, seed=model_seed(seed, j)), np.flatnonzero(keep[j]))
        key = fingerprint(base_key, task.recipe.seed, task.train_index)
        keys.append(key)
        cached = cache.load_logits(key, query_key) if j not in wanted else None
        if cached is None and (state := cache.load_state(key)) is not None:
            model = executors.build(context, task.recipe)
            model.load_state_dict(state)
            if j in wanted:
                kept[j] = model
            cached = cache.load_logits(key, query_key)
            if cached is None:
                cached = executors.rescore(numerics, model.to(torch_device), queries)
                cache.save_logits(key, query_key, cached)
        if cached is None:
            tasks.append(task)
        else:
            logits[j], n_cached = cached, n_cached + 1
    bar = progress_bar(total=keep.shape[0], initial=n_cached, desc=f"reference models ({executor})",
                       enabled=progress, unit="model")
    for result in executors.run(executor, context, tasks, n_workers=n_workers, ray_address=ray_address,
                                group_size=group_size, batching=batching, progress=progress):
        meta = {"index": result.index, "seed": model_seed(seed, result.index), "numerics": numerics,
                "recipe": to_dict(recipe) if family is None else family.describe(),
                "n_train": int(keep[result.index].sum())}
        cache.save(keys[result.index], query_key, result, meta)
        logits[result.index] = result.logits
        if result.index in wanted:
            kept[result.index] = _module(context, tasks, result)
        bar.update()
    bar.close()

    labels, ids = dataset.y, dataset.ids
    kind = "logits" if family is None else family.output  # what the models' arrays are: logits or probabilities
    assert ids is not None  # ArrayDataset numbers its examples when not given ids
    n_views = len(queries) - (population is not None)
    def outputs(y: np.ndarray, values: np.ndarray, ids: np.ndarray | None) -> ClassifierOutputs:
        if kind == "probs":
            return ClassifierOutputs(y, probs=values, ids=ids)
        return ClassifierOutputs(y, logits=values, ids=ids)

    model_views = [[outputs(labels, logits[j][f"view{v}"], ids) for v in range(n_views)] for j in range(keep.shape[0])]
    return TrainedReferencePool(
        outputs=[v[0] for v in model_views], keep=keep,
        population=None if population is None else [
            outputs(population.y, logits[j]["population"], population.ids)
            for j in range(keep.shape[0])],
        views=model_views if n_views > 1 else None, ids=ids,
        train_ids=[ids[k] for k in keep], population_ids=None if population is None else population.ids,
        fingerprint=fingerprint(keys, query_key), seconds=time.perf_counter() - start,
        models=[kept[j] for j in sorted(wanted)] if wanted else None,
        info={"executor": executor, "numerics": numerics, "device": recipe.device, "trained": len(tasks),
              "from_cache": n_cached, "seed": seed, "views": views,
              "models": "zoo " + recipe.model if family is None else family.describe()})


def _module(context: PoolContext, tasks: Sequence[ModelTask], result: ModelResult) -> torch.nn.Module:
    """The trained model of ``result`` as a module (rebuilt from its state dict, in eval mode)."""
    task = next(t for t in tasks if t.index == result.index)
    model = executors.build(context, task.recipe)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in result.state.items()})
    return model.eval()


# -- checks -------------------------------------------------------------------------------------
def check_pool_data(pool: TrainedReferencePool, audit_ids: np.ndarray) -> None:
    """The pool is scored on the audited examples and ``keep`` tells the truth about them.

    Raises :class:`DataError` when the pool was scored on other examples, when a reference model
    trained on an audited example (e.g. a target non-member) that ``keep`` marks OUT, or when the
    population ``z`` overlaps the audited examples or any model's training data.
    """
    if pool.ids is None or pool.train_ids is None:
        raise DataError("this pool does not record example ids; build it with train_reference_pool")
    audit_ids = np.asarray(audit_ids)
    if pool.ids.shape != audit_ids.shape or not np.array_equal(pool.ids, audit_ids):
        raise DataError("the reference pool was scored on other examples than the audited ones; train it on the "
                        "audited examples (build_reference_pool_for_audit)")
    for j, (trained_ids, row) in enumerate(zip(pool.train_ids, pool.keep)):
        trained = np.isin(audit_ids, trained_ids)
        hidden = trained & ~row
        if hidden.any():
            raise DataError(f"reference model {j} trained on {int(hidden.sum())} audited examples that keep marks "
                            "OUT (e.g. the target's non-members); its OUT statistics would be wrong. Train the "
                            "pool on data disjoint from the audited examples, or record them in keep")
    if pool.population_ids is not None:
        clash = np.isin(pool.population_ids, audit_ids)
        if clash.any():
            raise DataError(f"{int(clash.sum())} population examples z are also audited examples; draw z from "
                            "data disjoint from the target's members and non-members (split.population)")
        for j, trained_ids in enumerate(pool.train_ids):
            if np.isin(pool.population_ids, trained_ids).any():
                raise DataError(f"reference model {j} trained on population examples z; RMIA assumes no "
                                "reference model saw z")


def build_reference_pool_for_audit(
    dataset: ArrayDataset,
    split: MembershipSplit,
    recipe: TrainConfig,
    *,
    n_models: int,
    seed: int,
    target_outputs: ClassifierOutputs | None = None,
    views: str = "none",
    plugins: Sequence[TrainingPlugin] = (),
    executor: str = "sequential",
    n_workers: int | None = None,
    ray_address: str | None = None,
    cache_dir: str | Path | None = None,
    keep_models: Sequence[int] = (),
    accuracy_tolerance: float = 0.05,
    loss_tolerance: float = 0.5,
    progress: bool = True,
    family: ModelFamily | None = None,
    device: str | None = None,
    group_size: int | str = "auto",
    batching: str = "auto",
) -> TrainedReferencePool:
    """The reference pool of an audit: ``n_models`` models on paired halves of ``split.audited``.

    The pool is scored on ``split.audited`` (members then non-members, the audit's order) and on
    ``split.population`` (RMIA's ``z``, when non-empty). With ``target_outputs`` (the target on
    ``split.audited``) the fidelity check runs and its result is ``pool.fidelity``; its warnings are
    :class:`~miaudit.classifier.reference.fidelity.FidelityWarning`\\ s. ``device``, ``group_size``,
    ``batching`` and ``keep_models`` go to :func:`train_reference_pool`.
    """
    audited = dataset.subset(split.audited)
    population = dataset.subset(split.population) if split.population.size else None
    keep = paired_keep_matrix(n_models, len(audited), seed=int(fingerprint("reference-keep", seed), 16) % 2**31)
    n_ref_train, n_target_train = len(audited) // 2, split.target_members.size
    if abs(n_ref_train - n_target_train) > 0.1 * n_target_train:
        warnings.warn(f"reference models train on {n_ref_train} examples (half of the audited ones) but the "
                      f"target on {n_target_train}; audit as many non-members as members so the pool matches "
                      "the target", FidelityWarning, stacklevel=2)
    pool = train_reference_pool(audited, keep, recipe, population=population, views=views, plugins=plugins,
                                seed=seed, executor=executor, n_workers=n_workers, ray_address=ray_address,
                                group_size=group_size, cache_dir=cache_dir, keep_models=keep_models,
                                progress=progress, device=device, batching=batching, family=family)
    assert audited.ids is not None  # ArrayDataset numbers its examples when not given ids
    check_pool_data(pool, audited.ids)
    if target_outputs is not None:
        pool.fidelity = check_fidelity(pool, target_outputs, split.membership,
                                       accuracy_tolerance=accuracy_tolerance, loss_tolerance=loss_tolerance)
    return pool


__all__ = ["CACHE_VERSION", "build_reference_pool_for_audit", "check_pool_data", "model_seed",
           "train_reference_pool"]
