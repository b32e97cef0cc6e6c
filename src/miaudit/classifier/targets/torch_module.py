"""A torch classifier module as an audit target (logit access)."""

from __future__ import annotations

import numpy as np
from torch import nn

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.targets.base import example_ids, unpack
from miaudit.classifier.training.loop import predict_logits
from miaudit.data.datasets import ArrayDataset
from miaudit.utils.fingerprint import module_fingerprint


class TorchClassifierTarget:
    """Wraps a ``torch.nn.Module`` mapping inputs ``(n, ...)`` to logits ``(n, K)``; run in eval mode, in
    batches of ``batch_size`` examples (default: :func:`~miaudit.classifier.training.scoring_batch_size`)."""

    access = "logits"

    def __init__(self, model: nn.Module, *, batch_size: int | None = None):
        self.model = model
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        """Fingerprint of the module's class and weights (for
        :class:`~miaudit.classifier.signals.cache.SignalCache`)."""
        return module_fingerprint(self.model)

    def outputs(self, dataset_or_x: ArrayDataset | np.ndarray, y: np.ndarray | None = None) -> ClassifierOutputs:
        x, y = unpack(dataset_or_x, y)
        logits = predict_logits(self.model, x, self.batch_size)
        return ClassifierOutputs(y, logits=logits, ids=example_ids(dataset_or_x))
