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
from miaudit.errors import ConfigError, DataError
from miaudit.utils.fingerprint import fingerprint

#: access levels from least to most informative (as in ``miaudit.classifier.outputs``)
ACCESS_LEVELS = ("label-only", "probabilities", "logits")


class DefenseError(ConfigError):
    """A defense is unknown, badly parameterised, or cannot be combined with the rest of the setup."""


# -- what an ArrayDataset always has once built (its fields are typed optional: they may be inferred) --
def n_classes_of(data: ArrayDataset) -> int:
    """The dataset's number of classes (an :class:`ArrayDataset` always infers one)."""
    if data.n_classes is None:
        raise DataError(f"{data.name}: the number of classes is unknown; give n_classes")
    return int(data.n_classes)


def ids_of(data: ArrayDataset) -> np.ndarray:
    """The dataset's ``(n,)`` example ids (an :class:`ArrayDataset` numbers its rows when none are given)."""
    if data.ids is None:
        raise DataError(f"{data.name}: the examples have no ids; give ids (one per example)")
    return data.ids


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


def _reference_of(context: DefenseContext, defense: str) -> ArrayDataset:
    """``context.reference``; a :class:`DefenseError` when the run holds none (or an empty one)."""
    if context.reference is None or len(context.reference) == 0:
        raise DefenseError(f"defense {defense!r} needs reference data the audited examples do not belong to; "
                           "set split.n_reference > 0")
    return context.reference


class _Defense:
    #: registry name, set by each concrete class; declared like ``TrainingPlugin.name`` (an instance
    #: attribute with a class-level default) so that training defenses, which are both, agree on it
    name: str
    citation: ClassVar[str]

    @property
    def needs_reference(self) -> bool:
        """True when the defense needs ``DefenseContext.reference`` (a class constant in most defenses, set
        as ``needs_reference = True``; a property where it depends on the parameters)."""
        return False

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
        if self.needs_reference:
            _reference_of(context, self.name)

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

    @property
    def reference_data(self) -> ArrayDataset:
        """The defender's reference data of the bound context (defenses with ``needs_reference``)."""
        return _reference_of(self.context, self.name)


class OutputDefense(_Defense):
    """An inference-time post-processor on a model's outputs.

    ``requires_fit``: ``fit(members, nonmembers, seed)`` must run before ``apply`` (MemGuard's
    defence classifier, temperature fitting). ``min_access``: least access the input must give;
    ``output_access``: access level of what ``apply`` returns.
    """

    min_access: ClassVar[str] = "probabilities"
    output_access: ClassVar[str] = "probabilities"

    @property
    def requires_fit(self) -> bool:
        """True when ``fit`` must run before ``apply`` (a class constant or, where it depends on the
        parameters, a property)."""
        return False

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
           "ids_of", "n_classes_of", "output_logits"]
