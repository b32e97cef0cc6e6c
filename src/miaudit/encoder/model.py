"""Small image encoders with a SimCLR projection head (Chen et al., ICML 2020).

``mlp`` (default): flatten -> Linear(width) -> ReLU -> Linear(embed_dim); cheap on CPU and, at equal
compute, it memorised its pre-training set more than the small CNN in our MNIST runs (see
benchmarks/results/encodermi.md). ``conv``: three 3x3 convolutions (two with stride 2) and a linear layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from miaudit.errors import ConfigError


class MLPEncoder(nn.Module):
    """``(n, C, H, W)`` images -> ``(n, embed_dim)`` embeddings."""

    def __init__(self, input_shape: tuple[int, ...], width: int = 512, embed_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                                 nn.Linear(width, embed_dim))
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvEncoder(nn.Module):
    """``(n, C, H, W)`` images -> ``(n, embed_dim)`` embeddings; ``width`` = channels of the first layer."""

    def __init__(self, input_shape: tuple[int, ...], width: int = 16, embed_dim: int = 64):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, stride=2, padding=1), nn.ReLU(),     # (n, w, H/2, W/2)
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),          # (n, 2w, H/4, W/4)
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),                                                 # (n, 2w, 2, 2)
            nn.Flatten(),
        )
        self.fc = nn.Linear(8 * width, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


#: an encoder :func:`build_encoder` makes (both give ``embed_dim``-wide embeddings)
ImageEncoder = MLPEncoder | ConvEncoder


def build_encoder(arch: str, input_shape: tuple[int, ...], width: int, embed_dim: int) -> ImageEncoder:
    """An encoder by name (``"mlp"`` or ``"conv"``) for images of shape ``input_shape`` ``(C, H, W)``."""
    if arch == "mlp":
        return MLPEncoder(input_shape, width, embed_dim)
    if arch == "conv":
        return ConvEncoder(input_shape, width, embed_dim)
    raise ConfigError(f"encoder.arch {arch!r} is not known; choose 'mlp' or 'conv'")


class SimCLRModel(nn.Module):
    """Encoder plus a 2-layer projection head; the contrastive loss is computed on the head's output."""

    def __init__(self, encoder: ImageEncoder, proj_dim: int = 32):
        super().__init__()
        self.encoder = encoder
        d = encoder.embed_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))  # z = W2 relu(W1 h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
