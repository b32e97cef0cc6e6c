"""Real corpora grouped into users, for user-level audits of text-generation models.

A :class:`UserCorpus` is ``n_users`` lists of texts; each text is a whitespace-tokenised string.
Three groupings of real text are provided (each stated as such in reports):

- :func:`load_wikitext_users`: WikiText-2 articles cut into sentences; each *user* is a run of
  ``texts_per_user`` consecutive sentences of one article (contiguous chunks treated as users).
- :func:`load_shakespeare_users`: Tiny Shakespeare; each *user* is a speaker name (all plays
  pooled, so e.g. every "First Citizen" is one user), each text one of their speeches.
- :func:`load_table_users`: the user's own table (JSONL, JSON, CSV, TSV, Parquet) with one text per
  row and the id of the user who wrote it; each *user* is an id with enough texts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miaudit.data.datasets import read_text
from miaudit.data.rows import read_rows
from miaudit.errors import DataError

_ARTICLE = re.compile(r"^ = [^=].* = $")
_HEADING = re.compile(r"^ = .* = $")
_WORD = re.compile(r"[\w']+|[^\w\s]")


@dataclass
class UserCorpus:
    """``texts[u]`` are user ``user_ids[u]``'s texts (whitespace-tokenised strings).

    ``source`` says how the users were made (shown in reports).
    """

    user_ids: list[str]
    texts: list[list[str]]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.user_ids) != len(self.texts):
            raise DataError(f"{len(self.user_ids)} user ids but {len(self.texts)} text lists")
        if len(set(self.user_ids)) != len(self.user_ids):
            raise DataError("user ids must be unique")
        for uid, texts in zip(self.user_ids, self.texts):
            if not any(t.split() for t in texts):
                raise DataError(f"user {uid!r} has no texts; drop users without text before auditing")

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> UserCorpus:
        index = [int(i) for i in index]
        return UserCorpus([self.user_ids[i] for i in index], [self.texts[i] for i in index], self.source)

    def all_texts(self) -> list[str]:
        """Every text of every user, in user order (e.g. the training set of a model trained on these users)."""
        return [t for texts in self.texts for t in texts]

    @property
    def n_tokens(self) -> int:
        return sum(len(t.split()) for t in self.all_texts())


def _wikitext_articles(path: Path) -> list[tuple[str, list[str]]]:
    """``(title, sentences)`` per article of a WikiText file (sub-headings dropped, sentences split at ' . ')."""
    articles: list[tuple[str, list[str]]] = []
    for line in read_text(path, "corpus file").splitlines():
        if _ARTICLE.match(line):
            articles.append((line.strip(" ="), []))
        elif articles and line.strip() and not _HEADING.match(line):
            parts = line.strip().split(" . ")
            sentences = [p + " ." for p in parts[:-1]] + [parts[-1]]
            articles[-1][1].extend(s.lower() for s in sentences if len(s.split()) >= 3)
    return articles


def load_wikitext_users(paths: Sequence[str | Path], *, texts_per_user: int = 16) -> UserCorpus:
    """WikiText-2 files -> users of ``texts_per_user`` consecutive sentences of one article (remainders dropped)."""
    if texts_per_user < 1:
        raise DataError(f"texts_per_user must be >= 1, got {texts_per_user}")
    ids, texts = [], []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"WikiText file {path} does not exist; pass the path of e.g. wikitext2/valid.txt")
        for a, (title, sentences) in enumerate(_wikitext_articles(path)):
            for c in range(len(sentences) // texts_per_user):
                ids.append(f"{path.stem}:{a}:{title}#{c}")
                texts.append(sentences[c * texts_per_user:(c + 1) * texts_per_user])
    if not ids:
        raise DataError(f"no user has {texts_per_user} sentences in {', '.join(map(str, paths))}; is this WikiText?")
    return UserCorpus(ids, texts, f"WikiText-2 ({', '.join(Path(p).name for p in paths)}): each user is "
                                  f"{texts_per_user} consecutive sentences of one article")


def load_shakespeare_users(path: str | Path, *, min_texts: int = 10) -> UserCorpus:
    """Tiny Shakespeare -> one user per speaker name with at least ``min_texts`` speeches."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Tiny Shakespeare file {path} does not exist; pass the path of tinyshakespeare/input.txt")
    speeches: dict[str, list[str]] = defaultdict(list)
    for block in read_text(path, "corpus file").split("\n\n"):
        lines = block.strip().split("\n")
        if len(lines) >= 2 and lines[0].endswith(":"):
            words = _WORD.findall(" ".join(lines[1:]).lower())
            if words:
                speeches[lines[0][:-1]].append(" ".join(words))
    users = sorted(s for s, v in speeches.items() if len(v) >= min_texts)
    if not users:
        raise DataError(f"no speaker in {path} has {min_texts} speeches; lower min_texts")
    return UserCorpus(users, [speeches[u] for u in users],
                      f"Tiny Shakespeare: each user is a speaker name with >= {min_texts} speeches")


def load_table_users(path: str | Path, *, user_column: str = "user", text_column: str = "text",
                     min_texts: int = 10) -> UserCorpus:
    """A table with one text per row and its author in ``user_column`` -> one user per author with at least
    ``min_texts`` texts (all kept), each text lower-cased and split into words as Tiny Shakespeare's.

    A row without an author is an error naming the row; a row without words is skipped (counted in the
    corpus description)."""
    path = Path(path)
    rows = read_rows(path)
    for column, key in ((user_column, "user_column"), (text_column, "text_column")):
        if column not in rows[0]:
            raise DataError(f"{path} has no column {column!r}; available columns: {', '.join(map(str, rows[0]))}. "
                            f"Choose it with dataset.{key}")
    texts: dict[str, list[str]] = defaultdict(list)
    empty = 0
    for i, row in enumerate(rows):
        user, text = row.get(user_column), row.get(text_column)
        if user is None or not str(user).strip():
            raise DataError(f"{path} row {i} has no {user_column!r} value; every text needs the id of its user")
        if text is not None and not isinstance(text, str):
            raise DataError(f"{path} row {i}: text is a {type(text).__name__} ({text!r:.40}), expected a string")
        words = _WORD.findall((text or "").lower())
        if words:
            texts[str(user).strip()].append(" ".join(words))
        else:
            empty += 1
    users = sorted(u for u, v in texts.items() if len(v) >= min_texts)
    if not users:
        most = max((len(v) for v in texts.values()), default=0)
        raise DataError(f"no user in {path} has {min_texts} texts (the most any user has is {most}); lower "
                        "dataset.texts_per_user")
    skipped = f"; {empty} row{'s' if empty > 1 else ''} without words skipped" if empty else ""
    return UserCorpus(users, [texts[u] for u in users],
                      f"{path.name}: each user is a value of column {user_column!r} with >= {min_texts} texts "
                      f"({len(users)} of {len(texts)} users{skipped})")
