"""The encoder audit (``kind: encoder``): EncoderMI against a SimCLR encoder the tool trains, or your own.

data -> split (target members / non-members / the attacker's shadow members / shadow non-members,
disjoint, from the seed) -> target and shadow encoders pre-trained with the same recipe ->
similarity features of augmented views -> EncoderMI attacks fitted on the shadow encoder ->
evaluation and the standard run directory (written by :func:`miaudit.runs.run_audit`). With
``target:`` (:mod:`miaudit.encoder.user_target`) the audited encoder and images are yours and the
dataset is only the attacker's: its shadow members and non-members.
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
from miaudit.data import ArrayDataset, load_dataset, make_split
from miaudit.encoder.features import EncoderShadowData, Similarity, similarity_features
from miaudit.encoder.target import EncoderTarget
from miaudit.encoder.train import EncoderTrainConfig, train_simclr
from miaudit.encoder.user_target import AuditedEncoder, EncoderTargetConfig, load_user_encoder
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

    n_members: int | None = None  # default 256; with your own encoder (target:) its member file says
    n_nonmembers: int | None = None  # default 256; with your own encoder its non-member file says
    n_shadow_members: int = 256
    n_shadow_nonmembers: int = 256

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and value < 1:
                raise ConfigError(f"config.split.{f.name}: must be >= 1, got {value}")


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
    target: EncoderTargetConfig | None = None

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)
        sp = self.split
        if self.target is None:
            self.split = dataclasses.replace(sp, n_members=sp.n_members or 256, n_nonmembers=sp.n_nonmembers or 256)
        else:
            for name in ("n_members", "n_nonmembers"):
                if getattr(sp, name) is not None:
                    raise ConfigError(f"config.split.{name}: your encoder is audited on the images of "
                                      f"target.{name.removeprefix('n_')}; remove split.{name}")


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


def _trained_target(config: EncoderAuditConfig, dataset: ArrayDataset, members: np.ndarray,
                    nonmembers: np.ndarray, progress: bool) -> AuditedEncoder:
    """A SimCLR encoder the tool pre-trains on ``members`` (dataset rows), audited with ``nonmembers``."""
    target, info = _pretrain(config.encoder, dataset.x[members], derive_seed(config.seed, "target"), "target",
                             progress)
    recipe = config.encoder
    info = {"source": "trained", "model": f"simclr-{recipe.arch}", "access": "embeddings",
            "description": f"SimCLR {recipe.arch} encoder (width {recipe.width}, embedding {recipe.embed_dim}) "
                           f"pre-trained by miaudit on {members.size} {dataset.name} images for {recipe.epochs} "
                           f"epochs (batch {recipe.batch_size}, temperature {recipe.temperature:g}, lr {recipe.lr:g})",
            **info}
    audited = np.concatenate([members, nonmembers])
    if dataset.ids is None:  # an ArrayDataset numbers its rows when it is given no ids
        raise DataError(f"{dataset.name}: the examples have no ids; give ids (one per example)")
    return AuditedEncoder(target, dataset.x[audited], np.arange(audited.size) < members.size, dataset.ids[audited],
                          info)


def run_encoder_outcome(config: EncoderAuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Train (or load) the target and the shadow encoder, compute similarity features, fit and score every attack."""
    attacks = build_attacks(config.attacks, kind="encoder", seed=config.seed)
    ds = config.dataset
    dataset = load_dataset(ds.source, data_dir=ds.data_dir, seed=config.seed, **ds.options)
    if len(dataset.input_shape) != 3:
        raise DataError(f"the encoder audit needs images (C, H, W); {dataset.name} has inputs of shape "
                        f"{dataset.input_shape}")
    sp = config.split
    warnings: list[str] = []
    if config.target is None:
        assert sp.n_members is not None and sp.n_nonmembers is not None  # defaults set by the config
        split = make_split(len(dataset), n_members=sp.n_members, n_nonmembers=sp.n_nonmembers,
                           n_shadow=sp.n_shadow_members + sp.n_shadow_nonmembers,
                           seed=derive_seed(config.seed, "split"))
        shadow_pool = split.shadow
    else:  # your encoder and images: the whole dataset is the attacker's
        n_shadow = sp.n_shadow_members + sp.n_shadow_nonmembers
        if n_shadow > len(dataset):
            raise DataError(f"the shadow encoder needs {n_shadow} images (split.n_shadow_members + "
                            f"n_shadow_nonmembers) but {dataset.name} has {len(dataset)}; lower them")
        shadow_pool = np.random.default_rng(derive_seed(config.seed, "split")).permutation(len(dataset))[:n_shadow]
        warnings += ["the shadow encoder's data comes from the given dataset; it must not overlap your encoder's "
                     "pre-training images, which the tool cannot check for an encoder it did not train",
                     "the shadow encoder is pre-trained by miaudit's SimCLR with the encoder recipe; the attacks "
                     "assume it behaves like yours, so make the recipe (arch, epochs, augmentations) as close to "
                     "your pre-training as you can"]
    shadow_order = np.random.default_rng(derive_seed(config.seed, "shadow-split")).permutation(shadow_pool)
    shadow_members = shadow_order[:sp.n_shadow_members]
    shadow_audited = np.concatenate([shadow_members, shadow_order[sp.n_shadow_members:]])
    shadow_membership = np.arange(shadow_audited.size) < sp.n_shadow_members

    if config.target is None:
        audited = _trained_target(config, dataset, split.target_members, split.target_nonmembers, progress)
    else:
        audited = load_user_encoder(config.target, dataset.input_shape)
    shadow, shadow_info = _pretrain(config.encoder, dataset.x[shadow_members],
                                    derive_seed(config.seed, "shadow"), "shadow", progress)
    fc = config.features
    start = time.perf_counter()
    target_features = similarity_features(audited.target, audited.x, n_views=fc.n_views,
                                          similarity=fc.similarity, augment=config.encoder.augment,
                                          seed=derive_seed(config.seed, "views", "target"), progress=progress)
    shadow_features = similarity_features(shadow, dataset.x[shadow_audited], n_views=fc.n_views,
                                          similarity=fc.similarity, augment=config.encoder.augment,
                                          seed=derive_seed(config.seed, "views", "shadow"), progress=progress)
    log.info("similarity features (%d views, %s) in %.1f s", fc.n_views, fc.similarity, time.perf_counter() - start)
    membership = audited.membership
    np.savez(folder / "similarity_features.npz", target=target_features.values, membership=membership,
             ids=audited.ids, shadow=shadow_features.values, shadow_membership=shadow_membership)

    reference = EncoderShadowData([shadow_features], [shadow_membership])
    scored = []
    for key, attack in attacks:
        start = time.perf_counter()
        scores = attack.fit(reference).score(target_features)
        scored.append(ScoredAttack(key, attack, audited.ids, membership, scores, time.perf_counter() - start))
    mean_sim = target_features.values.mean(axis=1)
    target_info = {**audited.info, "mean_similarity_members": float(mean_sim[membership].mean()),
                   "mean_similarity_nonmembers": float(mean_sim[~membership].mean())}
    data_info = {"dataset": dataset.name, "n_examples": len(dataset), "n_members": int(membership.sum()),
                 "n_nonmembers": int((~membership).sum()), "n_shadow": int(shadow_pool.size),
                 "n_views": fc.n_views, "similarity": fc.similarity}
    if config.target is not None:
        data_info["audited_from"] = config.target.audited_files
    return AuditOutcome(target=target_info, data=data_info, attacks=scored,
                        sections={"shadow": {"n_models": 1, **shadow_info}}, warnings=warnings)


def run_encoder_audit(config_dict: Mapping[str, Any], out_dir: str | Path, *, progress: bool = True,
                      overwrite: bool = False) -> RunResult:
    """Run an encoder audit from a config mapping into the run directory ``out_dir``; return its result
    (``metrics.json``, read-only)."""
    config = parse_config({**config_dict, "kind": "encoder"})
    return run_audit(config, out_dir, overwrite=overwrite, progress=progress)


register_kind("encoder", EncoderAuditConfig, run_encoder_outcome, parse=parse, resolve=resolve)
