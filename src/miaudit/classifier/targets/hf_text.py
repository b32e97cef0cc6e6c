"""Hugging Face text classifiers (``AutoModelForSequenceClassification``) as classifier targets.

A text classifier is audited like any torch classifier: its texts are tokenised once, with the
target's own tokenizer, into ``x`` ``(n, 2, max_length)`` float32 holding the token ids (row 0)
and the attention mask (row 1) (float32 holds integers up to 2**24 exactly, checked against the
vocabulary size), and :class:`HFTextClassifier` maps such inputs to logits. So every
output-based and white-box attack applies, the reference pool trains and caches like any torch
model, and reference / shadow models are fine-tuned from the checkpoint the target started
from (``base``) with the audit's recipe (:class:`miaudit.classifier.families.TorchFamily`).

Checkpoints come from a local folder or a hub id (``from_pretrained``; never with remote code).
Texts come from CSV / TSV / JSONL files with a text column and a label column (class indices, or
names the model's ``config.label2id`` knows).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from miaudit.classifier.targets.torch_module import TorchClassifierTarget
from miaudit.data.datasets import ArrayDataset, read_text
from miaudit.errors import ConfigError, DataError, one_line

#: float32 represents every integer below this exactly
EXACT_FLOAT32 = 2**24
HF_KEYS = ("path", "base", "max_length", "text_column", "label_column")


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("Hugging Face text classifiers need transformers: pip install 'miaudit[llm]'") from None
    return transformers


class HFTextClassifier(nn.Module):
    """``AutoModelForSequenceClassification`` on ``x`` ``(B, 2, L)`` (token ids, attention mask) -> logits ``(B, K)``.

    Built from ``source`` (a local folder or hub id) with ``n_labels`` outputs; a head the checkpoint
    lacks (a base model fine-tuned here) is initialised from torch's RNG, which
    :class:`~miaudit.classifier.families.ModelFactory` seeds per model.
    """

    def __init__(self, source: str, n_labels: int | None = None):
        super().__init__()
        transformers = _require_transformers()
        options: dict[str, Any] = {"num_labels": n_labels} if n_labels is not None else {}
        try:
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
                source, trust_remote_code=False, **options)
        except Exception as exc:  # transformers raises OSError, ValueError... for missing or odd checkpoints
            raise DataError(f"cannot load a sequence classifier from {source!r} ({one_line(exc)}); give a folder "
                            "saved with save_pretrained or a hub id") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0].long(), x[:, 1].long()  # (B, L) each
        return self.model(input_ids=ids, attention_mask=mask).logits  # (B, K)


def load_tokenizer(source: str) -> Any:
    transformers = _require_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as exc:  # as above
        raise DataError(f"cannot load the tokenizer of {source!r} ({one_line(exc)}); save it beside the model "
                        "(tokenizer.save_pretrained)") from None


def _rows(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL / JSON lines file or a CSV / TSV file (with a header row)."""
    if not path.is_file():
        raise DataError(f"text file {path} does not exist; check the path")
    text = read_text(path, "text file")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise DataError(f"{path} line {i} is not JSON; write one object per line") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {i} is not a JSON object")
            rows.append(record)
        return rows
    if path.suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
    raise DataError(f"{path}: texts are read from .jsonl / .csv / .tsv files")


def _label_index(value: Any, label2id: dict[str, int], where: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if text in label2id:
        return int(label2id[text])
    known = ", ".join(sorted(label2id)) or "none"
    raise DataError(f"{where}: label {text!r} is neither a class index nor a label the model knows ({known})")


def text_examples(path: str | Path, tokenizer: Any, *, max_length: int, text_column: str = "text",
                  label_column: str = "label", label2id: dict[str, int] | None = None,
                  n_classes: int | None = None, role: str = "") -> ArrayDataset:
    """The texts of ``path`` tokenised into ``x`` ``(n, 2, max_length)`` (ids, mask); labels ``(n,)``; ids
    ``"<role>:<row>"``."""
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path} holds no texts")
    for column in (text_column, label_column):
        if column not in rows[0]:
            raise DataError(f"{path} has no column {column!r} (columns: {', '.join(map(str, rows[0]))}); set "
                            f"target.hf_classifier.{'text' if column == text_column else 'label'}_column")
    texts = [str(r.get(text_column) or "") for r in rows]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"{path}: row {empty[0] + 1} has no text; remove empty rows")
    y = np.array([_label_index(r.get(label_column), label2id or {}, f"{path} row {i + 1}")
                  for i, r in enumerate(rows)], dtype=np.int64)
    if n_classes is not None and y.max() >= n_classes:
        raise DataError(f"{path}: label {int(y.max())} but the classifier has {n_classes} classes")
    if len(tokenizer) >= EXACT_FLOAT32:
        raise DataError(f"the tokenizer has {len(tokenizer)} tokens, more than float32 inputs hold exactly (2**24)")
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    x = np.stack([encoded["input_ids"], encoded["attention_mask"]], axis=1).astype(np.float32)  # (n, 2, L)
    return ArrayDataset(x, y, n_classes=n_classes, name=path.stem, ids=np.array([f"{role or path.stem}:{i}"
                                                                                for i in range(len(rows))]))


class HFTextSource:
    """The target's checkpoint and tokenizer, read from ``target.hf_classifier`` (keys: :data:`HF_KEYS`)."""

    def __init__(self, spec: dict[str, Any]):
        self.path = str(spec["path"])
        self.base = spec.get("base")
        self.max_length = int(spec.get("max_length", 128))
        self.text_column = str(spec.get("text_column", "text"))
        self.label_column = str(spec.get("label_column", "label"))
        self.tokenizer = load_tokenizer(self.path)
        try:
            config = _require_transformers().AutoConfig.from_pretrained(self.path, trust_remote_code=False)
        except Exception as exc:  # as above
            raise DataError(f"cannot read the model config of {self.path!r} ({one_line(exc)})") from None
        self.n_classes = int(config.num_labels)
        self.label2id = {str(k): int(v) for k, v in (config.label2id or {}).items()}

    def load(self) -> TorchClassifierTarget:
        """The fine-tuned classifier as a torch target (eval mode, CPU)."""
        return TorchClassifierTarget(HFTextClassifier(self.path).eval())

    def examples(self, path: str | Path, *, role: str = "") -> ArrayDataset:
        """The texts of ``path`` tokenised for this classifier (:func:`text_examples`)."""
        return text_examples(path, self.tokenizer, max_length=self.max_length, text_column=self.text_column,
                             label_column=self.label_column, label2id=self.label2id, n_classes=self.n_classes,
                             role=role)


def check_hf_spec(spec: dict[str, Any]) -> None:
    """Keys and types of ``target.hf_classifier``; one-line ConfigErrors naming the key."""
    where = "config.target.hf_classifier"
    unknown = sorted(set(spec) - set(HF_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(HF_KEYS)}")
    if not isinstance(spec.get("path"), str) or not spec["path"]:
        raise ConfigError(f"{where}.path: required, the fine-tuned classifier's folder or hub id")
    if "base" in spec and (not isinstance(spec["base"], str) or not spec["base"]):
        raise ConfigError(f"{where}.base: the checkpoint the classifier was fine-tuned from (folder or hub id)")
    length = spec.get("max_length", 128)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"{where}.max_length: expected a positive integer, got {length!r}")


__all__ = ["EXACT_FLOAT32", "HF_KEYS", "HFTextClassifier", "HFTextSource", "check_hf_spec", "load_tokenizer",
           "text_examples"]
