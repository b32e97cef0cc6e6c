"""Synthetic, separable image-text case for the attack contract (and the multimodal attack tests).

Each record ``r`` has a random unit "scene" vector ``u_r`` in ``D`` dimensions. Its image embeds
near ``u_r``; its caption embeds near ``u_r`` for members (cosine about 0.9: the model fit the
pair) and only loosely for non-members (about 0.35). Gallery pairs are unrelated scenes. Captions
are short word strings built from the record's own words, so a member's retrieved caption (its
own) matches its reference exactly and a non-member's (often a gallery caption) does not. A
reference model that never trained on any record gives every pair the loose similarity; the
attacker's feature extractor (MFE) embeds every true pair, member or not, close together.
"""

from __future__ import annotations

import numpy as np

from miaudit.multimodal.signals import MFEEmbeddings, MultimodalReference, PairSignals

D = 16
N_AUDIT = 100
N_SHADOW = 160
N_GALLERY = 60


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _towards(u: np.ndarray, cos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at about cosine ``cos`` ``(n,)`` from the unit rows of ``u``."""
    noise = rng.standard_normal(u.shape)
    noise = _unit(noise - (noise * u).sum(1, keepdims=True) * u)
    c = np.clip(cos, -1, 1)[:, None]
    return c * u + np.sqrt(1 - c ** 2) * noise


def _caption(rng: np.random.Generator, tag: str) -> str:
    return " ".join(f"{tag}{w}" for w in rng.integers(0, 40, size=6))


def pair_signals(membership: np.ndarray, rng: np.random.Generator, *, fitted: bool = True,
                 prefix: str = "r") -> PairSignals:
    """A model's signals on records with ``membership`` ``(n,)``; ``fitted=False``: a model that trained on none."""
    n = membership.size
    scenes = _unit(rng.standard_normal((n, D)))
    image = _towards(scenes, np.full(n, 0.95), rng)
    cos = np.where(membership & fitted, 0.9, 0.35) + 0.03 * rng.standard_normal(n)
    text = _towards(image, cos, rng)
    gallery_scenes = _unit(rng.standard_normal((N_GALLERY, D)))
    gallery_image = _towards(gallery_scenes, np.full(N_GALLERY, 0.95), rng)
    gallery_text = _towards(gallery_image, np.full(N_GALLERY, 0.35), rng)
    captions = [_caption(rng, "w") for _ in range(n)]
    gallery_captions = [_caption(rng, "g") for _ in range(N_GALLERY)]
    mfe = MFEEmbeddings(image=scenes, text=_towards(scenes, np.full(n, 0.8), rng),
                        gallery_text=_unit(rng.standard_normal((N_GALLERY, D))))
    return PairSignals(np.array([f"{prefix}{i}" for i in range(n)]), image, text, np.arange(n), captions,
                       gallery_image, gallery_text, gallery_captions, 20.0, mfe)


def make_case(attack_cls: type, seed: int = 0) -> tuple[MultimodalReference, PairSignals, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(N_AUDIT) < N_AUDIT // 2
    shadow_membership = rng.permutation(np.arange(N_SHADOW) < N_SHADOW // 2)
    target = pair_signals(labels, rng)
    calibration = pair_signals(labels, np.random.default_rng(seed + 1), fitted=False)
    reference = MultimodalReference([pair_signals(shadow_membership, rng, prefix="s")], [shadow_membership],
                                    calibration=calibration)
    return reference, target, labels.astype(int)
