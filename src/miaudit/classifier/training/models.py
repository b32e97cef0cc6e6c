"""A small model zoo for audits: MLP, small CNN, ResNet-18 for small images.

Shapes in comments: ``B`` batch, ``C`` channels, ``H x W`` image size, ``K`` classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from miaudit.errors import ConfigError

MODEL_NAMES = ("mlp", "cnn", "resnet18")


class MLP(nn.Module):
    """Fully connected ReLU network; any input shape is flattened first."""

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (128,)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]  # (B, *input_shape) -> (B, d)
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]  # (B, width) -> (B, h)
            width = h
        layers.append(nn.Linear(width, n_classes))  # (B, width) -> (B, K)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool) then a fully connected head."""

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (128,),
                 channels: Sequence[int] = (32, 64)):
        super().__init__()
        c, h, w = _image_shape(input_shape, "cnn")
        blocks: list[nn.Module] = []
        for out in channels:
            # (B, c, h, w) -> (B, out, h // 2, w // 2)
            blocks += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(f"cnn: input {tuple(input_shape)} is too small for {len(channels)} pooling steps; "
                              "use fewer channels entries or the mlp")
        self.features = nn.Sequential(*blocks)
        self.head = MLP((c, h, w), n_classes, hidden)  # (B, c, h, w) -> (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm keeps per-example gradients independent (needed by DP-SGD / Opacus); BatchNorm does not.
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(min(32, channels), channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a residual connection (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str):
        super().__init__()
        # (B, c_in, h, w) -> (B, c_out, h/s, w/s)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:  # project the input so it can be added
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images (CIFAR-style): 3x3 stem, no max-pool, stages [2, 2, 2, 2].

    ``width`` is the first stage's channel count (64 in the paper); stages use width x 1, 2, 4, 8.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, width: int = 64, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "group"):
            raise ConfigError(f"resnet18 norm {norm!r} is not allowed; choose 'batch' or 'group'")
        c, _, _ = _image_shape(input_shape, "resnet18")
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), _norm(norm, width), nn.ReLU())
        stages, c_in = [], width  # (B, C, H, W) -> (B, width, H, W)
        for i, stride in enumerate((1, 2, 2, 2)):  # spatial size H -> H, H/2, H/4, H/8
            c_out = width * 2 ** i
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride, norm), BasicBlock(c_out, c_out, 1, norm)))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, 8 * width, H/8, W/8) -> (B, 8 * width, 1, 1)
        self.fc = nn.Linear(c_in, n_classes)  # (B, 8 * width) -> (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def _image_shape(input_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"{name} needs image inputs (C, H, W), got input shape {tuple(input_shape)}; "
                          "use model 'mlp' for tabular data")
    return tuple(int(v) for v in input_shape)  # type: ignore[return-value]


#: the zoo's model classes: every trainable parameter of theirs gets a gradient at every training step, which
#: :class:`~miaudit.classifier.training.flat.FlatOptimizer` needs
ZOO_MODELS: tuple[type[nn.Module], ...] = (MLP, SmallCNN, ResNet18)


def build_model(name: str, input_shape: Sequence[int], n_classes: int, *, seed: int | None = None,
                **kwargs) -> nn.Module:
    """A zoo model: "mlp" (``hidden``), "cnn" (``hidden``, ``channels``), "resnet18" (``width``, ``norm``).

    With ``seed`` the initial weights depend only on it (the global torch RNG is left untouched).
    """
    classes = {"mlp": MLP, "cnn": SmallCNN, "resnet18": ResNet18}
    if name not in classes:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got n_classes={n_classes}")
    try:
        if seed is None:
            return classes[name](tuple(input_shape), n_classes, **kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return classes[name](tuple(input_shape), n_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
