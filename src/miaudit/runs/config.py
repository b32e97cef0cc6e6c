"""Config sections every audit kind shares: the attacks to run, how to evaluate, and a dataset to load.

Every kind's config has ``kind``, ``seed``, ``attacks`` (a list of :class:`AttackSpec`) and
``evaluation`` (:class:`EvaluationConfig`); :func:`check_attack_specs` validates the list.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from miaudit.errors import ConfigError
from miaudit.evaluation import DEFAULT_FPRS
from miaudit.evaluation.verdict import RiskThresholds

_LABEL = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass
class DatasetConfig:
    """``source``: "digits", "mnist", "location", or a path to ``.npz`` / ``.csv`` / an image folder.

    ``data_dir`` overrides where the shared data lives; ``options`` go to the loader (e.g.
    ``{split: train, limit: 5000}`` for MNIST, ``{label: income}`` for CSV).
    """

    source: str
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackSpec:
    """One attack to run: registry ``name``, constructor ``params``, and a ``label`` that is unique in the run.

    ``label`` defaults to ``name``; give one when the same attack runs twice with different params. In a
    config a bare name stands for ``{name: ...}`` (``attacks: [loss, lira]``).
    """

    NAME_SHORTHAND: ClassVar[str] = "name"

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


#: resamples beyond each bound of a percentile bootstrap interval below which the run warns
MIN_TAIL_RESAMPLES = 5


@dataclass
class EvaluationConfig:
    """Bootstrap resamples (0 disables CIs), confidence level of the intervals, FPRs at which TPR is reported,
    and the thresholds of the run's risk level (:mod:`miaudit.evaluation.verdict`)."""

    n_bootstrap: int = 1000
    confidence: float = 0.95
    fprs: list[float] = field(default_factory=lambda: list(DEFAULT_FPRS))
    risk: RiskThresholds = field(default_factory=RiskThresholds)

    def __post_init__(self) -> None:
        if self.n_bootstrap < 0:
            raise ConfigError(f"config.evaluation.n_bootstrap: must be >= 0, got {self.n_bootstrap}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"config.evaluation.confidence: must lie in (0, 1), got {self.confidence}")
        if not self.fprs or not all(0 < f < 1 for f in self.fprs):
            raise ConfigError(f"config.evaluation.fprs: give FPRs in (0, 1), got {self.fprs}")

    def interval_warning(self) -> str | None:
        """A warning when the percentile intervals' bounds are read from fewer than :data:`MIN_TAIL_RESAMPLES`
        resamples in each tail (fewer than 200 resamples at 95%), else ``None``."""
        tail = self.n_bootstrap * (1 - self.confidence) / 2
        if self.n_bootstrap == 0 or tail >= MIN_TAIL_RESAMPLES - 1e-9:  # 100 * (1 - 0.9) / 2 is 4.999...
            return None
        needed = math.ceil(MIN_TAIL_RESAMPLES * 2 / (1 - self.confidence) - 1e-9)
        beyond = math.floor(tail * 100 + 1e-6) / 100
        return (f"the {self.confidence:.0%} intervals rest on {self.n_bootstrap} bootstrap resamples ({beyond:g} "
                f"beyond each bound; a stable bound needs {MIN_TAIL_RESAMPLES}): set evaluation.n_bootstrap >= "
                f"{needed} (default {EvaluationConfig.n_bootstrap}) for figures you report")


def check_attack_specs(attacks: list[AttackSpec]) -> None:
    """At least one attack, labels unique and safe as file names."""
    if not attacks:
        raise ConfigError("config.attacks: list at least one attack; run 'miaudit list attacks' for names")
    seen: set[str] = set()
    for i, spec in enumerate(attacks):
        key = spec.key
        if not _LABEL.fullmatch(key) or key.startswith("."):
            raise ConfigError(f"config.attacks[{i}]: label {key!r} must use only letters, digits, '_', '.' and "
                              "'-' (it names files)")
        if key in seen:
            raise ConfigError(f"config.attacks[{i}]: {key!r} appears twice; give each repeat a distinct 'label'")
        seen.add(key)


__all__ = ["AttackSpec", "DatasetConfig", "EvaluationConfig", "check_attack_specs"]
