"""A small CLIP-style dual encoder for CPU: a word tokenizer, an image tower and a text tower.

Both towers map into one ``embed_dim``-dimensional space; embeddings are L2-normalised, and the
similarity logits of images ``x`` and captions ``t`` are ``exp(logit_scale) * cos(f(x), g(t))``
(Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021).

- :class:`WordTokenizer`: lower-cased words; the vocabulary is fixed from a corpus before any
  split (the audit builds it from every caption of the dataset), so whether a word is known never
  depends on membership. Id 0 pads, id 1 is the unknown word.
- :class:`ImageTower`: a patch stem (stride-``patch`` convolution), ``levels`` blocks of (3x3 conv,
  batch norm, ReLU) with 2x2 max pools between them, global average pooling, a linear projection.
- :class:`TextTower`: word embeddings, a width-3 1-D convolution (local word order), ReLU,
  mean over the caption's words (padding masked), a linear projection.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from miaudit.errors import ConfigError, DataError

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
PAD, UNKNOWN = 0, 1


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters and digits; punctuation dropped)."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Captions -> ``(n, max_words)`` int64 ids (0 = padding, 1 = unknown word); longer captions are cut."""

    def __init__(self, vocabulary: Sequence[str], max_words: int = 32):
        if max_words < 1:
            raise ConfigError(f"max_words must be >= 1, got {max_words}")
        if len(set(vocabulary)) != len(vocabulary):
            raise ConfigError("the tokenizer vocabulary has duplicate words")
        self.vocabulary = list(vocabulary)
        self.max_words = max_words
        self._ids = {w: i + 2 for i, w in enumerate(self.vocabulary)}

    @classmethod
    def build(cls, corpus: Iterable[str], *, min_count: int = 2, max_words: int = 32) -> WordTokenizer:
        """Vocabulary = words seen at least ``min_count`` times in ``corpus``, most frequent first."""
        counts = Counter(w for text in corpus for w in words(text))
        vocabulary = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if not vocabulary:
            raise DataError(f"no word occurs {min_count} times in the captions; lower min_word_count")
        return cls(vocabulary, max_words)

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and unknown included."""
        return len(self.vocabulary) + 2

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.max_words), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = [self._ids.get(w, UNKNOWN) for w in words(text)][:self.max_words] or [UNKNOWN]
            out[i, :len(ids)] = ids
        return out


class ImageTower(nn.Module):
    """``(n, 3, s, s)`` images in [0, 1] -> ``(n, embed_dim)`` (not normalised).

    A patch stem (``patch x patch`` convolution with stride ``patch``, width ``w``), then ``levels``
    blocks of 3x3 convolution, batch norm and ReLU with widths ``2w, 4w, ...`` and a 2x2 max pool
    between blocks, global average pooling, a linear projection. The stem keeps CPU cost low.
    """

    def __init__(self, width: int, embed_dim: int, levels: int = 2, patch: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, patch, stride=patch), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        for level in range(levels):
            if level:
                layers.append(nn.MaxPool2d(2))
            out = width * 2 ** (level + 1)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features((x - 0.5) / 0.25)
        return self.project(h.mean(dim=(2, 3)))


class TextTower(nn.Module):
    """``(n, L)`` word ids -> ``(n, embed_dim)`` (not normalised)."""

    def __init__(self, vocab_size: int, width: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.conv = nn.Conv1d(width, width, 3, padding=1)
        self.project = nn.Linear(width, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD).unsqueeze(-1).float()  # (n, L, 1)
        h = F.relu(self.conv(self.embed(ids).transpose(1, 2))).transpose(1, 2)  # (n, L, width)
        pooled = (h * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.project(pooled)


class DualEncoder(nn.Module):
    """Image and text towers with a learnable temperature; ``forward`` gives ``(n_images, n_texts)`` logits."""

    def __init__(self, vocab_size: int, *, image_width: int = 32, text_width: int = 128, embed_dim: int = 64,
                 image_levels: int = 2, image_patch: int = 4, temperature: float = 0.07):
        super().__init__()
        self.image_tower = ImageTower(image_width, embed_dim, image_levels, image_patch)
        self.text_tower = TextTower(vocab_size, text_width, embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def logit_scale(self) -> float:
        """``exp(log_scale)``, capped at 100 as in CLIP."""
        return float(self.log_scale.detach().clamp(max=math.log(100.0)).exp())

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(x), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_tower(ids), dim=-1)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        scale = self.log_scale.clamp(max=math.log(100.0)).exp()
        return scale * self.encode_image(x) @ self.encode_text(ids).T


__all__ = ["DualEncoder", "ImageTower", "TextTower", "WordTokenizer", "words"]
