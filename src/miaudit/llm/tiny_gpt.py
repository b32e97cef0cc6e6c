"""Train a small GPT-style causal LM from scratch, on CPU, deterministically.

Used to get language-model membership ground truth without distribution shift: train on a random
half of a corpus's documents, keep the other half as non-members. The model is a Hugging Face
``GPT2LMHeadModel`` or ``LlamaForCausalLM`` built from a small config, so every part of the LLM
audit (:class:`miaudit.llm.target.HFCausalLM`) treats it like any pretrained model, and
``model.save_pretrained(folder)`` + ``tokenizer.save_pretrained(folder)`` give a folder that loads
with ``from_pretrained``.

Documents are encoded exactly as the audit encodes them (:func:`miaudit.llm.target.encode_text`:
BOS first when the tokenizer has one) and truncated to ``block_size`` tokens; each document is one
training sequence (padding masked out of the loss), so "member" means "this whole document was a
training sequence".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from miaudit.errors import ConfigError, DataError
from miaudit.llm.target import encode_text
from miaudit.utils.logs import progress as progress_bar
from miaudit.utils.seed import seed_everything


@dataclass
class TinyGPTConfig:
    """Architecture and training recipe. ``n_embd`` must be divisible by ``n_head``."""

    architecture: Literal["gpt2", "llama"] = "gpt2"
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128
    dropout: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ("gpt2", "llama"):
            raise ConfigError(f"architecture {self.architecture!r} is not allowed; choose 'gpt2' or 'llama'")
        for key in ("n_layer", "n_embd", "n_head", "block_size", "epochs", "batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.lr <= 0 or not 0 <= self.dropout < 1 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError("need lr > 0, 0 <= dropout < 1, warmup_steps >= 0 and weight_decay >= 0")


def build_tiny_gpt(config: TinyGPTConfig, tokenizer: Any) -> torch.nn.Module:
    """A freshly initialised Hugging Face causal LM sized by ``config`` for ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if config.architecture == "gpt2":
        gpt2 = GPT2Config(vocab_size=len(tokenizer), n_positions=config.block_size, n_embd=config.n_embd,
                          n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                          embd_pdrop=config.dropout, attn_pdrop=config.dropout, **special)
        return GPT2LMHeadModel(gpt2)
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.n_embd, intermediate_size=4 * config.n_embd,
                        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                        num_key_value_heads=config.n_head, max_position_embeddings=config.block_size,
                        attention_dropout=config.dropout, tie_word_embeddings=True, **special)
    return LlamaForCausalLM(llama)


@dataclass
class TinyGPTResult:
    model: torch.nn.Module
    history: list[dict[str, float]]  # one entry per epoch: epoch, train_loss, seconds
    n_parameters: int
    n_tokens: int  # training tokens per epoch (targets, after truncation)


def _batches(sequences: list[list[int]], order: np.ndarray, batch_size: int, pad_id: int):
    for start in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[start:start + batch_size]]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        yield ids, mask, labels


def encode_training_texts(texts: Sequence[str], tokenizer: Any, block_size: int,
                          bos: Literal["auto", "always", "never"] = "auto") -> list[list[int]]:
    """Each text encoded as the audit encodes it (``bos`` policy of :func:`~miaudit.llm.target.encode_text`:
    BOS first when the tokenizer has one), cut to ``block_size`` tokens; a :class:`DataError` for documents
    of fewer than 2 tokens (nothing to predict)."""
    sequences = [encode_text(tokenizer, t, bos=bos)[:block_size] for t in texts]
    short = [i for i, s in enumerate(sequences) if len(s) < 2]
    if short:
        raise DataError(f"{len(short)} training documents have fewer than 2 tokens (first: index {short[0]}); "
                        "remove them")
    return sequences


def fit_causal_lm(
    model: torch.nn.Module,
    sequences: list[list[int]],
    *,
    pad_id: int,
    epochs: int,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    weight_decay: float,
    seed: int,
    device: str | torch.device = "cpu",
    on_epoch_end: Callable[[int, torch.nn.Module], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` (a Hugging Face causal LM, or a ``peft`` wrapper of one) in place on ``sequences``
    (token ids, each one training sequence; padding masked out of the loss) with AdamW over its trainable
    parameters (weight decay on matrices only), gradient clipping at 1, linear warm-up then cosine decay
    to 10% of ``lr``. The batch order comes from ``seed``. Returns one entry per epoch: epoch, train_loss
    (token-weighted mean), seconds; the model is left in eval mode."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = math.ceil(len(sequences) / batch_size)
    total = steps_per_epoch * epochs

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(seed)
    history = []
    bar = progress_bar(total=total, desc=desc, enabled=progress, leave=False)
    for epoch in range(1, epochs + 1):
        model.train()
        start, losses, weights = time.perf_counter(), [], []
        for ids, mask, labels in _batches(sequences, rng.permutation(len(sequences)), batch_size, pad_id):
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            weights.append(int((labels[:, 1:] != -100).sum()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
        model.eval()
        history.append({"epoch": epoch, "train_loss": float(np.average(losses, weights=weights)),
                        "seconds": time.perf_counter() - start})
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    bar.close()
    return history


@torch.no_grad()
def mean_token_loss(model: torch.nn.Module, sequences: list[list[int]], *, pad_id: int, batch_size: int = 16,
                    device: str | torch.device = "cpu") -> float:
    """Token-weighted mean next-token loss (nats) of ``model`` on ``sequences`` (as trained: one sequence per
    document, padding masked), in eval mode; ``exp`` of it is the perplexity."""
    model.eval()
    total, count = 0.0, 0
    order = np.arange(len(sequences))
    for ids, mask, labels in _batches(sequences, order, batch_size, pad_id):
        n = int((labels[:, 1:] != -100).sum())
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        total += float(loss) * n
        count += n
    return total / max(count, 1)


def train_tiny_gpt(
    texts: Sequence[str],
    tokenizer: Any,
    config: TinyGPTConfig,
    *,
    on_epoch_end: Callable[[int, torch.nn.Module], None] | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> TinyGPTResult:
    """Train from scratch on ``texts`` (each a training sequence) with AdamW and linear warm-up then
    cosine decay (:func:`fit_causal_lm`); ``on_epoch_end(epoch, model)`` (epochs count from 1) can audit
    intermediate models.

    Deterministic on CPU for a given ``config.seed``: the initial weights and the batch order come
    from it.
    """
    sequences = encode_training_texts(texts, tokenizer, config.block_size)
    seed_everything(config.seed)
    model = build_tiny_gpt(config, tokenizer).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    history = fit_causal_lm(model, sequences, pad_id=pad_id, epochs=config.epochs, batch_size=config.batch_size,
                            lr=config.lr, warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
                            seed=config.seed, device=device, on_epoch_end=on_epoch_end, progress=progress,
                            desc="train tiny GPT")
    return TinyGPTResult(model, history, sum(p.numel() for p in model.parameters()),
                         sum(len(s) - 1 for s in sequences))


__all__ = ["TinyGPTConfig", "TinyGPTResult", "build_tiny_gpt", "encode_training_texts", "fit_causal_lm",
           "mean_token_loss", "train_tiny_gpt"]
