"""Label-only attacks (Choquette-Choo et al. 2021): robustness of the predicted label to augmentations,
noise, and the distance to the decision boundary. They score :class:`~miaudit.signals.label_only.LabelOnlySignals`
computed by querying the model (see :mod:`miaudit.queried`)."""

from miaudit.attacks.label_only.robustness import (AugmentationRobustnessAttack, BoundaryDistanceAttack,
                                                   LabelOnlyAttack, NoiseRobustnessAttack)

__all__ = ["AugmentationRobustnessAttack", "BoundaryDistanceAttack", "LabelOnlyAttack", "NoiseRobustnessAttack"]
