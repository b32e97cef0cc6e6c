"""Training: a readable, deterministic torch loop with defense plugins, and a small model zoo."""

from miaudit.classifier.training.loop import (
                                   PRECISIONS,
                                   TrainConfig,
                                   TrainingPlugin,
                                   TrainResult,
                                   accuracy,
                                   autocast,
                                   build_model_from_config,
                                   gather_rows,
                                   make_optimizer,
                                   predict_logits,
                                   scoring_batch_size,
                                   shuffled_batches,
                                   train_classifier,
)
from miaudit.classifier.training.models import MLP, MODEL_NAMES, ResNet18, SmallCNN, build_model

__all__ = ["TrainConfig", "TrainingPlugin", "TrainResult", "train_classifier", "predict_logits", "accuracy",
           "build_model", "build_model_from_config", "MLP", "SmallCNN", "ResNet18", "MODEL_NAMES", "PRECISIONS",
           "autocast", "gather_rows", "make_optimizer", "scoring_batch_size", "shuffled_batches"]
