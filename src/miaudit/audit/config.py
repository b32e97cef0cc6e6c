"""Audit configuration: what to audit, how to build the attacker's knowledge, which attacks, how to evaluate.

Parsed strictly from YAML (``miaudit.config.from_dict``): unknown keys and wrong types are errors
that name the key. ``kind`` selects the audit runner (``"classifier"`` here; other kinds register
their own config class in :mod:`miaudit.audit.pipeline`). Every kind's config shares ``kind``,
``seed``, ``attacks`` (a list of :class:`AttackSpec`) and ``evaluation`` (:class:`EvaluationConfig`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from miaudit.errors import ConfigError
from miaudit.evaluation import DEFAULT_FPRS
from miaudit.training import TrainConfig
from miaudit.utils.fingerprint import fingerprint

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
class SplitConfig:
    """Sizes of the disjoint parts drawn from the dataset with the run's seed.

    ``n_members``: the target's training set; ``n_nonmembers``: held-out examples audited as
    non-members; ``n_shadow``: data for shadow models; ``n_population``: data the target never saw
    (population attacks). With a precomputed target the audited examples come from the file, so
    only ``n_shadow`` and ``n_population`` apply.
    """

    n_members: int | None = None
    n_nonmembers: int | None = None
    n_shadow: int = 0
    n_population: int = 0

    def __post_init__(self) -> None:
        for name in ("n_members", "n_nonmembers", "n_shadow", "n_population"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"config.split.{name}: must be >= 0, got {value}")


@dataclass
class TargetConfig:
    """Where the audited model's outputs come from.

    Without ``precomputed`` the tool trains the target itself with the ``training`` recipe on
    ``split.n_members`` examples. ``precomputed``: an ``.npz`` with ``logits``, ``probs`` or
    ``predictions``, ``labels`` and ``membership`` (1 = member), for models the tool cannot load.
    ``population`` (precomputed targets only): an ``.npz`` with the same model's outputs and
    ``labels`` on data it never trained on, for population attacks. Paths are relative to the
    working directory.
    """

    precomputed: str | None = None
    population: str | None = None


@dataclass
class ShadowConfig:
    """``n_models`` shadow models (Shokri et al. 2017), trained like the target on the shadow data.

    Each draws ``members_per_model`` training examples (default: as many as the target trained on)
    and ``nonmembers_per_model`` held-out ones (default: as many non-members as audited), from the
    shadow data, with its own seed.
    """

    n_models: int = 0
    members_per_model: int | None = None
    nonmembers_per_model: int | None = None

    def __post_init__(self) -> None:
        if self.n_models < 0:
            raise ConfigError(f"config.shadow.n_models: must be >= 0, got {self.n_models}")


@dataclass
class ReferenceConfig:
    """A pool of ``n_models`` reference models for LiRA / RMIA-style attacks (``miaudit.reference.pool``).

    Trained with the target's recipe on paired halves of the audited examples (``n_models`` even),
    scored on them and on the population data. ``views``: augmented queries ("none", or the
    kinds :func:`miaudit.reference.views.query_views` accepts); ``executor``: "sequential",
    "vectorised", "process" or "ray" with ``n_workers``; ``cache_dir``: keep trained models there,
    so an interrupted or repeated run resumes.
    """

    n_models: int = 0
    views: str = "none"
    executor: Literal["sequential", "vectorised", "process", "ray"] = "sequential"
    n_workers: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.n_models < 0 or self.n_models % 2:
            raise ConfigError(f"config.reference.n_models: must be an even number >= 0 (paired halves), "
                              f"got {self.n_models}")


@dataclass
class AttackSpec:
    """One attack to run: registry ``name``, constructor ``params``, and a ``label`` that is unique in the run.

    ``label`` defaults to ``name``; give one when the same attack runs twice with different params.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class EvaluationConfig:
    """Bootstrap resamples (0 disables CIs), confidence level of the intervals, FPRs at which TPR is reported."""

    n_bootstrap: int = 1000
    confidence: float = 0.95
    fprs: list[float] = field(default_factory=lambda: list(DEFAULT_FPRS))

    def __post_init__(self) -> None:
        if self.n_bootstrap < 0:
            raise ConfigError(f"config.evaluation.n_bootstrap: must be >= 0, got {self.n_bootstrap}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"config.evaluation.confidence: must lie in (0, 1), got {self.confidence}")
        if not self.fprs or not all(0 < f < 1 for f in self.fprs):
            raise ConfigError(f"config.evaluation.fprs: give FPRs in (0, 1), got {self.fprs}")


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


@dataclass
class AuditConfig:
    """A membership audit of a classifier (``kind: classifier``)."""

    attacks: list[AttackSpec]
    kind: Literal["classifier"] = "classifier"
    seed: int = 0
    dataset: DatasetConfig | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)
        trains_target = self.target.precomputed is None
        if trains_target:
            if self.dataset is None:
                raise ConfigError("config: give a 'dataset' to train the target on, or 'target.precomputed' "
                                  "with the outputs of your own model")
            for name in ("n_members", "n_nonmembers"):
                if not getattr(self.split, name):
                    raise ConfigError(f"config.split.{name}: give a positive size; the tool trains the target "
                                      "and needs members and non-members")
        elif self.split.n_members is not None or self.split.n_nonmembers is not None:
            raise ConfigError("config.split: n_members / n_nonmembers come from the precomputed file's "
                              "membership; remove them")
        needs_data = self.shadow.n_models or self.reference.n_models or self.split.n_population
        if needs_data and self.dataset is None:
            raise ConfigError("config: shadow models, reference models and population data need a 'dataset'")
        if self.shadow.n_models and not self.split.n_shadow:
            raise ConfigError("config.split.n_shadow: shadow models need shadow data; give a positive size")
        if self.reference.n_models and not trains_target:
            raise ConfigError("config.reference: reference models are trained on the audited examples, which "
                              "a precomputed target does not provide; remove reference.n_models")


def derive_seed(seed: int, *labels: Any) -> int:
    """A seed for one random choice (``labels`` name it), derived from the run's seed; in ``[0, 2**31)``."""
    return int(fingerprint(seed, *labels), 16) % (2**31)


__all__ = ["AttackSpec", "AuditConfig", "DatasetConfig", "EvaluationConfig", "ReferenceConfig", "ShadowConfig",
           "SplitConfig", "TargetConfig", "check_attack_specs", "derive_seed"]
