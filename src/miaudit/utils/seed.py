"""One seed reaches every random choice."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from miaudit.utils.fingerprint import fingerprint


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (deterministic CPU kernels); return a NumPy generator."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def derive_seed(seed: int, *labels: Any) -> int:
    """A seed for one random choice (``labels`` name it), derived from the run's seed; in ``[0, 2**31)``."""
    return int(fingerprint(seed, *labels), 16) % (2**31)
