"""EncoderMI membership features (Liu et al., CCS 2021): similarities between augmented views.

For each input, ``k`` augmented views are embedded by the encoder and the similarity of every pair
of embeddings is computed: ``k (k - 1) / 2`` values. An encoder over-fits its pre-training data by
mapping augmented views of a member close together, so members have higher similarities.

Similarity measures (higher = more similar):
- ``cosine``: ``a . b / (|a| |b|)``
- ``correlation``: Pearson correlation of the two embedding vectors (1 - scipy's correlation distance)
- ``euclidean``: ``-|a - b|_2`` (negative distance)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from miaudit.attacks.shadow import ShadowSet
from miaudit.encoder.augment import AugmentConfig, augmented_views
from miaudit.encoder.target import EncoderTarget
from miaudit.errors import ConfigError, DataError, SignalError
from miaudit.utils.logs import progress as progress_bar

Similarity = Literal["cosine", "correlation", "euclidean"]
SIMILARITIES: tuple[str, ...] = get_args(Similarity)
_EPS = 1e-12


def pairwise_similarities(embeddings: np.ndarray, measure: Similarity = "cosine") -> np.ndarray:
    """``(n, k, d)`` embeddings of ``k`` views -> ``(n, k (k - 1) / 2)`` similarities of all pairs ``i < j``."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 3 or emb.shape[1] < 2:
        raise DataError(f"need embeddings of shape (n, k >= 2, d), got {emb.shape}")
    if measure not in SIMILARITIES:
        raise ConfigError(f"similarity {measure!r} is not known; choose one of {', '.join(SIMILARITIES)}")
    i, j = np.triu_indices(emb.shape[1], k=1)
    if measure == "euclidean":
        return -np.linalg.norm(emb[:, i] - emb[:, j], axis=-1)
    if measure == "correlation":
        emb = emb - emb.mean(axis=-1, keepdims=True)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), _EPS)
    return np.einsum("npd,npd->np", unit[:, i], unit[:, j])


@dataclass
class SimilarityFeatures:
    """Signals of encoder attacks: ``values`` ``(n, k (k - 1) / 2)`` pairwise view similarities."""

    values: np.ndarray
    measure: str
    n_views: int

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        pairs = self.n_views * (self.n_views - 1) // 2
        if self.values.ndim != 2 or self.values.shape[0] == 0 or self.values.shape[1] != pairs:
            raise SignalError(f"similarity features have shape {self.values.shape}; expected (n >= 1, {pairs}) "
                              f"for {self.n_views} views")
        if not np.isfinite(self.values).all():
            raise SignalError("similarity features contain NaN or inf; check the encoder's embeddings")
        if self.measure not in SIMILARITIES:
            raise SignalError(f"unknown similarity {self.measure!r}; choose one of {', '.join(SIMILARITIES)}")

    def __len__(self) -> int:
        return self.values.shape[0]

    def subset(self, index: np.ndarray) -> SimilarityFeatures:
        return SimilarityFeatures(self.values[index], self.measure, self.n_views)

    def with_views(self, n_views: int) -> SimilarityFeatures:
        """The features the first ``n_views`` views alone would give (pairs among them)."""
        if not 2 <= n_views <= self.n_views:
            raise ConfigError(f"n_views must be in [2, {self.n_views}], got {n_views}")
        i, j = np.triu_indices(self.n_views, k=1)
        return SimilarityFeatures(self.values[:, (i < n_views) & (j < n_views)], self.measure, n_views)


def similarity_features(target: EncoderTarget, x: np.ndarray, *, n_views: int = 10,
                        similarity: Similarity = "cosine", augment: AugmentConfig | None = None, seed: int = 0,
                        chunk: int = 256, progress: bool = False) -> SimilarityFeatures:
    """Membership features of images ``x`` ``(n, C, H, W)``: ``n_views`` seeded augmented views per image."""
    if n_views < 2:
        raise ConfigError(f"n_views is {n_views}; at least 2 augmented views are needed to compare embeddings")
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity {similarity!r} is not known; choose one of {', '.join(SIMILARITIES)}")
    augment = augment or AugmentConfig()
    data = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if data.ndim != 4 or data.shape[0] == 0:
        raise DataError(f"EncoderMI features need images of shape (n, C, H, W) with n >= 1, got {tuple(data.shape)}")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in progress_bar(range(0, data.shape[0], chunk), desc="views", enabled=progress, leave=False):
        xb = data[start:start + chunk]
        views = augmented_views(xb, n_views, augment, generator)  # (c, k, C, H, W)
        emb = target.embed(views.flatten(0, 1)).reshape(xb.shape[0], n_views, -1)
        out.append(pairwise_similarities(emb, similarity))
    return SimilarityFeatures(np.concatenate(out), similarity, n_views)


class EncoderShadowData(ShadowSet[SimilarityFeatures]):
    """Shadow encoders' similarity features on their own members (True) and non-members (False)."""

    needs_both = "both members and non-members"

    def _check(self) -> None:
        if len({(f.measure, f.n_views) for f in self.signals}) != 1:
            raise DataError("all shadow feature sets must use the same similarity measure and number of views")

    @property
    def features(self) -> list[SimilarityFeatures]:
        """``features[k]``: shadow encoder k's features on its own examples."""
        return self.signals

    @property
    def measure(self) -> str:
        return self.signals[0].measure

    @property
    def n_views(self) -> int:
        return self.signals[0].n_views
