"""Defenses against membership inference, and the privacy-utility comparison (``miaudit defend``).

- Training-time plugins of :func:`miaudit.classifier.training.train_classifier` (:mod:`.regularizers`,
  :mod:`.procedures`, :mod:`.dp`): ``l2``, ``dropout``, ``label_smoothing``, ``relaxloss``,
  ``mixup_mmd``, ``adv_reg``, ``distillation``, ``stacking``, ``early_stopping``, ``dp_sgd``, ``ladp``.
- Output post-processors (:mod:`.outputs`): ``trust_score_masking``, ``top_k``, ``rounding``,
  ``label_only``, ``temperature``, ``memguard``.
- :func:`build_chain` composes and checks them before any training; :mod:`.compare` runs the
  comparison with adaptive attacks.
"""

from miaudit.defenses.base import DefenseContext, DefenseError, OutputDefense, TrainingDefense
from miaudit.defenses.registry import (
                                       DefenseChain,
                                       build_chain,
                                       create_defense,
                                       defense_names,
                                       describe,
                                       get_defense_class,
)

__all__ = ["DefenseChain", "DefenseContext", "DefenseError", "OutputDefense", "TrainingDefense", "build_chain",
           "create_defense", "defense_names", "describe", "get_defense_class"]
