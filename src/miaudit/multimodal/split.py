"""Membership ground truth for image-caption data: who trains on what, and which records are audited.

The **matching unit** says what one audited record is and when it counts as a member:

- ``pair`` (image + one caption): each image of a model's data gets one of its captions (drawn at
  random); the model trains on its member images with that caption only. A record is one
  (image, caption) pair; members are trained pairs, non-members pairs whose image (and caption) the
  model never saw.
- ``image`` (an image with any of its captions): the model trains on every caption of a member
  image; a record is an image with all of its captions, a member when the image was trained with
  any of them. Per-caption signals are averaged over the record's captions.
- ``caption`` (which caption of a trained image): the model trains on every audited image with one
  caption; a record is (image, caption), a member when that caption was the trained one and a
  non-member when it is another caption of the same image, never trained. The image is no clue.

Roles draw **disjoint images** from one seeded permutation: the target's members and non-members,
the attacker's shadow members and shadow non-members, the attacker's feature extractor (MFE,
M4I's feature-based attack) trained on its own images with all their captions, and a gallery of
attacker-held pairs (one caption each) that serve as retrieval candidates and as the negatives of
the per-pair contrastive loss. With a ``membership`` array on the dataset (a model the user
brings), target members come from images marked True and everything else from images marked False.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from miaudit.errors import ConfigError, DataError
from miaudit.multimodal.data import ImageTextDataset

Unit = Literal["pair", "image", "caption"]
UNITS: tuple[str, ...] = ("pair", "image", "caption")


@dataclass
class Records:
    """Audited records: record ``r`` is image ``image[r]`` with captions ``captions[owner == r]``.

    ``image`` ``(n,)``, ``membership`` ``(n,)`` bool, ``ids`` ``(n,)`` str; ``captions`` ``(m,)``
    caption indices of the dataset with ``owner`` ``(m,)`` their record (sorted).
    """

    image: np.ndarray
    captions: np.ndarray
    owner: np.ndarray
    membership: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return int(self.image.size)


@dataclass
class TrainingSet:
    """Images ``(k,)`` a model trains on and, for each, the caption indices it may be paired with."""

    images: np.ndarray
    captions_of: list[np.ndarray]

    def __len__(self) -> int:
        return int(self.images.size)


@dataclass
class RoleSplit:
    """One model's training set (None for a model the user brings) and the records audited against it."""

    train: TrainingSet | None
    audited: Records


@dataclass
class PairSplit:
    unit: str
    target: RoleSplit
    shadow: RoleSplit | None
    mfe: TrainingSet | None
    gallery: Records  # one caption each; membership all False (the attacker's data)


@dataclass
class SplitSizes:
    """Images per role; 0 leaves a role out (no shadow model, no MFE)."""

    n_members: int = 1000
    n_nonmembers: int = 1000
    n_shadow_members: int = 1000
    n_shadow_nonmembers: int = 1000
    n_mfe: int = 1000
    n_gallery: int = 500

    def __post_init__(self) -> None:
        for f in dataclasses.fields(SplitSizes):
            if getattr(self, f.name) < 0:
                raise ConfigError(f"config.split.{f.name}: must be >= 0, got {getattr(self, f.name)}")
        for name in ("n_members", "n_nonmembers", "n_gallery"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config.split.{name}: must be >= 1, got {getattr(self, name)}")
        if (self.n_shadow_members == 0) != (self.n_shadow_nonmembers == 0):
            raise ConfigError("config.split: give both n_shadow_members and n_shadow_nonmembers, or set both to 0 "
                              "(no shadow model)")


def _record_ids(dataset: ImageTextDataset, image: np.ndarray, captions: list[np.ndarray], unit: str) -> np.ndarray:
    if unit == "image":
        return dataset.image_ids[image]
    return np.array([f"{dataset.image_ids[i]}#{c[0]}" for i, c in zip(image, captions)])


def make_records(dataset: ImageTextDataset, image: np.ndarray, captions: list[np.ndarray], membership: np.ndarray,
                 unit: str) -> Records:
    owner = np.concatenate([np.full(len(c), r) for r, c in enumerate(captions)]).astype(np.int64)
    return Records(np.asarray(image, np.int64), np.concatenate(captions).astype(np.int64), owner,
                   np.asarray(membership, bool), _record_ids(dataset, image, captions, unit))


def _role(dataset: ImageTextDataset, captions_of: list[np.ndarray], members: np.ndarray, nonmembers: np.ndarray,
          unit: str, rng: np.random.Generator, trained: bool) -> RoleSplit:
    """Training set and audited records for member / non-member images (unit ``caption``: ``nonmembers`` are
    member images, audited with a caption they were not trained with)."""
    if unit == "image":
        images = np.concatenate([members, nonmembers])
        caps = [captions_of[i] for i in images]
        train = TrainingSet(members, [captions_of[i] for i in members])
        return RoleSplit(train if trained else None,
                         make_records(dataset, images, caps, np.arange(images.size) < members.size, unit))
    if unit == "pair":
        images = np.concatenate([members, nonmembers])
        caps = [captions_of[i][[rng.integers(len(captions_of[i]))]] for i in images]
        train = TrainingSet(members, caps[:members.size])
        return RoleSplit(train if trained else None,
                         make_records(dataset, images, caps, np.arange(images.size) < members.size, unit))
    # caption: ``nonmembers`` are member images whose held-out caption (never trained) is audited
    shuffled = {int(i): rng.permutation(captions_of[i]) for i in members}
    images = np.concatenate([members, nonmembers])
    caps = [shuffled[int(i)][:1] for i in members] + [shuffled[int(i)][1:2] for i in nonmembers]
    train = TrainingSet(members, caps[:members.size])
    return RoleSplit(train, make_records(dataset, images, caps, np.arange(images.size) < members.size, unit))


def make_pair_split(dataset: ImageTextDataset, sizes: SplitSizes, unit: str, seed: int, *,
                    train_target: bool = True) -> PairSplit:
    """Disjoint image roles (module doc) drawn with ``seed``; ``train_target=False``: the dataset's
    ``membership`` array gives the target's members (a model the user brings)."""
    if unit not in UNITS:
        raise ConfigError(f"config.split.unit {unit!r} is not known; choose one of {', '.join(UNITS)}")
    captions_of = dataset.captions_of()
    rng = np.random.default_rng(seed)
    if unit == "caption":
        few = [i for i, c in enumerate(captions_of) if len(c) < 2]
        if few:
            raise DataError(f"unit 'caption' needs at least 2 captions per image (one trained, one held out); "
                            f"{len(few)} images have one (first: {dataset.image_ids[few[0]]}); use unit 'pair'")
        for role, n_mem, n_non in (("", sizes.n_members, sizes.n_nonmembers),
                                   ("shadow_", sizes.n_shadow_members, sizes.n_shadow_nonmembers)):
            if n_non > n_mem:
                raise ConfigError(f"config.split.n_{role}nonmembers ({n_non}) must be <= n_{role}members ({n_mem}) "
                                  "for unit 'caption': non-member records are held-out captions of member images")
    if train_target:
        pool_members = pool_rest = rng.permutation(dataset.n_images)
        n_from_rest_first = sizes.n_members
    else:
        if dataset.membership is None:
            raise DataError(f"{dataset.name} has no 'membership' array; a model you bring needs to know which images "
                            "it was trained on (save membership=<(n_images,) bool> in the dataset file)")
        if unit == "caption":
            raise ConfigError("unit 'caption' needs to know which caption trained each image; it is only available "
                              "for models miaudit trains (use unit 'image' or 'pair')")
        pool_members = rng.permutation(np.flatnonzero(dataset.membership))
        pool_rest = rng.permutation(np.flatnonzero(~dataset.membership))
        n_from_rest_first = 0
    n_non_images = 0 if unit == "caption" else sizes.n_nonmembers
    n_shadow_non = 0 if unit == "caption" else sizes.n_shadow_nonmembers
    need_rest = (n_from_rest_first + n_non_images + sizes.n_shadow_members + n_shadow_non + sizes.n_mfe
                 + sizes.n_gallery)
    if pool_members.size < sizes.n_members or pool_rest.size < need_rest:
        have = (f"{pool_rest.size} images" if train_target else
                f"{pool_members.size} member and {pool_rest.size} non-member images")
        raise DataError(f"the split needs {need_rest + (0 if train_target else sizes.n_members)} images "
                        f"({sizes.n_members} target members, {n_non_images} non-members, "
                        f"{sizes.n_shadow_members + n_shadow_non} shadow, {sizes.n_mfe} MFE, "
                        f"{sizes.n_gallery} gallery) "
                        f"but {dataset.name} has {have}; lower the sizes in config.split")
    members = pool_members[:sizes.n_members]
    cursor = n_from_rest_first

    def take(k: int) -> np.ndarray:
        nonlocal cursor
        cursor += k
        return pool_rest[cursor - k:cursor]

    nonmembers = take(n_non_images) if unit != "caption" else members[:sizes.n_nonmembers]
    target = _role(dataset, captions_of, members, nonmembers, unit, rng, train_target)
    shadow = None
    if sizes.n_shadow_members:
        shadow_members = take(sizes.n_shadow_members)
        shadow_non = take(n_shadow_non) if unit != "caption" else shadow_members[:sizes.n_shadow_nonmembers]
        shadow = _role(dataset, captions_of, shadow_members, shadow_non, unit, rng, True)
    mfe = None
    if sizes.n_mfe:
        mfe_images = take(sizes.n_mfe)
        mfe = TrainingSet(mfe_images, [captions_of[i] for i in mfe_images])
    gallery_images = take(sizes.n_gallery)
    gallery_caps = [captions_of[i][[rng.integers(len(captions_of[i]))]] for i in gallery_images]
    gallery = make_records(dataset, gallery_images, gallery_caps, np.zeros(gallery_images.size, bool), "pair")
    return PairSplit(unit, target, shadow, mfe, gallery)


__all__ = ["UNITS", "PairSplit", "Records", "RoleSplit", "SplitSizes", "TrainingSet", "Unit", "make_pair_split",
           "make_records"]
