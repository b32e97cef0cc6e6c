"""The classifier audit (``kind: classifier``): data -> target -> shadow / reference / population -> attacks.

Membership ground truth comes from the tool's own split (a target it trains) or from the file of a
precomputed target. Every random choice is derived from the config's ``seed``
(:func:`~miaudit.audit.config.derive_seed`): the split, the target's and each shadow model's
initialisation and batch order, each shadow model's data, the reference pool, attacks' own seeds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.audit.config import AuditConfig, derive_seed
from miaudit.audit.pipeline import AuditOutcome, ScoredAttack, build_attacks, register_kind
from miaudit.config import from_dict, to_dict
from miaudit.data import ArrayDataset, MembershipSplit, load_dataset, make_split
from miaudit.errors import ConfigError, DataError
from miaudit.queried import ShadowModel, run_queried_attacks, signal_type
from miaudit.reference import AttackReference, ShadowData
from miaudit.signals import ClassifierOutputs
from miaudit.targets import PrecomputedTarget, TorchClassifierTarget
from miaudit.training import TrainConfig, build_model_from_config, train_classifier
from miaudit.utils.logs import progress as progress_bar

log = logging.getLogger(__name__)
SUPPORTED_REFERENCE = ("none", "population", "shadow", "reference-pool")
ACCESS_ORDER = ("label-only", "probabilities", "logits")  # each level includes the ones before it


def parse(data: dict[str, Any]) -> AuditConfig:
    """Strict parse; ``training.seed`` is refused because the top-level ``seed`` drives every random choice."""
    training = data.get("training")
    if isinstance(training, dict) and "seed" in training:
        raise ConfigError("config.training.seed: remove it; the top-level 'seed' derives the target's and every "
                          "shadow model's training seed")
    return from_dict(AuditConfig, data)


def resolve(config: AuditConfig) -> dict[str, Any]:
    """The config as written to ``config.yaml`` (re-running it reproduces the run)."""
    resolved = to_dict(config)
    resolved["training"].pop("seed", None)
    return resolved


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
                              "(a target trained by the tool) or target.population (a precomputed target)")
        if getattr(attack, "per_class", False) and need == "none" and not config.shadow.n_models:
            raise ConfigError(f"attack {key!r} with per_class=true learns class thresholds from shadow models; "
                              "set shadow.n_models >= 1")


def _check_access(attacks: list[tuple[str, Attack]], available: str) -> None:
    """Refuse, before any shadow training, attacks that need more of the model than the target gives."""
    for key, attack in attacks:
        if attack.access in ACCESS_ORDER and ACCESS_ORDER.index(attack.access) > ACCESS_ORDER.index(available):
            raise ConfigError(f"attack {key!r} needs {attack.access} access but the target gives only {available}; "
                              "drop it or provide more of the model's outputs")


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
    that query them, :mod:`miaudit.queried`) and a summary for ``metrics.json``.
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
    from miaudit.reference.fidelity import FidelityWarning
    from miaudit.reference.pool import build_reference_pool_for_audit

    ref = config.reference
    log.info("training %d reference models (%s executor)", ref.n_models, ref.executor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = build_reference_pool_for_audit(
            dataset, split, config.training, n_models=ref.n_models, seed=derive_seed(config.seed, "reference"),
            target_outputs=outputs, views=ref.views, executor=ref.executor, n_workers=ref.n_workers,
            cache_dir=ref.cache_dir, progress=progress)
    for w in caught:
        if issubclass(w.category, FidelityWarning):
            run_warnings.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    info = {"n_models": ref.n_models, "views": ref.views, "executor": ref.executor,
            "seconds": round(pool.seconds, 2), "fidelity": pool.fidelity, **pool.info}
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
    model: TorchClassifierTarget | None = None  # None for a precomputed target
    audited: ArrayDataset | None = None
    split: MembershipSplit | None = None


def _precomputed_target(config: AuditConfig, dataset: ArrayDataset | None, run_warnings: list[str]) -> _Target:
    """Outputs and membership from the user's file; shadow data (if any) drawn from ``dataset``."""
    path = config.target.precomputed
    target = PrecomputedTarget.from_npz(path)
    outputs = target.outputs()
    population = _load_population(config.target.population, outputs.n_classes) if config.target.population else None
    info = {"source": "precomputed", "path": path, "access": target.access,
            "description": f"precomputed outputs from {path} ({target.access})", "fingerprint": target.fingerprint()}
    shadow_pool = np.empty(0, np.int64)
    if dataset is not None:
        if dataset.n_classes != outputs.n_classes and outputs.access != "label-only":
            raise DataError(f"dataset {dataset.name} has {dataset.n_classes} classes but the precomputed outputs have "
                            f"{outputs.n_classes}; use the target's label set")
        if config.split.n_shadow > len(dataset):
            raise DataError(f"split.n_shadow={config.split.n_shadow} but dataset {dataset.name} has {len(dataset)} "
                            "examples; lower it")
        order = np.random.default_rng(derive_seed(config.seed, "split")).permutation(len(dataset))
        shadow_pool = np.sort(order[:config.split.n_shadow])
        run_warnings.append("shadow data comes from the given dataset; it must not overlap the target's training "
                            "set, which the tool cannot check for a precomputed target")
    return _Target(outputs, target.membership, target.ids, info, shadow_pool, population)


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
                   model=model, audited=audited, split=split)


def _score_attacks(attacks: list[tuple[str, Attack]], target: _Target, reference: AttackReference,
                   shadow_models: list[ShadowModel], *, progress: bool) -> list[ScoredAttack]:
    """Fit and score every attack; those that query the model (label-only, white-box) go through miaudit.queried."""
    queried_attacks = [(k, a) for k, a in attacks if signal_type(a)]
    queried = {}
    if queried_attacks:
        log.info("computing query / gradient signals for %s", ", ".join(k for k, _ in queried_attacks))
        queried = {r.key: r for r in run_queried_attacks(queried_attacks, target.model, target.audited,
                                                         shadow=shadow_models, progress=progress)}
    scored = []
    for key, attack in progress_bar(attacks, desc="attacks", enabled=progress, unit="attack"):
        if key in queried:
            r = queried[key]
            scored.append(ScoredAttack(key, attack, target.ids, target.membership, r.scores, r.seconds,
                                       extra={"cost": r.cost}))
            continue
        start = time.perf_counter()
        scores = attack.fit(reference).score(target.outputs)
        scored.append(ScoredAttack(key, attack, target.ids, target.membership, scores, time.perf_counter() - start))
    return scored


def run_classifier_audit(config: AuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Build target outputs, shadow models, reference pool and population outputs; fit and score every attack."""
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    precomputed = config.target.precomputed is not None
    if config.target.population and not precomputed:
        raise ConfigError("config.target.population: only for a precomputed target; a target trained by the tool "
                          "gets population data from split.n_population")
    _check_needs(config, attacks, bool(config.target.population if precomputed else config.split.n_population))
    needs_model = [k for k, a in attacks if signal_type(a)]
    if precomputed and needs_model:
        raise ConfigError(f"attack {needs_model[0]!r} queries the model itself (perturbed inputs or gradients); a "
                          "precomputed target cannot be queried: audit the model with the tool instead")

    dataset = None
    if config.dataset is not None:
        ds = config.dataset
        dataset = load_dataset(ds.source, data_dir=ds.data_dir, **ds.options)
        log.info("dataset %s: %d examples, %d classes, input shape %s", dataset.name, len(dataset),
                 dataset.n_classes, dataset.input_shape)
    run_warnings: list[str] = []
    target = (_precomputed_target(config, dataset, run_warnings) if precomputed
              else _trained_target(config, dataset, progress=progress))
    outputs, membership = target.outputs, target.membership
    _check_access(attacks, outputs.access)
    target.info["train_accuracy"] = _accuracy(outputs, membership)
    target.info["test_accuracy"] = _accuracy(outputs, ~membership)
    log.info("target: train accuracy %.4f, test accuracy %.4f", target.info["train_accuracy"],
             target.info["test_accuracy"])
    PrecomputedTarget.save_npz(folder / "target_outputs.npz", outputs, membership, ids=target.ids)

    sections: dict[str, Any] = {}
    shadow, shadow_models, pool = None, [], None
    if config.shadow.n_models:
        shadow, shadow_models, sections["shadow"] = _shadow_models(
            config, dataset, target.shadow_pool, int(membership.sum()), int((~membership).sum()), progress=progress)
        log.info("shadow models: mean train accuracy %.4f, mean test accuracy %.4f",
                 sections["shadow"]["train_accuracy_mean"], sections["shadow"]["test_accuracy_mean"])
    if config.reference.n_models:
        pool, sections["reference"] = _reference_pool(config, dataset, target.split, outputs, run_warnings,
                                                      progress=progress)
    reference = AttackReference(shadow=shadow, pool=pool, population=target.population)
    scored = _score_attacks(attacks, target, reference, shadow_models, progress=progress)

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
