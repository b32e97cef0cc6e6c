"""Where an audited classifier comes from, when the tool does not train it: precomputed outputs or the user's model.

Membership ground truth comes from the file of a precomputed target, or from the member /
non-member files given with the user's own model (a torch module loaded from its state dict, or a
trusted scikit-learn pickle). Shadow data for such a target is drawn from the config's dataset,
which the tool cannot check against the target's training set (the run says so). A target the
tool trains itself is built by :class:`miaudit.classifier.experiment.ClassifierExperiment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.classifier.config import TargetConfig
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.signals.cache import output_arrays
from miaudit.classifier.targets import BlackBoxTarget, PrecomputedTarget, SklearnTarget, TorchClassifierTarget
from miaudit.classifier.targets.hf_text import HFTextSource
from miaudit.classifier.targets.sklearn import class_indices
from miaudit.classifier.targets.tables import align_to_model, model_feature_names, with_classes
from miaudit.classifier.targets.user_model import (
    join_examples,
    load_blackbox,
    load_sklearn,
    load_torch_module,
    read_examples,
    run_model,
)
from miaudit.data import ArrayDataset, MembershipSplit
from miaudit.errors import DataError
from miaudit.utils.fingerprint import fingerprint
from miaudit.utils.seed import derive_seed


@dataclass
class AuditedTarget:
    """The audited side of a run: the target's outputs on the audited examples and where they came from.

    ``outputs`` ``(n,)`` carry the audited examples' ids; ``membership`` ``(n,)`` bool; ``info``
    goes to ``metrics.json`` ``"target"``; ``shadow_pool``: dataset indices for shadow models;
    ``population``: the target on data it never saw. ``model`` (``None`` for a precomputed target)
    answers queries on ``audited``; reference pools are trained on ``split.audited`` of
    ``examples``. For a target the tool trained: ``train``, its training set; ``training``, what
    training cost (:mod:`miaudit.classifier.training.measured`); ``initial``, its initial weights'
    outputs on the audited examples, when asked for. ``precomputed_groups``: group ids of a precomputed
    target's examples (its file's ``groups``); :attr:`groups` gives every source's.
    """

    outputs: ClassifierOutputs
    membership: np.ndarray
    info: dict[str, Any]
    shadow_pool: np.ndarray
    population: ClassifierOutputs | None = None
    model: TorchClassifierTarget | SklearnTarget | BlackBoxTarget | None = None
    audited: ArrayDataset | None = None
    split: MembershipSplit | None = None
    examples: ArrayDataset | None = None
    train: ArrayDataset | None = None
    training: dict[str, Any] | None = None
    initial: ClassifierOutputs | None = None
    precomputed_groups: np.ndarray | None = None

    @property
    def groups(self) -> np.ndarray | None:
        """``(n,)`` group ids of the audited examples (records that are not independent), or None."""
        return self.audited.groups if self.audited is not None else self.precomputed_groups

    @property
    def ids(self) -> np.ndarray:
        """``(n,)`` ids of the audited examples."""
        assert self.outputs.ids is not None  # every source gives its outputs the audited examples' ids
        return self.outputs.ids


def load_population(path: str, n_classes: int) -> ClassifierOutputs:
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


def external_shadow_pool(dataset: ArrayDataset | None, outputs: ClassifierOutputs, *, n_shadow: int, seed: int,
                         run_warnings: list[str]) -> np.ndarray:
    """Dataset indices for shadow models of a target the tool did not train (empty without a dataset)."""
    if dataset is None:
        return np.empty(0, np.int64)
    if dataset.n_classes != outputs.n_classes and outputs.access != "label-only":
        raise DataError(f"dataset {dataset.name} has {dataset.n_classes} classes but the target's outputs have "
                        f"{outputs.n_classes}; use the target's label set")
    if n_shadow > len(dataset):
        raise DataError(f"split.n_shadow={n_shadow} but dataset {dataset.name} has {len(dataset)} examples; lower it")
    order = np.random.default_rng(derive_seed(seed, "split")).permutation(len(dataset))
    run_warnings.append("shadow data comes from the given dataset; it must not overlap the target's training set, "
                        "which the tool cannot check for a target it did not train")
    return np.sort(order[:n_shadow])


def precomputed_target(target: TargetConfig, dataset: ArrayDataset | None, *, n_shadow: int, seed: int,
                       run_warnings: list[str]) -> AuditedTarget:
    """Outputs and membership from the user's file; shadow data (if any) drawn from ``dataset``."""
    path = target.precomputed
    assert path is not None
    stored = PrecomputedTarget.from_npz(path)
    outputs = stored.outputs()
    population = load_population(target.population, outputs.n_classes) if target.population else None
    info = {"source": "precomputed", "path": path, "access": stored.access,
            "description": f"precomputed outputs from {path} ({stored.access})", "fingerprint": stored.fingerprint()}
    shadow_pool = external_shadow_pool(dataset, outputs, n_shadow=n_shadow, seed=seed, run_warnings=run_warnings)
    return AuditedTarget(outputs, stored.membership, info, shadow_pool, population, precomputed_groups=stored.groups)


def _n_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _classes_of_sklearn_model(parts: list[ArrayDataset], named: ArrayDataset, estimator: Any, path: str | None
                              ) -> list[ArrayDataset]:
    """Tables whose labels are class names, renumbered to the classes a scikit-learn ``estimator`` (unpickled from
    ``path``) was fitted on; other models (``estimator`` None) take class indices."""
    names = named.class_names or [""]
    example = next((n for n in names if not n.isdigit()), names[0])  # a label that is no class index
    if estimator is None:
        raise DataError(f"config.target: {named.name} has the label {example!r}, a class name; your model outputs "
                        "one score per class index, so give the indices 0..K-1 it was trained on")
    classes = np.asarray(getattr(estimator, "classes_", []))
    if class_indices(classes):
        raise DataError(f"config.target: {named.name} has the label {example!r}, a class name, but the model was "
                        f"fitted on class indices ({', '.join(map(str, classes[:5]))}); give those")
    return [with_classes(p, [str(c) for c in classes], f"{type(estimator).__name__} ({path})") for p in parts]


def user_model_target(target: TargetConfig, dataset: ArrayDataset | None, *, n_shadow: int, seed: int,
                      run_warnings: list[str]) -> AuditedTarget:
    """The user's torch module, scikit-learn estimator or black-box function, audited on its member and non-member
    files."""
    assert target.members is not None and target.nonmembers is not None  # required with a user model (config)
    text = HFTextSource(target.hf_classifier) if target.hf_classifier is not None else None
    def read(path: str, key: str, role: str) -> ArrayDataset:
        if text is not None:
            return text.examples(path, role=role)
        return read_examples(path, key, role, target.table_columns)

    members = read(target.members, "members", "member")
    nonmembers = read(target.nonmembers, "nonmembers", "nonmember")
    population = read(target.population, "population", "population") if target.population else None
    parts = [members, nonmembers] + ([population] if population is not None else [])
    estimator = load_sklearn(target.sklearn) if target.sklearn is not None else None
    named = next((p for p in parts if p.class_names is not None), None)
    if named is not None and text is None:
        parts = _classes_of_sklearn_model(parts, named, estimator, target.sklearn)
        members, nonmembers = parts[:2]
    n_labels = int(max(p.y.max() for p in parts)) + 1
    model: TorchClassifierTarget | SklearnTarget | BlackBoxTarget
    info: dict[str, Any]
    names: list[str] | None = None  # the input names an estimator fitted on a data frame keeps
    if text is not None:
        model, n_classes = text.load(), text.n_classes
        info = {"source": "hf_classifier", "path": text.path, "access": model.access,
                "description": f"Hugging Face text classifier {text.path} (max_length {text.max_length})",
                "n_parameters": _n_parameters(model.model), "fingerprint": model.fingerprint()}
    elif target.source == "blackbox":
        assert target.blackbox is not None
        model = load_blackbox(target.blackbox, target.blackbox_output, members)
        probe = run_model(model, members.subset(np.arange(1)))
        n_classes = max(n_labels, probe.n_classes) if model.access != "label-only" else n_labels
        if model.access != "label-only" and probe.n_classes < n_labels:
            raise DataError(f"labels in the target's files go up to {n_labels - 1} but {target.blackbox} answers "
                            f"{probe.n_classes} classes; use the model's label indices")
        info = {"source": "blackbox", "function": target.blackbox, "access": model.access,
                "description": f"black-box function {target.blackbox} ({model.output})"}
    elif target.source == "torch_module":
        spec = target.torch_module
        assert spec is not None
        model = load_torch_module(spec)
        n_classes = run_model(model, members.subset(np.arange(1))).n_classes
        if n_classes < n_labels:
            raise DataError(f"labels in the target's files go up to {n_labels - 1} but {spec['class']} outputs "
                            f"{n_classes} classes; use the model's label indices")
        info = {"source": "torch_module", "class": spec["class"], "path": spec["path"], "access": model.access,
                "description": f"{spec['class']} loaded from {spec['path']} (state dict)",
                "n_parameters": _n_parameters(model.model), "fingerprint": model.fingerprint()}
    else:
        assert target.sklearn is not None and estimator is not None
        names = model_feature_names(estimator)
        if names is not None:  # fitted on a data frame: match the tables' columns by name
            parts = align_to_model(parts, names, type(estimator).__name__)
            members, nonmembers = parts[:2]
            if any(p.feature_names is None for p in parts):
                run_warnings.append(f"{type(estimator).__name__} was fitted on named columns ({', '.join(names[:3])}"
                                    f"{', ...' if len(names) > 3 else ''}); the .npz files' x columns are taken to be "
                                    "in that order: give tables with a header row to have them matched by name")
        classes = np.asarray(getattr(estimator, "classes_", [0]))
        known = int(classes.max()) + 1 if class_indices(classes) else len(classes)
        n_classes = max(n_labels, known)
        model = SklearnTarget(estimator, n_classes=n_classes, columns_matched=names is not None)
        info = {"source": "sklearn", "estimator": type(estimator).__name__, "path": target.sklearn,
                "access": model.access, "description": f"{type(estimator).__name__} unpickled from {target.sklearn}",
                "fingerprint": model.fingerprint()}
    examples = join_examples(parts, n_classes)
    if names is not None:  # .npz files' columns are taken to be in the model's order (warned above)
        examples.feature_names = names
    n_in, n_audited = len(members), len(members) + len(nonmembers)
    split = MembershipSplit(np.arange(n_in), np.arange(n_in, n_audited), np.empty(0, np.int64),
                            np.arange(n_audited, len(examples)))
    audited = examples.subset(split.audited)
    outputs = run_model(model, audited)
    if isinstance(model, BlackBoxTarget):
        info["fingerprint"] = fingerprint(*output_arrays(outputs).values())  # of its answers: it has no weights
    info["description"] += (f", audited on {n_in} members ({target.members}) and {len(nonmembers)} non-members "
                            f"({target.nonmembers})")
    seen = {row.tobytes() for row in members.x.reshape(n_in, -1)}
    copies = sum(row.tobytes() in seen for row in nonmembers.x.reshape(len(nonmembers), -1))
    if copies:
        run_warnings.append(f"{copies} non-members in {target.nonmembers} are exact copies of members; their ground "
                            "truth is ambiguous: remove them")
    population_outputs = run_model(model, examples.subset(split.population)) if population is not None else None
    shadow_pool = external_shadow_pool(dataset, outputs, n_shadow=n_shadow, seed=seed, run_warnings=run_warnings)
    return AuditedTarget(outputs, split.membership, info, shadow_pool, population_outputs, model=model,
                         audited=audited, split=split, examples=examples)


__all__ = ["AuditedTarget", "external_shadow_pool", "load_population", "precomputed_target", "user_model_target"]
