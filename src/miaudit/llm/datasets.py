"""Text membership datasets: WikiMIA, ArxivMIA, MIMIR and generic JSONL / CSV / text files.

Every loader returns a :class:`TextDataset` (texts, labels with 1 = member, ids). Bad input is a
:class:`~miaudit.errors.DataError` naming the file, the row and the fix: a file that is not UTF-8,
a missing text or label column, a label that is not 0/1, an empty or whitespace-only text. Empty
texts can instead be skipped (``on_empty="skip"``); each skipped row is recorded with its reason in
``TextDataset.skipped``.

Formats:

- WikiMIA (Shi et al. 2023): JSONL with ``input`` and ``label`` (``WikiMIA_length{32,64,128,256}.jsonl``).
- ArxivMIA (Liu et al. 2024): JSONL with ``text`` and ``label`` (``arxiv_mia{,_dev,_test}.jsonl``).
- MIMIR (Duan et al. 2024): members and non-members in two JSONL files, one document per line as a
  JSON string or an object; or a folder holding ``member/`` + ``nonmember/`` (or MIMIR's cache layout
  ``train/`` + ``test/``) sub-folders with a file of the same name in each.
- Generic: ``.jsonl`` / ``.json`` (list of objects) / ``.csv`` / ``.tsv`` / ``.parquet`` (pyarrow: the
  ``tabular`` extra) with chosen text and label columns, or two plain-text files of members and
  non-members (one document per line, or per blank-line-separated paragraph).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from miaudit.data.datasets import find_data_file, first_repeated_id
from miaudit.data.rows import TABLE_FORMATS, is_table, read_jsonl, read_rows, read_text_file
from miaudit.errors import DataError
from miaudit.utils.fingerprint import fingerprint

OnEmpty = Literal["error", "skip"]
WIKIMIA_LENGTHS = (32, 64, 128, 256)
ARXIVMIA_SPLITS = {"all": "arxiv_mia.jsonl", "dev": "arxiv_mia_dev.jsonl", "test": "arxiv_mia_test.jsonl"}


@dataclass
class TextDataset:
    """Documents with membership ground truth.

    ``texts``: ``n`` strings; ``labels``: ``(n,)`` int64, 1 = member, 0 = non-member;
    ``ids``: ``(n,)`` str, stable identifiers (``<file stem>:<row>``); ``skipped``: ``(id, reason)``
    for every row left out; ``groups``: ``(n,)`` str group ids of documents that are not independent
    (passages of one paper, one book), or None: the blind baseline then cross-validates by group and
    the bootstrap resamples whole groups.
    """

    texts: list[str]
    labels: np.ndarray
    ids: np.ndarray
    name: str = "text"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=str)
        if not (len(self.texts) == self.labels.shape[0] == self.ids.shape[0]):
            raise DataError(f"dataset {self.name!r}: {len(self.texts)} texts, {self.labels.shape[0]} labels and "
                            f"{self.ids.shape[0]} ids must have the same length")
        if self.labels.size and not np.isin(self.labels, (0, 1)).all():
            raise DataError(f"dataset {self.name!r}: labels must be 0 (non-member) or 1 (member)")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=str)
            if self.groups.shape != self.labels.shape:
                raise DataError(f"dataset {self.name!r}: {self.groups.shape[0]} group ids for {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | np.ndarray) -> TextDataset:
        """The rows ``index`` (integer positions or a boolean mask), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return TextDataset([self.texts[i] for i in index], self.labels[index], self.ids[index], self.name,
                           groups=None if self.groups is None else self.groups[index])

    def fingerprint(self) -> str:
        """Content fingerprint of the texts (in order); labels do not change model outputs."""
        return fingerprint(self.texts)

    def repeated_text_warnings(self) -> list[str]:
        """Warnings for documents whose text (whitespace-normalised) appears more than once: under both labels
        their ground truth is ambiguous; under one label they count twice in every figure."""
        first: dict[str, int] = {}
        across, within = [], []
        for i, text in enumerate(self.texts):
            key = " ".join(text.split())
            if key not in first:
                first[key] = i
            elif self.labels[first[key]] != self.labels[i]:
                across.append((self.ids[first[key]], self.ids[i]))
            else:
                within.append((self.ids[first[key]], self.ids[i]))
        out = []
        if across:
            out.append(f"dataset {self.name!r}: {len(across)} documents have the text of a document with the other "
                       f"label (e.g. {across[0][0]} and {across[0][1]}); their ground truth is ambiguous: remove them")
        if within:
            out.append(f"dataset {self.name!r}: {len(within)} documents repeat the text of another with the same "
                       f"label (e.g. {within[0][0]} and {within[0][1]}) and count twice in every figure; remove the "
                       "copies unless the repetition is intended")
        return out

    def require_both_classes(self) -> None:
        n_members = int(self.labels.sum())
        if n_members == 0 or n_members == len(self):
            raise DataError(f"dataset {self.name!r} has {n_members} members and {len(self) - n_members} non-members; "
                            "a membership audit needs both")


# -- reading files --------------------------------------------------------------------------------

def parse_label(value: Any, where: str) -> int:
    """0/1, booleans and the strings 0/1, true/false, member/nonmember (non-member) as 0 or 1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "").replace("_", "")
        if key in ("1", "true", "member", "yes"):
            return 1
        if key in ("0", "false", "nonmember", "no"):
            return 0
    raise DataError(f"{where}: label {value!r} is not 0/1 (or true/false, member/nonmember); fix the label column")


def _collect(records: Iterable[tuple[str, Any, int] | tuple[str, Any, int, str]], *, name: str,
             on_empty: OnEmpty) -> TextDataset:
    """Build a dataset from ``(id, text, label)`` triples (or ``(id, text, label, group)``), checking every text."""
    texts, labels, ids, skipped, groups = [], [], [], [], []
    for rid, text, label, *group in records:
        if text is not None and not isinstance(text, str):
            raise DataError(f"{name} row {rid}: text is a {type(text).__name__} ({text!r:.40}), expected a string")
        if text is None or not text.strip():
            what = "missing (null)" if text is None else "empty or whitespace-only"
            if on_empty == "skip":
                skipped.append((rid, f"{what} text"))
                continue
            raise DataError(f"{name} row {rid}: text is {what}; remove the row or pass on_empty='skip'")
        texts.append(text)
        labels.append(label)
        ids.append(rid)
        groups += group
    if not texts:
        raise DataError(f"dataset {name!r} holds no usable documents")
    return TextDataset(texts, np.asarray(labels, dtype=np.int64), np.asarray(ids), name, skipped,
                       groups=np.asarray(groups, dtype=str) if groups else None)


def load_table(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    on_empty: OnEmpty = "error",
    name: str | None = None,
    group_column: str | None = None,
    id_column: str | None = None,
) -> TextDataset:
    """A JSONL / JSON / CSV / TSV / Parquet file with a text column, a 0/1 label column and, with ``group_column``, a
    column of group ids (documents sharing one are not independent: passages of one paper).

    Documents are identified by ``<file stem>:<row>`` (rows counted from 0, header excluded), or with
    ``id_column`` by that column's values (one per document, none repeated): the ids in the scores files
    and the report are then the user's own."""
    path = Path(path)
    rows = read_rows(path, other="or two plain-text files of members and non-members")
    optional = tuple(c for c in (group_column, id_column) if c)
    columns = (text_column, label_column) + optional
    for column in columns:
        if column not in rows[0]:
            raise DataError(f"{path} has no column {column!r}; available columns: {', '.join(map(str, rows[0]))}. "
                            "Choose the columns with text_column= / label_column= / group_column= / id_column=")
    name = name or path.stem
    if id_column:
        check_unique_ids(path, rows, id_column)

    def records():
        for i, row in enumerate(rows):
            missing = [c for c in columns if c not in row or (c in optional and not str(row[c] or "").strip())]
            if missing:
                raise DataError(f"{path} row {i} has no {missing[0]!r} value")
            rid = document_id(row[id_column]) if id_column else f"{path.stem}:{i}"
            record = (rid, row[text_column], parse_label(row[label_column], f"{path} row {i}"))
            yield record + ((str(row[group_column]),) if group_column else ())

    return _collect(records(), name=name, on_empty=on_empty)


def check_unique_ids(path: Path, rows: list[dict[str, Any]], id_column: str) -> None:
    """A :class:`DataError` naming the first id of ``id_column`` that two rows share (a missing id is reported,
    with its row, when the row is read)."""
    repeat = first_repeated_id(row.get(id_column) for row in rows)
    if repeat is not None:
        first, row, rid = repeat
        raise DataError(f"{path}: rows {first} and {row} share the id {rid!r} in column {id_column!r}; ids must "
                        "name one document each (fix the file, or leave id_column out to number the rows)")


def document_id(value: Any) -> str:
    """A document id from an id column's cell, as text without surrounding whitespace."""
    return str(value).strip()


def read_corpus(path: str | Path, *, text_column: str = "text") -> list[str]:
    """Unlabelled texts (e.g. a reference corpus): the ``text_column`` of a table
    (:data:`miaudit.data.rows.TABLE_SUFFIXES`), or the non-blank lines of any other (UTF-8 text) file."""
    path = Path(path)
    if not is_table(path):
        texts = [line for line in read_text_file(path).splitlines() if line.strip()]
    else:
        rows = read_rows(path)
        if text_column not in rows[0]:
            raise DataError(f"{path} has no column {text_column!r}; available columns: {', '.join(map(str, rows[0]))}")
        texts = [row[text_column] for row in rows if isinstance(row.get(text_column), str) and row[text_column].strip()]
    if not texts:
        raise DataError(f"{path} holds no non-empty text")
    return texts


# -- named benchmarks ----------------------------------------------------------------------------

def load_wikimia(length: int | str | Path = 32, *, data_dir: str | Path | None = None,
                 on_empty: OnEmpty = "error", group_column: str | None = None,
                 id_column: str | None = None) -> TextDataset:
    """WikiMIA (Shi et al. 2023): ``length`` in 32/64/128/256 from the data folder, or a JSONL path."""
    if str(length) in map(str, WIKIMIA_LENGTHS):
        path = find_data_file(f"wikimia/WikiMIA_length{length}.jsonl", data_dir)
    else:
        path = Path(str(length))
        if not path.is_file():
            raise DataError(f"WikiMIA length or file {str(length)!r} not found; choose one of {WIKIMIA_LENGTHS} "
                            "or give the path of a JSONL file")
    return load_table(path, text_column="input", label_column="label", on_empty=on_empty,
                      name=f"wikimia_{path.stem.split('length')[-1]}", group_column=group_column,
                      id_column=id_column)


def load_arxivmia(split: str | Path = "all", *, data_dir: str | Path | None = None,
                  on_empty: OnEmpty = "error", group_column: str | None = None,
                  id_column: str | None = None) -> TextDataset:
    """ArxivMIA (Liu et al. 2024): ``split`` in all/dev/test from the data folder, or a JSONL path."""
    if str(split) in ARXIVMIA_SPLITS:
        path = find_data_file(f"arxivmia/{ARXIVMIA_SPLITS[str(split)]}", data_dir)
    else:
        path = Path(str(split))
        if not path.is_file():
            raise DataError(f"ArxivMIA split or file {str(split)!r} not found; choose one of "
                            f"{', '.join(ARXIVMIA_SPLITS)} or give the path of a JSONL file")
    return load_table(path, text_column="text", label_column="label", on_empty=on_empty, name=f"arxivmia_{path.stem}",
                      group_column=group_column, id_column=id_column)


def _mimir_texts(path: Path, text_key: str) -> list[Any]:
    out = []
    for i, row in enumerate(read_jsonl(path)):
        if isinstance(row, dict):
            if text_key not in row:
                raise DataError(f"{path} line {i + 1} has no key {text_key!r} (keys: {', '.join(row)}); pass text_key=")
            row = row[text_key]
        out.append(row)
    return out


def _mimir_pair(folder: Path, file_name: str | None) -> tuple[Path, Path]:
    for member_dir, nonmember_dir in (("member", "nonmember"), ("train", "test")):
        m, n = folder / member_dir, folder / nonmember_dir
        if m.is_dir() and n.is_dir():
            break
    else:
        raise DataError(f"MIMIR folder {folder} needs sub-folders member/ and nonmember/ (or train/ and test/)")
    if file_name is None:
        names = sorted(p.name for p in m.glob("*.jsonl"))
        if len(names) != 1:
            raise DataError(f"{m} holds {len(names)} JSONL files ({', '.join(names) or 'none'}); choose one with "
                            "file_name=")
        file_name = names[0]
    if not file_name.endswith(".jsonl"):
        file_name += ".jsonl"
    return m / file_name, n / file_name


def load_mimir(members: str | Path, nonmembers: str | Path | None = None, *, file_name: str | None = None,
               text_key: str = "text", on_empty: OnEmpty = "error") -> TextDataset:
    """MIMIR (Duan et al. 2024) member / non-member JSONL files, or a folder in MIMIR's layout."""
    members = Path(members)
    if nonmembers is None:
        if not members.is_dir():
            raise DataError(f"{members} is not a folder; give MIMIR's folder or both members= and nonmembers= files")
        members, nonmembers = _mimir_pair(members, file_name)
    nonmembers = Path(nonmembers)
    member_texts, nonmember_texts = _mimir_texts(members, text_key), _mimir_texts(nonmembers, text_key)
    records = [(f"member:{i}", t, 1) for i, t in enumerate(member_texts)]
    records += [(f"nonmember:{i}", t, 0) for i, t in enumerate(nonmember_texts)]
    return _collect(records, name=f"mimir_{members.stem}", on_empty=on_empty)


def _split_documents(text: str, separator: str) -> list[str]:
    """Non-blank documents: one per line, or one per block of lines between blank lines."""
    if separator == "line":
        return [line for line in text.splitlines() if line.strip()]
    if separator == "blank_line":
        blocks, block = [], []
        for line in text.splitlines() + [""]:
            if line.strip():
                block.append(line)
            elif block:
                blocks.append("\n".join(block))
                block = []
        return blocks
    raise DataError(f"unknown separator {separator!r}; choose 'line' or 'blank_line'")


def load_text_files(members: str | Path, nonmembers: str | Path, *, separator: str = "line") -> TextDataset:
    """Two plain-text files, one document per line (``separator="line"``) or per paragraph
    (``"blank_line"``); blank lines only separate documents."""
    records = []
    for path, label, tag in ((Path(members), 1, "member"), (Path(nonmembers), 0, "nonmember")):
        docs = _split_documents(read_text_file(path), separator)
        if not docs:
            raise DataError(f"{path} holds no documents (only blank lines)")
        records += [(f"{tag}:{i}", d, label) for i, d in enumerate(docs)]
    return _collect(records, name=f"text_{Path(members).stem}", on_empty="error")


def load_text_dataset(
    source: str,
    *,
    path: str | None = None,
    members: str | None = None,
    nonmembers: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    file_name: str | None = None,
    separator: str = "line",
    data_dir: str | Path | None = None,
    on_empty: OnEmpty = "error",
    group_column: str | None = None,
    id_column: str | None = None,
) -> TextDataset:
    """Dispatch on ``source``: ``wikimia`` (``path`` = length or file), ``arxivmia`` (``path`` = split or
    file), ``mimir`` (``members`` [+ ``nonmembers``]), ``table`` (``path`` with text/label columns) or
    ``text`` (``members`` + ``nonmembers`` plain-text files). ``group_column`` names a column of group ids,
    ``id_column`` one of document ids (wikimia, arxivmia, table)."""
    for key, column in (("group_column", group_column), ("id_column", id_column)):
        if column and source in ("mimir", "text"):
            raise DataError(f"source {source!r} has no columns; {key} needs wikimia, arxivmia or table")
    if source == "wikimia":
        return load_wikimia(path or 32, data_dir=data_dir, on_empty=on_empty, group_column=group_column,
                            id_column=id_column)
    if source == "arxivmia":
        return load_arxivmia(path or "all", data_dir=data_dir, on_empty=on_empty, group_column=group_column,
                             id_column=id_column)
    if source == "mimir":
        if members is None:
            raise DataError("source 'mimir' needs members= (a folder, or a JSONL file together with nonmembers=)")
        return load_mimir(members, nonmembers, file_name=file_name, text_key=text_column, on_empty=on_empty)
    if source == "table":
        if path is None:
            raise DataError(f"source 'table' needs path= (a {TABLE_FORMATS} file)")
        return load_table(path, text_column=text_column, label_column=label_column, on_empty=on_empty,
                          group_column=group_column, id_column=id_column)
    if source == "text":
        if members is None or nonmembers is None:
            raise DataError("source 'text' needs members= and nonmembers= plain-text files")
        return load_text_files(members, nonmembers, separator=separator)
    raise DataError(f"unknown text dataset source {source!r}; choose wikimia, arxivmia, mimir, table or text")


__all__ = [
    "TextDataset", "check_unique_ids", "document_id", "load_arxivmia", "read_corpus", "load_mimir", "load_table",
    "load_text_dataset", "load_text_files", "load_wikimia", "parse_label", "read_jsonl",
]
