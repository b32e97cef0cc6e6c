"""The classifier audit (``kind: classifier``): data -> target -> shadow / reference / population -> attacks.

Membership ground truth comes from the tool's own split (a target it trains), from the file of a
precomputed target, or from the member / non-member files given with the user's own model (a torch
module loaded from its state dict, or a trusted scikit-learn pickle). Every random choice is
derived from the config's ``seed``
(:func:`~miaudit.classifier.config.derive_seed`): the split, the target's and each shadow model's
initialisation and batch order, each shadow model's data, the reference pool, attacks' own seeds.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pickle
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from miaudit.attacks.base import Attack
from miaudit.classifier.config import AuditConfig
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.queried import ShadowModel, run_queried_attacks, signal_type
from miaudit.classifier.reference import AttackReference, ShadowData
from miaudit.classifier.reference.views import query_views
from miaudit.classifier.targets import PrecomputedTarget, SklearnTarget, TorchClassifierTarget
from miaudit.classifier.training import TrainConfig, build_model_from_config, train_classifier
from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.data import ArrayDataset, MembershipSplit, load_dataset, make_split
from miaudit.data.datasets import read_npz
from miaudit.errors import ConfigError, DataError, MiauditError
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, register_kind
from miaudit.utils.logs import progress as progress_bar
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)
SUPPORTED_REFERENCE = ("none", "population", "shadow", "reference-pool")
ACCESS_ORDER = ("label-only", "probabilities", "logits")  # each level includes the ones before it


def parse(data: dict[str, Any]) -> AuditConfig:
    """Strict parse; ``training.seed`` is refused because the top-level ``seed`` drives every random choice."""
    refuse_nested_seed(data, "training")
    training = data.get("training")
    config = from_dict(AuditConfig, data)
    if config.target.user_model and (config.shadow.n_models or config.reference.n_models) and training is None:
        raise ConfigError("config.training: shadow and reference models are trained by the tool; give the recipe "
                          "closest to how your model was trained (model, hidden, epochs, lr, ...)")
    return config


def resolve(config: AuditConfig) -> dict[str, Any]:
    """The config as written to ``config.yaml`` (re-running it reproduces the run)."""
    return resolved_without_seed(config, "training")


def _check_needs(config: AuditConfig, attacks: list[tuple[str, Attack]], population_available: bool) -> None:
    for key, attack in attacks:
        need = attack.needs_reference
        if need not in SUPPORTED_REFERENCE:
            raise ConfigError(f"attack {key!r} needs {need} data, which the classifier audit does not build; "
                              f"use attacks whose reference is one of {', '.join(SUPPORTED_REFERENCE)}")
        if need == "shadow" and not config.shadow.n_models:
            raise ConfigError(f"attack {key!r} learns from shadow models; set shadow.n_models >= 1 and split.n_shadow")
        if need == "reference-pool" and not config.reference.n_models:
            raise ConfigError(f"attack {key!r} compares the target with reference models; set reference.n_models "
                              "(an even number, e.g. 16)")
        if need == "population" and not population_available:
            raise ConfigError(f"attack {key!r} needs population data the target never saw; set split.n_population "
                              "(a target trained by the tool) or target.population (a precomputed target or your "
                              "own model)")
        if getattr(attack, "per_class", False) and need == "none" and not config.shadow.n_models:
            raise ConfigError(f"attack {key!r} with per_class=true learns class thresholds from shadow models; "
                              "set shadow.n_models >= 1")


def _check_access(attacks: list[tuple[str, Attack]], available: str, *, has_weights: bool) -> None:
    """Refuse, before any shadow training, attacks that need more of the model than the target gives."""
    for key, attack in attacks:
        if attack.access in ACCESS_ORDER and ACCESS_ORDER.index(attack.access) > ACCESS_ORDER.index(available):
            raise ConfigError(f"attack {key!r} needs {attack.access} access but the target gives only {available}; "
                              "drop it or provide more of the model's outputs")
        if attack.access == "white-box" and not has_weights:
            raise ConfigError(f"attack {key!r} needs the model's weights and gradients (white-box), which this target "
                              "does not give; audit a torch model (trained by the tool or target.torch_module)")


def _accuracy(outputs: ClassifierOutputs, rows: np.ndarray) -> float:
    return float(outputs.correctness[rows].mean())


def _n_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _train(recipe: TrainConfig, data: ArrayDataset, *, progress: bool) -> tuple[TorchClassifierTarget, Any]:
    model = build_model_from_config(recipe, data.input_shape, data.n_classes)
    result = train_classifier(model, data, recipe, progress=progress)
    return TorchClassifierTarget(result.model), result


def _load_population(path: str, n_classes: int) -> ClassifierOutputs:
    """Target outputs on population data from an ``.npz`` with ``logits``/``probs``/``predictions`` and ``labels``."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"population outputs file {file} does not exist; check target.population")
    with np.load(file, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    given = [k for k in ("logits", "probs", "predictions") if k in arrays]
    if len(given) != 1 or "labels" not in arrays:
        raise DataError(f"{file} must hold 'labels' and exactly one of logits, probs, predictions "
                        f"(keys: {', '.join(arrays) or 'none'})")
    outputs = ClassifierOutputs(arrays["labels"], **{given[0]: arrays[given[0]]})
    if outputs.access != "label-only" and outputs.n_classes != n_classes:
        raise DataError(f"{file} has {outputs.n_classes} classes but the target outputs {n_classes}")
    return outputs


def _shadow_models(config: AuditConfig, dataset: ArrayDataset, pool: np.ndarray, n_members: int,
                   n_nonmembers: int, *, progress: bool) -> tuple[ShadowData, list[ShadowModel], dict[str, Any]]:
    """Train ``shadow.n_models`` models like the target, each on its own random draw from ``pool``.

    Returns their outputs on their own members and non-members, the models themselves (for attacks
    that query them, :mod:`miaudit.classifier.queried`) and a summary for ``metrics.json``.
    """
    sh = config.shadow
    n_in = sh.members_per_model or min(n_members, pool.size // 2)
    n_out = sh.nonmembers_per_model or min(n_nonmembers, pool.size - n_in)
    if n_in < 1 or n_out < 1 or n_in + n_out > pool.size:
        raise ConfigError(f"shadow models need {n_in} members + {n_out} non-members each but split.n_shadow is "
                          f"{pool.size}; raise split.n_shadow or lower shadow.members_per_model")
    outputs, membership, models, train_acc, test_acc = [], [], [], [], []
    for m in progress_bar(range(sh.n_models), desc="shadow models", enabled=progress, unit="model"):
        draw = np.random.default_rng(derive_seed(config.seed, "shadow-data", m)).permutation(pool)
        members, nonmembers = draw[:n_in], draw[n_in:n_in + n_out]
        recipe = dataclasses.replace(config.training, seed=derive_seed(config.seed, "shadow", m))
        model, _ = _train(recipe, dataset.subset(members), progress=False)
        own = dataset.subset(np.r_[members, nonmembers])
        out = model.outputs(own)
        truth = np.r_[np.ones(n_in, bool), np.zeros(n_out, bool)]
        models.append(ShadowModel(model, own, truth))
        outputs.append(out)
        membership.append(truth)
        train_acc.append(_accuracy(out, truth))
        test_acc.append(_accuracy(out, ~truth))
    info = {"n_models": sh.n_models, "members_per_model": int(n_in), "nonmembers_per_model": int(n_out),
            "train_accuracy_mean": float(np.mean(train_acc)), "test_accuracy_mean": float(np.mean(test_acc)),
            "train_accuracy": train_acc, "test_accuracy": test_acc}
    return ShadowData(outputs, membership), models, info


def _reference_pool(config: AuditConfig, dataset: ArrayDataset, split: MembershipSplit, outputs: ClassifierOutputs,
                    run_warnings: list[str], *, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Reference models on paired halves of the audited examples; fidelity warnings join the run's warnings."""
    from miaudit.classifier.reference.fidelity import FidelityWarning
    from miaudit.classifier.reference.pool import build_reference_pool_for_audit

    ref = config.reference
    log.info("training %d reference models (%s executor%s)", ref.n_models, ref.executor,
             f" at {ref.ray_address}" if ref.ray_address else "")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = build_reference_pool_for_audit(
            dataset, split, config.training, n_models=ref.n_models, seed=derive_seed(config.seed, "reference"),
            target_outputs=outputs, views=ref.views, executor=ref.executor, n_workers=ref.n_workers,
            ray_address=ref.ray_address, cache_dir=ref.cache_dir, progress=progress)
    for w in caught:
        if issubclass(w.category, FidelityWarning):
            run_warnings.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    info = {"n_models": ref.n_models, "views": ref.views, "executor": ref.executor,
            "seconds": round(pool.seconds, 2), "fidelity": pool.fidelity, **pool.info}
    if ref.ray_address:
        info["ray_address"] = ref.ray_address
    return pool, info


@dataclass
class _Target:
    """The audited side of a run: target outputs on the audited examples and where the data came from."""

    outputs: ClassifierOutputs  # (n,) audited examples
    membership: np.ndarray  # (n,) bool
    ids: np.ndarray  # (n,)
    info: dict[str, Any]
    shadow_pool: np.ndarray  # dataset indices for shadow models
    population: ClassifierOutputs | None = None
    model: TorchClassifierTarget | SklearnTarget | None = None  # None for a precomputed target
    audited: ArrayDataset | None = None
    split: MembershipSplit | None = None  # indexes `examples`; reference pools are trained on split.audited
    examples: ArrayDataset | None = None
    groups: np.ndarray | None = None  # (n,) group ids of the audited examples, when the data has them


def _external_shadow_pool(config: AuditConfig, dataset: ArrayDataset | None, outputs: ClassifierOutputs,
                          run_warnings: list[str]) -> np.ndarray:
    """Dataset indices for shadow models of a target the tool did not train (empty without a dataset)."""
    if dataset is None:
        return np.empty(0, np.int64)
    if dataset.n_classes != outputs.n_classes and outputs.access != "label-only":
        raise DataError(f"dataset {dataset.name} has {dataset.n_classes} classes but the target's outputs have "
                        f"{outputs.n_classes}; use the target's label set")
    if config.split.n_shadow > len(dataset):
        raise DataError(f"split.n_shadow={config.split.n_shadow} but dataset {dataset.name} has {len(dataset)} "
                        "examples; lower it")
    order = np.random.default_rng(derive_seed(config.seed, "split")).permutation(len(dataset))
    run_warnings.append("shadow data comes from the given dataset; it must not overlap the target's training set, "
                        "which the tool cannot check for a target it did not train")
    return np.sort(order[:config.split.n_shadow])


def _precomputed_target(config: AuditConfig, dataset: ArrayDataset | None, run_warnings: list[str]) -> _Target:
    """Outputs and membership from the user's file; shadow data (if any) drawn from ``dataset``."""
    path = config.target.precomputed
    target = PrecomputedTarget.from_npz(path)
    outputs = target.outputs()
    population = _load_population(config.target.population, outputs.n_classes) if config.target.population else None
    info = {"source": "precomputed", "path": path, "access": target.access,
            "description": f"precomputed outputs from {path} ({target.access})", "fingerprint": target.fingerprint()}
    shadow_pool = _external_shadow_pool(config, dataset, outputs, run_warnings)
    return _Target(outputs, target.membership, target.ids, info, shadow_pool, population, groups=target.groups)


def _trained_target(config: AuditConfig, dataset: ArrayDataset, *, progress: bool) -> _Target:
    """Split the dataset from the seed, train the target on the members, score the audited and population data."""
    sp = config.split
    split = make_split(len(dataset), n_members=sp.n_members, n_nonmembers=sp.n_nonmembers, n_shadow=sp.n_shadow,
                       n_population=sp.n_population, seed=derive_seed(config.seed, "split"))
    recipe = dataclasses.replace(config.training, seed=derive_seed(config.seed, "target"))
    log.info("training the target (%s, %d epochs) on %d members", recipe.model, recipe.epochs,
             split.target_members.size)
    model, result = _train(recipe, dataset.subset(split.target_members), progress=progress)
    audited = dataset.subset(split.audited)
    population = model.outputs(dataset.subset(split.population)) if split.population.size else None
    info = {"source": "trained", "model": recipe.model, "access": model.access,
            "description": f"{recipe.model} trained by miaudit on {split.target_members.size} {dataset.name} examples "
                           f"({recipe.epochs} epochs, {recipe.optimizer}, lr {recipe.lr:g}, weight decay "
                           f"{recipe.weight_decay:g})",
            "n_parameters": _n_parameters(model.model), "train_seconds": round(result.seconds, 2),
            "final_train_loss": result.history[-1]["loss"], "fingerprint": model.fingerprint()}
    return _Target(model.outputs(audited), split.membership, audited.ids, info, split.shadow, population,
                   model=model, audited=audited, split=split, examples=dataset, groups=audited.groups)


# -- the user's own model -------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _few(items: list[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (f" (+{len(items) - k} more)" if len(items) > k else "")


def _import_class(spec: str) -> type[nn.Module]:
    """The class ``"pkg.module:ClassName"`` names, imported; a one-line ConfigError when it cannot be."""
    where = "config.target.torch_module.class"
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise ConfigError(f"{where}: cannot import {module_name!r} ({_one_line(exc)}); install it or add its folder "
                          "to PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: module {module_name!r} has no {attr!r}; check the class name")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ConfigError(f"{where}: {spec} is not a torch.nn.Module subclass")
    return obj


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors saved with ``torch.save(model.state_dict(), path)``, read with ``weights_only=True`` (no code runs)."""
    where = "config.target.torch_module.path"
    if not path.is_file():
        raise DataError(f"{where}: {path} does not exist; save your weights with torch.save(model.state_dict(), "
                        "path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(f"{where}: {path} holds more than tensors (e.g. a whole pickled model), which miaudit does "
                        "not unpickle; save model.state_dict() instead") from None
    except Exception as exc:  # torch raises RuntimeError, OSError, EOFError... for files it cannot parse
        raise DataError(f"{where}: cannot read {path} with torch.load(weights_only=True) ({_one_line(exc)}); save "
                        "model.state_dict() with torch.save") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = f"keys {_few([str(k) for k in state])}" if isinstance(state, Mapping) else type(state).__name__
        raise DataError(f"{where}: {path} is not a state dict of tensors (found {found}); save model.state_dict() "
                        "itself, not a checkpoint around it")
    return {str(k): v for k, v in state.items()}


def _load_torch_module(spec: dict[str, Any]) -> TorchClassifierTarget:
    """Build the user's class with ``kwargs`` and load its state dict strictly; the module is in eval mode."""
    path = Path(spec["path"])
    state = _read_state_dict(path)
    cls = _import_class(spec["class"])
    try:
        model = cls(**spec.get("kwargs", {}))
    except Exception as exc:  # the user's constructor may raise anything
        raise ConfigError(f"config.target.torch_module.kwargs: {spec['class']}(**kwargs) failed ({_one_line(exc)}); "
                          "fix the constructor arguments") from None
    expected = model.state_dict()
    problems = [f"{what} {_few(keys)}" for what, keys in (
        ("missing keys", [k for k in expected if k not in state]),
        ("unexpected keys", [k for k in state if k not in expected]),
        ("shape mismatch (file vs model)", [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                                            for k, v in expected.items() if k in state and state[k].shape != v.shape]),
    ) if keys]
    if problems:
        raise DataError(f"config.target.torch_module: the state dict in {path} does not fit {spec['class']}"
                        f"(**kwargs): {'; '.join(problems)}; check class and kwargs")
    model.load_state_dict(state)
    return TorchClassifierTarget(model.eval())


def _load_sklearn(path_str: str) -> Any:
    """A fitted estimator from a pickle / joblib file; the config has ``trust_pickle: true`` (checked at parse)."""
    import joblib

    path = Path(path_str)
    if not path.is_file():
        raise DataError(f"config.target.sklearn: {path} does not exist; save your fitted estimator with "
                        "joblib.dump(model, path) or pickle")
    try:
        estimator = joblib.load(path)  # unpickles: runs code from the file, hence trust_pickle
    except Exception as exc:
        raise DataError(f"config.target.sklearn: cannot unpickle {path} ({_one_line(exc)}); save a fitted estimator "
                        "with joblib.dump or pickle, with the scikit-learn version installed here") from None
    if not hasattr(estimator, "predict"):
        raise DataError(f"config.target.sklearn: {path} holds a {type(estimator).__name__}, not a fitted estimator "
                        "with predict / predict_proba")
    return estimator


def _read_examples(path_str: str, key: str, role: str) -> ArrayDataset:
    """``x`` ``(n, ...)``, ``y`` ``(n,)``, optional ``ids`` (default ``"<role>/<row>"``) and ``groups`` of
    ``target.<key>``."""
    path = Path(path_str)
    if not path.is_file():
        raise DataError(f"config.target.{key}: {path} does not exist; give an .npz with x (n, ...) and y (n,)")
    arrays = read_npz(path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"config.target.{key}: {path} has no {missing[0]!r} array (keys: "
                        f"{', '.join(arrays) or 'none'}); save it with numpy.savez(path, x=..., y=...)")
    if not np.issubdtype(arrays["x"].dtype, np.number) and arrays["x"].dtype != bool:
        raise DataError(f"config.target.{key}: x in {path} has dtype {arrays['x'].dtype}; features must be numeric")
    n = len(arrays["y"])
    ids = arrays["ids"].astype(str) if "ids" in arrays else np.array([f"{role}/{i}" for i in range(n)])
    return ArrayDataset(arrays["x"], arrays["y"], name=f"{path.name}", ids=ids, groups=arrays.get("groups"))


def _join(parts: list[ArrayDataset], n_classes: int | None) -> ArrayDataset:
    """Members, non-members (and population) as one dataset, in that order; shapes and ids checked."""
    shapes = {p.input_shape for p in parts}
    if len(shapes) > 1:
        raise DataError(f"config.target: members, nonmembers and population must share one input shape; got "
                        f"{', '.join(f'{p.name} {p.input_shape}' for p in parts)}")
    ids = np.concatenate([p.ids for p in parts])
    if np.unique(ids).size != ids.size:
        raise DataError("config.target: example ids repeat across members, nonmembers and population; give unique "
                        "'ids' in the .npz files (or none)")
    grouped = [p.groups is not None for p in parts[:2]]
    if grouped[0] != grouped[1]:
        raise DataError("config.target: only one of the members / nonmembers files has 'groups'; give group ids in "
                        "both (or neither)")
    groups = None
    if grouped[0]:
        groups = np.concatenate([p.groups.astype(str) if p.groups is not None else
                                 np.array([f"{p.name}/{i}" for i in range(len(p))]) for p in parts])
    return ArrayDataset(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                        n_classes=n_classes, name=" + ".join(p.name for p in parts), ids=ids, groups=groups)


def _run_model(model: TorchClassifierTarget | SklearnTarget, data: ArrayDataset) -> ClassifierOutputs:
    try:
        return model.outputs(data)
    except MiauditError:
        raise
    except Exception as exc:  # the user's forward pass may raise anything
        raise DataError(f"running your model on {data.name} failed ({_one_line(exc)}); check that x has the input "
                        "shape and dtype the model expects") from None


def _user_model_target(config: AuditConfig, dataset: ArrayDataset | None, run_warnings: list[str]) -> _Target:
    """The user's torch module or scikit-learn estimator, audited on its member and non-member files."""
    tc = config.target
    members = _read_examples(tc.members, "members", "member")
    nonmembers = _read_examples(tc.nonmembers, "nonmembers", "nonmember")
    population = _read_examples(tc.population, "population", "population") if tc.population else None
    parts = [members, nonmembers] + ([population] if population is not None else [])
    n_labels = int(max(p.y.max() for p in parts)) + 1
    model: TorchClassifierTarget | SklearnTarget
    if tc.source == "torch_module":
        spec = tc.torch_module
        model = _load_torch_module(spec)
        n_classes = _run_model(model, members.subset(np.arange(1))).n_classes
        if n_classes < n_labels:
            raise DataError(f"labels in the target's files go up to {n_labels - 1} but {spec['class']} outputs "
                            f"{n_classes} classes; use the model's label indices")
        info = {"source": "torch_module", "class": spec["class"], "path": spec["path"], "access": model.access,
                "description": f"{spec['class']} loaded from {spec['path']} (state dict)",
                "n_parameters": _n_parameters(model.model), "fingerprint": model.fingerprint()}
    else:
        estimator = _load_sklearn(tc.sklearn)
        classes = np.asarray(getattr(estimator, "classes_", [0]))
        known = int(classes.max()) + 1 if np.issubdtype(classes.dtype, np.integer) else 0
        n_classes = max(n_labels, known)
        model = SklearnTarget(estimator, n_classes=n_classes)
        info = {"source": "sklearn", "estimator": type(estimator).__name__, "path": tc.sklearn,
                "access": model.access, "description": f"{type(estimator).__name__} unpickled from {tc.sklearn}",
                "fingerprint": model.fingerprint()}
    examples = _join(parts, n_classes)
    n_in, n_audited = len(members), len(members) + len(nonmembers)
    split = MembershipSplit(np.arange(n_in), np.arange(n_in, n_audited), np.empty(0, np.int64),
                            np.arange(n_audited, len(examples)))
    audited = examples.subset(split.audited)
    outputs = _run_model(model, audited)
    info["description"] += (f", audited on {n_in} members ({tc.members}) and {len(nonmembers)} non-members "
                            f"({tc.nonmembers})")
    seen = {row.tobytes() for row in members.x.reshape(n_in, -1)}
    copies = sum(row.tobytes() in seen for row in nonmembers.x.reshape(len(nonmembers), -1))
    if copies:
        run_warnings.append(f"{copies} non-members in {tc.nonmembers} are exact copies of members; their ground truth "
                            "is ambiguous: remove them")
    population_outputs = _run_model(model, examples.subset(split.population)) if population is not None else None
    shadow_pool = _external_shadow_pool(config, dataset, outputs, run_warnings)
    return _Target(outputs, split.membership, audited.ids, info, shadow_pool, population_outputs, model=model,
                   audited=audited, split=split, examples=examples, groups=audited.groups)


# -- attacks ---------------------------------------------------------------------------------------

def _view_outputs(target: _Target, views: str) -> list[ClassifierOutputs]:
    """The target's outputs on every query view of the audited examples; view 0 is the plain query."""
    x, y = target.audited.x, target.audited.y
    return [target.outputs] + [_run_model(target.model, ArrayDataset(v, y, n_classes=target.audited.n_classes,
                                                                     name=f"query view {i}"))
                               for i, v in enumerate(query_views(x, views)[1:], 1)]


def _score_attacks(attacks: list[tuple[str, Attack]], target: _Target, reference: AttackReference,
                   shadow_models: list[ShadowModel], *, views: str, progress: bool) -> list[ScoredAttack]:
    """Fit and score every attack; those that query the model (label-only, white-box) go through
    :mod:`miaudit.classifier.queried`.

    Attacks that accept query views (LiRA) score the target's outputs on every view of ``views``,
    the same augmentations the reference pool was scored on.
    """
    queried_attacks = [(k, a) for k, a in attacks if signal_type(a)]
    queried = {}
    if queried_attacks:
        log.info("computing query / gradient signals for %s", ", ".join(k for k, _ in queried_attacks))
        queried = {r.key: r for r in run_queried_attacks(queried_attacks, target.model, target.audited,
                                                         shadow=shadow_models, progress=progress)}
    with_views = [k for k, a in attacks if getattr(a, "accepts_query_views", False)]
    view_outputs = None
    if views != "none" and with_views:
        log.info("querying the target on the %s views for %s", views, ", ".join(with_views))
        view_outputs = _view_outputs(target, views)
    scored = []
    for key, attack in progress_bar(attacks, desc="attacks", enabled=progress, unit="attack"):
        if key in queried:
            r = queried[key]
            scored.append(ScoredAttack(key, attack, target.ids, target.membership, r.scores, r.seconds,
                                       extra={"cost": r.cost, "learned": attack.learned_state()}, groups=target.groups))
            continue
        start = time.perf_counter()
        signals = view_outputs if view_outputs is not None and key in with_views else target.outputs
        scores = attack.fit(reference).score(signals)
        scored.append(ScoredAttack(key, attack, target.ids, target.membership, scores, time.perf_counter() - start,
                                   extra={"learned": attack.learned_state()}, groups=target.groups))
    return scored


def run_classifier_audit(config: AuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Build target outputs, shadow models, reference pool and population outputs; fit and score every attack."""
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    source = config.target.source
    population_available = bool(config.target.population if source != "trained" else config.split.n_population)
    _check_needs(config, attacks, population_available)
    needs_model = [k for k, a in attacks if signal_type(a)]
    if source == "precomputed" and needs_model:
        raise ConfigError(f"attack {needs_model[0]!r} queries the model itself (perturbed inputs or gradients); a "
                          "precomputed target cannot be queried: audit the model with the tool instead")

    dataset = None
    if config.dataset is not None:
        ds = config.dataset
        dataset = load_dataset(ds.source, data_dir=ds.data_dir, **ds.options)
        log.info("dataset %s: %d examples, %d classes, input shape %s", dataset.name, len(dataset),
                 dataset.n_classes, dataset.input_shape)
    run_warnings: list[str] = []
    if source == "precomputed":
        target = _precomputed_target(config, dataset, run_warnings)
    elif config.target.user_model:
        target = _user_model_target(config, dataset, run_warnings)
    else:
        target = _trained_target(config, dataset, progress=progress)
    outputs, membership = target.outputs, target.membership
    _check_access(attacks, outputs.access, has_weights=isinstance(target.model, TorchClassifierTarget))
    target.info["train_accuracy"] = _accuracy(outputs, membership)
    target.info["test_accuracy"] = _accuracy(outputs, ~membership)
    log.info("target: train accuracy %.4f, test accuracy %.4f", target.info["train_accuracy"],
             target.info["test_accuracy"])
    PrecomputedTarget.save_npz(folder / "target_outputs.npz", outputs, membership, ids=target.ids, groups=target.groups)

    sections: dict[str, Any] = {}
    shadow, shadow_models, pool = None, [], None
    if config.shadow.n_models:
        shadow, shadow_models, sections["shadow"] = _shadow_models(
            config, dataset, target.shadow_pool, int(membership.sum()), int((~membership).sum()), progress=progress)
        log.info("shadow models: mean train accuracy %.4f, mean test accuracy %.4f",
                 sections["shadow"]["train_accuracy_mean"], sections["shadow"]["test_accuracy_mean"])
    if config.reference.n_models:
        pool, sections["reference"] = _reference_pool(config, target.examples, target.split, outputs, run_warnings,
                                                      progress=progress)
    reference = AttackReference(shadow=shadow, pool=pool, population=target.population)
    scored = _score_attacks(attacks, target, reference, shadow_models, views=config.reference.views,
                            progress=progress)

    data_info = {"dataset": dataset.name if dataset is not None else None,
                 "n_examples": len(dataset) if dataset is not None else None,
                 "n_classes": outputs.n_classes if outputs.access != "label-only" else None,
                 "n_members": int(membership.sum()), "n_nonmembers": int((~membership).sum()),
                 "n_shadow": int(target.shadow_pool.size),
                 "n_population": len(target.population) if target.population is not None else 0}
    return AuditOutcome(target=target.info, data=data_info, attacks=scored, sections=sections,
                        warnings=run_warnings)


register_kind("classifier", AuditConfig, run_classifier_audit, parse=parse, resolve=resolve)

__all__ = ["parse", "resolve", "run_classifier_audit"]
