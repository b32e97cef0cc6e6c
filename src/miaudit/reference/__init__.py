"""Reference data for attacks that learn: shadow models, reference pools, population data."""

from miaudit.reference.data import AttackReference, ReferencePool, ShadowData

__all__ = ["AttackReference", "ReferencePool", "ShadowData"]
