"""Synthetic, separable encoder case for the attack contract (and the EncoderMI tests).

Each input has ``N_VIEWS`` augmented views; its ``N_VIEWS (N_VIEWS - 1) / 2`` pairwise cosine
similarities are ``N(0.85, 0.05)`` for members of the encoder's training set and ``N(0.65, 0.05)``
otherwise (clipped to [-1, 1]): members' views embed closer together. The shadow encoder's features
are drawn the same way, independently of the target's.
"""

from __future__ import annotations

import numpy as np

from miaudit.encoder.features import EncoderShadowData, SimilarityFeatures

N_VIEWS = 5
N_AUDIT = 100
N_SHADOW = 160


def features(membership: np.ndarray, rng: np.random.Generator, n_views: int = N_VIEWS) -> SimilarityFeatures:
    """Similarity features of inputs whose membership is ``membership`` ``(n,)`` bool."""
    pairs = n_views * (n_views - 1) // 2
    centre = np.where(membership, 0.85, 0.65)[:, None]
    values = np.clip(centre + 0.05 * rng.standard_normal((membership.size, pairs)), -1.0, 1.0)
    return SimilarityFeatures(values, "cosine", n_views)


def make_case(attack_cls: type, seed: int = 0) -> tuple[EncoderShadowData, SimilarityFeatures, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(N_AUDIT) < N_AUDIT // 2
    shadow_membership = rng.permutation(np.arange(N_SHADOW) < N_SHADOW // 2)
    reference = EncoderShadowData([features(shadow_membership, rng)], [shadow_membership])
    return reference, features(labels, rng), labels.astype(int)
