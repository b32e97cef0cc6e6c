"""Membership-inference attacks on classifiers.

All attacks score :class:`miaudit.classifier.outputs.ClassifierOutputs` (the target's outputs on the audited
examples) and learn, where they learn, from :class:`miaudit.classifier.reference.AttackReference`:

- ``metric``: correctness, loss, confidence, entropy, modified entropy (Yeom et al. 2018; Song &
  Mittal 2021), optional thresholds learned on shadow data, global or class-dependent.
- ``shokri``: shadow-model attack classifiers (Shokri et al. 2017) and ML-Leaks (Salem et al. 2019).
- ``population``: target loss against its loss distribution on population data (Ye et al. 2022).
"""

from miaudit.classifier.attacks.metric import (
    ConfidenceAttack,
    CorrectnessAttack,
    EntropyAttack,
    LossAttack,
    ModifiedEntropyAttack,
)
from miaudit.classifier.attacks.population import PopulationAttack
from miaudit.classifier.attacks.shokri import MLLeaksAttack, ShokriAttack, attack_features

__all__ = [
    "ConfidenceAttack", "CorrectnessAttack", "EntropyAttack", "LossAttack", "MLLeaksAttack",
    "ModifiedEntropyAttack", "PopulationAttack", "ShokriAttack", "attack_features",
]
