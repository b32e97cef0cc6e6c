"""Model families: shadow and reference models (and optionally the target) of the user's own kind of model.

By default the tool trains every model from its zoo (``training.model``). A :class:`ModelFamily`
trains models like the user's instead, for the target, every shadow model and every reference
model, on every executor (sequential, process, Ray):

- :class:`EstimatorFamily`: a scikit-learn-compatible estimator (scikit-learn, XGBoost's
  ``XGBClassifier``, LightGBM's ``LGBMClassifier``...). Each model is ``sklearn.base.clone(template)``
  (the same hyper-parameters, no fitted state) with every ``random_state`` parameter (nested ones
  of pipelines included) set to the model's own seed, fitted on its training rows. The classes
  present in those rows are numbered 0..k-1 for the fit (XGBoost needs that) and the
  probabilities placed back at the original class indices, so a model whose half lacks a class
  still lines up with the labels (that class gets probability 0). Its outputs are probabilities.
- :class:`TorchFamily`: a torch module built by a :class:`ModelFactory` (the user's class with its
  ``kwargs``, or the zoo model) with initial weights from the model's seed, trained either by
  the user's training function (``training.function``, see :data:`TRAINING_FUNCTION_DOC`) or by
  miaudit's loop with the ``training`` recipe. Its outputs are logits.

Families are pickled to worker processes and Ray tasks: they hold specs and unfitted templates,
and import the user's code in the worker (``miaudit.utils.trusted_code``; the opt-in was checked
when the config was parsed). Their models' outputs are cached like zoo models' (not their weights).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from miaudit.classifier.targets import SklearnTarget, TorchClassifierTarget
from miaudit.classifier.training import TrainConfig, build_model_from_config, predict_logits, train_classifier
from miaudit.data import ArrayDataset
from miaudit.errors import ConfigError, DataError, MiauditError, one_line
from miaudit.utils.fingerprint import fingerprint
from miaudit.utils.trusted_code import import_trusted_callable

if TYPE_CHECKING:
    from miaudit.classifier.reference.executors import ModelResult, ModelTask, PoolContext

#: the documented signature of a training function named by ``training.function``
TRAINING_FUNCTION_DOC = """\
def fit(model_factory, data, seed, device):
    '''Train one model as you trained the target; miaudit calls it for every model it trains.

    model_factory: call it with no argument for a fresh, untrained model (torch.nn.Module; its
                   initial weights are drawn from ``seed``);
    data:          miaudit.data.ArrayDataset: data.x float32 (n, ...) inputs, data.y int64 (n,)
                   class indices 0..K-1, data.n_classes K;
    seed:          int, this model's own seed (shuffling, dropout...: seed everything you draw);
    device:        str, training.device ("cpu" or "cuda[:N]").
    Returns the trained torch.nn.Module, mapping inputs (B, ...) to logits (B, K).
    '''
"""


# -- scikit-learn-compatible estimators ------------------------------------------------------------
class RefittedEstimator:
    """A clone fitted on the classes present in its rows, numbered 0..k-1; ``classes_`` are the original indices.

    ``predict_proba`` columns follow ``classes_`` (as scikit-learn's do), so :class:`SklearnTarget`
    places them at the right class indices.
    """

    def __init__(self, estimator: Any, classes: np.ndarray):
        self.estimator = estimator
        self.classes_ = classes

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)  # (n, k), columns = classes_

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[np.asarray(self.estimator.predict(x), dtype=np.int64)]


def seeded_clone(template: Any, seed: int) -> Any:
    """``sklearn.base.clone(template)`` with every ``random_state`` parameter (nested ones too) set to ``seed``."""
    from sklearn.base import clone

    estimator = clone(template)
    params = estimator.get_params(deep=True)
    seeds = {k: seed for k in params if k == "random_state" or k.endswith("__random_state")}
    if seeds:
        estimator.set_params(**seeds)
    return estimator


@dataclasses.dataclass
class EstimatorFamily:
    """Clones of a scikit-learn-compatible estimator ``template`` (unfitted), each fitted on its own rows."""

    template: Any
    n_classes: int
    output: Literal["probs"] = "probs"

    def __post_init__(self) -> None:
        if not hasattr(self.template, "get_params") or not hasattr(self.template, "fit"):
            raise ConfigError(f"{type(self.template).__name__} is not a scikit-learn-compatible estimator (it needs "
                              "get_params / fit / predict_proba); use its scikit-learn API class")
        if not hasattr(self.template, "predict_proba"):
            raise ConfigError(f"{type(self.template).__name__} has no predict_proba; reference and shadow models "
                              "need probabilities")

    @property
    def name(self) -> str:
        return type(self.template).__name__

    def describe(self) -> str:
        return f"clones of {self.name} (sklearn.base.clone, refitted)"

    def fingerprint(self) -> str:
        from sklearn.base import clone

        params = clone(self.template).get_params(deep=False)
        return fingerprint("estimator", type(self.template).__module__, self.name,
                           {k: repr(v) for k, v in sorted(params.items())}, self.n_classes)

    def train(self, data: ArrayDataset, seed: int) -> SklearnTarget:
        """A clone fitted on ``data`` (inputs flattened to ``(n, d)``) with ``random_state=seed``."""
        classes = np.unique(data.y)
        if classes.size < 2:
            raise DataError(f"a {self.name} clone would train on {len(data)} examples of one class only; audit more "
                            "examples (each reference model trains on half of the audited ones)")
        estimator = seeded_clone(self.template, seed)
        try:
            estimator.fit(data.x.reshape(len(data), -1), np.searchsorted(classes, data.y))
        except MiauditError:
            raise
        except Exception as exc:  # the estimator may raise anything
            raise DataError(f"fitting a clone of {self.name} on {len(data)} examples failed ({one_line(exc)})") \
                from None
        return SklearnTarget(RefittedEstimator(estimator, classes), output="probabilities", n_classes=self.n_classes)

    def predict(self, model: SklearnTarget, x: np.ndarray) -> np.ndarray:
        """``(n, K)`` probabilities of ``model`` on inputs ``x``."""
        labels = np.zeros(len(x), dtype=np.int64)
        return model.outputs(x, labels).probs


# -- torch modules ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelFactory:
    """Builds a fresh torch model: the user's class (``class_spec`` with ``kwargs``) or the zoo model of ``recipe``."""

    input_shape: tuple[int, ...]
    n_classes: int
    recipe: TrainConfig
    class_spec: str | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    label: str | None = None  # how models are named in messages and metrics (default: the class)

    @property
    def name(self) -> str:
        return self.label or self.class_spec or f"zoo {self.recipe.model}"

    def build(self, seed: int) -> nn.Module:
        """A new model whose initial weights depend only on ``seed`` (the global torch RNG is left untouched)."""
        if self.class_spec is None:
            return build_model_from_config(dataclasses.replace(self.recipe, seed=seed), self.input_shape,
                                           self.n_classes)
        cls = import_trusted_callable(self.class_spec, trust_code=True, where="the model class",
                                      accept=lambda obj: isinstance(obj, type) and issubclass(obj, nn.Module),
                                      expected="a torch.nn.Module subclass")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                return cls(**self.kwargs)
            except Exception as exc:  # the user's constructor may raise anything
                raise ConfigError(f"config.target.torch_module.kwargs: {self.class_spec}(**kwargs) failed "
                                  f"({one_line(exc)}); fix the constructor arguments") from None


@dataclasses.dataclass(frozen=True)
class SeededFactory:
    """The ``model_factory`` a training function receives: each call returns a fresh model initialised from ``seed``."""

    factory: ModelFactory
    seed: int

    def __call__(self) -> nn.Module:
        return self.factory.build(self.seed)


@dataclasses.dataclass
class TorchFamily:
    """Models from ``factory``, trained by the training function ``function`` or, without one, by miaudit's loop."""

    factory: ModelFactory
    function: str | None = None
    output: Literal["logits"] = "logits"

    @property
    def name(self) -> str:
        return self.factory.name

    def describe(self) -> str:
        how = f"trained by {self.function}" if self.function else \
            f"trained by miaudit's loop ({self.factory.recipe.epochs} epochs, {self.factory.recipe.optimizer}, " \
            f"lr {self.factory.recipe.lr:g})"
        return f"{self.name} {how}"

    def fingerprint(self) -> str:
        recipe = {f.name: getattr(self.factory.recipe, f.name) for f in dataclasses.fields(TrainConfig)}
        recipe.pop("seed")
        return fingerprint("torch", self.factory.class_spec, self.factory.kwargs, self.function, recipe,
                           list(self.factory.input_shape), self.factory.n_classes)

    def _function(self) -> Callable[..., Any]:
        assert self.function is not None
        return import_trusted_callable(self.function, trust_code=True, where="config.training.function")

    def train(self, data: ArrayDataset, seed: int) -> TorchClassifierTarget:
        """A model trained on ``data``: the training function's, or miaudit's loop with the recipe and ``seed``."""
        recipe = dataclasses.replace(self.factory.recipe, seed=seed)
        if self.function is None:
            return TorchClassifierTarget(train_classifier(self.factory.build(seed), data, recipe,
                                                          progress=False).model)
        fit = self._function()
        try:
            model = fit(SeededFactory(self.factory, seed), data, seed, recipe.device)
        except MiauditError:
            raise
        except Exception as exc:  # the user's training code may raise anything
            raise DataError(f"config.training.function: {self.function} failed on {len(data)} examples "
                            f"({one_line(exc)})") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"config.training.function: {self.function} returned {type(model).__name__}; it must "
                              "return the trained torch.nn.Module")
        return TorchClassifierTarget(model.eval())

    def predict(self, model: TorchClassifierTarget, x: np.ndarray) -> np.ndarray:
        """``(n, K)`` logits of ``model`` on inputs ``x``."""
        return predict_logits(model.model, x)


ModelFamily = EstimatorFamily | TorchFamily


def train_family_task(context: PoolContext, task: ModelTask) -> ModelResult:
    """Train and score one reference model of ``context.family`` (the executors' task for a family)."""
    from miaudit.classifier.reference.executors import ModelResult

    family = context.family
    assert family is not None
    start = time.perf_counter()
    model = family.train(context.dataset.subset(task.train_index), task.recipe.seed)
    outputs = {name: family.predict(model, x) for name, x in context.queries.items()}  # type: ignore[arg-type]
    return ModelResult(task.index, {}, outputs, time.perf_counter() - start)


__all__ = ["TRAINING_FUNCTION_DOC", "EstimatorFamily", "ModelFactory", "ModelFamily", "RefittedEstimator",
           "SeededFactory", "TorchFamily", "seeded_clone", "train_family_task"]
