"""Image-text (CLIP-style) dual encoders: pair datasets, a small dual encoder and its contrastive training,
targets (miaudit's model, Hugging Face CLIP, open_clip), pair signals and the membership split by matching unit."""

from miaudit.multimodal.data import ImageTextDataset, load_image_text, load_pair_npz
from miaudit.multimodal.model import DualEncoder, WordTokenizer
from miaudit.multimodal.signals import (
    MFEEmbeddings,
    MultimodalReference,
    PairSignals,
    compute_pair_signals,
    pair_contrastive_loss,
    pair_cosine,
    per_record,
    retrieve,
)
from miaudit.multimodal.split import UNITS, PairSplit, Records, SplitSizes, TrainingSet, make_pair_split
from miaudit.multimodal.targets import DualEncoderTarget, HFCLIPTarget, OpenCLIPTarget, TrainedDualEncoder
from miaudit.multimodal.train import DualEncoderTrainConfig, clip_loss, train_dual_encoder

__all__ = [
    "UNITS", "DualEncoder", "DualEncoderTarget", "DualEncoderTrainConfig", "HFCLIPTarget", "ImageTextDataset",
    "MFEEmbeddings", "MultimodalReference", "OpenCLIPTarget", "PairSignals", "PairSplit", "Records", "SplitSizes",
    "TrainedDualEncoder", "TrainingSet", "WordTokenizer", "clip_loss", "compute_pair_signals", "load_image_text",
    "load_pair_npz", "make_pair_split", "pair_contrastive_loss", "pair_cosine", "per_record", "retrieve",
    "train_dual_encoder",
]
