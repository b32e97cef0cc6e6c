"""Tabular files (CSV, Parquet): raw columns first, then ONE preprocessing pipeline for the whole run.

Reading (:func:`read_table`) keeps every column as stored: numeric columns as float64 with NaN
where a value is missing, categorical ones as strings with ``None``. Cells listed in ``missing``
(``"?"`` and the empty cell by default) and Parquet nulls are missing. A column is numeric when
every value it has parses as a number, unless declared ``categorical`` (or ``numeric``, which
then must parse). Label values are normalised (surrounding whitespace and trailing dots removed:
``"<=50K."`` reads as ``"<=50K"``), with a note when two spellings were merged that way; labels
that are all whole numbers >= 0 are class indices as stored, any others class names numbered in
sorted order. One class, a row without a label, and absurd label ranges are one-line errors.

Preprocessing (:class:`TabularPreprocessor`) is a scikit-learn ``ColumnTransformer``: numeric
columns imputed with their median and standardised (``scale=True``, the default), categorical
ones imputed with their most frequent value and one-hot encoded with unknown categories ignored
(an unseen category becomes all zeros). An audit fits it once, on the target's training rows,
and transforms every row of the run with it (members, non-members, shadow and population data),
so every part has the same columns; it is saved with the run (``preprocessing.json``, readable,
and ``preprocessing.joblib``, the fitted transformer).
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.data.datasets import first_repeated_id
from miaudit.errors import ConfigError, DataError

#: file suffixes read as tables, and their format
TABULAR_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
TABULAR_FORMATS = ("csv", "parquet")
#: cells read as missing unless ``missing`` says otherwise
DEFAULT_MISSING = ("?", "")
NUMERIC, CATEGORICAL = "numeric", "categorical"


class TabularWarning(UserWarning):
    """Something in a tabular file the user should know about (merged label spellings, imputed cells)."""


@dataclass
class Table:
    """The rows of one or more tabular files, before preprocessing.

    ``features``: column name -> ``(n,)`` float64 (numeric; NaN = missing) or object array of
    ``str`` (categorical; ``None`` = missing); ``kinds``: column name -> "numeric" / "categorical";
    ``y`` ``(n,)`` int64 class indices; ``class_names`` (labels that were names) or ``None``;
    ``ids`` ``(n,)`` row numbers over all files read; ``notes``: what the reader changed or
    noticed (merged label spellings, missing cells), for the run's warnings; ``groups`` ``(n,)``
    the group ids of the ``group`` column (rows of one person), or ``None``.
    """

    features: dict[str, np.ndarray]
    kinds: dict[str, str]
    y: np.ndarray
    class_names: list[str] | None
    name: str
    ids: np.ndarray
    notes: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.class_names is not None else int(self.y.max()) + 1

    def subset(self, rows: np.ndarray) -> Table:
        """The rows at ``rows`` (indices or a boolean mask)."""
        return Table({k: v[rows] for k, v in self.features.items()}, dict(self.kinds), self.y[rows],
                     self.class_names, self.name, self.ids[rows], list(self.notes),
                     None if self.groups is None else self.groups[rows])


# -- reading ------------------------------------------------------------------------------------
def tabular_format(path: str | Path, format: str | None = None) -> str | None:
    """"csv" or "parquet" for a tabular source (by ``format`` or the suffix), else ``None``."""
    if format is not None:
        if format not in TABULAR_FORMATS:
            raise ConfigError(f"dataset format {format!r} is not allowed; choose {' or '.join(TABULAR_FORMATS)}")
        return format
    return TABULAR_SUFFIXES.get(Path(path).suffix.lower())


def _names(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"dataset option {key!r}: give a list of column names, got {value!r}")
    return list(value)


def _read_csv_rows(path: Path, *, header: bool, columns: list[str], delimiter: str, comment: str | None
                   ) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, cells)`` of the non-blank rows of a CSV file (cells stripped)."""
    from miaudit.data.datasets import read_text

    if not path.is_file():
        raise DataError(f"tabular file {path} does not exist; check the path")
    reader = csv.reader(io.StringIO(read_text(path, "CSV file"), newline=""), delimiter=delimiter)
    rows = [(i, [c.strip() for c in row]) for i, row in enumerate(reader, start=1)
            if any(c.strip() for c in row) and not (comment and row[0].lstrip().startswith(comment))]
    if header:
        if not rows:
            raise DataError(f"{path} is empty; it needs a header row and data rows")
        names, rows = rows[0][1], rows[1:]
        if columns:
            raise ConfigError("dataset option 'columns': only for files without a header row (header: false); the "
                              f"header of {path} names the columns")
    else:
        if not columns:
            raise ConfigError(f"dataset option 'columns': {path} has no header row (header: false), so list its "
                              "column names in order")
        names = columns
    if not rows:
        raise DataError(f"{path} has no data rows")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"{path}: column {duplicated[0]!r} appears twice; give every column its own name")
    for line, cells in rows:
        if len(cells) != len(names):
            where = "the header has" if header else "'columns' lists"
            raise DataError(f"{path} line {line} has {len(cells)} cells but {where} {len(names)}; fix the row or the "
                            "column list (or set 'delimiter')")
    return names, rows


def _read_csv(path: Path, *, header: bool, columns: list[str], delimiter: str, comment: str | None,
              missing: set[str]) -> dict[str, list[Any]]:
    """Column name -> cells (``None`` where missing)."""
    names, rows = _read_csv_rows(path, header=header, columns=columns, delimiter=delimiter, comment=comment)
    return {name: [None if cells[j] in missing else cells[j] for _, cells in rows] for j, name in enumerate(names)}


def _read_parquet(path: Path, *, header: bool, columns: list[str]) -> dict[str, list[Any]]:
    if not header or columns:
        raise ConfigError(f"dataset options 'header' / 'columns': {path} is a Parquet file, which names its "
                          "columns itself; remove them")
    return read_parquet_columns(path)


def read_parquet_columns(path: Path) -> dict[str, list[Any]]:
    """Column name -> values (``None`` where null) of a Parquet file; errors name a missing, damaged or empty one."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading Parquet files needs pyarrow: pip install 'miaudit[tabular]'") from None
    if not path.is_file():
        raise DataError(f"file {path} does not exist; check the path")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for damaged files
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(f"cannot read {path} as Parquet ({type(exc).__name__}: {first})") from None
    if table.num_rows == 0:
        raise DataError(f"{path} has no data rows")
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _is_missing(value: Any, missing: set[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in missing


def _as_number(value: Any) -> float | None:
    """``value`` as a float (``"inf"`` and ``"nan"`` included: the caller refuses them), or ``None`` for text."""
    if isinstance(value, (bool, int, float, np.number)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def normalise_label(value: Any) -> str:
    """A label as text without surrounding whitespace and trailing dots (``" <=50K. "`` -> ``"<=50K"``)."""
    text = str(value).strip()
    while text.endswith("."):
        text = text[:-1].rstrip()
    return text or str(value).strip()


def _labels(raw: list[Any], where: str) -> tuple[np.ndarray, list[str] | None, list[str]]:
    """Class indices ``(n,)``, class names (or ``None`` for integer labels) and notes about merged spellings."""
    from miaudit.data.datasets import check_class_labels

    blank = [i for i, v in enumerate(raw) if v is None or (isinstance(v, float) and np.isnan(v))]
    if blank:
        raise DataError(f"{where}: {len(blank)} rows have no label (the first is data row {blank[0] + 1}); remove "
                        "them or fill the label")
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and float(v).is_integer() for v in raw):
        y = np.asarray(raw).astype(np.int64)  # numbers in a Parquet column
        if y.min() >= 0:
            check_class_labels(y, where)
            return y, None, []
    text = [normalise_label(v) for v in raw]
    notes = []
    spellings: dict[str, set[str]] = {}
    for original, clean in zip(raw, text):
        spellings.setdefault(clean, set()).add(str(original))
    for clean, seen in sorted(spellings.items()):
        if len(seen) > 1:
            shown = " and ".join(repr(s) for s in sorted(seen))
            notes.append(f"{where}: label spellings {shown} differ only by whitespace or trailing dots; read as one "
                         f"class {clean!r}")
    if all(t.isdigit() for t in text):
        y = np.asarray([int(t) for t in text], dtype=np.int64)
        check_class_labels(y, where)
        return y, None, notes
    names = sorted(set(text))
    lookup = {name: i for i, name in enumerate(names)}
    y = np.asarray([lookup[t] for t in text], dtype=np.int64)
    check_class_labels(y, where)
    return y, names, notes


def _column_kind(name: str, values: list[Any], declared: str | None, where: str) -> tuple[str, np.ndarray]:
    """The column's kind and its values: float64 with NaN (numeric) or object of str / None (categorical)."""
    present = [v for v in values if v is not None]
    if not present:
        raise DataError(f"{where}: column {name!r} has no values at all; drop it (option 'drop')")
    if declared != CATEGORICAL:
        numbers = [None if v is None else _as_number(v) for v in values]
        if all(n is not None for n, v in zip(numbers, values) if v is not None):
            row = next((i for i, n in enumerate(numbers) if n is not None and not np.isfinite(n)), None)
            if row is not None:
                raise DataError(f"{where}: column {name!r} holds the non-finite number {values[row]!r} (data row "
                                f"{row}, counted from 0); fix the cell, or list its spelling in the dataset option "
                                "'missing' to impute it")
            return NUMERIC, np.array([np.nan if n is None else n for n in numbers], dtype=np.float64)
        if declared == NUMERIC:
            bad = next(v for v, n in zip(values, numbers) if v is not None and n is None)
            raise DataError(f"{where}: column {name!r} is declared numeric but holds {bad!r}; fix the value, add it to "
                            "'missing', or declare the column categorical")
    column = np.empty(len(values), dtype=object)
    column[:] = [None if v is None else str(v).strip() for v in values]
    return CATEGORICAL, column


def _kind_notes(name: str, kind: str, declared: str | None, values: list[Any], where: str) -> list[str]:
    """What the reader noticed about a feature column that a model could misuse: a record id kept as a feature,
    numbers read as categories because of a few text cells, a category per row (one-hot: memorisable)."""
    present = [v for v in values if v is not None]
    if _looks_like_record_ids(name, values):
        return [f"{where}: feature column {name!r} holds a distinct value in every row, like a record id, and a "
                "model can memorise it; if it is one, give it as dataset option id (or drop it)"]
    if kind != CATEGORICAL:
        return []
    text_cells = [str(v).strip() for v in present if _as_number(v) is None]
    if declared is None and 0 < len(text_cells) <= len(present) * (1 - MOSTLY_NUMERIC):
        text = sorted(set(text_cells))
        shown = ", ".join(repr(t) for t in text[:3]) + (", ..." if len(text) > 3 else "")
        return [f"{where}: column {name!r} is read as categorical because of {len(text_cells)} non-numeric cell(s) "
                f"({shown}) among numbers; if it is numeric, fix them or list them in the dataset option 'missing'"]
    distinct = len({str(v).strip() for v in present})
    if distinct > HIGH_CARDINALITY * len(present) and distinct > 20:
        return [f"{where}: categorical column {name!r} has {distinct} distinct values in {len(present)} rows; "
                "one-hot encoded, it gives nearly every record a feature of its own, which a model can memorise; "
                "drop it unless it is meant as a feature"]
    return []


def read_table(path: str | Path, *, label: str = "label", header: bool = True, columns: list[str] | None = None,
               categorical: list[str] | None = None, numeric: list[str] | None = None, drop: list[str] | None = None,
               missing: list[str] | None = None, delimiter: str | None = None, comment: str | None = None,
               format: str | None = None, append: list[str] | None = None, group: str | None = None,
               id: str | None = None) -> Table:
    """Read a CSV / Parquet file (and the files in ``append``, same columns) into a :class:`Table`.

    ``label``: the class column; ``header=False`` with ``columns`` (the names, in order) for CSV
    files without a header row; ``categorical`` / ``numeric``: declared column kinds (others are
    detected); ``drop``: columns left out; ``missing``: cells read as missing (default ``"?"`` and
    empty); ``delimiter``: default ``","`` (tab for ``.tsv``); ``comment``: lines starting with it
    are skipped (e.g. ``"|"``); ``format``: "csv" or "parquet" when the suffix does not say;
    ``group``: a column of group ids (rows of one person, one household), not a feature: evaluation
    then resamples whole groups (cluster bootstrap); ``id``: a column of record ids (one per row, none
    repeated), not a feature: the ids of the scores files (else the row numbers over all files read).
    A feature column that is named like an id and holds a distinct value in every row is kept, with a
    note that suggests ``id`` or ``drop`` (a model can memorise it).
    """
    path = Path(path)
    files = [path] + [Path(p) for p in _names(append, "append")]
    if not isinstance(header, bool):
        raise ConfigError(f"dataset option 'header': expected true or false, got {header!r}")
    names_given, categorical_names, numeric_names, dropped = (_names(columns, "columns"),
                                                              _names(categorical, "categorical"),
                                                              _names(numeric, "numeric"), _names(drop, "drop"))
    both = sorted(set(categorical_names) & set(numeric_names))
    if both:
        raise ConfigError(f"dataset options: column {both[0]!r} is declared both categorical and numeric")
    missing_cells = set(DEFAULT_MISSING if missing is None else _names(missing, "missing"))
    merged: dict[str, list[Any]] = {}
    for file in files:
        kind = tabular_format(file, format)
        if kind is None:
            raise DataError(f"cannot tell the format of {file}: use a .csv / .tsv / .parquet suffix or the dataset "
                            "option format: csv | parquet")
        if kind == "csv":
            sep = delimiter if delimiter is not None else ("\t" if file.suffix.lower() == ".tsv" else ",")
            data = _read_csv(file, header=header, columns=names_given, delimiter=sep, comment=comment,
                                missing=missing_cells)
        else:
            data = _read_parquet(file, header=header, columns=names_given)
        if merged and list(data) != list(merged):
            raise DataError(f"{file} has columns {', '.join(data)} but {files[0]} has {', '.join(merged)}; appended "
                            "files need the same columns in the same order")
        for name, values in data.items():
            merged.setdefault(name, []).extend(None if _is_missing(v, missing_cells) else v for v in values)
    where = " + ".join(str(f) for f in files)
    available = list(merged)
    for key, column in (("group", group), ("id", id)):
        if column is not None and (not isinstance(column, str) or column == label):
            raise ConfigError(f"dataset option {key!r}: give one column name other than the label, got {column!r}")
    if group is not None and group == id:
        raise ConfigError(f"dataset options 'group' and 'id' name the same column {group!r}; a group holds several "
                          "records, an id one")
    for key, names in (("label", [label]), ("categorical", categorical_names), ("numeric", numeric_names),
                       ("drop", dropped), ("group", [group] if group else []), ("id", [id] if id else [])):
        unknown = [n for n in names if n not in available]
        if unknown:
            raise DataError(f"{where} has no column {unknown[0]!r} (dataset option {key!r}); columns: "
                            f"{', '.join(available)}")
    y, class_names, notes = _labels(merged.pop(label), f"{where} column {label!r}")
    groups = None
    if group:
        cells = merged.pop(group)
        if any(v is None for v in cells):
            raise DataError(f"{where}: column {group!r} (the group ids) has missing cells; every row needs its group")
        groups = np.array([str(v).strip() for v in cells])
    ids = np.arange(len(y)) if id is None else _record_ids(merged.pop(id), id, where)
    features, kinds = {}, {}
    for name, values in merged.items():
        if name in dropped:
            continue
        declared = CATEGORICAL if name in categorical_names else NUMERIC if name in numeric_names else None
        kinds[name], features[name] = _column_kind(name, values, declared, where)
        notes += _kind_notes(name, kinds[name], declared, values, where)
        n_missing = sum(v is None for v in values)
        if n_missing:
            notes.append(f"{where}: column {name!r} has {n_missing} missing cells, imputed with the "
                         f"{'median' if kinds[name] == NUMERIC else 'most frequent value'} of the target's "
                         "training rows")
    if not features:
        raise DataError(f"{where} has no feature columns besides the label {label!r}")
    return Table(features, kinds, y, class_names, path.stem, ids, notes, groups)


def _record_ids(cells: list[Any], column: str, where: str) -> np.ndarray:
    """The ``id`` column's cells as strings: a :class:`DataError` for a missing or repeated id."""
    ids = ["" if v is None else str(v).strip() for v in cells]
    if "" in ids:
        raise DataError(f"{where}: data row {ids.index('')} (counted from 0) has no id in column {column!r}; every "
                        "row needs its own id")
    repeat = first_repeated_id(ids)
    if repeat is not None:
        first, row, rid = repeat
        raise DataError(f"{where}: data rows {first} and {row} (counted from 0) share the id {rid!r} in column "
                        f"{column!r}; ids must name one record each (for rows of one person use dataset option group)")
    return np.array(ids)


#: a column whose values are numbers in at least this fraction of its cells is noted when a few text cells make
#: it categorical
MOSTLY_NUMERIC = 0.9
#: a categorical column with distinct values in more than this fraction of its cells is noted (memorisable)
HIGH_CARDINALITY = 0.5
#: column names (lower case) that usually hold record ids rather than features
_ID_NAMES = ("id", "uid", "uuid", "index", "row", "record")


def _looks_like_record_ids(name: str, values: list[Any]) -> bool:
    """Whether a column is named like an id (``id``, ``row``, ``*_id``, ...) and holds a distinct value in every row."""
    key = name.strip().lower()
    named = key in _ID_NAMES or key.endswith(("_id", " id", "-id"))
    return named and len(values) > 1 and None not in values and len({str(v) for v in values}) == len(values)


# -- preprocessing ------------------------------------------------------------------------------
class TabularPreprocessor:
    """One fitted scikit-learn ``ColumnTransformer`` turning a :class:`Table` into ``(n, d)`` float32 features.

    Numeric columns: median imputation, then standardisation when ``scale`` (mean and standard
    deviation of the rows it was fitted on). Categorical columns: most-frequent imputation, then
    one-hot encoding (sorted categories, named ``"column=value"``; a category it never saw
    becomes all zeros). Fit it with :meth:`fit` on the target's training rows only.
    """

    def __init__(self, transformer: Any, numeric: list[str], categorical: list[str], *, scale: bool,
                 fitted_rows: int, name: str):
        self.transformer = transformer
        self.numeric = numeric
        self.categorical = categorical
        self.scale = scale
        self.fitted_rows = fitted_rows
        self.name = name

    @staticmethod
    def _matrix(table: Table, names: list[str]) -> np.ndarray:
        """``(n, len(names))`` object matrix: floats (NaN missing) and strings (NaN missing) for scikit-learn."""
        out = np.empty((len(table), len(names)), dtype=object)
        for j, name in enumerate(names):
            column = table.features[name]
            out[:, j] = column if column.dtype != object else [np.nan if v is None else v for v in column]
        return out

    @classmethod
    def fit(cls, table: Table, rows: np.ndarray | None = None, *, scale: bool = True) -> TabularPreprocessor:
        """Fit on ``table`` rows ``rows`` (all rows when ``None``)."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        if not isinstance(scale, bool):
            raise ConfigError(f"dataset option 'scale': expected true or false, got {scale!r}")
        fitted = table if rows is None else table.subset(rows)
        numeric = [n for n, k in table.kinds.items() if k == NUMERIC]
        categorical = [n for n, k in table.kinds.items() if k == CATEGORICAL]
        names = numeric + categorical
        parts = []
        if numeric:
            steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
            if scale:
                steps.append(("scale", StandardScaler()))
            parts.append((NUMERIC, Pipeline(steps), list(range(len(numeric)))))
        if categorical:
            parts.append((CATEGORICAL, Pipeline([
                ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)),
            ]), list(range(len(numeric), len(names)))))
        transformer = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "skipping features without observed values": kept as 0
            transformer.fit(cls._matrix(fitted, names))
        return cls(transformer, numeric, categorical, scale=scale, fitted_rows=len(fitted), name=table.name)

    @property
    def feature_names(self) -> list[str]:
        """Names of the ``d`` output features: numeric column names, then ``"column=value"``."""
        names = list(self.numeric)
        if self.categorical:
            encoder = self.transformer.named_transformers_[CATEGORICAL].named_steps["one_hot"]
            for column, categories in zip(self.categorical, encoder.categories_):
                names.extend(f"{column}={c}" for c in categories)
        return names

    def transform(self, table: Table) -> Any:
        """The :class:`~miaudit.data.ArrayDataset` of ``table``: ``x`` ``(n, d)`` float32, its labels and ids."""
        from miaudit.data.datasets import ArrayDataset

        missing = [n for n in self.numeric + self.categorical if n not in table.features]
        if missing:
            raise DataError(f"{table.name} lacks column {missing[0]!r} that the preprocessing was fitted with")
        x = self.transformer.transform(self._matrix(table, self.numeric + self.categorical))
        return ArrayDataset(np.asarray(x, dtype=np.float32), table.y, n_classes=table.n_classes, name=table.name,
                            ids=table.ids, class_names=table.class_names, feature_names=self.feature_names,
                            groups=table.groups)

    def describe(self) -> dict[str, Any]:
        """What the pipeline does, with every fitted value (JSON-ready): imputed values, means, scales, categories."""
        out: dict[str, Any] = {"fitted_on_rows": self.fitted_rows, "scale": self.scale,
                               "n_features": len(self.feature_names), "numeric": {}, "categorical": {}}
        if self.numeric:
            steps = self.transformer.named_transformers_[NUMERIC].named_steps
            medians = steps["impute"].statistics_
            scaler = steps.get("scale")
            for j, name in enumerate(self.numeric):
                entry = {"impute": float(medians[j])}
                if scaler is not None:
                    entry.update(mean=float(scaler.mean_[j]), scale=float(scaler.scale_[j]))
                out["numeric"][name] = entry
        if self.categorical:
            steps = self.transformer.named_transformers_[CATEGORICAL].named_steps
            for j, name in enumerate(self.categorical):
                out["categorical"][name] = {"impute": str(steps["impute"].statistics_[j]),
                                            "categories": [str(c) for c in steps["one_hot"].categories_[j]]}
        out["feature_names"] = self.feature_names
        return out

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``preprocessing.json`` (readable, every fitted value) and ``preprocessing.joblib`` (the fitted
        ``ColumnTransformer``: a pickle, load it only from a run you made) into ``folder``."""
        import joblib

        from miaudit.utils.atomic import atomic_write, write_text_atomic

        folder = Path(folder)
        readable = write_text_atomic(folder / "preprocessing.json", json.dumps(self.describe(), indent=1))
        fitted = atomic_write(folder / "preprocessing.joblib", lambda handle: joblib.dump(self.transformer, handle))
        return [readable, fitted]


def tabular_options() -> list[str]:
    """The dataset options of a tabular source: :func:`read_table`'s and the preprocessor's ``scale``."""
    return [p.name for p in inspect.signature(read_table).parameters.values() if p.kind == p.KEYWORD_ONLY] + ["scale"]


def load_tabular(path: str | Path, *, scale: bool = True, **options: Any) -> Any:
    """A tabular file as an :class:`~miaudit.data.ArrayDataset`, preprocessed with a pipeline fitted on ALL its
    rows (Python convenience; an audit fits it on the target's training rows only). ``options``: :func:`read_table`'s;
    ``scale``: standardise numeric columns."""
    table = read_table(path, **options)
    for note in table.notes:
        warnings.warn(note, TabularWarning, stacklevel=2)
    return TabularPreprocessor.fit(table, scale=scale).transform(table)


__all__ = ["DEFAULT_MISSING", "TABULAR_FORMATS", "TABULAR_SUFFIXES", "Table", "TabularPreprocessor", "TabularWarning",
           "load_tabular", "normalise_label", "read_table", "tabular_format", "tabular_options"]
