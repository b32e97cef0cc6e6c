"""Target adapters: the model being audited, seen through the outputs it can give.

Each target has ``outputs(dataset_or_x, y=None) -> ClassifierOutputs``, an ``access`` attribute
("logits", "probabilities" or "label-only"); all but the black box have ``fingerprint()`` for signal caching.
"""

from miaudit.targets.blackbox import BlackBoxTarget
from miaudit.targets.precomputed import PrecomputedTarget
from miaudit.targets.sklearn import SklearnTarget
from miaudit.targets.torch_module import TorchClassifierTarget

__all__ = ["TorchClassifierTarget", "SklearnTarget", "BlackBoxTarget", "PrecomputedTarget"]
