"""The encoder audit (``kind: encoder``): EncoderMI against a SimCLR encoder the tool trains.

data -> split (target members / non-members / the attacker's shadow members / shadow non-members,
disjoint, from the seed) -> target and shadow encoders pre-trained with the same recipe ->
similarity features of augmented views -> EncoderMI attacks fitted on the shadow encoder ->
evaluation and the standard run directory (written by :func:`miaudit.runs.run_audit`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.data import load_dataset, make_split
from miaudit.encoder.features import EncoderShadowData, Similarity, similarity_features
from miaudit.encoder.target import EncoderTarget
from miaudit.encoder.train import EncoderTrainConfig, train_simclr
from miaudit.errors import ConfigError, DataError
from miaudit.evaluation.run_result import RunResult
from miaudit.runs.config import AttackSpec, DatasetConfig, EvaluationConfig, check_attack_specs
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, parse_config, register_kind, run_audit
from miaudit.utils.fingerprint import module_fingerprint
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)


@dataclass
class EncoderSplitConfig:
    """Disjoint parts of the dataset: the target encoder's pre-training set (members), audited
    non-members, and the attacker's own data (shadow members pre-train the shadow encoder)."""

    n_members: int = 256
    n_nonmembers: int = 256
    n_shadow_members: int = 256
    n_shadow_nonmembers: int = 256

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ConfigError(f"config.split.{f.name}: must be >= 1, got {getattr(self, f.name)}")


@dataclass
class EncoderFeatureConfig:
    """``n_views`` augmented views per input (the encoder's own augmentation recipe) and the similarity measure."""

    n_views: int = 10
    similarity: Similarity = "cosine"

    def __post_init__(self) -> None:
        if self.n_views < 2:
            raise ConfigError(f"config.features.n_views: need at least 2 views to compare, got {self.n_views}")


def _default_attacks() -> list[AttackSpec]:
    return [AttackSpec("encodermi_v"), AttackSpec("encodermi_s"), AttackSpec("encodermi_t")]


@dataclass
class EncoderAuditConfig:
    """A membership audit of a contrastive image encoder (``kind: encoder``)."""

    dataset: DatasetConfig
    kind: Literal["encoder"] = "encoder"
    seed: int = 0
    split: EncoderSplitConfig = field(default_factory=EncoderSplitConfig)
    encoder: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    features: EncoderFeatureConfig = field(default_factory=EncoderFeatureConfig)
    attacks: list[AttackSpec] = field(default_factory=_default_attacks)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)


def parse(data: dict[str, Any]) -> EncoderAuditConfig:
    """Strict parse; ``encoder.seed`` is refused (the top-level seed derives the target's and shadow's)."""
    refuse_nested_seed(data, "encoder")
    return from_dict(EncoderAuditConfig, data)


def resolve(config: EncoderAuditConfig) -> dict[str, Any]:
    return resolved_without_seed(config, "encoder")


def _pretrain(recipe: EncoderTrainConfig, x: np.ndarray, seed: int, role: str, progress: bool
              ) -> tuple[EncoderTarget, dict[str, Any]]:
    result = train_simclr(x, dataclasses.replace(recipe, seed=seed), progress=progress, desc=f"{role} encoder")
    log.info("%s encoder: %d epochs on %d images in %.1f s, final NT-Xent loss %.4f", role, recipe.epochs,
             len(x), result.seconds, result.history[-1]["loss"])
    info = {"n_parameters": int(sum(p.numel() for p in result.encoder.parameters())),
            "train_seconds": round(result.seconds, 2), "final_train_loss": result.history[-1]["loss"],
            "fingerprint": module_fingerprint(result.encoder)}
    return EncoderTarget(result.encoder), info


def run_encoder_outcome(config: EncoderAuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Train target and shadow encoders, compute similarity features, fit and score every attack."""
    attacks = build_attacks(config.attacks, kind="encoder", seed=config.seed)
    ds = config.dataset
    dataset = load_dataset(ds.source, data_dir=ds.data_dir, seed=config.seed, **ds.options)
    if len(dataset.input_shape) != 3:
        raise DataError(f"the encoder audit needs images (C, H, W); {dataset.name} has inputs of shape "
                        f"{dataset.input_shape}")
    sp = config.split
    split = make_split(len(dataset), n_members=sp.n_members, n_nonmembers=sp.n_nonmembers,
                       n_shadow=sp.n_shadow_members + sp.n_shadow_nonmembers, seed=derive_seed(config.seed, "split"))
    shadow_order = np.random.default_rng(derive_seed(config.seed, "shadow-split")).permutation(split.shadow)
    shadow_members = shadow_order[:sp.n_shadow_members]
    shadow_audited = np.concatenate([shadow_members, shadow_order[sp.n_shadow_members:]])
    shadow_membership = np.arange(shadow_audited.size) < sp.n_shadow_members

    target, target_info = _pretrain(config.encoder, dataset.x[split.target_members],
                                    derive_seed(config.seed, "target"), "target", progress)
    shadow, shadow_info = _pretrain(config.encoder, dataset.x[shadow_members],
                                    derive_seed(config.seed, "shadow"), "shadow", progress)
    fc = config.features
    start = time.perf_counter()
    target_features = similarity_features(target, dataset.x[split.audited], n_views=fc.n_views,
                                          similarity=fc.similarity, augment=config.encoder.augment,
                                          seed=derive_seed(config.seed, "views", "target"), progress=progress)
    shadow_features = similarity_features(shadow, dataset.x[shadow_audited], n_views=fc.n_views,
                                          similarity=fc.similarity, augment=config.encoder.augment,
                                          seed=derive_seed(config.seed, "views", "shadow"), progress=progress)
    log.info("similarity features (%d views, %s) in %.1f s", fc.n_views, fc.similarity, time.perf_counter() - start)
    if dataset.ids is None:  # an ArrayDataset numbers its rows when it is given no ids
        raise DataError(f"{dataset.name}: the examples have no ids; give ids (one per example)")
    audited_ids = dataset.ids[split.audited]
    np.savez(folder / "similarity_features.npz", target=target_features.values, membership=split.membership,
             ids=audited_ids, shadow=shadow_features.values, shadow_membership=shadow_membership)

    reference = EncoderShadowData([shadow_features], [shadow_membership])
    scored = []
    for key, attack in attacks:
        start = time.perf_counter()
        scores = attack.fit(reference).score(target_features)
        scored.append(ScoredAttack(key, attack, audited_ids, split.membership, scores,
                                   time.perf_counter() - start))
    mean_sim = target_features.values.mean(axis=1)
    recipe = config.encoder
    target_info = {"source": "trained", "model": f"simclr-{recipe.arch}", "access": "embeddings",
                   "description": f"SimCLR {recipe.arch} encoder (width {recipe.width}, embedding {recipe.embed_dim}) "
                                  f"pre-trained by miaudit on {sp.n_members} {dataset.name} images for "
                                  f"{recipe.epochs} epochs (batch {recipe.batch_size}, temperature "
                                  f"{recipe.temperature:g}, lr {recipe.lr:g})",
                   **target_info,
                   "mean_similarity_members": float(mean_sim[split.membership].mean()),
                   "mean_similarity_nonmembers": float(mean_sim[~split.membership].mean())}
    data_info = {"dataset": dataset.name, "n_examples": len(dataset), "n_members": sp.n_members,
                 "n_nonmembers": sp.n_nonmembers, "n_shadow": int(split.shadow.size),
                 "n_views": fc.n_views, "similarity": fc.similarity}
    return AuditOutcome(target=target_info, data=data_info, attacks=scored,
                        sections={"shadow": {"n_models": 1, **shadow_info}})


def run_encoder_audit(config_dict: Mapping[str, Any], out_dir: str | Path, *, progress: bool = True,
                      overwrite: bool = False) -> RunResult:
    """Run an encoder audit from a config mapping into the run directory ``out_dir``; return its result
    (``metrics.json``, read-only)."""
    config = parse_config({**config_dict, "kind": "encoder"})
    return run_audit(config, out_dir, overwrite=overwrite, progress=progress)


register_kind("encoder", EncoderAuditConfig, run_encoder_outcome, parse=parse, resolve=resolve)
