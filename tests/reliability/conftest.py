"""Fixtures of the reliability tests: a throw-away run store and a seconds-long audit config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import write_yaml


@pytest.fixture
def quick_config(tmp_path) -> Path:
    """An audit of precomputed outputs (members score higher): runs in a second, writes a full run folder."""
    rng = np.random.default_rng(0)
    membership = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    labels = rng.integers(0, 3, size=120)
    logits = rng.normal(size=(120, 3))
    logits[np.arange(120), labels] += 1.5 * membership
    outputs = tmp_path / "outputs.npz"
    np.savez(outputs, logits=logits, labels=labels, membership=membership)
    return write_yaml(tmp_path / "quick.yaml", {"target": {"precomputed": str(outputs)},
                                                "attacks": [{"name": "loss"}, {"name": "confidence"}],
                                                "evaluation": {"n_bootstrap": 10}})


