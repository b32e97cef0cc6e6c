"""What every defense shares: the context it is built in, and the two kinds of defense.

- :class:`TrainingDefense`: a :class:`~miaudit.classifier.training.TrainingPlugin` of the training loop
  (regularisers, DP-SGD, distillation, ...). A fresh instance is made for every model trained
  (target, shadow and reference models alike), so per-run state (an accountant, an inference
  model) never leaks between models.
- :class:`OutputDefense`: a post-processor ``ClassifierOutputs -> ClassifierOutputs`` applied to
  what the deployed model answers (top-k, rounding, MemGuard, ...).

Both follow the scikit-learn convention of the attacks: ``__init__`` takes keyword
hyper-parameters stored under the same names; state learned from data ends in ``_``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.training import TrainConfig, TrainingPlugin
from miaudit.data import ArrayDataset
from miaudit.errors import ConfigError
from miaudit.utils.fingerprint import fingerprint

#: access levels from least to most informative (as in ``miaudit.classifier.outputs``)
ACCESS_LEVELS = ("label-only", "probabilities", "logits")


class DefenseError(ConfigError):
    """A defense is unknown, badly parameterised, or cannot be combined with the rest of the setup."""


@dataclass
class DefenseContext:
    """What a defense may know when it is built, before any training.

    ``recipe``: the target's training recipe; ``input_shape`` / ``n_classes`` of the data;
    ``train_sizes``: every training-set size a model will be trained on in this run (target,
    shadow and reference models; DP defenses check their budget for each); ``reference``: data
    the defender holds that no audited example belongs to (Nasr et al.'s reference set, DMP's
    transfer set, a validation split, MemGuard's non-members), or ``None``.
    """

    recipe: TrainConfig
    input_shape: tuple[int, ...]
    n_classes: int
    train_sizes: tuple[int, ...]
    reference: ArrayDataset | None = None
    notes: list[str] = field(default_factory=list)


class _Defense:
    name: ClassVar[str]
    citation: ClassVar[str]
    #: True when the defense needs ``DefenseContext.reference``
    needs_reference: ClassVar[bool] = False

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.KEYWORD_ONLY]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def check(self, context: DefenseContext) -> None:
        """Raise :class:`DefenseError` for a setup this defense cannot run in; append notes to ``context``."""
        if self.needs_reference and (context.reference is None or len(context.reference) == 0):
            raise DefenseError(f"defense {self.name!r} needs reference data the audited examples do not belong to; "
                               "set split.n_reference > 0")

    def fingerprint(self) -> list[Any]:
        """Identity of this defense for caches: name, parameters and, for a defense that uses the
        defender's reference data (a distillation transfer set, a validation split...), that data, so
        models trained with other reference data (e.g. another ``split.n_reference``) are never reused."""
        identity: list[Any] = [self.name, self.get_params()]
        reference = getattr(getattr(self, "_context", None), "reference", None)
        if self.needs_reference and reference is not None:
            identity.append({"reference_data": fingerprint(reference.x, reference.y)})
        return identity


class TrainingDefense(_Defense, TrainingPlugin):
    """A training-time defense. ``bind(context)`` is called once after construction, before training.

    ``stage`` orders composed defenses' ``setup`` calls: model edits (0), data / procedure swaps (1),
    loss terms (2), private optimisers that wrap everything (3).
    """

    stage: ClassVar[int] = 2
    #: "replaces" when the defense substitutes the cross-entropy (at most one per composition)
    loss_role: ClassVar[str] = "adds"
    #: False when the defense touches data outside the per-example gradient (breaks DP accounting)
    dp_compatible: ClassVar[bool] = False

    def bind(self, context: DefenseContext) -> TrainingDefense:
        self._context = context
        return self

    @property
    def context(self) -> DefenseContext:
        ctx = getattr(self, "_context", None)
        if ctx is None:
            raise DefenseError(f"defense {self.name!r} was not bound to a DefenseContext; build it with "
                               "miaudit.defenses.build_defense")
        return ctx


class OutputDefense(_Defense):
    """An inference-time post-processor on a model's outputs.

    ``requires_fit``: ``fit(members, nonmembers, seed)`` must run before ``apply`` (MemGuard's
    defence classifier, temperature fitting). ``min_access``: least access the input must give;
    ``output_access``: access level of what ``apply`` returns.
    """

    requires_fit: ClassVar[bool] = False
    min_access: ClassVar[str] = "probabilities"
    output_access: ClassVar[str] = "probabilities"

    def fit(self, members: ClassifierOutputs, nonmembers: ClassifierOutputs, *, seed: int = 0) -> OutputDefense:
        """Learn from the model's outputs on its own members and on data it never saw (default: nothing)."""
        self.fitted_ = True
        return self

    def apply(self, outputs: ClassifierOutputs, *, seed: int = 0) -> ClassifierOutputs:
        """The defended outputs on the same ``n`` examples (same labels, same ids)."""
        check_access(outputs, self.min_access, self.name)
        if self.requires_fit and not getattr(self, "fitted_", False):
            raise DefenseError(f"output defense {self.name!r} must be fitted on the model's member and non-member "
                               "outputs first: call fit(members, nonmembers)")
        return self._apply(outputs, np.random.default_rng(seed)).with_ids(outputs.ids)

    def _apply(self, outputs: ClassifierOutputs, rng: np.random.Generator) -> ClassifierOutputs:
        raise NotImplementedError


def check_access(outputs: ClassifierOutputs, needed: str, what: str) -> None:
    """:class:`DefenseError` when ``outputs`` give less than ``needed`` access."""
    if ACCESS_LEVELS.index(outputs.access) < ACCESS_LEVELS.index(needed):
        raise DefenseError(f"{what} needs {needed} outputs but the target gives {outputs.access}; "
                           "remove it or expose more of the model's output")


def output_logits(outputs: ClassifierOutputs) -> np.ndarray:
    """``(n, C)`` logits, or log-probabilities when only probabilities are given (same softmax)."""
    return outputs.logits if outputs.logits is not None else outputs.log_probs


__all__ = ["ACCESS_LEVELS", "DefenseContext", "DefenseError", "OutputDefense", "TrainingDefense", "check_access",
           "output_logits"]
