"""The image-text audit (``kind: multimodal``): membership inference against a CLIP-style dual encoder.

data (Flickr8k or the user's pairs) -> split by the matching unit into disjoint image roles
(:mod:`miaudit.multimodal.split`) -> the target trained by miaudit (or a Hugging Face / open_clip
model the user brings, with the dataset's ``membership``), a shadow model trained the same way on
the attacker's data, the attacker's feature extractor (MFE) -> every model's signals on its
audited records and the gallery -> attacks fitted on the shadow model's records -> evaluation and
the standard run directory (written by :func:`miaudit.runs.run_audit`).
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

from miaudit.attacks.base import Attack
from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.errors import ConfigError
from miaudit.evaluation.run_result import RunResult
from miaudit.multimodal.data import ImageTextDataset, load_image_text
from miaudit.multimodal.model import WordTokenizer
from miaudit.multimodal.signals import (
    MultimodalReference,
    PairSignals,
    compute_pair_signals,
    pair_contrastive_loss,
    pair_cosine,
    per_record,
    retrieve,
)
from miaudit.multimodal.split import PairSplit, SplitSizes, TrainingSet, Unit, make_pair_split
from miaudit.multimodal.targets import DualEncoderTarget, HFCLIPTarget, OpenCLIPTarget, TrainedDualEncoder
from miaudit.multimodal.train import DualEncoderTrainConfig, train_dual_encoder
from miaudit.runs.config import AttackSpec, DatasetConfig, EvaluationConfig, check_attack_specs
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, parse_config, register_kind, run_audit
from miaudit.utils.fingerprint import module_fingerprint
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)

DATASET_OPTIONS = ("image_size", "limit")
UNIT_DESCRIPTIONS = {
    "pair": "one (image, caption) pair per record; members are the trained pairs, non-members pairs whose image "
            "and caption the model never saw (each image trained with one caption)",
    "image": "an image with all its captions per record; a member when the image was trained with any of its "
             "captions (members trained with every caption)",
    "caption": "one (image, caption) per record, every audited image trained with one caption; members are the "
               "trained captions, non-members other captions of the same images",
}


@dataclass
class MultimodalSplitConfig(SplitSizes):
    """The matching ``unit`` (pair | image | caption) and the images per role (:mod:`miaudit.multimodal.split`)."""

    unit: Unit = "pair"


@dataclass
class MultimodalTargetConfig:
    """``trained``: miaudit trains the target with ``model``. ``huggingface``: a CLIP model by folder or hub id
    (``name_or_path``). ``open_clip``: an architecture name or ``hf-hub:`` id (``name_or_path``) with
    ``pretrained`` (tag or checkpoint file). Loaded models need the dataset's ``membership`` array."""

    source: Literal["trained", "huggingface", "open_clip"] = "trained"
    name_or_path: str | None = None
    pretrained: str | None = None
    revision: str | None = None
    local_files_only: bool = False
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.source != "trained" and not self.name_or_path:
            raise ConfigError(f"config.target.name_or_path: required for source {self.source!r} (a folder or hub id)")
        if self.source == "trained" and self.name_or_path:
            raise ConfigError("config.target.name_or_path is set but source is 'trained'; set source to 'huggingface' "
                              "or 'open_clip' to load a model")
        if self.batch_size < 1:
            raise ConfigError(f"config.target.batch_size must be >= 1, got {self.batch_size}")


def _default_attacks() -> list[AttackSpec]:
    return [AttackSpec(n) for n in ("cosine_similarity", "cosine_calibrated", "contrastive_loss", "m4i_metric",
                                    "m4i_feature")]


@dataclass
class MultimodalAuditConfig:
    """A membership audit of an image-text dual encoder (``kind: multimodal``)."""

    dataset: DatasetConfig
    kind: Literal["multimodal"] = "multimodal"
    seed: int = 0
    split: MultimodalSplitConfig = field(default_factory=MultimodalSplitConfig)
    target: MultimodalTargetConfig = field(default_factory=MultimodalTargetConfig)
    model: DualEncoderTrainConfig = field(default_factory=DualEncoderTrainConfig)
    attacks: list[AttackSpec] = field(default_factory=_default_attacks)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)
        unknown = sorted(set(self.dataset.options) - set(DATASET_OPTIONS))
        if unknown:
            raise ConfigError(f"config.dataset.options: unknown key {unknown[0]!r}; allowed: "
                              f"{', '.join(DATASET_OPTIONS)}")


def parse(data: dict[str, Any]) -> MultimodalAuditConfig:
    """Strict parse; ``model.seed`` is refused (the top-level seed derives every model's seed)."""
    refuse_nested_seed(data, "model")
    return from_dict(MultimodalAuditConfig, data)


def resolve(config: MultimodalAuditConfig) -> dict[str, Any]:
    return resolved_without_seed(config, "model")


def _needs(attacks: list[tuple[str, Attack]], config: MultimodalAuditConfig) -> tuple[bool, bool]:
    """Whether the attacks need a shadow model and an MFE; a ConfigError if the split leaves one out."""
    shadow = any(type(a).needs_reference == "shadow" for _, a in attacks)
    mfe = any("mfe" in type(a).signals for _, a in attacks)
    for key, attack in attacks:
        if type(attack).needs_reference == "shadow" and config.split.n_shadow_members == 0:
            raise ConfigError(f"config.attacks: {key!r} needs a shadow model but config.split.n_shadow_members is 0; "
                              "give the shadow images or drop the attack")
        if "mfe" in type(attack).signals and config.split.n_mfe == 0:
            raise ConfigError(f"config.attacks: {key!r} needs the attacker's feature extractor but config.split.n_mfe "
                              "is 0; give it images or drop the attack")
    return shadow, mfe


def _train(dataset: ImageTextDataset, tokenizer: WordTokenizer, caption_ids: np.ndarray, data: TrainingSet,
           recipe: DualEncoderTrainConfig, seed: int, role: str, progress: bool
           ) -> tuple[TrainedDualEncoder, dict[str, Any]]:
    result = train_dual_encoder(dataset.pixels(data.images), caption_ids, data.captions_of, tokenizer.vocab_size,
                                dataclasses.replace(recipe, seed=seed), progress=progress, desc=f"{role} model")
    final = result.history[-1]["loss"]
    log.info("%s model: %d epochs on %d images (%d captions) in %.1f s, final InfoNCE loss %.4f", role,
             recipe.epochs, len(data), sum(len(c) for c in data.captions_of), result.seconds, final)
    info = {"n_parameters": int(sum(p.numel() for p in result.model.parameters())), "n_train_images": len(data),
            "n_train_captions": int(sum(len(c) for c in data.captions_of)),
            "train_seconds": round(result.seconds, 2), "final_train_loss": final,
            "logit_scale": result.model.logit_scale, "fingerprint": module_fingerprint(result.model)}
    return TrainedDualEncoder(result.model, tokenizer), info


def _load_target(config: MultimodalTargetConfig) -> DualEncoderTarget:
    assert config.name_or_path is not None
    if config.source == "huggingface":
        return HFCLIPTarget.from_pretrained(config.name_or_path, revision=config.revision,
                                            local_files_only=config.local_files_only, device=config.device,
                                            dtype=config.dtype, batch_size=config.batch_size)
    return OpenCLIPTarget.from_pretrained(config.name_or_path, pretrained=config.pretrained, device=config.device,
                                          batch_size=config.batch_size)


def _retrieval_summary(signals: PairSignals, membership: np.ndarray) -> dict[str, float]:
    """The model's utility and its gap: how often it ranks a record's own caption first (vs the gallery) and the
    mean cosine, for members and non-members."""
    own, _ = retrieve(signals, 1)
    cos = per_record(pair_cosine(signals), signals.owner, len(signals))
    return {"retrieval_top1_members": float(own[membership, 0].mean()),
            "retrieval_top1_nonmembers": float(own[~membership, 0].mean()),
            "mean_cosine_members": float(cos[membership].mean()),
            "mean_cosine_nonmembers": float(cos[~membership].mean())}


def run_multimodal_outcome(config: MultimodalAuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Build or load the target, train the attacker's models, compute signals, fit and score every attack."""
    attacks = build_attacks(config.attacks, kind="multimodal", seed=config.seed)
    need_shadow, need_mfe = _needs(attacks, config)
    ds = config.dataset
    dataset = load_image_text(ds.source, data_dir=ds.data_dir, **ds.options)
    trained = config.target.source == "trained"
    sizes = dataclasses.replace(config.split, n_shadow_members=config.split.n_shadow_members if need_shadow else 0,
                                n_shadow_nonmembers=config.split.n_shadow_nonmembers if need_shadow else 0,
                                n_mfe=config.split.n_mfe if need_mfe else 0)
    split: PairSplit = make_pair_split(dataset, sizes, config.split.unit, derive_seed(config.seed, "split"),
                                       train_target=trained)
    recipe = config.model
    tokenizer = WordTokenizer.build(dataset.captions, min_count=recipe.min_word_count, max_words=recipe.max_words)
    caption_ids = tokenizer.encode(dataset.captions)
    log.info("%s: %d images, %d captions, vocabulary %d words (from all captions, before the split); unit %s",
             dataset.name, dataset.n_images, len(dataset.captions), tokenizer.vocab_size - 2, split.unit)

    target: DualEncoderTarget
    if trained:
        assert split.target.train is not None
        target, target_info = _train(dataset, tokenizer, caption_ids, split.target.train, recipe,
                                     derive_seed(config.seed, "target"), "target", progress)
    else:
        target, target_info = _load_target(config.target), {}
    shadow: DualEncoderTarget | None = None
    mfe: DualEncoderTarget | None = None
    sections: dict[str, Any] = {}
    if split.shadow is not None:
        assert split.shadow.train is not None
        shadow, shadow_info = _train(dataset, tokenizer, caption_ids, split.shadow.train, recipe,
                                     derive_seed(config.seed, "shadow"), "shadow", progress)
        sections["shadow"] = {"n_models": 1, **shadow_info}
    if split.mfe is not None:
        mfe, mfe_info = _train(dataset, tokenizer, caption_ids, split.mfe, recipe, derive_seed(config.seed, "mfe"),
                               "feature extractor (MFE)", progress)
        sections["feature_extractor"] = mfe_info

    start = time.perf_counter()
    audited = split.target.audited
    target_signals = compute_pair_signals(target, dataset, audited, split.gallery, mfe=mfe, progress=progress,
                                          desc="target signals")
    reference = MultimodalReference([], [])
    if shadow is not None and split.shadow is not None:
        reference = MultimodalReference(
            [compute_pair_signals(shadow, dataset, split.shadow.audited, split.gallery, mfe=mfe, progress=progress,
                                  desc="shadow signals")],
            [split.shadow.audited.membership],
            calibration=compute_pair_signals(shadow, dataset, audited, split.gallery, progress=progress,
                                             desc="reference signals"))
    log.info("signals of %d records (%d captions) and %d gallery pairs in %.1f s", len(audited),
             audited.captions.size, len(split.gallery), time.perf_counter() - start)
    n = len(audited)
    np.savez(folder / "pair_signals.npz", ids=audited.ids, membership=audited.membership,
             cosine=per_record(pair_cosine(target_signals), audited.owner, n),
             loss=per_record(pair_contrastive_loss(target_signals), audited.owner, n),
             reference_cosine=(per_record(pair_cosine(reference.calibration), audited.owner, n)
                               if reference.calibration is not None else np.zeros(0)))

    scored = []
    for key, attack in attacks:
        start = time.perf_counter()
        scores = attack.fit(reference).score(target_signals)
        scored.append(ScoredAttack(key, attack, audited.ids, audited.membership, scores, time.perf_counter() - start))

    if trained:
        description = (f"CLIP-style dual encoder trained by miaudit (image tower: {recipe.image_patch}-px patch stem "
                       f"width {recipe.image_width}, {recipe.image_levels} conv blocks; word-conv text tower width "
                       f"{recipe.text_width}; embedding {recipe.embed_dim}) on {len(split.target.train or [])} "
                       f"{dataset.name} images at "
                       f"{dataset.image_size} px for {recipe.epochs} epochs (batch {recipe.batch_size}, "
                       f"lr {recipe.lr:g}, symmetric InfoNCE)")
        target_info = {"source": "trained", "model": "dual-encoder", "access": "embeddings",
                       "description": description, **target_info}
    else:
        target_info = {"source": config.target.source, "model": config.target.name_or_path, "access": "embeddings",
                       "description": target.description, "logit_scale": target.logit_scale}
    target_info.update(_retrieval_summary(target_signals, audited.membership))
    data_info = {"dataset": dataset.name, "n_images": dataset.n_images, "n_captions": len(dataset.captions),
                 "image_size": dataset.image_size, "unit": split.unit,
                 "unit_description": UNIT_DESCRIPTIONS[split.unit],
                 "n_records": len(audited), "n_members": int(audited.membership.sum()),
                 "n_nonmembers": int((~audited.membership).sum()), "n_record_captions": int(audited.captions.size),
                 "n_gallery": len(split.gallery), "vocabulary": tokenizer.vocab_size - 2,
                 "n_shadow_records": len(split.shadow.audited) if split.shadow else 0,
                 "n_mfe_images": len(split.mfe) if split.mfe else 0}
    warnings = []
    if config.split.n_mfe and not need_mfe:
        warnings.append("config.split.n_mfe is set but no attack uses the feature extractor; it was not trained")
    return AuditOutcome(target=target_info, data=data_info, attacks=scored, sections=sections, warnings=warnings)


def run_multimodal_audit(config_dict: Mapping[str, Any], out_dir: str | Path, *, progress: bool = True,
                         overwrite: bool = False) -> RunResult:
    """Run a multimodal audit from a config mapping into the run directory ``out_dir``; return its result
    (``metrics.json``, read-only)."""
    config = parse_config({**config_dict, "kind": "multimodal"})
    return run_audit(config, out_dir, overwrite=overwrite, progress=progress)


register_kind("multimodal", MultimodalAuditConfig, run_multimodal_outcome, parse=parse, resolve=resolve)
