"""One classifier experiment: target, shadow models, reference pool and population outputs, built one way.

``miaudit audit`` (``kind: classifier``), ``miaudit defend`` (once per training part of a defense)
and the DP canary audit (``kind: dp_canary``) all get what attacks need from here::

    experiment = ClassifierExperiment.from_config(config, attacks)  # data, split, target source; attacks checked
    models = experiment.run(plugins=factory)                        # trains target, shadow and reference models
    models.target.outputs, models.target.membership, models.target.ids, models.reference
    models.queried(attacks)                                         # label-only / white-box attacks' scores

Every check of the attacks against what the run can give them (shadow models, reference pool,
population data, access level, weights, queries) happens in the constructor, before any training.
Training-time defenses enter as a factory of fresh training plugins for every model (target,
shadow and reference models alike); this module never imports :mod:`miaudit.defenses`.

Every random choice is derived from the config's ``seed`` (:func:`~miaudit.utils.seed.derive_seed`):
the split (``"split"``), the target's initialisation and batch order (``"target"``), each shadow
model's data (``"shadow-data", m``) and training (``"shadow", m``), the reference pool
(``"reference"``). Two runs with the same dataset, split, recipe, shadow and reference sections
and seed therefore train the same models, bit for bit, whichever command runs them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from miaudit.attacks.base import Attack, access_allows
from miaudit.classifier.attacks._reference import CountsReferenceModels
from miaudit.classifier.config import ClassifierTraining, ReferenceConfig, ShadowConfig, TargetConfig
from miaudit.classifier.families import EstimatorFamily, ModelFactory, ModelFamily, TorchFamily
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.queried import QueriedScores, ShadowModel, run_queried_attacks, signal_type
from miaudit.classifier.reference import AttackReference, ShadowData, TrainedReferencePool
from miaudit.classifier.reference.executors import vectorisable
from miaudit.classifier.reference.views import query_views
from miaudit.classifier.signals.shadow import ShadowSignals
from miaudit.classifier.sources import AuditedTarget, precomputed_target, user_model_target
from miaudit.classifier.targets import SklearnTarget, TorchClassifierTarget
from miaudit.classifier.targets.hf_text import HFTextClassifier, HFTextSource
from miaudit.classifier.targets.tables import align_to_model, read_table_examples, with_classes
from miaudit.classifier.targets.user_model import run_model
from miaudit.classifier.training import TrainConfig, TrainingPlugin, build_model_from_config
from miaudit.classifier.training.measured import train_isolated, train_measured, train_model
from miaudit.data import ArrayDataset, MembershipSplit, load_dataset, make_split
from miaudit.data.datasets import BUILTIN
from miaudit.data.rows import is_table
from miaudit.data.tabular import Table, TabularPreprocessor, read_table, tabular_format, tabular_options
from miaudit.errors import ConfigError, DataError
from miaudit.runs.config import DatasetConfig
from miaudit.utils.logs import progress as progress_bar
from miaudit.utils.logs import progress_enabled
from miaudit.utils.seed import derive_seed
from miaudit.utils.trusted_code import import_trusted_callable

log = logging.getLogger(__name__)
#: the torch class of a Hugging Face text classifier's reference and shadow models
HF_CLASS = "miaudit.classifier.targets.hf_text:HFTextClassifier"
#: the reference data an experiment can build for attacks
SUPPORTED_REFERENCE = ("none", "population", "shadow", "reference-pool")
#: what each kind of reference data is, in messages
_NEEDS = {"shadow": "shadow models", "reference-pool": "a reference pool", "population": "population data"}
#: fresh training plugins (training-time defenses) for one model
PluginFactory = Callable[[], Sequence[TrainingPlugin]]


class SplitSizes(Protocol):
    """Sizes of the disjoint parts drawn from the dataset (``SplitConfig``, defend's ``DefendSplit``)."""

    n_members: int | None
    n_nonmembers: int | None
    n_shadow: int
    n_population: int


@dataclass(frozen=True)
class GivenData:
    """A target the tool trains on data the caller chose: ``train``, audited on ``audited`` with ``membership``.

    The DP canary audit gives its fixed examples plus inserted canaries (``train``) and every
    canary (``audited``, ``membership`` ``(n,)`` True = inserted).
    """

    train: ArrayDataset
    audited: ArrayDataset
    membership: np.ndarray


@dataclass
class ModelOutputs:
    """One trained model's outputs, for output post-processors fitted per model (MemGuard, temperature).

    ``scored`` ``(n,)``: on the examples attacks see (the target's and the pool's: the audited
    examples; a shadow model's: its own members and non-members), ``membership`` ``(n,)`` which of
    them it trained on; ``members``: on its whole training set; ``unseen``: on data it never saw
    (the defender's held-out data; a reference model's examples left OUT); ``population``: on
    population data (target and reference models).
    """

    scored: ClassifierOutputs
    membership: np.ndarray
    members: ClassifierOutputs | None = None
    unseen: ClassifierOutputs | None = None
    population: ClassifierOutputs | None = None


@dataclass
class ExperimentModels:
    """Everything one :meth:`ClassifierExperiment.run` trained, and what attacks learn from.

    ``target``: outputs on the audited examples (with ids), membership, the model; ``shadow``:
    each shadow model's outputs on its own examples; ``pool``: the reference pool (on the audited
    examples and the population); ``shadow_models``: the shadow models themselves, kept when an
    attack queries them; ``sections``: ``"shadow"`` / ``"reference"`` summaries for
    ``metrics.json``; ``warnings``: run-level warnings (e.g. the pool's fidelity check).
    """

    target: AuditedTarget
    target_outputs: ModelOutputs
    shadow: list[ModelOutputs] = field(default_factory=list)
    pool: TrainedReferencePool | None = None
    shadow_models: list[ShadowModel] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    progress: bool = False
    target_views: list[ClassifierOutputs] | None = None
    shadow_signals: dict[tuple[str, str], ShadowSignals] = field(default_factory=dict, repr=False)
    _queried: dict[str, QueriedScores] = field(default_factory=dict, repr=False)

    @property
    def reference(self) -> AttackReference:
        """Shadow data, reference pool and the target's population outputs, as attacks' ``fit`` takes them."""
        shadow = ShadowData([s.scored for s in self.shadow], [s.membership for s in self.shadow]) if self.shadow \
            else None
        return AttackReference(shadow=shadow, pool=self.pool, population=self.target.population)

    def pool_outputs(self) -> list[ModelOutputs]:
        """Each reference model's outputs: on the audited examples, its IN ones (``members``), its OUT ones."""
        if self.pool is None:
            return []
        population: Sequence[ClassifierOutputs | None] = self.pool.population or [None] * self.pool.n_models
        return [ModelOutputs(out, keep, members=out.subset(keep), unseen=out.subset(~keep), population=z)
                for out, keep, z in zip(self.pool.outputs, self.pool.keep, population)]

    def queried(self, attacks: Sequence[tuple[str, Attack]]) -> dict[str, QueriedScores]:
        """Scores of the attacks that query the target model itself (label-only, white-box), by key.

        Computed once per key (defenses that share trained models share these scores: output
        post-processors keep labels and never touch weights); signals shared by attacks with the
        same request are computed once (:func:`~miaudit.classifier.queried.run_queried_attacks`).
        """
        wanted = [(k, a) for k, a in attacks if signal_type(a)]
        todo = [(k, a) for k, a in wanted if k not in self._queried]
        if todo:
            assert self.target.audited is not None  # checked: attacks that query need a model the tool can run
            log.info("computing query / gradient signals for %s", ", ".join(k for k, _ in todo))
            self._queried.update({r.key: r for r in run_queried_attacks(
                todo, self.target.model, self.target.audited, shadow=self.shadow_models, progress=self.progress,
                shadow_cache=self.shadow_signals)})
        return {k: self._queried[k] for k, _ in wanted}

    def view_outputs(self, views: str) -> list[ClassifierOutputs]:
        """The target's outputs on every query view of the audited examples; view 0 is the plain query."""
        if self.target_views is not None:
            return self.target_views
        audited = self.target.audited
        assert audited is not None and self.target.model is not None
        return [self.target.outputs] + [
            run_model(self.target.model, ArrayDataset(v, audited.y, n_classes=audited.n_classes,
                                                      name=f"query view {i}", ids=audited.ids))
            for i, v in enumerate(query_views(audited.x, views)[1:], 1)]


def check_reference_needs(key: str, attack: Attack, *, shadow: bool, pool: int, population: bool,
                          population_fix: str, models: str = "models") -> None:
    """Refuse ``attack`` (config label ``key``) when a run lacks the reference data it needs.

    What it needs: its ``needs_reference`` and, when it must be fitted, every ``fit_input`` (RMIA:
    a pool and population data), with enough reference models per example
    (:class:`~miaudit.classifier.attacks._reference.CountsReferenceModels`); a ``per_class`` threshold
    needs shadow models. ``shadow`` / ``population``: whether the run builds them; ``pool``: how many
    reference models it trains on paired halves (0: none); ``population_fix`` says how to get population
    data; ``models`` names what shadow and reference models are ("federations").
    """
    need = attack.needs_reference
    if need not in SUPPORTED_REFERENCE:
        raise ConfigError(f"attack {key!r} needs {need} data, which this audit does not build; use attacks whose "
                          f"reference is one of {', '.join(SUPPORTED_REFERENCE)}")
    needed = {need, *(attack.fit_input if attack.fit_required() else ())}
    if "shadow" in needed and not shadow:
        raise ConfigError(f"attack {key!r} learns from shadow {models}; set shadow.n_models >= 1 and split.n_shadow")
    if "reference-pool" in needed and not pool:
        raise ConfigError(f"attack {key!r} compares the target with reference {models}; set reference.n_models "
                          "(an even number, e.g. 16)")
    if "population" in needed and not population:
        raise ConfigError(f"attack {key!r} needs population data the target never saw; set {population_fix}")
    if pool and isinstance(attack, CountsReferenceModels):
        per_example, fix = attack.models_per_example()
        if pool // 2 < per_example:
            raise ConfigError(f"config.reference.n_models: attack {key!r} needs at least {per_example} IN and "
                              f"{per_example} OUT reference {models} per example, but {pool} {models} on paired "
                              f"halves give {pool // 2} of each: {fix}")
    if getattr(attack, "per_class", False) and need == "none" and not shadow:
        raise ConfigError(f"attack {key!r} with per_class=true learns class thresholds from shadow {models}; set "
                          "shadow.n_models >= 1")


def _accuracy(outputs: ClassifierOutputs, rows: np.ndarray) -> float:
    return float(outputs.correctness[rows].mean())


def majority_rate(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Test accuracy of always predicting the most frequent class of ``train_labels`` ``(n,)`` on ``test_labels``."""
    majority = int(np.bincount(train_labels).argmax())
    return float(np.mean(test_labels == majority))


def no_better_than_majority(test_accuracy: float, majority: float) -> str:
    """The warning for a trained target whose test accuracy does not beat always predicting one class."""
    return (f"the target's test accuracy {test_accuracy:.4f} is no better than always predicting the most frequent "
            f"class ({majority:.4f}), so the audit measures a model nobody would deploy; fix the training recipe "
            "(epochs, lr, model) or the data (label column, scaling)")


def _n_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class ClassifierExperiment:
    """Data, split and target source of a classifier experiment, checked against its attacks; :meth:`run` trains.

    ``seed`` drives every random choice; ``training`` is the recipe of every model the tool
    trains; ``dataset`` (loaded here) and ``split`` give the target's members / non-members,
    shadow and population data; ``target`` a precomputed target or the user's model instead of
    one trained by the tool; ``given``: a target trained on data the caller chose (no dataset or
    split then); ``shadow`` / ``reference``: shadow models and the reference pool.

    ``outputs_only``: the run gives attacks the target's outputs on the audited examples alone
    (no shadow models, reference pool, population data, queries, weights); the text says why and
    what to use instead, and attacks needing more are refused with it. ``isolate_training``: train
    the target in a fresh process (CPU), so its peak memory is its own; ``measure_memory``: measure
    the target's peak memory (:mod:`miaudit.classifier.training.measured`).
    """

    def __init__(self, attacks: Sequence[tuple[str, Attack]], *, seed: int, training: TrainConfig,
                 dataset: DatasetConfig | None = None, split: SplitSizes | None = None,
                 target: TargetConfig | None = None, given: GivenData | None = None,
                 shadow: ShadowConfig | None = None, reference: ReferenceConfig | None = None,
                 outputs_only: str | None = None, isolate_training: bool = False, measure_memory: bool = False,
                 progress: bool = True):
        self.attacks = list(attacks)
        self.seed = seed
        self.training = training
        self.target_config = target or TargetConfig()
        self.given = given
        self.shadow_config = shadow or ShadowConfig()
        self.reference_config = reference or ReferenceConfig()
        self.outputs_only = outputs_only
        self.isolate_training = isolate_training
        self.measure_memory = measure_memory
        self.progress = progress
        self.scale = True  # a tabular dataset's option: standardise numeric columns
        self.warnings: list[str] = []
        self.table: Table | None = None  # a tabular dataset's raw rows, preprocessed once the split is known
        self.preprocessor: TabularPreprocessor | None = None
        self.dataset = self._load(dataset)
        self.split: MembershipSplit | None = None
        self.loaded: AuditedTarget | None = None  # a target the tool does not train, loaded now
        source = self.target_config.source
        n_shadow = split.n_shadow if split is not None else 0
        if self.table is not None and (source == "precomputed" or self.target_config.user_model):
            self.dataset = self._preprocess(None)  # all of it is shadow data: nothing of the target's to fit on
        if source == "precomputed":
            self.loaded = precomputed_target(self.target_config, self.dataset, n_shadow=n_shadow, seed=seed,
                                             run_warnings=self.warnings)
        elif self.target_config.user_model:
            self.loaded = user_model_target(self.target_config, self.dataset, n_shadow=n_shadow, seed=seed,
                                            run_warnings=self.warnings)
            self.dataset = self._columns_as_audited(self.dataset)
        elif given is None:
            rows = self.table if self.table is not None else self.dataset
            assert rows is not None and split is not None and split.n_members and split.n_nonmembers
            self.split = make_split(len(rows), n_members=split.n_members, n_nonmembers=split.n_nonmembers,
                                    n_shadow=split.n_shadow, n_population=split.n_population,
                                    seed=derive_seed(seed, "split"))
            if self.table is not None:
                self.dataset = self._preprocess(self.split.target_members)
        self._check_setup()
        self.family = self._model_family()
        ref = self.reference_config
        if ref.n_models and ref.executor == "vectorised" and not vectorisable(self.family):
            assert self.family is not None
            raise ConfigError(f"config.reference.executor: vectorised trains zoo models and your torch class trained "
                              f"by miaudit's loop, not {self.family.describe()}; use executor 'process' (or "
                              "'sequential' / 'ray')")
        self.shadow_sizes = self._shadow_sizes()
        self._check_attacks()

    @classmethod
    def from_config(cls, config: Any, attacks: Sequence[tuple[str, Attack]], **options: Any) -> ClassifierExperiment:
        """From a config with seed, training, dataset, split, shadow, reference (and target) sections."""
        return cls(attacks, seed=config.seed, training=config.training, dataset=config.dataset, split=config.split,
                   target=getattr(config, "target", None), shadow=config.shadow, reference=config.reference,
                   **options)

    # -- before any training --------------------------------------------------------------------
    def _load(self, spec: DatasetConfig | None) -> ArrayDataset | None:
        """The dataset; a tabular one is kept as raw rows in ``self.table`` (``None`` returned) until the split."""
        if spec is None:
            return None
        if self.target_config.hf_classifier is not None:  # texts, tokenised like the target's own
            dataset = HFTextSource(self.target_config.hf_classifier).examples(spec.source, role="shadow")
            log.info("dataset %s: %d texts", dataset.name, len(dataset))
            return dataset
        if self.target_config.user_model and is_table(Path(spec.source)):  # read as your model takes its inputs
            if spec.options:
                raise ConfigError(f"config.dataset.options: the shadow table {spec.source} of your own model is read "
                                  "like your member tables (target.label_column, id_column, group_column: numeric "
                                  "columns as your model takes them, no preprocessing); remove options")
            dataset = read_table_examples(Path(spec.source), "shadow", self.target_config.table_columns,
                                          ids_needed=False)
            log.info("dataset %s: %d rows, %d classes, %d input columns", dataset.name, len(dataset),
                     dataset.n_classes, dataset.input_shape[0])
            return dataset
        if spec.source not in BUILTIN and tabular_format(spec.source, spec.options.get("format")) is not None:
            options = dict(spec.options)
            self.scale = options.pop("scale", True)
            unknown = sorted(set(options) - set(tabular_options()))
            if unknown:
                raise ConfigError(f"dataset {spec.source!r} does not take option {unknown[0]!r}; its options are: "
                                  f"{', '.join(tabular_options())}")
            self.table = read_table(spec.source, **options)
            self.warnings.extend(self.table.notes)
            log.info("dataset %s: %d rows, %d classes, %d columns", self.table.name, len(self.table),
                     self.table.n_classes, len(self.table.features))
            return None
        dataset = load_dataset(spec.source, data_dir=spec.data_dir, seed=self.seed, **spec.options)
        log.info("dataset %s: %d examples, %d classes, input shape %s", dataset.name, len(dataset),
                 dataset.n_classes, dataset.input_shape)
        return dataset

    def _columns_as_audited(self, dataset: ArrayDataset | None) -> ArrayDataset | None:
        """A shadow table's columns in the order of the audited examples' (your model's) named inputs, and its
        class names numbered as theirs."""
        assert self.loaded is not None
        audited = self.loaded.examples
        if dataset is None or audited is None:
            return dataset
        if dataset.class_names is not None:
            if audited.class_names is None:
                raise DataError(f"config.dataset: {dataset.name} gives labels as class names but the audited records "
                                "give class indices; give the shadow table indices too")
            dataset = with_classes(dataset, audited.class_names, "your model")
        if dataset.feature_names is None or audited.feature_names is None:
            return dataset
        return align_to_model([dataset], audited.feature_names, "your model (the columns of its member tables)")[0]

    def _preprocess(self, rows: np.ndarray | None) -> ArrayDataset:
        """Fit the one preprocessing pipeline on the table's ``rows`` (all when ``None``); transform every row."""
        assert self.table is not None
        self.preprocessor = TabularPreprocessor.fit(self.table, rows, scale=self.scale)
        dataset = self.preprocessor.transform(self.table)
        p = self.preprocessor
        log.info("preprocessing: %d numeric and %d categorical columns -> %d features, fitted on %d rows (%s)",
                 len(p.numeric), len(p.categorical), dataset.input_shape[0], p.fitted_rows,
                 "all rows" if rows is None else "the target's training data")
        return dataset

    @property
    def trains_target(self) -> bool:
        """True when the tool trains the target (from the split, or on given data)."""
        return self.loaded is None

    @property
    def audited_membership(self) -> np.ndarray:
        """``(n,)`` membership of the audited examples (True = member)."""
        if self.loaded is not None:
            return self.loaded.membership
        if self.given is not None:
            return np.asarray(self.given.membership, dtype=bool)
        assert self.split is not None
        return self.split.membership

    @property
    def shadow_pool(self) -> np.ndarray:
        """Dataset indices the shadow models draw their data from."""
        if self.loaded is not None:
            return self.loaded.shadow_pool
        return self.split.shadow if self.split is not None else np.empty(0, np.int64)

    @property
    def train_sizes(self) -> tuple[int, ...]:
        """Every training-set size a model of this experiment trains on: target, shadow, reference models."""
        n_target = len(self.given.train) if self.given is not None else int(self.audited_membership.sum())
        n_audited = self.audited_membership.size
        pool = (n_audited // 2, n_audited - n_audited // 2) if self.reference_config.n_models else ()
        return (n_target, *([self.shadow_sizes[0]] if self.shadow_sizes else []), *pool)

    def _model_family(self) -> ModelFamily | None:
        """The target's own model family for the models the tool trains (``None``: the zoo recipe)."""
        training = self.training
        if not isinstance(training, ClassifierTraining) or training.family == "zoo":
            return None
        recipe, loaded, source = training.zoo(), self.loaded, self.target_config.source
        if loaded is not None and isinstance(loaded.model, SklearnTarget):
            from sklearn.base import clone

            return EstimatorFamily(clone(loaded.model.estimator), n_classes=loaded.outputs.n_classes)
        shape_of = loaded.examples if loaded is not None else self.dataset
        if source == "hf_classifier":
            assert loaded is not None and loaded.examples is not None and self.target_config.hf_classifier is not None
            base = self.target_config.hf_classifier.get("base")
            if base is None:
                if self.shadow_config.n_models or self.reference_config.n_models:
                    raise ConfigError("config.target.hf_classifier.base: shadow and reference models are fine-tuned "
                                      "from the checkpoint your classifier was fine-tuned from; give it (a folder or "
                                      "hub id)")
                return None
            n_classes = loaded.outputs.n_classes
            assert isinstance(loaded.model, TorchClassifierTarget) and isinstance(loaded.model.model, HFTextClassifier)
            pad_id = loaded.model.model.pad_token_id  # what the target's inputs are padded with
            return TorchFamily(ModelFactory(loaded.examples.input_shape, n_classes, recipe, HF_CLASS,
                                            {"source": base, "n_labels": n_classes, "pad_token_id": pad_id},
                                            label=f"{base} fine-tuned"),
                               training.function)
        if source == "torch_module":
            assert loaded is not None and loaded.examples is not None and self.target_config.torch_module is not None
            spec = self.target_config.torch_module
            return TorchFamily(ModelFactory(loaded.examples.input_shape, loaded.outputs.n_classes, recipe,
                                            spec["class"], dict(spec.get("kwargs", {}))), training.function)
        if training.estimator is not None:
            assert self.dataset is not None  # checked by the config: the tool trains this estimator on the dataset
            cls = import_trusted_callable(training.estimator["class"], trust_code=True,
                                          where="config.training.estimator.class", accept=lambda obj: isinstance(
                                              obj, type), expected="a class")
            try:
                template = cls(**training.estimator.get("kwargs", {}))
            except Exception as exc:  # the user's constructor may raise anything
                raise ConfigError(f"config.training.estimator.kwargs: {training.estimator['class']}(**kwargs) failed "
                                  f"({type(exc).__name__}: {str(exc).strip()[:200]})") from None
            return EstimatorFamily(template, n_classes=int(self.dataset.n_classes or 0))
        if training.function is not None and shape_of is not None:
            return TorchFamily(ModelFactory(shape_of.input_shape, int(shape_of.n_classes or 0), recipe),
                               training.function)
        return None

    def _check_setup(self) -> None:
        """Shadow models need a dataset; a reference pool needs the audited examples themselves."""
        if self.shadow_config.n_models and self.dataset is None:
            raise ConfigError("config: shadow models need a 'dataset' to draw their data from")
        if self.reference_config.n_models and (self.given is not None or
                                               (self.loaded is not None and self.loaded.split is None)):
            raise ConfigError("config.reference: reference models are trained on the audited examples, which this "
                              "target does not provide; remove reference.n_models")

    def _shadow_sizes(self) -> tuple[int, int] | None:
        """Members and non-members per shadow model (``None`` without shadow models)."""
        sh = self.shadow_config
        if not sh.n_models:
            return None
        pool, membership = self.shadow_pool.size, self.audited_membership
        n_in = sh.members_per_model or min(int(membership.sum()), pool // 2)
        n_out = sh.nonmembers_per_model or min(int((~membership).sum()), pool - n_in)
        if n_in < 1 or n_out < 1 or n_in + n_out > pool:
            raise ConfigError(f"shadow models need {n_in} members + {max(n_out, 0)} non-members each but "
                              f"split.n_shadow is {pool}; raise split.n_shadow or lower shadow.members_per_model")
        return n_in, n_out

    def _check_attacks(self) -> None:
        """Refuse, before any training, every attack this experiment cannot give what it needs."""
        for key, attack in self.attacks:
            if self.outputs_only is not None:
                self._check_outputs_only(key, attack)
            else:
                self._check_needs(key, attack)

    def _check_outputs_only(self, key: str, attack: Attack) -> None:
        need = attack.needs_reference
        more = [what for what, used in ((_NEEDS.get(need, f"{need} data"), need != "none"),
                                         ("queries of the model", signal_type(attack) is not None),
                                         ("the model's weights", attack.access == "white-box"),
                                         ("shadow models", getattr(attack, "per_class", False))) if used]
        if more:
            raise ConfigError(f"config.attacks: {key!r} needs more than the target's outputs ({more[0]}); "
                              f"{self.outputs_only}")

    def _check_needs(self, key: str, attack: Attack) -> None:
        """Reference data, access level, queries and weights ``attack`` needs against what this run gives."""
        loaded = self.loaded
        family = self.family if self.trains_target else None
        access = loaded.outputs.access if loaded is not None else \
            "probabilities" if isinstance(family, EstimatorFamily) else "logits"
        queryable = loaded is None or loaded.model is not None
        weights = isinstance(loaded.model, TorchClassifierTarget) if loaded is not None else \
            not isinstance(family, EstimatorFamily)
        population = loaded.population is not None if loaded is not None else \
            self.split is not None and self.split.population.size > 0
        check_reference_needs(key, attack, shadow=bool(self.shadow_config.n_models),
                              pool=self.reference_config.n_models, population=population,
                              population_fix="target.population (your model's outputs on, or examples of, such "
                                             "data)" if loaded else "split.n_population (e.g. 500)")
        if signal_type(attack) == "label_only" and self.target_config.hf_classifier is not None:
            raise ConfigError(f"attack {key!r} perturbs the inputs, which are token ids for a text classifier; use "
                              "output-based or white-box attacks")
        if signal_type(attack) and not queryable:
            raise ConfigError(f"attack {key!r} queries the model itself (perturbed inputs or gradients); a "
                              "precomputed target cannot be queried: audit the model with the tool instead")
        if attack.access != "white-box" and not access_allows(access, attack.access):  # weights: checked below
            raise ConfigError(f"attack {key!r} needs {attack.access} access but the target gives only {access}; "
                              "drop it or provide more of the model's outputs")
        if attack.access == "white-box" and not weights:
            raise ConfigError(f"attack {key!r} needs the model's weights and gradients (white-box), which this "
                              "target does not give; audit a torch model (trained by the tool or target.torch_module)")

    @property
    def keeps_models(self) -> bool:
        """True when an attack queries the models themselves, so the shadow models are kept."""
        return any(signal_type(a) for _, a in self.attacks)

    # -- training -------------------------------------------------------------------------------
    def run(self, *, recipe: TrainConfig | None = None, plugins: PluginFactory | None = None,
            unseen: ArrayDataset | None = None, member_outputs: bool = False, initial_outputs: bool = False,
            label: str = "") -> ExperimentModels:
        """Train (or take) the target, train the shadow models and the reference pool; return what attacks need.

        ``recipe`` replaces the experiment's training recipe (seeds are set per model);
        ``plugins`` makes fresh training plugins for every model trained. ``member_outputs`` /
        ``unseen``: also score every model on its own training set / on ``unseen``
        (:class:`ModelOutputs`, for output post-processors). ``initial_outputs``: also score the
        target's initial weights on the audited examples (``target.initial``). ``label`` prefixes
        log lines (e.g. the defense).
        """
        recipe = recipe or self.training
        if isinstance(recipe, ClassifierTraining):
            recipe = recipe.zoo()  # the family fields are in self.family; zoo caches stay keyed by the zoo recipe
        if plugins is not None and not self.trains_target:
            raise ConfigError("training plugins (defenses) apply to models the tool trains; a precomputed target or "
                              "your own model was trained elsewhere")
        if plugins is not None and self.family is not None:
            raise ConfigError(f"training plugins (defenses) run in miaudit's training loop of zoo models, not with "
                              f"{self.family.describe()}; use a zoo model (training.model)")
        start = time.perf_counter()
        tag = f"[{label}] " if label else ""
        target = self._target(recipe, plugins, initial_outputs=initial_outputs, tag=tag)
        outputs, membership = target.outputs, target.membership
        target.info["train_accuracy"] = _accuracy(outputs, membership)
        target.info["test_accuracy"] = _accuracy(outputs, ~membership)
        target.info["majority_rate"] = majority_rate(outputs.labels[membership], outputs.labels[~membership])
        side = _side_outputs(target.model, target.train if member_outputs else None, unseen)
        models = ExperimentModels(target, ModelOutputs(outputs, membership, *side, population=target.population),
                                  progress=self.progress)
        if self.given is not None:  # the caller's audited examples (e.g. mislabeled canaries), not a test set
            log.info("%starget: accuracy on the audited examples it trained on %.4f, on those it did not %.4f", tag,
                     target.info["train_accuracy"], target.info["test_accuracy"])
        else:
            log.info("%starget: train accuracy %.4f, test accuracy %.4f (always predicting the members' most "
                     "frequent class: %.4f)", tag, target.info["train_accuracy"], target.info["test_accuracy"],
                     target.info["majority_rate"])
            if self.trains_target and target.info["test_accuracy"] <= target.info["majority_rate"]:
                models.warnings.append(tag + no_better_than_majority(target.info["test_accuracy"],
                                                                     target.info["majority_rate"]))
        if self.shadow_config.n_models:
            self._train_shadow_models(models, recipe, plugins, member_outputs, unseen, tag=tag)
        if self.reference_config.n_models:
            self._train_pool(models, recipe, plugins, tag=tag)
        models.seconds = round(time.perf_counter() - start, 2)
        return models

    def run_targets(self, n_targets: int = 1) -> list[ExperimentModels]:
        """What attacks need for each of ``n_targets`` targets (``evaluation.n_targets``); one: :meth:`run`.

        With ``n_targets >= 2`` the targets are models trained by the target's recipe on paired random
        halves of the audited examples, through the reference pool's trainer, executor and cache
        (:func:`~miaudit.classifier.target_pool.pool_layout`: ``reference.n_models + 2`` models, more when
        ``n_targets`` needs them). Target ``k`` is model ``k``: its members are its own half, its
        reference pool the ``reference.n_models`` models of other pairs, never itself. Shadow models are
        trained once and shared. Each returned :class:`ExperimentModels` is one target's; ``sections``
        (shared) gains ``"targets"``: each target's model seed, train / test accuracy and reference models.
        """
        if n_targets == 1:
            return [self.run()]
        if not self.trains_target or self.given is not None:
            raise ConfigError("evaluation.n_targets: several targets are trained by the tool from the split; this "
                              "target is given, so audit it with n_targets: 1")
        from miaudit.classifier.reference.pool import build_reference_pool_for_audit
        from miaudit.classifier.target_pool import pool_layout

        if self.family is not None and self.keeps_models:
            raise ConfigError(f"evaluation.n_targets: attacks that query the models (label-only, white-box) need zoo "
                              f"models to query when several targets are pooled, not {self.family.describe()}; drop "
                              "them or set n_targets: 1")
        assert self.dataset is not None and self.split is not None
        if self.split.target_members.size != self.split.target_nonmembers.size:
            raise ConfigError("evaluation.n_targets: each target trains on a random half of the audited examples, so "
                              "give split.n_members == split.n_nonmembers")
        start = time.perf_counter()
        ref = self.reference_config
        recipe = self.training.zoo() if isinstance(self.training, ClassifierTraining) else self.training
        n_models, reference = pool_layout(n_targets, ref.n_models)
        log.info("training %d models on paired halves of the %d audited examples: %d targets%s (%s executor)",
                 n_models, self.split.audited.size, n_targets,
                 f", each with {ref.n_models} reference models" if ref.n_models else "", ref.executor)
        targets = build_reference_pool_for_audit(
            self.dataset, self.split, recipe, n_models=n_models, seed=derive_seed(self.seed, "reference"),
            views=ref.views, executor=ref.executor, n_workers=ref.n_workers, ray_address=ref.ray_address,
            cache_dir=ref.cache_dir, keep_models=range(n_targets) if self.keeps_models else (),
            progress=self.progress, family=self.family)
        audited = self.dataset.subset(self.split.audited)
        population = self.dataset.subset(self.split.population) if self.split.population.size else None
        shared = ExperimentModels(self._pool_target(targets, 0, audited), ModelOutputs(targets.outputs[0],
                                                                                        targets.keep[0]),
                                  progress=self.progress)
        if self.shadow_config.n_models:
            self._train_shadow_models(shared, recipe, None, False, None, tag="")
        runs, per_target = [], []
        for k in range(n_targets):
            target = self._pool_target(targets, k, audited, population)
            pool = targets.select_models(reference[k]) if ref.n_models else None
            models = ExperimentModels(target, ModelOutputs(target.outputs, target.membership,
                                                           population=target.population),
                                      shadow=shared.shadow, pool=pool, shadow_models=shared.shadow_models,
                                      sections=shared.sections, warnings=shared.warnings,
                                      progress=self.progress and k == 0,
                                      target_views=targets.views[k] if targets.views is not None else None,
                                      shadow_signals=shared.shadow_signals)
            runs.append(models)
            per_target.append({"index": k, "model_seed": _model_seed(targets, k),
                               "train_accuracy": target.info["train_accuracy"],
                               "test_accuracy": target.info["test_accuracy"],
                               "reference_models": [int(j) for j in reference[k]]})
        n_audited = int(self.split.audited.size)
        shared.sections["targets"] = {
            "n_targets": n_targets, "n_models_trained": n_models, "members_per_target": n_audited // 2,
            "pooled_scores": n_targets * n_audited, "executor": ref.executor,
            "seconds": round(targets.seconds, 2), "trained": targets.info["trained"],
            "from_cache": targets.info["from_cache"],
            "train_accuracy_mean": float(np.mean([t["train_accuracy"] for t in per_target])),
            "test_accuracy_mean": float(np.mean([t["test_accuracy"] for t in per_target])),
            "per_target": per_target}
        if ref.n_models:
            shared.sections["reference"] = {
                "n_models": ref.n_models, "per_target": True, "views": ref.views, "executor": ref.executor,
                "note": "each target's reference models are the models of other pairs (never the target nor the "
                        "model trained on its complement); targets and reference models are trained alike, so "
                        "no fidelity check is needed"}
        for models in runs:
            models.seconds = round(time.perf_counter() - start, 2)
        return runs

    def _pool_target(self, targets: TrainedReferencePool, k: int, audited: ArrayDataset,
                     population: ArrayDataset | None = None) -> AuditedTarget:
        """Model ``k`` of a pool of targets as an audited target: its own half of ``audited`` are its members."""
        assert self.dataset is not None
        outputs, membership = targets.outputs[k], targets.keep[k].copy()
        recipe = self.training.zoo() if isinstance(self.training, ClassifierTraining) else self.training
        model = TorchClassifierTarget(targets.models[k]) if targets.models is not None else None
        half = f"a random half ({int(membership.sum())} examples) of {len(audited)} {self.dataset.name} examples"
        what = (f"{recipe.model} trained by miaudit on {half} ({recipe.epochs} epochs, {recipe.optimizer}, lr "
                f"{recipe.lr:g}, weight decay {recipe.weight_decay:g})") if self.family is None else \
            f"{self.family.describe()}, trained by miaudit on {half}"
        info: dict[str, Any] = {
            "source": "trained", "model": recipe.model if self.family is None else self.family.name,
            "access": outputs.access, "description": f"{what}; target {k} of a pool",
            "train_accuracy": _accuracy(outputs, membership), "test_accuracy": _accuracy(outputs, ~membership),
            "fingerprint": targets.fingerprint}
        return AuditedTarget(outputs, membership, info, self.shadow_pool,
                             targets.population[k] if targets.population is not None and population is not None
                             else None, model=model, audited=audited, examples=self.dataset,
                             train=audited.subset(membership))

    def _train(self, recipe: TrainConfig, data: ArrayDataset, plugins: PluginFactory | None) -> tuple[Any, dict]:
        """Train the target: in a fresh process, measured in this one, or plainly (its epochs shown)."""
        fresh = list(plugins()) if plugins is not None else []
        progress = self.progress and progress_enabled()  # decided here: a spawned process does not inherit -q
        if self.isolate_training and not recipe.device.startswith("cuda"):
            return train_isolated(fresh, recipe, data, progress=progress)
        if self.measure_memory:
            return train_measured(fresh, recipe, data, threads=None, progress=progress)
        return train_model(fresh, recipe, data, progress=progress)

    def _target(self, recipe: TrainConfig, plugins: PluginFactory | None, *, initial_outputs: bool,
                tag: str) -> AuditedTarget:
        """The loaded target, or one trained now on the split's members (or on the given data)."""
        if self.loaded is not None:
            return dataclasses.replace(self.loaded, info=dict(self.loaded.info))
        recipe = dataclasses.replace(recipe, seed=derive_seed(self.seed, "target"))
        if self.given is not None:
            train, audited = self.given.train, self.given.audited
            membership, split, examples, population = np.asarray(self.given.membership, bool), None, None, None
        else:
            assert self.dataset is not None and self.split is not None
            split, examples = self.split, self.dataset
            train, audited, membership = examples.subset(split.target_members), examples.subset(split.audited), \
                split.membership
            population = examples.subset(split.population) if split.population.size else None
        if self.family is not None:
            return self._family_target(recipe.seed, train, audited, membership, population, split, examples,
                                       initial_outputs=initial_outputs, tag=tag)
        log.info("%straining the target (%s, %d epochs) on %d examples", tag, recipe.model, recipe.epochs, len(train))
        initial = None
        if initial_outputs:
            assert train.n_classes is not None  # ArrayDataset infers it when not given
            initial = TorchClassifierTarget(build_model_from_config(recipe, train.input_shape,
                                                                    train.n_classes)).outputs(audited)
        module, record = self._train(recipe, train, plugins)
        model = TorchClassifierTarget(module)
        where = f"{len(train)} examples of {train.name}" if examples is None else \
            f"{len(train)} {examples.name} examples"
        info = {"source": "trained", "model": recipe.model, "access": model.access,
                "description": f"{recipe.model} trained by miaudit on {where} ({recipe.epochs} epochs, "
                               f"{recipe.optimizer}, lr {recipe.lr:g}, weight decay {recipe.weight_decay:g})",
                "n_parameters": _n_parameters(module), "train_seconds": round(record["seconds"], 2),
                "final_train_loss": record["history"][-1]["loss"], "fingerprint": model.fingerprint()}
        return AuditedTarget(model.outputs(audited), membership, info, self.shadow_pool,
                             model.outputs(population) if population is not None else None, model=model,
                             audited=audited, split=split, examples=examples, train=train, training=record,
                             initial=initial)

    def _family_target(self, seed: int, train: ArrayDataset, audited: ArrayDataset, membership: np.ndarray,
                       population: ArrayDataset | None, split: MembershipSplit | None, examples: ArrayDataset | None,
                       *, initial_outputs: bool, tag: str) -> AuditedTarget:
        """The target trained as its model family says (``training.estimator`` / ``training.function``)."""
        family = self.family
        assert family is not None
        if initial_outputs:
            raise ConfigError(f"initial weights' outputs are measured for zoo models only, not {family.name}")
        log.info("%straining the target (%s) on %d examples", tag, family.describe(), len(train))
        start = time.perf_counter()
        model = family.train(train, seed)
        seconds = time.perf_counter() - start
        info: dict[str, Any] = {
            "source": "trained", "model": family.name, "access": model.access,
            "description": f"{family.describe()}, trained by miaudit on {len(train)} {train.name} examples",
            "train_seconds": round(seconds, 2), "fingerprint": model.fingerprint()}
        if isinstance(model, TorchClassifierTarget):
            info["n_parameters"] = _n_parameters(model.model)
        return AuditedTarget(model.outputs(audited), membership, info, self.shadow_pool,
                             model.outputs(population) if population is not None else None, model=model,
                             audited=audited, split=split, examples=examples, train=train,
                             training={"seconds": seconds, "history": [], "reports": {}})

    def _train_shadow_models(self, models: ExperimentModels, recipe: TrainConfig, plugins: PluginFactory | None,
                             member_outputs: bool, unseen: ArrayDataset | None, *, tag: str) -> None:
        """``shadow.n_models`` models like the target, each on its own random draw from the shadow data.

        Fills ``models.shadow`` (outputs on their own members and non-members), ``shadow_models``
        (the models, for attacks that query them) and ``sections["shadow"]``.
        """
        assert self.dataset is not None and self.shadow_sizes is not None
        n_in, n_out = self.shadow_sizes
        train_acc, test_acc, majority_rates = [], [], []
        for m in progress_bar(range(self.shadow_config.n_models), desc=f"{tag}shadow models", enabled=self.progress,
                              unit="model", leave=False):
            draw = np.random.default_rng(derive_seed(self.seed, "shadow-data", m)).permutation(self.shadow_pool)
            members, nonmembers = draw[:n_in], draw[n_in:n_in + n_out]
            model_recipe = dataclasses.replace(recipe, seed=derive_seed(self.seed, "shadow", m))
            data = self.dataset.subset(members)
            model: TorchClassifierTarget | SklearnTarget
            if self.family is not None:
                model = self.family.train(data, model_recipe.seed)
            else:
                model = TorchClassifierTarget(train_model(list(plugins()) if plugins else [], model_recipe, data)[0])
            own = self.dataset.subset(np.r_[members, nonmembers])
            truth = np.r_[np.ones(n_in, bool), np.zeros(n_out, bool)]
            out = model.outputs(own)
            side = _side_outputs(model, data if member_outputs else None, unseen)
            models.shadow.append(ModelOutputs(out, truth, *side))
            if self.keeps_models:
                models.shadow_models.append(ShadowModel(model, own, truth))
            train_acc.append(_accuracy(out, truth))
            test_acc.append(_accuracy(out, ~truth))
            majority_rates.append(majority_rate(out.labels[truth], out.labels[~truth]))
        models.sections["shadow"] = {
            "n_models": self.shadow_config.n_models, "members_per_model": int(n_in),
            "nonmembers_per_model": int(n_out), "train_accuracy_mean": float(np.mean(train_acc)),
            "test_accuracy_mean": float(np.mean(test_acc)), "train_accuracy": train_acc, "test_accuracy": test_acc}
        log.info("%sshadow models: mean train accuracy %.4f, mean test accuracy %.4f", tag, np.mean(train_acc),
                 np.mean(test_acc))
        majority = np.mean(majority_rates)
        if np.mean(test_acc) <= majority:
            models.warnings.append(f"{tag}the shadow models' mean test accuracy {np.mean(test_acc):.4f} is no better "
                                   f"than always predicting the most frequent class ({majority:.4f}); attacks that "
                                   "learn from them learn from models unlike a useful target")

    def _train_pool(self, models: ExperimentModels, recipe: TrainConfig, plugins: PluginFactory | None, *,
                    tag: str) -> None:
        """Reference models on paired halves of the audited examples; fidelity warnings join the run's warnings."""
        from miaudit.classifier.reference.fidelity import FidelityWarning
        from miaudit.classifier.reference.pool import build_reference_pool_for_audit

        target, ref = models.target, self.reference_config
        assert target.examples is not None and target.split is not None  # checked in _check_setup
        log.info("%straining %d reference models (%s executor%s)", tag, ref.n_models, ref.executor,
                 f" at {ref.ray_address}" if ref.ray_address else "")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool = build_reference_pool_for_audit(
                target.examples, target.split, recipe, n_models=ref.n_models, seed=derive_seed(self.seed, "reference"),
                target_outputs=target.outputs, views=ref.views, plugins=list(plugins()) if plugins else (),
                executor=ref.executor, n_workers=ref.n_workers, ray_address=ref.ray_address,
                cache_dir=ref.cache_dir, progress=self.progress, family=self.family)
        for w in caught:
            if issubclass(w.category, FidelityWarning):
                models.warnings.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        models.pool = pool
        models.sections["reference"] = {"n_models": ref.n_models, "views": ref.views, "executor": ref.executor,
                                        "seconds": round(pool.seconds, 2), "fidelity": pool.fidelity, **pool.info}
        if ref.ray_address:
            models.sections["reference"]["ray_address"] = ref.ray_address


def _model_seed(pool: TrainedReferencePool, k: int) -> int:
    """Training seed of model ``k`` of a pool from :func:`~miaudit.classifier.reference.pool.train_reference_pool`."""
    from miaudit.classifier.reference.pool import model_seed

    return model_seed(int(pool.info["seed"]), k)


def _side_outputs(model: Any, members: ArrayDataset | None,
                  unseen: ArrayDataset | None) -> tuple[ClassifierOutputs | None, ClassifierOutputs | None]:
    """A model's outputs on its training set and on unseen data (each ``None`` when not asked for)."""
    return (model.outputs(members) if members is not None else None,
            model.outputs(unseen) if unseen is not None else None)


__all__ = ["SUPPORTED_REFERENCE", "ClassifierExperiment", "ExperimentModels", "GivenData",
           "ModelOutputs", "PluginFactory", "SplitSizes", "check_reference_needs"]
