"""Small word-level LSTM language models trained here (the kind of model Song & Shmatikov audit).

Texts are whitespace-tokenised strings. Each text is modelled on its own: the input is
``<eos> w_1 .. w_{L-1}`` and the targets are ``w_1 .. w_L <eos>`` (``<eos>`` doubles as start token).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from miaudit.errors import ConfigError, DataError
from miaudit.utils.logs import progress as progress_bar

EOS, UNK = "<eos>", "<unk>"


class Vocabulary:
    """Word vocabulary: ``<eos>`` = 0, ``<unk>`` = 1, then the most frequent words (ties: first seen)."""

    def __init__(self, words: Sequence[str]):
        self.words = [EOS, UNK, *[w for w in words if w not in (EOS, UNK)]]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Sequence[str], size: int) -> Vocabulary:
        """The ``size - 2`` most frequent words of ``texts`` plus the two special tokens."""
        if size < 3:
            raise ConfigError(f"vocabulary size must be >= 3, got {size}")
        counts = Counter(w for t in texts for w in t.split())
        counts.pop(EOS, None), counts.pop(UNK, None)
        return cls([w for w, _ in counts.most_common(size - 2)])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def eos_id(self) -> int:
        return 0

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, 1) for w in text.split()]


class LSTMLanguageModel(nn.Module):
    """``(b, t)`` token ids -> ``(b, t, V)`` next-token logits."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(ids))  # (b, t, hidden)
        return self.out(h)


@dataclass
class LMTrainConfig:
    vocab_size: int = 2000
    embed_dim: int = 64
    hidden: int = 128
    epochs: int = 15
    batch_size: int = 32
    lr: float = 3e-3
    max_length: int = 48  # tokens per text (longer texts are truncated)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden", "epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"lm.{name} is {getattr(self, name)}; it must be a positive integer")
        if self.lr <= 0:
            raise ConfigError(f"lm.lr is {self.lr}; it must be > 0")


@dataclass
class LMTrainResult:
    model: LSTMLanguageModel  # in eval mode
    vocab: Vocabulary
    history: list[dict[str, float]]  # per epoch {"epoch", "loss"} (mean token cross-entropy, nats)
    seconds: float


def pad_batch(seqs: Sequence[Sequence[int]], start_id: int, end_id: int | None, pad_target: int = -100
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs (b, T), targets (b, T))`` for non-empty id sequences ``s``.

    With an end token: inputs ``[start] + s``, targets ``s + [end]``. Without: inputs ``[start] + s[:-1]``,
    targets ``s``. Inputs are padded with 0, targets with ``pad_target``.
    """
    rows = []
    for s in seqs:
        s = list(s)
        rows.append(([start_id, *s], [*s, end_id]) if end_id is not None else ([start_id, *s[:-1]], s))
    width = max(len(x) for x, _ in rows)
    inputs = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.full((len(rows), width), pad_target, dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        inputs[i, :len(x)] = torch.tensor(x)
        targets[i, :len(y)] = torch.tensor(y)
    return inputs, targets


def _length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of texts of similar length (sorted within random pools of 50 batches)."""
    order = rng.permutation(lengths.size)
    pool = batch_size * 50
    batches = []
    for start in range(0, order.size, pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, chunk.size, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train_language_model(texts: Sequence[str], config: LMTrainConfig, *, vocab: Vocabulary | None = None,
                         progress: bool = True, desc: str = "lm") -> LMTrainResult:
    """Train an :class:`LSTMLanguageModel` on ``texts``; deterministic on CPU.

    ``vocab``: a fixed vocabulary (e.g. built from public text); by default the ``config.vocab_size``
    most frequent words of ``texts``, as a service would build it from its own training data.
    """
    vocab = vocab or Vocabulary.build(texts, config.vocab_size)
    seqs = [vocab.encode(t)[:config.max_length] for t in texts]
    seqs = [s for s in seqs if s]
    if not seqs:
        raise DataError("no non-empty text to train the language model on")
    lengths = np.array([len(s) for s in seqs])
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = LSTMLanguageModel(len(vocab), config.embed_dim, config.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    model.train()
    bar = progress_bar(range(config.epochs), desc=desc, enabled=progress, leave=False)
    for epoch in bar:
        total, tokens = 0.0, 0
        for batch in _length_batches(lengths, config.batch_size, rng):
            inputs, targets = pad_batch([seqs[i] for i in batch], vocab.eos_id, vocab.eos_id)
            logits = model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
            n = int((targets != -100).sum())
            optimizer.zero_grad()
            (loss / n).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total, tokens = total + loss.item(), tokens + n
        history.append({"epoch": epoch + 1, "loss": total / tokens})
        bar.set_postfix(loss=f"{total / tokens:.3f}")
    return LMTrainResult(model.eval(), vocab, history, time.perf_counter() - start)
