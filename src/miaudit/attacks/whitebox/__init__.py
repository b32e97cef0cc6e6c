"""White-box attacks on per-example gradients (:class:`~miaudit.signals.gradients.GradientSignals`),
computed from the model's parameters (see :mod:`miaudit.queried`)."""

from miaudit.attacks.whitebox.gradients import (GradientFeaturesAttack, GradientNormAttack, WhiteBoxAttack,
                                                gradient_features)

__all__ = ["GradientFeaturesAttack", "GradientNormAttack", "WhiteBoxAttack", "gradient_features"]
