"""Reference data for attacks that learn: shadow models, reference pools, population data.

Training reference pools (torch) lives in :mod:`miaudit.classifier.reference.pool`; import it explicitly.
"""

from miaudit.classifier.reference.data import AttackReference, ReferencePool, ShadowData
from miaudit.classifier.reference.trained import TrainedReferencePool

__all__ = ["AttackReference", "ReferencePool", "ShadowData", "TrainedReferencePool"]
