"""Image augmentations in plain torch (no torchvision), batched and seeded.

One random affine warp per image combines a random resized crop, a small rotation and a small
translation (``F.affine_grid`` + ``F.grid_sample``, bilinear, zero padding), followed by additive
Gaussian noise. Images are ``(n, C, H, W)`` float tensors; outputs have the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from miaudit.errors import ConfigError


@dataclass
class AugmentConfig:
    """Augmentation strengths; all-zero strengths would give identical views and are rejected.

    - ``crop_scale``: area fraction of the random crop, drawn uniformly from ``[low, high]`` (1 = no crop).
    - ``crop_ratio``: aspect ratio range of the crop, log-uniform (SimCLR uses (3/4, 4/3)).
    - ``rotation``: maximum absolute rotation in degrees.
    - ``translate``: maximum shift as a fraction of the image side.
    - ``noise_std``: standard deviation of additive Gaussian noise (pixel units; MNIST pixels are in [0, 1]).
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)
    rotation: float = 10.0
    translate: float = 0.1
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"augment.crop_scale {self.crop_scale} must satisfy 0 < low <= high <= 1")
        rlo, rhi = self.crop_ratio
        if not 0 < rlo <= rhi:
            raise ConfigError(f"augment.crop_ratio {self.crop_ratio} must satisfy 0 < low <= high")
        for name in ("rotation", "translate", "noise_std"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} is {getattr(self, name)}; it must be >= 0")
        if self.is_identity():
            raise ConfigError("augmentation settings produce identical views (crop_scale (1, 1), rotation 0, "
                              "translate 0, noise_std 0); enable at least one augmentation")

    def is_identity(self) -> bool:
        """True when every view would equal the input."""
        return (self.crop_scale[0] == 1.0 and self.rotation == 0 and self.translate == 0
                and self.noise_std == 0)


def _affine_params(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``(n, 2, 3)`` matrices mapping output to input coordinates in ``[-1, 1]`` (affine_grid convention)."""
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    lo, hi = cfg.crop_scale
    area = lo + (hi - lo) * u[:, 0]
    log_r = math.log(cfg.crop_ratio[0]) + (math.log(cfg.crop_ratio[1]) - math.log(cfg.crop_ratio[0])) * u[:, 1]
    ratio = torch.exp(log_r)
    # crop half-widths in normalised units, clamped so the crop stays within the image
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)
    cy = (1 - h) * (2 * u[:, 3] - 1)
    angle = math.radians(cfg.rotation) * (2 * u[:, 4] - 1)
    shift = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    tx = cx + 2 * cfg.translate * (2 * shift[:, 0] - 1)
    ty = cy + 2 * cfg.translate * (2 * shift[:, 1] - 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([w * cos, -h * sin, tx], dim=1),
                         torch.stack([w * sin, h * cos, ty], dim=1)], dim=1)
    return theta.float()


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image in ``x`` ``(n, C, H, W)``; deterministic given ``generator``."""
    if x.ndim != 4:
        raise ConfigError(f"augmentations need images of shape (n, C, H, W), got {tuple(x.shape)}")
    n = x.shape[0]
    theta = _affine_params(n, cfg, generator)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.noise_std > 0:
        out = out + cfg.noise_std * torch.randn(out.shape, generator=generator)
    return out


def augmented_views(x: torch.Tensor, n_views: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``(n, n_views, C, H, W)`` independent views of every image."""
    views = torch.stack([augment(x, cfg, generator) for _ in range(n_views)], dim=1)
    flat = views.flatten(2)
    if n_views > 1 and bool((flat[:, 1:] == flat[:, :1]).all()):
        raise ConfigError("augmentation settings produce identical views for every image; increase "
                          "crop, rotation, translation or noise strength")
    return views
