"""The user's member / non-member / population tables as examples, and their columns matched to a model's inputs.

A table of records (CSV, TSV, JSONL, JSON, Parquet; :func:`miaudit.data.rows.read_rows`) holds one record per row:
a label column (class indices, or the class names a scikit-learn model was fitted on: :func:`with_classes`),
optional id and group columns, and numeric input columns
(:class:`~miaudit.classifier.config.TableColumns`). A model fitted on a data frame keeps its input names
(:func:`model_feature_names`); :func:`align_to_model` puts the tables' columns in that order. Every problem is a
one-line :class:`~miaudit.errors.DataError` naming the file, row and column.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.classifier.config import TableColumns
from miaudit.data import ArrayDataset
from miaudit.data.rows import read_rows
from miaudit.errors import DataError


def _number(value: Any, column: str, row: int, path: Path) -> float:
    """One cell as a float; a one-line error for a missing or non-numeric cell."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value) if value is not None and str(value).strip() != "" else math.nan
    except (TypeError, ValueError):
        raise DataError(f"config.target: {path} row {row + 1}, column {column!r} holds {value!r}, not a number; your "
                        "model takes numeric inputs here, so encode the column as your model's preprocessing "
                        "did (or let the tool train a model on the raw table: dataset.source)") from None
    if not math.isfinite(number):
        raise DataError(f"config.target: {path} row {row + 1}, column {column!r} is missing or not finite "
                        f"({value!r}); fill it as your model's preprocessing did")
    return number


def _numeric_column(rows: list[dict[str, Any]], column: str, path: Path) -> np.ndarray:
    """One column as float64 ``(n,)``, converted at once; a bad cell is found and named cell by cell."""
    values = [row[column] for row in rows]
    try:
        array = np.array(values, dtype=np.float64)
        if np.isfinite(array).all():
            return array
    except (TypeError, ValueError):
        pass
    return np.array([_number(value, column, i, path) for i, value in enumerate(values)])


def _labels(rows: list[dict[str, Any]], column: str, path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The label column as class indices ``(n,)``, and ``None``; or, when some label is not an index (class names
    such as "churned"), the indices into the sorted names and those names (matched to a model's classes later)."""
    values = [row[column] for row in rows]
    missing = next((i for i, v in enumerate(values) if v is None or str(v).strip() == ""), None)
    if missing is not None:
        raise DataError(f"config.target: {path} row {missing + 1}, column {column!r} has no label; give every record "
                        "its class")
    try:
        numbers = np.array(values, dtype=np.float64)
        if np.all(numbers >= 0) and np.all(numbers == np.round(numbers)):
            return numbers.astype(np.int64), None
    except (TypeError, ValueError):
        pass
    names = sorted({str(v).strip() for v in values})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(v).strip()] for v in values], dtype=np.int64), names


def with_classes(part: ArrayDataset, classes: list[str], model: str) -> ArrayDataset:
    """``part`` with labels given as class names (``part.class_names``) renumbered to the positions of the model's
    ``classes`` (what ``predict_proba``'s columns follow); labels given as indices are left as they are."""
    if part.class_names is None:
        return part
    unknown = [name for name in part.class_names if name not in classes]
    if unknown:
        raise DataError(f"config.target: {part.name} has the label {unknown[0]!r}, which is not a class of {model} "
                        f"(its classes: {_listed(classes)})")
    position = np.array([classes.index(name) for name in part.class_names])
    return dataclasses.replace(part, y=position[part.y], class_names=list(classes), n_classes=len(classes))


def _listed(names: list[Any], at_most: int = 8) -> str:
    """Column names for a message: the first ``at_most`` and how many there are."""
    shown = ", ".join(map(str, names[:at_most]))
    return shown if len(names) <= at_most else f"{shown}, ... ({len(names)} columns)"


def read_table_examples(path: Path, role: str, columns: TableColumns, *, ids_needed: bool = True) -> ArrayDataset:
    """The records of a table as examples: the ``columns.label`` column as ``y`` (class indices; class names are
    numbered in sorted order and kept in ``class_names`` until :func:`with_classes` matches them to a model's),
    optional id and group columns, every other column a numeric feature of ``x`` ``(n, d)`` (``feature_names``
    keeps their order). Without ``ids_needed`` (shadow data) a table may lack the id and group columns."""
    rows = read_rows(path, other="or an .npz with x and y")
    names = list(rows[0])
    if not ids_needed:
        columns = TableColumns(columns.label, *(c if c in names else None for c in (columns.id, columns.group)))
    for what, column in (("label", columns.label), ("id", columns.id), ("group", columns.group)):
        if column is not None and column not in names:
            raise DataError(f"config.target: {path} has no column {column!r} (columns: {_listed(names)}); set "
                            f"target.{what}_column")
    features = [c for c in names if c not in (columns.label, columns.id, columns.group)]
    if not features:
        raise DataError(f"config.target: {path} has no feature column beside {columns.label!r}")
    for i, row in enumerate(rows):
        if set(row) != set(names):
            raise DataError(f"config.target: {path} record {i + 1} has the columns {_listed(list(row))} but the "
                            f"first has {_listed(names)}; give every record the same columns")
    x = np.stack([_numeric_column(rows, c, path) for c in features], axis=1)  # (n, d)
    labels, class_names = _labels(rows, columns.label, path)
    ids = (np.array([str(row[columns.id]) for row in rows]) if columns.id is not None
           else np.array([f"{role}/{i}" for i in range(len(rows))]))
    groups = np.array([str(row[columns.group]) for row in rows]) if columns.group is not None else None
    return ArrayDataset(x, labels, name=path.name, ids=ids, groups=groups, feature_names=features,
                        class_names=class_names)


def model_feature_names(estimator: Any) -> list[str] | None:
    """The input names a fitted estimator learned from a data frame (scikit-learn and XGBoost's
    ``feature_names_in_``, LightGBM's ``feature_name_`` unless it is LightGBM's own ``Column_<i>``); ``None``
    for a model fitted on plain arrays."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        names = getattr(estimator, "feature_name_", None)
        if names is not None and all(re.fullmatch(r"Column_\d+", str(n)) for n in names):
            names = None
    return None if names is None else [str(n) for n in names]


def align_to_model(parts: list[ArrayDataset], names: list[str], inputs_of: str) -> list[ArrayDataset]:
    """The tables' columns put in the order of the input ``names`` (of ``inputs_of``, e.g. "LogisticRegression"):
    a one-line error for an input a table lacks, or a column that is no input; arrays (no names) as they are."""
    aligned = []
    for part in parts:
        if part.feature_names is None:
            aligned.append(part)
            continue
        missing = [n for n in names if n not in part.feature_names]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"config: {part.name} has no column {missing[0]!r}{more}, an input of {inputs_of}; give "
                            "every table the input columns your model takes")
        extra = [n for n in part.feature_names if n not in names]
        if extra:
            raise DataError(f"config: {part.name} has the column {extra[0]!r}, which is not an input of {inputs_of}; "
                            "name it as target.id_column / group_column or drop it")
        order = [part.feature_names.index(n) for n in names]
        aligned.append(dataclasses.replace(part, x=part.x[:, order], feature_names=list(names)))
    return aligned


__all__ = ["align_to_model", "model_feature_names", "read_table_examples", "with_classes"]
