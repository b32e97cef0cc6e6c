"""Contrastive image encoders: SimCLR training, torch augmentations, an encoder target adapter and
EncoderMI membership features (pairwise similarities of augmented views' embeddings)."""

from miaudit.encoders.augment import AugmentConfig, augment, augmented_views
from miaudit.encoders.features import (
    SIMILARITIES, EncoderShadowData, SimilarityFeatures, pairwise_similarities, similarity_features,
)
from miaudit.encoders.model import ConvEncoder, MLPEncoder, SimCLRModel, build_encoder
from miaudit.encoders.target import EncoderTarget
from miaudit.encoders.train import EncoderTrainConfig, EncoderTrainResult, nt_xent_loss, train_simclr

__all__ = [
    "SIMILARITIES", "AugmentConfig", "ConvEncoder", "EncoderShadowData", "EncoderTarget", "EncoderTrainConfig",
    "EncoderTrainResult", "MLPEncoder", "SimCLRModel", "SimilarityFeatures", "augment", "augmented_views",
    "build_encoder", "nt_xent_loss", "pairwise_similarities", "similarity_features", "train_simclr",
]
