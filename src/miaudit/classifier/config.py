"""Classifier audit configuration (``kind: classifier``): what to audit and how to build the attacker's knowledge.

Parsed strictly from YAML (``miaudit.config.from_dict``): unknown keys and wrong types are errors
that name the key. The sections every kind shares (``attacks``, ``evaluation``, ``dataset``) are in
:mod:`miaudit.runs.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from miaudit.classifier.training import TrainConfig
from miaudit.data.rows import is_table
from miaudit.errors import ConfigError
from miaudit.evaluation.blind_baseline import BaselineSettings
from miaudit.runs.config import AttackSpec, DatasetConfig, EvaluationConfig, check_attack_specs
from miaudit.utils.trusted_code import check_callable_spec
from miaudit.utils.user_module import checked_torch_module_spec


@dataclass
class SplitConfig:
    """Sizes of the disjoint parts drawn from the dataset with the run's seed.

    ``n_members``: the target's training set; ``n_nonmembers``: held-out examples audited as
    non-members; ``n_shadow``: data for shadow models; ``n_population``: data the target never saw
    (population attacks). With a precomputed target the audited examples come from the file, so
    only ``n_shadow`` and ``n_population`` apply.
    """

    n_members: int | None = None
    n_nonmembers: int | None = None
    n_shadow: int = 0
    n_population: int = 0

    def __post_init__(self) -> None:
        for name in ("n_members", "n_nonmembers", "n_shadow", "n_population"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"config.split.{name}: must be >= 0, got {value}")


_ESTIMATOR_KEYS = ("class", "kwargs")
#: the target sources besides a target the tool trains
SOURCES = ("precomputed", "torch_module", "sklearn", "blackbox", "hf_classifier")


@dataclass(frozen=True)
class TableColumns:
    """Which columns of a table of records (CSV, TSV, JSONL, JSON, Parquet) hold the label, the ids and the
    groups; every other column is an input feature, in the file's column order."""

    label: str = "label"
    id: str | None = None
    group: str | None = None


@dataclass
class TargetConfig:
    """Where the audited model's outputs come from: trained by the tool, precomputed, or the user's own model.

    Without ``precomputed``, ``torch_module``, ``sklearn`` or ``blackbox`` the tool trains the target
    itself with the ``training`` recipe on ``split.n_members`` examples.

    - ``precomputed``: an ``.npz`` with ``logits``, ``probs`` or ``predictions``, ``labels`` and
      ``membership`` (1 = member), for models the tool cannot load. ``population`` then is an
      ``.npz`` with the same model's outputs and ``labels`` on data it never trained on.
    - ``torch_module``: ``{path: weights.pt, class: "pkg.module:ClassName", kwargs: {...}}``: the
      class (importable) is built with ``kwargs`` and the state dict at ``path`` is loaded with
      ``torch.load(weights_only=True)``; whole pickled modules are refused. Importing the class runs
      its module's code, so it needs ``trust_code: true`` (:mod:`miaudit.utils.trusted_code`).
    - ``sklearn``: a fitted scikit-learn estimator saved with pickle / joblib. Loading a pickle runs
      any code it contains, so it is loaded only with ``trust_pickle: true``.
    - ``blackbox``: ``"pkg.module:predict"``, a function mapping inputs ``(n, ...)`` to
      probabilities ``(n, K)``, logits ``(n, K)`` or labels ``(n,)`` (``blackbox_output``: which, or
      "auto": labels for a 1-D answer, probabilities for rows of non-negative numbers summing to 1,
      else logits). Calling it runs code: ``trust_code: true``.
    - ``hf_classifier``: ``{path: folder-or-hub-id, base: ..., max_length: 128, text_column: text,
      label_column: label}``, a Hugging Face ``AutoModelForSequenceClassification`` audited on text
      files (``members`` / ``nonmembers`` / ``population``: CSV, TSV, JSONL, JSON or Parquet with a text
      and a label column); ``base`` is the checkpoint it was fine-tuned from, from which reference and
      shadow models are fine-tuned with the ``training`` recipe
      (:mod:`miaudit.classifier.targets.hf_text`).

    A user's model (every source but ``precomputed``) is audited on ``members`` and ``nonmembers``,
    ``.npz`` files with ``x`` ``(n, ...)`` and ``y`` ``(n,)`` (optional ``ids``); ``population``
    then is an ``.npz`` with ``x``, ``y`` the model never trained on. For a torch module, estimator or
    black box they may also be tables (CSV, TSV, JSONL, JSON, Parquet) of numeric columns: ``label_column``
    (default ``label``) holds the class index, ``id_column`` / ``group_column`` optional ids and groups,
    every other column is an input, in the file's order. Paths are relative to the working directory.
    """

    precomputed: str | None = None
    population: str | None = None
    torch_module: dict[str, Any] | None = None
    sklearn: str | None = None
    blackbox: str | None = None
    hf_classifier: dict[str, Any] | None = None
    blackbox_output: Literal["auto", "probabilities", "logits", "labels"] = "auto"
    trust_pickle: bool = False
    trust_code: bool = False
    members: str | None = None
    nonmembers: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    group_column: str | None = None

    def __post_init__(self) -> None:
        given = [k for k in SOURCES if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"config.target: give one of {', '.join(SOURCES)}, not {' and '.join(given)}")
        if self.torch_module is not None:
            self.torch_module = checked_torch_module_spec(self.torch_module, "config.target.torch_module")
            check_callable_spec(self.torch_module["class"], trust_code=self.trust_code,
                                where="config.target.torch_module.class", trust_key="config.target.trust_code")
        if self.hf_classifier is not None:
            from miaudit.classifier.targets.hf_text import check_hf_spec

            check_hf_spec(self.hf_classifier)
        if self.blackbox is not None:
            check_callable_spec(self.blackbox, trust_code=self.trust_code, where="config.target.blackbox",
                                trust_key="config.target.trust_code")
        elif self.blackbox_output != "auto":
            raise ConfigError("config.target.blackbox_output: only applies to target.blackbox; remove it")
        if self.trust_code and self.torch_module is None and self.blackbox is None:
            raise ConfigError("config.target.trust_code: only applies to target.torch_module (a class to import) and "
                              "target.blackbox (a function to call); remove it")
        if self.sklearn is not None and not self.trust_pickle:
            raise ConfigError("config.target.sklearn: scikit-learn models are pickles, and loading a pickle runs any "
                              "code inside it; add 'trust_pickle: true' to target only for a file you made or trust")
        if self.trust_pickle and self.sklearn is None:
            raise ConfigError("config.target.trust_pickle: only applies to target.sklearn; remove it")
        self._check_table_columns()
        for name in ("members", "nonmembers"):
            if self.user_model and getattr(self, name) is None:
                raise ConfigError(f"config.target.{name}: give the .npz (x, y) of the examples your model was "
                                  f"{'trained on' if name == 'members' else 'not trained on'}")
            if not self.user_model and getattr(self, name) is not None:
                raise ConfigError(f"config.target.{name}: only for target.torch_module, sklearn, blackbox or "
                                  "hf_classifier; remove it")

    def _check_table_columns(self) -> None:
        """``label_column`` / ``id_column`` / ``group_column`` name columns of tables given as members etc."""
        given = [k for k in ("label_column", "id_column", "group_column") if getattr(self, k) is not None]
        if not given:
            return
        if self.hf_classifier is not None:
            raise ConfigError(f"config.target.{given[0]}: for a text classifier set target.hf_classifier.text_column "
                              "/ label_column")
        if not self.user_model:
            raise ConfigError(f"config.target.{given[0]}: names a column of the members / nonmembers tables (CSV, "
                              "TSV, JSONL, JSON, Parquet) of your own model; remove it")

    def tables(self, dataset: DatasetConfig | None) -> list[str]:
        """The files of records read as tables with :attr:`table_columns`: members, non-members, population and the
        shadow dataset of your own model, where they are tables."""
        files = [self.members, self.nonmembers, self.population, dataset.source if dataset is not None else None]
        return [f for f in files if f is not None and self.user_model and is_table(Path(f))]

    @property
    def table_columns(self) -> TableColumns:
        """The columns of member / non-member / population tables."""
        return TableColumns(self.label_column or "label", self.id_column, self.group_column)

    @property
    def audited_files(self) -> str | None:
        """The user's files that hold the audited records ("members.npz + nonmembers.npz"), or None (tool's split)."""
        if self.precomputed is not None:
            return Path(self.precomputed).name
        if self.members is not None and self.nonmembers is not None:
            return f"{Path(self.members).name} + {Path(self.nonmembers).name}"
        return None

    @property
    def source(self) -> Literal["trained", "precomputed", "torch_module", "sklearn", "blackbox", "hf_classifier"]:
        """Which kind of target this is."""
        for name in SOURCES:
            if getattr(self, name) is not None:
                return name  # type: ignore[return-value]
        return "trained"

    @property
    def user_model(self) -> bool:
        """A model the user trained and the tool runs (every source but ``precomputed``)."""
        return self.source in ("torch_module", "sklearn", "blackbox", "hf_classifier")


@dataclass
class ClassifierTraining(TrainConfig):
    """The ``training`` section of a classifier audit: the zoo recipe (:class:`TrainConfig`) and the model family.

    Shadow and reference models (and the target, when the tool trains it) are of the target's own
    family when the tool can rebuild it (``family: auto``, :mod:`miaudit.classifier.families`):
    clones of a scikit-learn-compatible target (``target.sklearn``, or ``estimator`` here), the
    target's torch class (``target.torch_module``), trained by ``function`` or by miaudit's loop
    with this recipe; otherwise (and with ``family: zoo``) the zoo model ``model``.

    - ``estimator``: ``{class: "sklearn.ensemble:RandomForestClassifier", kwargs: {...}}``: the tool
      trains this estimator as the target (and clones of it as shadow / reference models).
    - ``function``: ``"pkg.module:fit"``, the training function of torch models
      (:data:`miaudit.classifier.families.TRAINING_FUNCTION_DOC`).
    - ``trust_code``: both import and run the user's code, so they need ``trust_code: true``.
    """

    estimator: dict[str, Any] | None = None
    function: str | None = None
    trust_code: bool = False
    family: Literal["auto", "zoo"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.estimator is not None and self.function is not None:
            raise ConfigError("config.training: give estimator (a scikit-learn-compatible model) or function (a torch "
                              "training function), not both")
        if self.estimator is not None:
            unknown = sorted(set(self.estimator) - set(_ESTIMATOR_KEYS))
            if unknown:
                raise ConfigError(f"config.training.estimator: unknown key {unknown[0]!r}; allowed keys are "
                                  f"{', '.join(_ESTIMATOR_KEYS)}")
            if not isinstance(self.estimator.get("kwargs", {}), dict):
                raise ConfigError("config.training.estimator.kwargs: expected a mapping of constructor arguments")
            spec: Any = self.estimator.get("class")  # checked to be a "pkg.module:Class" string
            check_callable_spec(spec, trust_code=self.trust_code,
                                where="config.training.estimator.class", trust_key="config.training.trust_code")
        if self.function is not None:
            check_callable_spec(self.function, trust_code=self.trust_code, where="config.training.function")
        if self.trust_code and self.estimator is None and self.function is None:
            raise ConfigError("config.training.trust_code: only applies to training.estimator and training.function; "
                              "remove it")
        if self.family == "zoo" and (self.estimator is not None or self.function is not None):
            raise ConfigError("config.training.family: zoo trains zoo models only; remove estimator / function or "
                              "use family: auto")

    def zoo(self) -> TrainConfig:
        """The zoo recipe alone (the fields of :class:`TrainConfig`)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


@dataclass
class ShadowConfig:
    """``n_models`` shadow models (Shokri et al. 2017), trained like the target on the shadow data.

    Each draws ``members_per_model`` training examples (default: as many as the target trained on)
    and ``nonmembers_per_model`` held-out ones (default: as many non-members as audited), from the
    shadow data, with its own seed.
    """

    n_models: int = 0
    members_per_model: int | None = None
    nonmembers_per_model: int | None = None

    def __post_init__(self) -> None:
        if self.n_models < 0:
            raise ConfigError(f"config.shadow.n_models: must be >= 0, got {self.n_models}")


@dataclass
class ReferenceConfig:
    """A pool of ``n_models`` reference models for LiRA / RMIA-style attacks (``miaudit.classifier.reference.pool``).

    Trained with the target's recipe on paired halves of the audited examples (``n_models`` even),
    scored on them and on the population data. ``views``: augmented queries ("none", or the
    kinds :func:`miaudit.classifier.reference.views.query_views` accepts), used by the reference models and
    the target alike; ``executor``: "sequential", "vectorised", "process" (``n_workers``
    processes) or "ray" (a local Ray instance with ``n_workers`` CPUs, or the running cluster at
    ``ray_address``, whose own resources decide); ``cache_dir``: keep trained models there, so an
    interrupted or repeated run resumes.
    """

    n_models: int = 0
    views: str = "none"
    executor: Literal["sequential", "vectorised", "process", "ray"] = "sequential"
    n_workers: int | None = None
    ray_address: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.n_models < 0 or self.n_models % 2:
            raise ConfigError(f"config.reference.n_models: must be an even number >= 0 (paired halves), "
                              f"got {self.n_models}")
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError(f"config.reference.n_workers: must be >= 1, got {self.n_workers}")
        if self.ray_address is not None:
            if self.executor != "ray":
                raise ConfigError(f"config.reference.ray_address: only for executor: ray (got executor: "
                                  f"{self.executor}); set executor: ray or remove it")
            if self.n_workers is not None:
                raise ConfigError("config.reference.n_workers: sets the CPUs of a local Ray instance; a cluster at "
                                  "ray_address uses its own resources, so remove n_workers")


@dataclass
class ClassifierEvaluationConfig(EvaluationConfig):
    """The shared evaluation section plus ``n_targets``: how many targets the tool trains and pools.

    ``n_targets: 1`` audits one target trained on ``split.n_members`` examples. ``n_targets: K >= 2``
    audits the training algorithm as Carlini et al. (2022) evaluate LiRA: ``K`` targets trained by the
    target's recipe on random halves of the audited examples, each in turn the target (its own half
    are its members, the other half its non-members), its reference models (``reference.n_models``)
    never including itself; every attack's scores are pooled over the ``K`` targets (``K`` x the audited
    examples) and the bootstrap resamples examples with all their scores (cluster bootstrap).
    """

    n_targets: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n_targets, bool) or self.n_targets < 1:
            raise ConfigError(f"config.evaluation.n_targets: must be an integer >= 1 (1: one target), got "
                              f"{self.n_targets!r}")


@dataclass
class RecordBaselineConfig(BaselineSettings):
    """The blind baseline on the user's member and non-member files (``blind_baseline:`` of a classifier
    audit, :mod:`miaudit.classifier.blind_baseline`), on at most ``max_records`` audited records. It runs only
    where membership comes from the user's files (``target.members`` / ``nonmembers``): a split the tool drew
    at random needs no such check."""

    limit_option: ClassVar[str] = "max_records"

    max_records: int | None = 5000


@dataclass
class AuditConfig:
    """A membership audit of a classifier (``kind: classifier``)."""

    attacks: list[AttackSpec]
    kind: Literal["classifier"] = "classifier"
    seed: int = 0
    dataset: DatasetConfig | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    training: ClassifierTraining = field(default_factory=ClassifierTraining)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    evaluation: ClassifierEvaluationConfig = field(default_factory=ClassifierEvaluationConfig)
    blind_baseline: RecordBaselineConfig = field(default_factory=RecordBaselineConfig)

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)
        self._check_n_targets()
        source = self.target.source
        if source == "trained":
            if self.dataset is None:
                raise ConfigError("config: give a 'dataset' to train the target on, 'target.precomputed' with the "
                                  "outputs of your own model, or your model itself (target.torch_module / sklearn)")
            for name in ("n_members", "n_nonmembers"):
                if not getattr(self.split, name):
                    raise ConfigError(f"config.split.{name}: give a positive size; the tool trains the target "
                                      "and needs members and non-members")
        else:
            origin = ("the precomputed file's membership" if source == "precomputed"
                      else "target.members / target.nonmembers")
            if self.split.n_members is not None or self.split.n_nonmembers is not None:
                raise ConfigError(f"config.split: n_members / n_nonmembers come from {origin}; remove them")
            if self.split.n_population:
                raise ConfigError("config.split.n_population: population data of a target the tool did not train "
                                  "comes from target.population; remove it")
        if self.target.population is not None and source == "trained":
            raise ConfigError("config.target.population: only for a precomputed target or your own model; a target "
                              "trained by the tool gets population data from split.n_population")
        if (self.shadow.n_models or self.split.n_population) and self.dataset is None:
            raise ConfigError("config: shadow models and population data need a 'dataset'")
        if self.shadow.n_models and not self.split.n_shadow:
            raise ConfigError("config.split.n_shadow: shadow models need shadow data; give a positive size")
        if self.reference.n_models and source == "precomputed":
            raise ConfigError("config.reference: reference models are trained on the audited examples, which a "
                              "precomputed target does not provide; remove reference.n_models")
        if source != "trained" and self.training.estimator is not None:
            raise ConfigError(f"config.training.estimator: the tool trains this estimator as the target, but the "
                              f"target is given (target.{source}); remove one of them")
        column = next((k for k in ("label_column", "id_column", "group_column") if getattr(self.target, k)), None)
        if column is not None and not self.target.tables(self.dataset):
            raise ConfigError(f"config.target.{column}: names a column of the members / nonmembers tables (CSV, TSV, "
                              "JSONL, JSON, Parquet) of your own model, but no such file is a table; remove it")
        if source == "sklearn" and self.training.function is not None:
            raise ConfigError("config.training.function: trains torch models; a scikit-learn target's shadow and "
                              "reference models are clones of it; remove function")

    def _check_n_targets(self) -> None:
        """Several pooled targets need a target the tool trains on halves of the audited examples."""
        n_targets = self.evaluation.n_targets
        if n_targets == 1:
            return
        source = self.target.source
        if source != "trained":
            what = "a precomputed target" if source == "precomputed" else "your own model"
            raise ConfigError(f"config.evaluation.n_targets: {n_targets} targets are trained by the tool, but {what} "
                              "is one fixed model; remove n_targets (or set it to 1)")
        if self.split.n_members != self.split.n_nonmembers:
            raise ConfigError(f"config.evaluation.n_targets: each of the {n_targets} targets trains on a random half "
                              f"of the audited examples, so give split.n_members == split.n_nonmembers (got "
                              f"{self.split.n_members} and {self.split.n_nonmembers})")


__all__ = ["SOURCES", "AuditConfig", "ClassifierEvaluationConfig", "ClassifierTraining", "RecordBaselineConfig",
           "ReferenceConfig", "ShadowConfig", "SplitConfig", "TableColumns", "TargetConfig"]
