"""Target adapters: the model being audited, seen through the outputs it can give.

Each target has ``outputs(dataset_or_x, y=None) -> ClassifierOutputs``, an ``access`` attribute
("logits", "probabilities" or "label-only"); all but the black box have ``fingerprint()`` for signal caching.
"""

from miaudit.classifier.targets.blackbox import BlackBoxTarget
from miaudit.classifier.targets.precomputed import PrecomputedTarget
from miaudit.classifier.targets.sklearn import SklearnTarget
from miaudit.classifier.targets.torch_module import TorchClassifierTarget

__all__ = ["TorchClassifierTarget", "SklearnTarget", "BlackBoxTarget", "PrecomputedTarget"]
