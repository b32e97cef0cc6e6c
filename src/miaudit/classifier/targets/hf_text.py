"""Hugging Face text classifiers (``AutoModelForSequenceClassification``) as classifier targets.

A text classifier is audited like any torch classifier: its texts are tokenised once, with the
target's own tokenizer, into ``x`` ``(n, 2, max_length)`` float32 holding the token ids (row 0)
and the attention mask (row 1) (float32 holds integers up to 2**24 exactly, checked against the
vocabulary size), and :class:`HFTextClassifier` maps such inputs to logits. So every
output-based and white-box attack applies, the reference pool trains and caches like any torch
model, and reference / shadow models are fine-tuned from the checkpoint the target started
from (``base``) with the audit's recipe (:class:`miaudit.classifier.families.TorchFamily`).

Checkpoints come from a local folder or a hub id (``from_pretrained``; never with remote code).
Texts come from tables (:func:`miaudit.data.rows.read_rows`: JSONL, JSON, CSV, TSV, Parquet) with a text column
and a label column (class indices, or names the model's ``config.label2id`` knows). Inputs are padded with the
tokenizer's padding token, and every model (target, reference, shadow) gets its id as ``config.pad_token_id``:
decoder classifiers (Llama, GPT-2) read the logits at the last token that is not padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from miaudit.classifier.targets.torch_module import TorchClassifierTarget
from miaudit.data.datasets import ArrayDataset
from miaudit.data.rows import read_rows
from miaudit.errors import ConfigError, DataError, one_line

#: float32 represents every integer below this exactly
EXACT_FLOAT32 = 2**24
HF_KEYS = ("path", "base", "max_length", "text_column", "label_column")
#: checkpoints loaded in this process (reference and shadow models load the same base many times)
_REPORTED: set[str] = set()


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
    :class:`~miaudit.classifier.families.ModelFactory` seeds per model. ``pad_token_id`` (the id the inputs
    are padded with) is set in the model's config when the checkpoint has none: a decoder's classification
    head cannot find each text's last token in a batch without it.
    """

    def __init__(self, source: str, n_labels: int | None = None, pad_token_id: int | None = None):
        super().__init__()
        transformers = _require_transformers()
        options: dict[str, Any] = {"num_labels": n_labels} if n_labels is not None else {}
        verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
        if source in _REPORTED:  # transformers' load report ("score.weight MISSING": a new head) and bar once
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        try:
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
                source, trust_remote_code=False, **options)
        except Exception as exc:  # transformers raises OSError, ValueError... for missing or odd checkpoints
            raise DataError(f"cannot load a sequence classifier from {source!r} ({one_line(exc)}); give a folder "
                            "saved with save_pretrained or a hub id") from None
        finally:
            transformers.logging.set_verbosity(verbosity)
            if bars:
                transformers.logging.enable_progress_bar()
        _REPORTED.add(source)
        if pad_token_id is not None and self.pad_token_id is None:
            self.model.config.pad_token_id = pad_token_id

    @property
    def pad_token_id(self) -> int | None:
        """The padding id the model's config names (``None``: none)."""
        pad = getattr(self.model.config, "pad_token_id", None)
        return None if pad is None else int(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0].long(), x[:, 1].long()  # (B, L) each
        return self.model(input_ids=ids, attention_mask=mask).logits  # (B, K)


def padding_id(tokenizer: Any, config_pad_id: int | None, source: str) -> int:
    """The id texts are padded with: the tokenizer's padding token, else the model config's ``pad_token_id``
    (then made the tokenizer's padding token); a :class:`DataError` naming the fix when neither has one."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if config_pad_id is None:
        raise DataError(f"{source!r} defines no padding token (its tokenizer has no pad_token and its config no "
                        "pad_token_id), so texts of different lengths cannot share a batch; set one before "
                        "save_pretrained, e.g. tokenizer.pad_token = tokenizer.eos_token and "
                        "model.config.pad_token_id = tokenizer.pad_token_id (what your fine-tuning padded with)")
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(config_pad_id))
    return int(config_pad_id)


def load_tokenizer(source: str) -> Any:
    transformers = _require_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as exc:  # as above
        raise DataError(f"cannot load the tokenizer of {source!r} ({one_line(exc)}); save it beside the model "
                        "(tokenizer.save_pretrained)") from None


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
    rows = read_rows(path)
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
        self.pad_token_id = padding_id(self.tokenizer, getattr(config, "pad_token_id", None), self.path)

    def load(self) -> TorchClassifierTarget:
        """The fine-tuned classifier as a torch target (eval mode, CPU)."""
        return TorchClassifierTarget(HFTextClassifier(self.path, pad_token_id=self.pad_token_id).eval())

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
           "padding_id", "text_examples"]
