"""Records with named columns, from the file formats users hand over: JSONL, JSON, CSV, TSV and Parquet.

:func:`read_rows` gives a list of ``{column: value}`` records; every problem is a one-line
:class:`~miaudit.errors.DataError` naming the file (a missing file, text that is not UTF-8, a line
that is not JSON, a record that is not an object, no records at all). Parquet needs pyarrow (the
``tabular`` extra). Kinds choose the columns they need from the records.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from miaudit.data.datasets import read_text
from miaudit.data.tabular import read_parquet_columns
from miaudit.errors import DataError

#: suffixes of files with named columns
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".pq")
TABLE_FORMATS = ".jsonl, .json, .csv, .tsv or .parquet"


def is_table(path: Path) -> bool:
    """True for a file whose records sit in named columns (by its suffix)."""
    return path.suffix.lower() in TABLE_SUFFIXES


def read_text_file(path: Path) -> str:
    """A UTF-8 text file's content; an error naming a missing file or the line of the first bad byte."""
    if not path.is_file():
        raise DataError(f"file {path} does not exist; check the path")
    return read_text(path)


def read_jsonl(path: str | Path) -> list[Any]:
    """Parse a JSONL file (one JSON value per non-blank line)."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {lineno} is not valid JSON ({exc.msg}); each line must hold one JSON "
                            "object or string") from None
    if not rows:
        raise DataError(f"file {path} holds no records")
    return rows


def _json_records(path: Path) -> list[Any]:
    """A ``.json`` file's records: a JSON list, or one object per line (what Hugging Face ``datasets``'
    ``to_json`` writes under that suffix)."""
    text = read_text_file(path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return read_jsonl(path)
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path} must hold a JSON list of objects (or one object per line)")
    return rows


def read_rows(path: Path, *, other: str = "") -> list[dict[str, Any]]:
    """The records of a table (:data:`TABLE_SUFFIXES`), each a ``{column: value}`` dict; ``other`` adds what
    else the caller accepts to the error for an unsupported suffix (e.g. "or two plain-text files")."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = read_jsonl(path)
    elif suffix == ".json":
        rows = _json_records(path)
    elif suffix in (".csv", ".tsv"):
        text = read_text_file(path)
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","))
    elif suffix in (".parquet", ".pq"):
        columns = read_parquet_columns(path)
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    else:
        raise DataError(f"cannot read {path}: unsupported extension {suffix!r}; use {TABLE_FORMATS}"
                        + (f" ({other})" if other else ""))
    if not rows:
        raise DataError(f"file {path} holds no records")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path} record {i} is a {type(row).__name__}, expected an object with named columns")
    return rows


__all__ = ["TABLE_FORMATS", "TABLE_SUFFIXES", "is_table", "read_jsonl", "read_rows", "read_text_file"]
