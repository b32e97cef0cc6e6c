"""SimCLR pre-training of a small image encoder on CPU (Chen et al., ICML 2020).

Each step draws two augmented views of a batch, projects them, and minimises the NT-Xent loss:
for ``2B`` normalised projections ``z``, ``loss = mean_i -log(exp(s(i, p(i)) / t) / sum_{k != i} exp(s(i, k) / t))``
with ``s`` the cosine similarity and ``p(i)`` the other view of the same image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from miaudit.encoder.augment import AugmentConfig, augment
from miaudit.encoder.model import SimCLRModel, build_encoder
from miaudit.errors import ConfigError, DataError
from miaudit.utils.logs import progress as progress_bar


@dataclass
class EncoderTrainConfig:
    """Architecture and optimisation of a SimCLR encoder."""

    arch: Literal["mlp", "conv"] = "mlp"
    width: int = 512  # hidden units (mlp) or first-layer channels (conv)
    embed_dim: int = 64
    proj_dim: int = 32
    epochs: int = 100
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    temperature: float = 0.2
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("width", "embed_dim", "proj_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"encoder.{name} is {getattr(self, name)}; it must be a positive integer")
        if self.batch_size < 2:
            raise ConfigError("encoder.batch_size must be at least 2 (contrastive negatives come from the batch)")
        if self.lr <= 0 or self.temperature <= 0:
            raise ConfigError("encoder.lr and encoder.temperature must be > 0")


@dataclass
class EncoderTrainResult:
    encoder: torch.nn.Module  # in eval mode
    history: list[dict[str, float]]  # one {"epoch", "loss"} per epoch
    seconds: float


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two ``(B, p)`` projection batches whose rows are views of the same images."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, p)
    b = z1.shape[0]
    sim = z @ z.T / temperature  # (2B, 2B)
    sim.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(sim, positives)


def train_simclr(x: np.ndarray, config: EncoderTrainConfig, *, progress: bool = True,
                 desc: str = "simclr") -> EncoderTrainResult:
    """Pre-train an encoder on images ``x`` ``(n, C, H, W)`` (float, pixels in [0, 1]); deterministic on CPU."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise DataError(f"encoder training needs images of shape (n, C, H, W), got {x.shape}")
    if x.shape[0] < 2:
        raise DataError(f"encoder training needs at least 2 images, got {x.shape[0]}")
    data = torch.from_numpy(x)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = SimCLRModel(build_encoder(config.arch, x.shape[1:], config.width, config.embed_dim), config.proj_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, x.shape[0])
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    model.train()
    bar = progress_bar(range(config.epochs), desc=desc, enabled=progress, leave=False)
    for epoch in bar:
        order = torch.randperm(x.shape[0], generator=generator)
        total, steps = 0.0, 0
        for i in range(0, x.shape[0] - batch + 1, batch):  # drop the last incomplete batch
            xb = data[order[i:i + batch]]
            v1, v2 = augment(xb, config.augment, generator), augment(xb, config.augment, generator)
            loss = nt_xent_loss(model(v1), model(v2), config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        history.append({"epoch": epoch + 1, "loss": total / steps})
        bar.set_postfix(loss=f"{total / steps:.3f}")
    encoder = model.encoder.eval()
    return EncoderTrainResult(encoder, history, time.perf_counter() - start)
