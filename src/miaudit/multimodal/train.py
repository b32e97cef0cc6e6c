"""Contrastive (CLIP) training of the small dual encoder on image-caption pairs, on CPU.

Each epoch visits every training image once, in a seeded random order, paired with one of its
training captions drawn at random (an image trained with all five Flickr8k captions sees a
different one each epoch, as CLIP-style training on Flickr / COCO does); a batch therefore never
holds the same image twice. The loss is the symmetric InfoNCE loss of CLIP,

    loss = (CE(logits, diag) + CE(logits^T, diag)) / 2,   logits = exp(s) * cos(f(x_i), g(t_j)),

with the temperature ``exp(-s)`` learned (capped as in CLIP) or fixed. Optional augmentation:
random horizontal flips and random crops after reflect-padding by ``size / 16`` pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from miaudit.errors import ConfigError, DataError
from miaudit.multimodal.model import DualEncoder
from miaudit.utils.logs import progress as progress_bar


@dataclass
class DualEncoderTrainConfig:
    """Architecture and optimisation of the dual encoder (shared by target, shadow and the attacker's MFE)."""

    image_width: int = 32          # channels of the patch stem (doubled per conv block)
    image_patch: int = 4           # the stem cuts the image into patch x patch squares
    image_levels: int = 2          # 3x3 conv blocks after the stem (max pools between them)
    text_width: int = 128          # word-embedding and hidden size of the text tower
    embed_dim: int = 64
    max_words: int = 32            # captions are cut after this many words
    min_word_count: int = 2        # vocabulary: words seen this often in the dataset's captions
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    temperature: float = 0.07      # initial temperature
    learn_temperature: bool = True
    augment: bool = True           # random flips and crops during training
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("image_width", "image_patch", "image_levels", "text_width", "embed_dim", "max_words",
                     "min_word_count", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} is {getattr(self, name)}; it must be a positive integer")
        if self.batch_size < 2:
            raise ConfigError(f"model.batch_size is {self.batch_size}; contrastive training needs at least 2 pairs "
                              "per batch (the other pairs are the negatives)")
        if self.lr <= 0 or self.temperature <= 0 or self.weight_decay < 0:
            raise ConfigError("model.lr and model.temperature must be > 0 and model.weight_decay >= 0")


@dataclass
class DualEncoderTrainResult:
    model: DualEncoder  # in eval mode
    history: list[dict[str, float]]  # one {"epoch", "loss"} per epoch
    seconds: float


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of ``(B, B)`` logits whose diagonal holds the matching pairs."""
    target = torch.arange(logits.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop (reflect padding by ``size // 16``, at least 1) of ``(B, 3, s, s)``."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = max(1, s // 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(s))[:, None, :, None].expand(b, 3, s, s + 2 * pad)
    x = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(s))[:, None, None, :].expand(b, 3, s, s)
    return x.gather(3, cols)


def train_dual_encoder(images: np.ndarray, caption_ids: np.ndarray, captions_of: list[np.ndarray], vocab_size: int,
                       config: DualEncoderTrainConfig, *, progress: bool = True, desc: str = "clip",
                       on_epoch: Callable[[int, DualEncoder], None] | None = None) -> DualEncoderTrainResult:
    """Train on ``images`` ``(n, 3, s, s)`` float in [0, 1]; ``captions_of[i]`` are rows of ``caption_ids``
    ``(m, L)`` (token ids) that describe image ``i`` (its training captions). Deterministic on CPU.

    ``on_epoch(epoch, model)`` runs after each epoch (1-based) with the model in eval mode, e.g. to
    measure leakage along training; it must not change the model.
    """
    if images.ndim != 4 or images.shape[0] != len(captions_of):
        raise DataError(f"training needs images (n, 3, s, s) and one caption list per image; got {images.shape} "
                        f"and {len(captions_of)} lists")
    if images.shape[0] < 2:
        raise DataError(f"contrastive training needs at least 2 image-caption pairs, got {images.shape[0]}")
    if any(len(c) == 0 for c in captions_of):
        raise DataError("every training image needs at least one caption")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = DualEncoder(vocab_size, image_width=config.image_width, text_width=config.text_width,
                        embed_dim=config.embed_dim, image_levels=config.image_levels, image_patch=config.image_patch,
                        temperature=config.temperature)
    model.log_scale.requires_grad_(config.learn_temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    data, ids = torch.from_numpy(np.asarray(images, dtype=np.float32)), torch.from_numpy(caption_ids)
    n = data.shape[0]
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = progress_bar(range(config.epochs), desc=desc, enabled=progress, leave=False)
    for epoch in bar:
        model.train()
        order = rng.permutation(n)
        picked = np.array([c[rng.integers(len(c))] for c in captions_of])
        total = 0.0
        for step in range(steps_per_epoch):  # the last incomplete batch is dropped (too few negatives)
            rows = torch.from_numpy(order[step * batch:(step + 1) * batch])
            xb = data[rows]
            if config.augment:
                xb = augment_batch(xb, generator)
            loss = clip_loss(model(xb, ids[torch.from_numpy(picked[rows.numpy()])]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        history.append({"epoch": epoch + 1, "loss": total / steps_per_epoch})
        bar.set_postfix(loss=f"{total / steps_per_epoch:.3f}")
        if on_epoch is not None:
            with torch.random.fork_rng():
                on_epoch(epoch + 1, model.eval())
    return DualEncoderTrainResult(model.eval(), history, time.perf_counter() - start)


__all__ = ["DualEncoderTrainConfig", "DualEncoderTrainResult", "augment_batch", "clip_loss", "train_dual_encoder"]
