"""The user's own model as an audit target: a torch module from its state dict, a scikit-learn pickle, a function.

Used by the classifier experiment for ``target.torch_module`` / ``target.sklearn``
(:mod:`miaudit.classifier.config`): the class is imported and built with the config's ``kwargs``
and its state dict read with ``torch.load(weights_only=True)`` (no code runs); a scikit-learn
estimator is unpickled only with ``trust_pickle: true``; a black-box function is imported only
with ``trust_code: true``. The audited examples come from ``.npz``
files with ``x``, ``y`` and optional ``ids``. Every problem is a one-line error naming the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from miaudit.classifier.config import TableColumns
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.targets.blackbox import BlackBoxTarget
from miaudit.classifier.targets.sklearn import SklearnTarget
from miaudit.classifier.targets.tables import read_table_examples
from miaudit.classifier.targets.torch_module import TorchClassifierTarget
from miaudit.data import ArrayDataset
from miaudit.data.datasets import read_user_arrays, user_row_ids
from miaudit.data.rows import is_table
from miaudit.errors import DataError, MiauditError, one_line
from miaudit.utils.trusted_code import import_trusted_callable
from miaudit.utils.user_module import load_user_module


def load_torch_module(spec: dict[str, Any]) -> TorchClassifierTarget:
    """Build the user's class with ``kwargs`` and load its state dict strictly; the module is in eval mode."""
    return TorchClassifierTarget(load_user_module(spec, "config.target.torch_module"))


def _blackbox_output(answer: np.ndarray) -> str:
    """What a black box answered: "labels" (1-D), "probabilities" (non-negative rows summing to 1) or "logits"."""
    if answer.ndim == 1:
        return "labels"
    if answer.ndim == 2 and (answer >= 0).all() and np.allclose(answer.sum(axis=1), 1.0, atol=1e-3):
        return "probabilities"
    return "logits"


def load_blackbox(spec: str, output: str, probe: ArrayDataset) -> BlackBoxTarget:
    """The function ``spec`` names as a :class:`BlackBoxTarget` (``target.trust_code`` was checked at parse time).

    ``output`` "auto" is decided from its answer on the first (up to 64) examples of ``probe``.
    """
    fn = import_trusted_callable(spec, trust_code=True, where="config.target.blackbox")
    if output == "auto":
        try:
            answer = np.asarray(fn(probe.x[:64]), dtype=np.float64)
        except Exception as exc:  # the user's function may raise anything
            raise DataError(f"config.target.blackbox: {spec} failed on {min(len(probe), 64)} examples of "
                            f"{probe.name} ({one_line(exc)}); check that it takes inputs shaped like x") from None
        output = _blackbox_output(answer)
    return BlackBoxTarget(fn, output=output)


def load_sklearn(path_str: str) -> Any:
    """A fitted estimator from a pickle / joblib file; the config has ``trust_pickle: true`` (checked at parse)."""
    import joblib

    path = Path(path_str)
    if not path.is_file():
        raise DataError(f"config.target.sklearn: {path} does not exist; save your fitted estimator with "
                        "joblib.dump(model, path) or pickle")
    try:
        estimator = joblib.load(path)  # unpickles: runs code from the file, hence trust_pickle
    except Exception as exc:
        raise DataError(f"config.target.sklearn: cannot unpickle {path} ({one_line(exc)}); save a fitted estimator "
                        "with joblib.dump or pickle, with the scikit-learn version installed here") from None
    if not hasattr(estimator, "predict"):
        raise DataError(f"config.target.sklearn: {path} holds a {type(estimator).__name__}, not a fitted estimator "
                        "with predict / predict_proba")
    return estimator


def read_examples(path_str: str, key: str, role: str, columns: TableColumns | None = None) -> ArrayDataset:
    """``x`` ``(n, ...)``, ``y`` ``(n,)``, optional ``ids`` (default ``"<role>/<row>"``) and ``groups`` of
    ``target.<key>``: an ``.npz``, or a table read with ``columns`` (:func:`read_table_examples`)."""
    if is_table(Path(path_str)):
        path = Path(path_str)
        if not path.is_file():
            raise DataError(f"config.target.{key}: {path} does not exist; check the path")
        return read_table_examples(path, role, columns or TableColumns())
    path, arrays = read_user_arrays(path_str, f"config.target.{key}", ("x", "y"), "x (n, ...) and y (n,)")
    ids = user_row_ids(arrays, len(arrays["y"]), role)
    return ArrayDataset(arrays["x"], arrays["y"], name=f"{path.name}", ids=ids, groups=arrays.get("groups"))


def join_examples(parts: list[ArrayDataset], n_classes: int | None) -> ArrayDataset:
    """Members, non-members (and population) as one dataset, in that order; shapes and ids checked."""
    shapes = {p.input_shape for p in parts}
    if len(shapes) > 1:
        raise DataError(f"config.target: members, nonmembers and population must share one input shape; got "
                        f"{', '.join(f'{p.name} {p.input_shape}' for p in parts)}")
    named = [p for p in parts if p.feature_names is not None]
    for part in named[1:]:
        first, other = named[0].feature_names or [], part.feature_names or []
        if other != first:
            at = next((i for i, (a, b) in enumerate(zip(first, other)) if a != b), min(len(first), len(other)))
            seen = [f"{p.name} has {names[at]!r}" if at < len(names) else f"{p.name} ends"
                    for p, names in ((named[0], first), (part, other))]
            raise DataError(f"config.target: the tables' feature columns differ at column {at + 1} ({seen[0]}, "
                            f"{seen[1]}); give every file the columns your model takes, in its order")
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
                        n_classes=n_classes, name=" + ".join(p.name for p in parts), ids=ids, groups=groups,
                        feature_names=parts[0].feature_names, class_names=parts[0].class_names)


def run_model(model: TorchClassifierTarget | SklearnTarget | BlackBoxTarget, data: ArrayDataset) -> ClassifierOutputs:
    """The model's outputs on ``data``; anything the user's code raises becomes a one-line :class:`DataError`."""
    try:
        return model.outputs(data)
    except MiauditError:
        raise
    except Exception as exc:  # the user's forward pass may raise anything
        raise DataError(f"running your model on {data.name} failed ({one_line(exc)}); check that x has the input "
                        "shape and dtype the model expects") from None


__all__ = ["join_examples", "load_blackbox", "load_sklearn", "load_torch_module", "read_examples", "run_model"]
