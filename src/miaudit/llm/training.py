"""Controlled LLM audits: train the audited model on a random member split of the user's corpus.

The setup that gives language-model membership ground truth without distribution shift (a
``training:`` section in a ``kind: llm`` config, see ``docs/llm-audits.md``):

1. The corpus (``dataset.source: corpus``: a text file, one document per line or per blank-line
   paragraph, or a JSONL / JSON / CSV / TSV file with a text column) is read, documents outside
   ``min_words`` are dropped, longer ones cut to ``max_words`` words, exact duplicates removed (a
   duplicate across the split would be a member and a non-member at once).
2. A seeded permutation (``derive_seed(seed, "training-split")``) sets ``reference_fraction`` of the
   documents aside (disjoint text for the reference model and DC-PDD's token frequencies, only when
   something needs them); of the rest, ``member_fraction`` are members (the training set), the others
   non-members. The audit's ground truth is exactly this split.
3. The target is trained on the members: from scratch (``method: scratch``, a GPT-2 or Llama shape,
   :func:`miaudit.llm.tiny_gpt.train_tiny_gpt`), or a Hugging Face causal LM fine-tuned in full
   (``finetune``) or through LoRA adapters (``lora``, ``peft``; the adapters are merged into the saved
   model). The reference model (``reference: trained``) has the same recipe on the reference split; for
   fine-tuning audits the base model itself can be the reference (``reference: base``).
4. The models are saved under ``models/`` of the run directory (each folder written aside and renamed
   into place), with the recipe, the final train loss, the loss on members and non-members after
   training (the generalisation gap) and the split's ids in ``metrics.json`` under ``training``, so the
   audit can be re-run and re-checked.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from miaudit.data.datasets import find_data_file
from miaudit.data.rows import TABLE_FORMATS, is_table, read_rows, read_text_file
from miaudit.errors import ConfigError, DataError
from miaudit.llm.datasets import TextDataset, _split_documents, check_unique_ids, document_id
from miaudit.llm.target import LLMModelConfig, load_causal_lm, load_tokenizer
from miaudit.llm.tiny_gpt import TinyGPTConfig, encode_training_texts, fit_causal_lm, mean_token_loss, train_tiny_gpt
from miaudit.utils.atomic import temp_prefix
from miaudit.utils.device import resolve_device
from miaudit.utils.seed import derive_seed, seed_everything

log = logging.getLogger(__name__)

Method = Literal["scratch", "finetune", "lora"]
#: recipe defaults by method where they differ (learning rate, epochs): chosen on a pilot run, see the docs
DEFAULT_LR = {"scratch": 3e-3, "finetune": 1e-3, "lora": 3e-3}
DEFAULT_EPOCHS = {"scratch": 8, "finetune": 4, "lora": 6}
#: fewest documents of each part of the split
MIN_PART = 4


# -- configuration --------------------------------------------------------------------------------

@dataclass
class ArchitectureConfig:
    """The model trained from scratch (``method: scratch``): a GPT-2- or Llama-shaped causal LM."""

    family: Literal["gpt2", "llama"] = "gpt2"
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    dropout: float = 0.0


@dataclass
class LoRAConfig:
    """LoRA adapters (``method: lora``, Hu et al. 2022, through ``peft``): rank ``r``, scaling ``alpha / r``,
    ``dropout`` on the adapter input, ``target_modules`` (default: ``peft``'s choice for the architecture,
    e.g. ``q_proj``/``v_proj`` for Llama, ``c_attn`` for GPT-2)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"config.training.lora: need r >= 1, alpha > 0 and 0 <= dropout < 1, got r={self.r}, "
                              f"alpha={self.alpha}, dropout={self.dropout}")


@dataclass
class TrainingConfig:
    """A controlled audit's ``training:`` section (module doc; every field in ``docs/llm-audits.md``)."""

    method: Method = "scratch"
    base_model: LLMModelConfig | None = None
    tokenizer: str | None = None
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    epochs: int | None = None
    batch_size: int = 16
    lr: float | None = None
    warmup_steps: int = 10
    weight_decay: float = 0.0
    block_size: int | None = None
    member_fraction: float = 0.5
    reference: Literal["auto", "trained", "base", "none"] = "auto"
    reference_fraction: float = 0.25
    min_words: int = 1
    max_words: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        where = "config.training"
        if self.method == "scratch":
            if self.base_model is not None:
                raise ConfigError(f"{where}.base_model: method 'scratch' trains a new model; remove base_model, or "
                                  "choose method finetune or lora to train it further")
            if self.tokenizer is None:
                raise ConfigError(f"{where}.tokenizer: method 'scratch' needs a tokenizer (a folder, hub id or "
                                  "tokenizers JSON file, e.g. ../shared/data/models/stories260K)")
            if self.reference == "base":
                raise ConfigError(f"{where}.reference: 'base' needs a base model (method finetune or lora); choose "
                                  "trained, auto or none")
            if self.architecture.n_embd % self.architecture.n_head:
                raise ConfigError(f"{where}.architecture: n_embd ({self.architecture.n_embd}) must be divisible by "
                                  f"n_head ({self.architecture.n_head})")
        else:
            if self.base_model is None:
                raise ConfigError(f"{where}.base_model: method {self.method!r} needs the model to fine-tune "
                                  "(name_or_path: a folder or hub id)")
            if self.tokenizer is not None:
                raise ConfigError(f"{where}.tokenizer: a fine-tuned model keeps its base model's tokenizer; set "
                                  "base_model.tokenizer instead")
        for key in ("batch_size", "min_words"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("epochs", "block_size", "max_words"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{key}: must be >= 1, got {value}")
        if self.block_size is not None and self.block_size < 2:
            raise ConfigError(f"{where}.block_size: must be >= 2, got {self.block_size}")
        if self.max_words is not None and self.max_words < self.min_words:
            raise ConfigError(f"{where}.max_words ({self.max_words}) is below min_words ({self.min_words})")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"{where}.lr: must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError(f"{where}: warmup_steps and weight_decay must be >= 0")
        if not 0 < self.member_fraction < 1:
            raise ConfigError(f"{where}.member_fraction: must lie in (0, 1), got {self.member_fraction}")
        if not 0 < self.reference_fraction < 1:
            raise ConfigError(f"{where}.reference_fraction: must lie in (0, 1), got {self.reference_fraction}")
        if not 0 <= self.architecture.dropout < 1:
            raise ConfigError(f"{where}.architecture.dropout: must lie in [0, 1), got {self.architecture.dropout}")
        for key in ("n_layer", "n_embd", "n_head"):
            if getattr(self.architecture, key) < 1:
                raise ConfigError(f"{where}.architecture.{key}: must be >= 1, got {getattr(self.architecture, key)}")

    @property
    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.method]

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def reference_kind(self, needs_reference: bool) -> Literal["trained", "base", "none"]:
        """Which reference model the run builds: ``auto`` = the base model for fine-tuning, a model trained on
        the reference split from scratch, and none when no attack reads a reference model."""
        if self.reference != "auto":
            return self.reference
        if not needs_reference:
            return "none"
        return "trained" if self.method == "scratch" else "base"


# -- the corpus and its split -----------------------------------------------------------------------

def resolve_corpus_path(path: str, data_dir: str | None) -> Path:
    """``path`` as given when it exists, else looked up in the data folders (``data_dir``, ``--data-dir``,
    ``$MIAUDIT_DATA``, ``../shared/data``), like the named datasets."""
    given = Path(path)
    if given.is_file():
        return given
    if given.is_absolute():
        raise DataError(f"corpus file {path} does not exist; check dataset.path")
    return find_data_file(path, data_dir)


def read_corpus_documents(path: Path, *, text_column: str = "text", separator: str = "line", on_empty: str = "error",
                          id_column: str | None = None) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The documents of a corpus file with their ids (``<file stem>:<row>``, or the values of ``id_column``,
    one per document), and the skipped rows.

    Text files: one document per line (``separator: line``) or per blank-line-separated paragraph
    (``blank_line``). Tables (``.jsonl`` / ``.json`` / ``.csv`` / ``.tsv`` / ``.parquet``): the ``text_column``
    of each row; an empty
    text is an error naming the row, or skipped with ``on_empty: skip``."""
    texts: list[str] = []
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    if is_table(path):
        rows = read_rows(path)
        for column, key in ((text_column, "text_column"), (id_column, "id_column")):
            if column is not None and column not in rows[0]:
                raise DataError(f"{path} has no column {column!r}; available columns: "
                                f"{', '.join(map(str, rows[0]))}. Choose it with dataset.{key}")
        if id_column is not None:
            check_unique_ids(path, rows, id_column)
        for i, row in enumerate(rows):
            rid = f"{path.stem}:{i}" if id_column is None else document_id(row.get(id_column) or "")
            if not rid:
                raise DataError(f"{path} row {i} has no {id_column!r} value")
            text = row.get(text_column)
            if not isinstance(text, str) or not text.strip():
                if on_empty == "skip":
                    skipped.append((rid, "empty or missing text"))
                    continue
                raise DataError(f"{path} row {i}: text is empty, missing or not a string; remove the row or set "
                                "dataset.on_empty: skip")
            texts.append(text)
            ids.append(rid)
    elif id_column is not None:
        raise DataError(f"{path} is a plain-text corpus without columns; id_column needs a {TABLE_FORMATS} file "
                        "(leave it out to number the documents)")
    else:
        for i, text in enumerate(_split_documents(read_text_file(path), separator)):
            texts.append(text)
            ids.append(f"{path.stem}:{i}")
    if not texts:
        raise DataError(f"corpus {path} holds no documents")
    return texts, ids, skipped


@dataclass
class PreparedCorpus:
    """The documents kept for the split (after the word filters and de-duplication), with their ids."""

    texts: list[str]
    ids: list[str]
    name: str
    n_read: int
    n_too_short: int
    n_cut: int
    n_duplicates: int
    n_subsampled_out: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def prepare_corpus(texts: list[str], ids: list[str], *, name: str, min_words: int = 1, max_words: int | None = None,
                   max_documents: int | None = None, seed: int = 0) -> PreparedCorpus:
    """Drop documents of fewer than ``min_words`` words, cut the others to their first ``max_words`` words
    (whitespace-joined), drop exact duplicates (first kept), then draw ``max_documents`` at random."""
    kept_texts: list[str] = []
    kept_ids: list[str] = []
    seen: set[str] = set()
    too_short = cut = duplicates = 0
    for text, rid in zip(texts, ids):
        words = text.split()
        if len(words) < min_words:
            too_short += 1
            continue
        if max_words is not None and len(words) > max_words:
            text = " ".join(words[:max_words])
            cut += 1
        if text in seen:
            duplicates += 1
            continue
        seen.add(text)
        kept_texts.append(text)
        kept_ids.append(rid)
    out = PreparedCorpus(kept_texts, kept_ids, name, len(texts), too_short, cut, duplicates)
    if max_documents is not None and max_documents < len(kept_texts):
        rng = np.random.default_rng(derive_seed(seed, "corpus-subsample"))
        pick = np.sort(rng.choice(len(kept_texts), size=max_documents, replace=False))
        out.n_subsampled_out = len(kept_texts) - max_documents
        out.texts, out.ids = [kept_texts[i] for i in pick], [kept_ids[i] for i in pick]
    return out


@dataclass
class MemberSplit:
    """Positions into the prepared corpus: ``members`` (the training set), ``nonmembers``, ``reference``
    (disjoint text for the reference model / DC-PDD; empty when nothing needs it)."""

    members: np.ndarray
    nonmembers: np.ndarray
    reference: np.ndarray


def split_corpus(n: int, *, member_fraction: float, reference_fraction: float, with_reference: bool,
                 seed: int) -> MemberSplit:
    """A seeded random split of ``n`` documents (module doc); a :class:`DataError` when a part would hold fewer
    than :data:`MIN_PART` documents."""
    order = np.random.default_rng(derive_seed(seed, "training-split")).permutation(n)
    n_reference = int(round(reference_fraction * n)) if with_reference else 0
    rest = order[n_reference:]
    n_members = int(round(member_fraction * rest.size))
    parts = {"reference": order[:n_reference], "members": rest[:n_members], "nonmembers": rest[n_members:]}
    for part, index in parts.items():
        if index.size < MIN_PART and (part != "reference" or with_reference):
            raise DataError(f"the corpus has {n} usable documents: too few to split ({index.size} {part}, need at "
                            f"least {MIN_PART}); use a larger corpus, lower training.min_words or raise "
                            "dataset.max_documents / training.member_fraction")
    return MemberSplit(np.sort(parts["members"]), np.sort(parts["nonmembers"]), np.sort(parts["reference"]))


# -- training ---------------------------------------------------------------------------------------

@dataclass
class TrainedModel:
    """One model trained by the run: where it was saved and how training went."""

    folder: Path
    history: list[dict[str, float]]
    n_parameters: int
    n_trainable: int
    n_tokens: int
    n_truncated: int
    seconds: float
    model: torch.nn.Module


def save_model_folder(model: Any, tokenizer: Any, folder: Path) -> Path:
    """``save_pretrained`` of the model and its tokenizer into a temporary sibling of ``folder``, renamed into
    place when complete (a reader never sees half a model)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(folder), dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _model_context(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def require_peft() -> None:
    """A one-line :class:`ConfigError` naming the extra to install when ``peft`` is missing."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError("config.training.method: 'lora' needs the peft package; install it with "
                          "pip install 'miaudit[llm]' (or pip install peft), or choose method finetune") from None


def _apply_lora(model: torch.nn.Module, lora: LoRAConfig) -> torch.nn.Module:
    require_peft()
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:  # peft names the missing modules
        raise ConfigError(f"config.training.lora.target_modules: {exc}".splitlines()[0]) from None


def train_model(texts: list[str], tokenizer: Any, training: TrainingConfig, *, seed: int, folder: Path,
                role: str, progress: bool = True) -> TrainedModel:
    """Train one model by ``training``'s recipe on ``texts`` (seeded by ``seed``) and save it at ``folder``."""
    device = resolve_device(training.device, where="training.device")
    start = time.perf_counter()
    epochs, lr = training.resolved_epochs, training.resolved_lr
    if training.method == "scratch":
        arch = training.architecture
        recipe = TinyGPTConfig(architecture=arch.family, n_layer=arch.n_layer, n_embd=arch.n_embd, n_head=arch.n_head,
                               block_size=training.block_size or 256, dropout=arch.dropout, epochs=epochs,
                               batch_size=training.batch_size, lr=lr, warmup_steps=training.warmup_steps,
                               weight_decay=training.weight_decay, seed=seed)
        n_truncated = sum(len(s) > recipe.block_size for s in encode_training_texts(texts, tokenizer, 10**9))
        result = train_tiny_gpt(texts, tokenizer, recipe, progress=progress, device=device)
        model, history, n_tokens = result.model, result.history, result.n_tokens
        n_parameters = n_trainable = result.n_parameters
    else:
        base = training.base_model
        assert base is not None  # TrainingConfig requires it for finetune / lora
        model = load_causal_lm(base.name_or_path, dtype=base.dtype, device=str(device), revision=base.revision,
                               local_files_only=base.local_files_only, trust_remote_code=base.trust_remote_code)
        block_size = training.block_size or _model_context(model) or 1024
        full = encode_training_texts(texts, tokenizer, 10**9, bos=base.bos)
        n_truncated = sum(len(s) > block_size for s in full)
        sequences = [s[:block_size] for s in full]
        seed_everything(seed)
        if training.method == "lora":
            model = _apply_lora(model, training.lora)
        n_parameters = sum(p.numel() for p in model.parameters())
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        history = fit_causal_lm(model, sequences, pad_id=_pad_id(tokenizer), epochs=epochs,
                                batch_size=training.batch_size, lr=lr, warmup_steps=training.warmup_steps,
                                weight_decay=training.weight_decay, seed=seed, device=device, progress=progress,
                                desc=f"{training.method} {role}")
        if training.method == "lora":
            model = model.merge_and_unload()  # type: ignore[operator]  # a plain HF model again, for any loader
        n_tokens = sum(len(s) - 1 for s in sequences)
    model.eval()
    save_model_folder(model, tokenizer, folder)
    seconds = time.perf_counter() - start
    log.info("trained the %s model (%s, %d epochs) in %.1f s: train loss %.3f", role, training.method, epochs, seconds,
             history[-1]["train_loss"])
    return TrainedModel(folder, history, n_parameters, n_trainable, n_tokens, n_truncated, seconds, model)


# -- the controlled audit's preparation ---------------------------------------------------------------

@dataclass
class ControlledAudit:
    """What the LLM runner needs from the training step: the labelled documents, the folders of the audited
    and reference models (``reference`` None: none; for ``reference: base`` the base model's name), the
    reference split's texts (DC-PDD's corpus unless the config names one), the ``training`` section of
    metrics.json and run warnings."""

    data: TextDataset
    target_folder: Path
    reference: str | None
    reference_texts: list[str]
    section: dict[str, Any]
    warnings: list[str]


def prepare_controlled_audit(training: TrainingConfig, dataset: Any, *, seed: int, folder: Path,
                             needs_reference: bool, needs_corpus: bool, progress: bool = True) -> ControlledAudit:
    """Read and split the corpus, train the target (and the reference), save them under ``folder/models``."""
    if training.method == "lora":
        require_peft()  # before any work
    reference_kind = training.reference_kind(needs_reference)
    path = resolve_corpus_path(dataset.path, dataset.data_dir)
    texts, ids, skipped = read_corpus_documents(path, text_column=dataset.text_column, separator=dataset.separator,
                                                on_empty=dataset.on_empty, id_column=dataset.id_column)
    corpus = prepare_corpus(texts, ids, name=f"corpus_{path.stem}", min_words=training.min_words,
                            max_words=training.max_words, max_documents=dataset.max_documents, seed=seed)
    corpus.skipped = skipped
    split = split_corpus(len(corpus.texts), member_fraction=training.member_fraction,
                         reference_fraction=training.reference_fraction,
                         with_reference=reference_kind == "trained" or needs_corpus, seed=seed)
    audited = np.sort(np.concatenate([split.members, split.nonmembers]))
    labels = np.isin(audited, split.members).astype(np.int64)
    data = TextDataset([corpus.texts[i] for i in audited], labels, np.asarray([corpus.ids[i] for i in audited]),
                       corpus.name, skipped)
    if training.method == "scratch":
        assert training.tokenizer is not None  # TrainingConfig requires it
        tokenizer = load_tokenizer(training.tokenizer, local_files_only=Path(training.tokenizer).exists())
    else:
        base = training.base_model
        assert base is not None  # TrainingConfig requires it for finetune / lora
        tokenizer = load_tokenizer(base.tokenizer or base.name_or_path,
                                   revision=None if base.tokenizer else base.revision,
                                   local_files_only=base.local_files_only, trust_remote_code=base.trust_remote_code)
    members = [corpus.texts[i] for i in split.members]
    nonmembers = [corpus.texts[i] for i in split.nonmembers]
    reference_texts = [corpus.texts[i] for i in split.reference]
    log.info("corpus %s: %d documents -> %d members, %d non-members, %d reference", path, len(corpus.texts),
             split.members.size, split.nonmembers.size, split.reference.size)

    models = folder / "models"
    target = train_model(members, tokenizer, training, seed=derive_seed(seed, "training", "target"),
                         folder=models / "target", role="target", progress=progress)
    warnings: list[str] = []
    section: dict[str, Any] = {
        "method": training.method,
        "recipe": _recipe(training, target),
        "corpus": {"path": str(path), "documents_read": corpus.n_read, "too_short": corpus.n_too_short,
                   "cut_to_max_words": corpus.n_cut, "duplicates_removed": corpus.n_duplicates,
                   "subsampled_out": corpus.n_subsampled_out, "skipped": [list(s) for s in skipped],
                   "documents_used": len(corpus.texts)},
        "split": {"seed_label": "training-split", "n_members": int(split.members.size),
                  "n_nonmembers": int(split.nonmembers.size), "n_reference": int(split.reference.size),
                  "member_ids": [corpus.ids[i] for i in split.members],
                  "nonmember_ids": [corpus.ids[i] for i in split.nonmembers],
                  "reference_ids": [corpus.ids[i] for i in split.reference]},
        "target": _model_entry(target, tokenizer, members, nonmembers, training, folder),
        "reference": {"kind": reference_kind},
    }
    if target.n_truncated:
        warnings.append(f"{target.n_truncated} member documents are longer than the training block of "
                        f"{section['recipe']['block_size']} tokens and were trained on their first tokens only; "
                        "lower training.max_words or raise training.block_size")
    reference: str | None = None
    if reference_kind == "trained":
        trained = train_model(reference_texts, tokenizer, training, seed=derive_seed(seed, "training", "reference"),
                              folder=models / "reference", role="reference", progress=progress)
        section["reference"].update(_model_entry(trained, tokenizer, members, nonmembers, training, folder))
        reference = str(trained.folder)
        del trained
    elif reference_kind == "base":
        base = training.base_model
        assert base is not None  # TrainingConfig refuses reference: base without one
        reference = base.name_or_path
        base_lm = load_causal_lm(reference, dtype=base.dtype, device="cpu", revision=base.revision,
                                 local_files_only=base.local_files_only, trust_remote_code=base.trust_remote_code)
        section["reference"].update({"model": reference, **_losses(base_lm, tokenizer, members, nonmembers, training,
                                                                    _model_context(base_lm))})
    if needs_corpus:
        section["dc_pdd_corpus"] = "the reference split" if reference_texts else None
    return ControlledAudit(data, target.folder, reference, reference_texts, section, warnings)


def _recipe(training: TrainingConfig, target: TrainedModel) -> dict[str, Any]:
    recipe: dict[str, Any] = {"epochs": training.resolved_epochs, "lr": training.resolved_lr,
                              "batch_size": training.batch_size, "warmup_steps": training.warmup_steps,
                              "weight_decay": training.weight_decay,
                              "block_size": training.block_size or _model_context(target.model) or 1024,
                              "optimizer": "AdamW, gradient clipping 1.0, linear warm-up then cosine decay to 10%",
                              "member_fraction": training.member_fraction}
    if training.method == "scratch":
        recipe["architecture"] = dataclasses.asdict(training.architecture)
        recipe["tokenizer"] = training.tokenizer
    elif training.base_model is not None:
        recipe["base_model"] = training.base_model.name_or_path
    if training.method == "lora":
        recipe["lora"] = dataclasses.asdict(training.lora)
    return recipe


def _losses(model: torch.nn.Module, tokenizer: Any, members: list[str], nonmembers: list[str],
            training: TrainingConfig, context: int | None) -> dict[str, float]:
    """Mean token loss and perplexity on members and non-members (the generalisation gap a loss attack reads)."""
    block = training.block_size or context or 1024
    device = next(model.parameters()).device
    out = {}
    for part, texts in (("members", members), ("nonmembers", nonmembers)):
        bos = training.base_model.bos if training.base_model is not None else "auto"
        loss = mean_token_loss(model, encode_training_texts(texts, tokenizer, block, bos), pad_id=_pad_id(tokenizer),
                               batch_size=training.batch_size, device=device)
        out[f"loss_{part}"] = round(loss, 5)
        out[f"perplexity_{part}"] = round(math.exp(min(loss, 50.0)), 3)
    return out


def _model_entry(trained: TrainedModel, tokenizer: Any, members: list[str], nonmembers: list[str],
                 training: TrainingConfig, run_folder: Path) -> dict[str, Any]:
    return {"folder": str(trained.folder.relative_to(run_folder)), "n_parameters": trained.n_parameters,
            "n_trainable_parameters": trained.n_trainable, "training_tokens_per_epoch": trained.n_tokens,
            "truncated_documents": trained.n_truncated, "seconds": round(trained.seconds, 2),
            "history": [{k: round(v, 5) for k, v in h.items()} for h in trained.history],
            "final_train_loss": round(trained.history[-1]["train_loss"], 5),
            **_losses(trained.model, tokenizer, members, nonmembers, training, _model_context(trained.model))}


__all__ = ["ArchitectureConfig", "ControlledAudit", "LoRAConfig", "MemberSplit", "PreparedCorpus", "TrainingConfig",
           "prepare_controlled_audit", "prepare_corpus", "read_corpus_documents", "save_model_folder", "split_corpus",
           "train_model"]
