"""Contrastive image encoders: SimCLR training, torch augmentations, an encoder target adapter and
EncoderMI membership features (pairwise similarities of augmented views' embeddings)."""

from miaudit.encoder.augment import AugmentConfig, augment, augmented_views
from miaudit.encoder.features import (
    SIMILARITIES,
    EncoderShadowData,
    SimilarityFeatures,
    pairwise_similarities,
    similarity_features,
)
from miaudit.encoder.model import ConvEncoder, MLPEncoder, SimCLRModel, build_encoder
from miaudit.encoder.target import EncoderTarget
from miaudit.encoder.train import EncoderTrainConfig, EncoderTrainResult, nt_xent_loss, train_simclr

__all__ = [
    "SIMILARITIES", "AugmentConfig", "ConvEncoder", "EncoderShadowData", "EncoderTarget", "EncoderTrainConfig",
    "EncoderTrainResult", "MLPEncoder", "SimCLRModel", "SimilarityFeatures", "augment", "augmented_views",
    "build_encoder", "nt_xent_loss", "pairwise_similarities", "similarity_features", "train_simclr",
]
