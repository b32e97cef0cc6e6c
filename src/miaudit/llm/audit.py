"""LLM audits (``kind: llm``): documents + a causal LM + attacks -> a run directory.

Steps of :func:`run_llm` (the runner registered with :func:`miaudit.runs.pipeline.register_kind`):

1. Load the documents (:mod:`miaudit.llm.datasets`), optionally a stratified subsample.
2. ReCaLL (an attack reading ``prefix_logprob``): draw ``recall.n_shots`` non-members as the prefix and
   take them out of the evaluation set (a prefix document scored after itself would be trivially
   "member"-like).
3. Honest selection: a stratified calibration split (``selection.calibration_fraction``) is set
   aside when an attack has a tunable hyper-parameter its params leave unset (the attack's
   ``tunable``), or learns from calibration documents (``fit_input``). Each tuned attack is reported twice on the
   SAME evaluation documents: with the value chosen on the calibration split (label = attack key,
   the result) and with the value that is best on the evaluation labels themselves (label
   ``<key>.oracle``, an optimistic bound, as in the authors' code of several papers).
4. One forward pass per document gives every reference-free signal; the extra passes run only for
   the signals the attacks read (lowercase, reference model, ReCaLL prefix, gradients, neighbours).
   Attacks that learn from token counts of a reference corpus (DC-PDD) get those of ``dc_pdd.corpus``.
   Documents stream through the attacks a block at a time; only scores stay in memory (``_Plan``).
   The target is local weights (``model:``) or an OpenAI-compatible API (``api:``, top-k log-probs:
   attacks that need more access are refused before any request).
5. Evaluation (``miaudit.evaluation.evaluate`` through the shared audit pipeline), the blind
   bag-of-words baseline on the same evaluation documents (``blind_baseline`` in metrics.json), and
   a token-level HTML view of a few documents (``token_view.html``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from miaudit.attacks.base import Attack, check_access
from miaudit.attacks.registry import create_attack, get_attack_class
from miaudit.config import to_dict
from miaudit.data.splits import stratified_sample
from miaudit.errors import ConfigError, DataError
from miaudit.evaluation.blind_baseline import BaselineSettings, run_beside_attacks
from miaudit.evaluation.metrics import best_threshold
from miaudit.evaluation.run_result import RunResult
from miaudit.llm import selection
from miaudit.llm.api import ACCESS as API_ACCESS
from miaudit.llm.api import APICausalLM, APITargetConfig
from miaudit.llm.baseline import text_features
from miaudit.llm.datasets import TextDataset, load_text_dataset, read_corpus
from miaudit.llm.signals import TokenSignals
from miaudit.llm.target import HFCausalLM, LLMModelConfig
from miaudit.llm.token_view import token_view, write_html
from miaudit.llm.training import ControlledAudit, TrainingConfig, prepare_controlled_audit
from miaudit.runs.config import AttackSpec, EvaluationConfig, check_attack_specs
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, parse_config, register_kind, run_audit
from miaudit.utils.memory import release_free_memory
from miaudit.utils.seed import derive_seed
from miaudit.utils.trusted_code import check_callable_spec, import_trusted_callable

log = logging.getLogger(__name__)

#: documents scored together while streaming; their records are dropped afterwards
STREAM_BLOCK = 512
#: optional TokenSignals fields (default None) that need an extra pass; ``text`` comes with every record
EXTRA_PASSES = tuple(f.name for f in dataclasses.fields(TokenSignals) if f.default is None and f.name != "text")
#: what an LLM audit can give an attack's ``fit``: the calibration split, token counts of ``dc_pdd.corpus``
FIT_INPUTS = ("calibration", "token-counts")


# -- configuration --------------------------------------------------------------------------------

@dataclass
class LLMDatasetConfig:
    """Which documents: ``source`` wikimia | arxivmia | mimir | table | text (see
    :func:`miaudit.llm.datasets.load_text_dataset`), or ``corpus`` (``path``: unlabelled documents that a
    ``training:`` section splits into members and non-members, :mod:`miaudit.llm.training`);
    ``max_documents`` draws a stratified subsample (for a corpus: a random one, before the split);
    ``group_column`` names a column of group ids (documents sharing one are not independent, e.g.
    passages of one paper): the blind baseline cross-validates by group and every interval resamples
    whole groups; ``id_column`` a column of document ids (else ``<file stem>:<row>``)."""

    source: str
    path: str | None = None
    members: str | None = None
    nonmembers: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    file_name: str | None = None
    separator: str = "line"
    on_empty: Literal["error", "skip"] = "error"
    data_dir: str | None = None
    max_documents: int | None = None
    group_column: str | None = None
    id_column: str | None = None


@dataclass
class SignalConfig:
    """Signal engine: the ACMIA inverse-temperature grid (default: the authors' 52 values) and method."""

    betas: list[float] | None = None
    method: Literal["fast", "exact"] = "fast"


@dataclass
class SelectionConfig:
    """``calibration_fraction`` of the documents (stratified) choose the hyper-parameters attacks declare
    tunable (ACMIA's ``beta``, Min-K%'s and Min-K%++'s ``k``, DC-PDD's ``a``; ``miaudit list attacks``
    shows them), unless the attack's ``params`` fix them. ``grids`` overrides an attack key's candidates,
    e.g. ``{min_k_pp: [0.1, 0.2]}`` (default: the attack's declared grid; for beta every grid point of the
    signals where the variant is defined)."""

    calibration_fraction: float = 0.2
    grids: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.calibration_fraction < 1:
            raise ConfigError(f"config.selection.calibration_fraction: must lie in (0, 1), got "
                              f"{self.calibration_fraction}")


@dataclass
class RecallConfig:
    """ReCaLL's prefix: ``n_shots`` random non-members (taken out of the evaluation set), joined by
    ``separator``."""

    n_shots: int = 5
    separator: str = "\n\n"


@dataclass
class NeighbourhoodConfig:
    """The neighbourhood attack's perturbation model: ``perturb`` = ``"package.module:function"``, a
    function ``text -> list of neighbour texts`` (the Python API also takes the callable itself). Naming
    code to run needs ``trust_code: true``; standard-library callables are refused
    (:mod:`miaudit.utils.trusted_code`)."""

    perturb: str | None = None
    trust_code: bool = False

    def __post_init__(self) -> None:
        if self.perturb is not None:
            check_callable_spec(self.perturb, trust_code=self.trust_code, where="config.neighbourhood.perturb")


@dataclass
class DcPddConfig:
    """DC-PDD's reference corpus (a text file, one document per line, or a JSONL/CSV with ``text_column``),
    whose Laplace-smoothed token frequencies the attack needs."""

    corpus: str | None = None
    text_column: str = "text"


@dataclass
class BaselineConfig(BaselineSettings):
    """The blind bag-of-words baseline (:mod:`miaudit.llm.baseline`). On more than ``max_documents`` evaluated
    documents it runs on a seeded random subsample of them (stratified, whole groups with ``group_column``), so
    its memory and time stay bounded; ``None``: all documents."""

    limit_option: ClassVar[str] = "max_documents"

    max_documents: int | None = 10_000


@dataclass
class TokenViewConfig:
    """``n_documents`` documents (half members) coloured token by token in ``token_view.html``."""

    n_documents: int = 4
    method: Literal["min_k_pp", "loss"] = "min_k_pp"


@dataclass
class LLMAuditConfig:
    """A membership audit of a causal language model (``kind: llm``): local weights (``model``) or an
    OpenAI-compatible completions endpoint (``api``, top-k log-prob access), exactly one of them; or a
    model the run trains itself on a random member split of a corpus (``training``, with
    ``dataset.source: corpus``; the reference model then comes from ``training.reference``)."""

    attacks: list[AttackSpec]
    dataset: LLMDatasetConfig
    model: LLMModelConfig | None = None
    api: APITargetConfig | None = None
    kind: Literal["llm"] = "llm"
    seed: int = 0
    reference_model: LLMModelConfig | None = None
    signals: SignalConfig = field(default_factory=SignalConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    recall: RecallConfig = field(default_factory=RecallConfig)
    neighbourhood: NeighbourhoodConfig = field(default_factory=NeighbourhoodConfig)
    dc_pdd: DcPddConfig = field(default_factory=DcPddConfig)
    gradnorm_p: Literal["inf", 1, 2] = "inf"
    blind_baseline: BaselineConfig = field(default_factory=BaselineConfig)
    token_view: TokenViewConfig = field(default_factory=TokenViewConfig)
    cache_dir: str | None = None
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    training: TrainingConfig | None = None

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)
        if self.training is not None:
            self._check_training(self.training)
        elif (self.model is None) == (self.api is None):
            raise ConfigError("config: give exactly one target, 'model' (local weights or a hub id) or 'api' (an "
                              "OpenAI-compatible completions endpoint), or a 'training' section")
        elif self.dataset.source == "corpus":
            raise ConfigError("config.dataset.source: 'corpus' holds unlabelled documents; add a 'training' section "
                              "that trains the audited model on a random member split of them (docs/llm-audits.md)")
        for spec in self.attacks:
            if "ref_logprob" in get_attack_class(spec.name, "llm").signals and self.reference_model is None:
                if self.training is None:
                    raise ConfigError(f"config.reference_model: attack {spec.name!r} needs a reference model (same "
                                      "tokenizer)")
                if self.training.reference == "none":
                    raise ConfigError(f"config.training.reference: attack {spec.name!r} needs a reference model; "
                                      "choose auto, trained or (fine-tuning) base")
        if self.recall.n_shots < 1:
            raise ConfigError(f"config.recall.n_shots: must be >= 1, got {self.recall.n_shots}")
        unknown = sorted(set(self.selection.grids) - {a.key for a in self.attacks})
        if unknown:
            raise ConfigError(f"config.selection.grids: {unknown[0]!r} is not an attack of this config")

    def _check_training(self, training: TrainingConfig) -> None:
        for key in ("model", "api", "reference_model"):
            if getattr(self, key) is not None:
                raise ConfigError(f"config.{key}: a 'training' section trains the audited model (and its reference) "
                                  f"itself; remove {key} (fine-tune a given model with training.base_model)")
        if self.dataset.source != "corpus":
            raise ConfigError(f"config.dataset.source: a 'training' section splits an unlabelled corpus into members "
                              f"and non-members; use source: corpus with path: a text / JSONL / CSV file (got "
                              f"{self.dataset.source!r})")
        if self.dataset.path is None:
            raise ConfigError("config.dataset.path: source 'corpus' needs path: a text / JSONL / JSON / CSV / TSV file")
        unused = [k for k in ("members", "nonmembers", "file_name", "group_column")
                  if getattr(self.dataset, k) is not None]
        if unused:
            raise ConfigError(f"config.dataset.{unused[0]}: not used with source 'corpus' (membership comes from the "
                              "training split); remove it")


# -- steps ------------------------------------------------------------------------------------------

def _load_documents(config: LLMAuditConfig) -> TextDataset:
    d = config.dataset
    data = load_text_dataset(d.source, path=d.path, members=d.members, nonmembers=d.nonmembers,
                             text_column=d.text_column, label_column=d.label_column, file_name=d.file_name,
                             separator=d.separator, data_dir=d.data_dir, on_empty=d.on_empty,
                             group_column=d.group_column, id_column=d.id_column)
    data.require_both_classes()
    if d.max_documents is not None and d.max_documents < len(data):
        data = data.subset(stratified_sample(data.labels, d.max_documents, derive_seed(config.seed, "subsample")))
    return data


Target = HFCausalLM | APICausalLM


def _target_name(config: LLMAuditConfig) -> str:
    if config.training is not None:
        return f"models/target ({config.training.method} on the member split of {config.dataset.path})"
    if config.model is not None:
        return config.model.name_or_path
    assert config.api is not None  # exactly one target (LLMAuditConfig.__post_init__)
    return f"{config.api.model} at {config.api.endpoint}"


def _trained_model_config(config: LLMAuditConfig, folder: str) -> LLMModelConfig:
    """How a model trained by this run (``folder``) is scored: like the base model it was fine-tuned from, or
    with the training batch size and device for a model trained from scratch."""
    training = config.training
    assert training is not None
    if training.base_model is not None:
        return dataclasses.replace(training.base_model, name_or_path=folder, tokenizer=None, revision=None,
                                   local_files_only=True)
    return LLMModelConfig(name_or_path=folder, local_files_only=True, batch_size=training.batch_size,
                          device=training.device)


def _reference_model_config(config: LLMAuditConfig, trained: ControlledAudit | None) -> LLMModelConfig | None:
    if trained is None:
        return config.reference_model
    if trained.reference is None:
        return None
    training = config.training
    assert training is not None
    if training.base_model is not None and trained.reference == training.base_model.name_or_path:
        return training.base_model  # reference: base
    return _trained_model_config(config, trained.reference)


def _build_main_target(config: LLMAuditConfig, progress: bool, trained: ControlledAudit | None = None) -> Target:
    if trained is not None:
        return _build_target(_trained_model_config(config, str(trained.target_folder)), config, progress)
    if config.api is not None:
        return APICausalLM(config.api, cache_dir=config.cache_dir, progress=progress)
    assert config.model is not None  # exactly one target (LLMAuditConfig.__post_init__)
    return _build_target(config.model, config, progress)


def _build_target(model: LLMModelConfig, config: LLMAuditConfig, progress: bool) -> HFCausalLM:
    params: dict[str, Any] = {"method": config.signals.method}
    if config.signals.betas is not None:
        params["betas"] = tuple(config.signals.betas)
    return HFCausalLM.from_pretrained(
        model.name_or_path, tokenizer=model.tokenizer, dtype=model.dtype, device=model.device,
        revision=model.revision, local_files_only=model.local_files_only, trust_remote_code=model.trust_remote_code,
        batch_size=model.batch_size, max_length=model.max_length, long_documents=model.long_documents,
        stride=model.stride, bos=model.bos, cache_dir=config.cache_dir, progress=progress, signal_params=params)


def _split_recall_prefix(data: TextDataset, config: LLMAuditConfig) -> tuple[TextDataset, list[str], list[str]]:
    """Draw the ReCaLL shots from the non-members; return (remaining data, shots, their ids)."""
    nonmembers = np.flatnonzero(data.labels == 0)
    n = config.recall.n_shots
    if n >= nonmembers.size:
        raise DataError(f"ReCaLL needs {n} non-member prefix documents but the dataset has {nonmembers.size} "
                        "non-members; lower recall.n_shots")
    rng = np.random.default_rng(derive_seed(config.seed, "recall"))
    shots = rng.choice(nonmembers, size=n, replace=False)
    keep = np.setdiff1d(np.arange(len(data)), shots)
    return data.subset(keep), [data.texts[i] for i in shots], [str(data.ids[i]) for i in shots]


def _extra_signals(target: Target, texts: list[str], needed: set[str], *, config: LLMAuditConfig,
                   reference: HFCausalLM | None, shots: list[str], perturb: Callable | None) -> dict[str, Any]:
    """Per-document values ``{field: (n,) array or list of arrays}`` of the extra passes in ``needed``."""
    out: dict[str, Any] = {}
    if "lowercase_logprob" in needed:  # a text that lower-casing leaves as it is needs no second pass
        changed = [i for i, text in enumerate(texts) if text.lower() != text]
        values = np.full(len(texts), np.nan)  # NaN: unchanged, filled in from the document's own pass
        if changed:
            values[changed] = target.lowercase_log_likelihoods([texts[i] for i in changed])
        out["lowercase_logprob"] = values
    if "ref_logprob" in needed:
        assert reference is not None
        out["ref_logprob"] = reference.mean_log_likelihoods(texts, desc="reference")
    if "prefix_logprob" in needed:
        out["prefix_logprob"] = target.prefix_log_likelihoods(texts, shots, separator=config.recall.separator)
    if "grad_norm" in needed:
        assert isinstance(target, HFCausalLM)  # white-box: an API target refuses gradnorm before this
        out["grad_norm"] = target.gradient_norms(texts, p=math.inf if config.gradnorm_p == "inf"
                                                 else float(config.gradnorm_p))
    if "neighbour_logprobs" in needed:
        assert perturb is not None  # run_llm refuses the neighbourhood attack without one
        out["neighbour_logprobs"] = target.neighbour_log_likelihoods(texts, perturb)
    return out


def _with_extra(record: TokenSignals, extra: dict[str, Any], i: int) -> TokenSignals:
    """Document ``i``'s record with its values of the extra passes attached (a text that lower-casing leaves
    as it is has its own mean log-likelihood as the lowercased one: the Lowercase ratio is exactly 1)."""
    if not extra:
        return record
    values = {k: (v[i] if isinstance(v, list) else float(v[i])) for k, v in extra.items()}
    if "lowercase_logprob" in values and math.isnan(values["lowercase_logprob"]):
        values["lowercase_logprob"] = float(np.mean(record.log_prob))
    return record.with_signals(**values)


def _caseless_warning(texts: Sequence[str]) -> str | None:
    """A warning when lower-casing leaves more than half the documents as they are (scripts without case, or
    texts already in lower case): the Lowercase attack gives each of them the score 1, a tie."""
    unchanged = sum(text.lower() == text for text in texts)
    if 2 * unchanged <= len(texts):
        return None
    if unchanged == len(texts):
        return (f"lowercase: lower-casing changes none of the {len(texts)} documents (a script without case, or "
                "texts already in lower case), so every score is 1 and the attack has no signal here; drop it")
    return (f"lowercase: lower-casing leaves {unchanged} of {len(texts)} documents as they are; they all score 1 "
            "(a tie), so the attack ranks only the others")


class _Plan:
    """How one attack of the config is scored while the documents stream by, a block at a time, read from
    the attack's declarations.

    A tuned attack (``param``: a ``tunable`` parameter its params leave unset) keeps its scores at every
    candidate value, ``(grid, n)``, from which the held-out choice and the oracle are read after the stream;
    any other attack keeps its ``(1, n)`` scores. An attack fitted on calibration documents (``fit_input``
    ``"calibration"``, :attr:`holds_records`) is scored once the stream has passed, from the records the
    runner keeps for it (:meth:`finish`); one that learns from token counts gets ``counts``.
    """

    def __init__(self, spec: AttackSpec, attack: Attack, param: str | None, grid: Sequence[float] | None,
                 counts: np.ndarray | None, n_documents: int) -> None:
        self.spec, self.param, self.params = spec, param, dict(spec.params)
        self.holds_records = "calibration" in attack.fit_input and attack.fit_required()
        self.counts = counts if "token-counts" in attack.fit_input else None
        self.grid: np.ndarray | None = None if grid is None else np.asarray(grid, dtype=np.float64)
        self.n_documents = n_documents
        self.table: np.ndarray | None = None  # (grid or 1, n), filled a block at a time (no copy at the end)
        self.filled = 0
        self.seconds = 0.0
        self.fitted: Attack | None = None  # the attack that scored, when no parameter is tuned

    def fit_data(self, calibration: selection.LLMCalibration | None) -> Any:
        """What the attack's ``fit`` receives (its ``fit_input``)."""
        return calibration if self.holds_records else self.counts

    def attack(self, calibration: selection.LLMCalibration | None, **override: Any) -> Attack:
        """The attack with the config's parameters (and ``override``), fitted if it must be."""
        attack = create_attack(self.spec.name, target_kind="llm", **{**self.params, **override})
        if attack.fit_required():
            attack.fit(self.fit_data(calibration))
        return attack

    def add(self, block: list[TokenSignals]) -> None:
        """Score a block of documents while they stream by (attacks that hold records wait for :meth:`finish`)."""
        if not self.holds_records:
            self._score(block, None)

    def finish(self, records: list[TokenSignals], calibration: selection.LLMCalibration | None) -> None:
        """Score every document (``records``, in order) of an attack that holds records, fitted on ``calibration``."""
        if self.holds_records:
            self._score(records, calibration)

    def _score(self, docs: list[TokenSignals], calibration: selection.LLMCalibration | None) -> None:
        t0 = time.perf_counter()
        if self.param is None:
            if self.fitted is None:
                self.fitted = self.attack(calibration)
            self._store(self.fitted.score(docs)[None, :])
        else:
            if self.grid is None:
                self.grid = selection.default_grid(self.spec.name, docs)
            _, table = selection.grid_scores(self.spec.name, docs, self.grid, fit_data=self.fit_data(calibration),
                                             **self.params)
            self._store(table)
        self.seconds += time.perf_counter() - t0

    def scores(self) -> np.ndarray:
        """``(grid or 1, n)`` scores of every document, in order."""
        if self.table is None or self.filled != self.n_documents:
            raise RuntimeError(f"{self.spec.key}: scored {self.filled} of {self.n_documents} documents")
        return self.table

    def _store(self, block: np.ndarray) -> None:
        if self.table is None:
            self.table = np.empty((block.shape[0], self.n_documents))
        self.table[:, self.filled:self.filled + block.shape[1]] = block
        self.filled += block.shape[1]


def _corpus_counts(config: LLMAuditConfig, target: Target, keys: list[str],
                   reference_texts: Sequence[str] = ()) -> np.ndarray:
    """Token counts ``(V,)`` of the user's reference corpus (``dc_pdd.corpus``; in a controlled audit without
    one, the reference split) under the target's tokenizer (an API target's: the server's)."""
    if config.dc_pdd.corpus is None and reference_texts:
        return target.token_counts(list(reference_texts))
    if config.dc_pdd.corpus is None:
        raise ConfigError(f"attack {keys[0]!r} needs a reference corpus for token frequencies: set dc_pdd.corpus to "
                          "a text file (one document per line) or a table (.jsonl, .csv, .parquet...) with a text "
                          "column")
    return target.token_counts(read_corpus(config.dc_pdd.corpus, text_column=config.dc_pdd.text_column))


def _counted(attacks: Mapping[str, Attack]) -> list[str]:
    """Keys of the attacks that learn from token counts of the reference corpus."""
    return [k for k, a in attacks.items() if "token-counts" in a.fit_input and a.fit_required()]


def _api_estimate(target: APICausalLM, config: LLMAuditConfig, texts: list[str], needed: set[str],
                  shots: list[str], counted: bool) -> Any:
    """The requests an audit through an API will send, pass by pass (neighbours: not counted, they
    exist only once the perturbation model has run)."""
    passes: dict[str, Sequence[str]] = {"signals": texts}
    if "lowercase_logprob" in needed:
        passes["lowercase"] = [t.lower() for t in texts if t.lower() != t]
    if "prefix_logprob" in needed:
        prefix = config.recall.separator.join(shots) + config.recall.separator
        passes["recall prefix"] = [prefix + t for t in texts]
    if counted and config.dc_pdd.corpus:
        passes["dc_pdd corpus"] = read_corpus(config.dc_pdd.corpus, text_column=config.dc_pdd.text_column)
    return target.estimate(passes)


def estimate_llm(config: LLMAuditConfig) -> dict[str, Any]:
    """Dry run (``miaudit audit --dry-run``): the documents, and for an API target the requests and rough
    prompt tokens the audit would send (cached prompts excluded); nothing is queried."""
    attacks = _build_attacks(config)  # bad parameters and attacks the API cannot serve fail here too
    signal_names = {f for a in attacks.values() for f in a.signals}
    if config.training is not None:
        return {"target": _target_name(config), "note": "a controlled audit: the run trains its models first, then "
                "scores them locally; no requests are sent"}
    data = _load_documents(config)
    shots: list[str] = []
    if "prefix_logprob" in signal_names:
        data, shots, _ = _split_recall_prefix(data, config)
    out: dict[str, Any] = {"documents": len(data), "members": int(data.labels.sum()), "target": _target_name(config)}
    if config.api is None:
        out["note"] = "a local model: no requests are sent"
        return out
    needed = {f for f in signal_names if f in EXTRA_PASSES}
    target = APICausalLM(config.api, cache_dir=config.cache_dir, progress=False)
    try:
        out.update(_api_estimate(target, config, data.texts, needed, shots, bool(_counted(attacks))).as_dict())
    finally:
        target.close()
    if "neighbour_logprobs" in needed:
        out["note"] += "; plus one request per neighbour text of the neighbourhood attack"
    return out


# -- the runner ------------------------------------------------------------------------------------

def _build_attacks(config: LLMAuditConfig) -> dict[str, Attack]:
    """Every attack of the config, by key, with its parameters validated before any forward pass; an attack
    whose ``fit`` needs data an LLM audit does not build is refused, and so is one that needs more access
    than an API target gives (before any request)."""
    attacks = {}
    for i, spec in enumerate(config.attacks):
        try:
            attacks[spec.key] = attack = create_attack(spec.name, target_kind="llm", **spec.params)
            if config.api is not None:
                check_access(attack, API_ACCESS, f"an API target ({_target_name(config)})")
        except ConfigError as exc:
            raise ConfigError(f"config.attacks[{i}]: {exc}") from None
        missing = [need for need in attack.fit_input if need not in FIT_INPUTS]
        if missing:
            raise ConfigError(f"config.attacks[{i}]: attack {spec.name!r} learns from {missing[0]} data, which an LLM "
                              f"audit does not build (it gives {' and '.join(FIT_INPUTS)})")
    return attacks


def _tuned_parameter(spec: AttackSpec, attack: Attack) -> str | None:
    """The hyper-parameter chosen on calibration data for this attack, unless its params fix it."""
    param = next(iter(attack.tunable), None)
    return param if param is not None and param not in spec.params else None


def _check_grids(config: LLMAuditConfig, attacks: dict[str, Attack], tuned: dict[str, str | None]) -> None:
    """``selection.grids`` only for attacks with a parameter to choose, and with values it allows."""
    for key, grid in config.selection.grids.items():
        param = tuned[key]
        if param is None:
            raise ConfigError(f"config.selection.grids.{key}: attack {attacks[key].name!r} has no hyper-parameter "
                              "left to choose (none is tunable, or its params fix it); remove the grid")
        for value in grid:
            try:
                type(attacks[key]).check_param(param, value)
            except ConfigError as exc:
                raise ConfigError(f"config.selection.grids.{key}: {exc}") from None


def run_llm(config: LLMAuditConfig, folder: Path, *, progress: bool = True,
            perturb: Callable[[str], Sequence[str]] | None = None) -> AuditOutcome:
    """The ``kind: llm`` runner: returns the scored attacks and metrics sections; writes token_view.html."""
    start = time.perf_counter()
    attacks = _build_attacks(config)  # a bad parameter fails before any forward pass
    tuned = {spec.key: _tuned_parameter(spec, attacks[spec.key]) for spec in config.attacks}
    _check_grids(config, attacks, tuned)
    needs_calibration = any(tuned.values()) or any("calibration" in a.fit_input for a in attacks.values())
    counted = _counted(attacks)
    signal_names = {f for a in attacks.values() for f in a.signals}

    if perturb is None and config.neighbourhood.perturb:  # the user's code is imported before any heavy work
        perturb = import_trusted_callable(config.neighbourhood.perturb, trust_code=config.neighbourhood.trust_code,
                                          where="config.neighbourhood.perturb")
    warnings: list[str] = []
    trained: ControlledAudit | None = None
    if config.training is not None:
        trained = prepare_controlled_audit(
            config.training, config.dataset, seed=config.seed, folder=folder, progress=progress,
            needs_reference="ref_logprob" in signal_names,
            needs_corpus=bool(counted) and config.dc_pdd.corpus is None)
        data = trained.data
        warnings += trained.warnings
    else:
        data = _load_documents(config)
        warnings += data.repeated_text_warnings()
    shots: list[str] = []
    shot_ids: list[str] = []
    if "prefix_logprob" in signal_names:
        data, shots, shot_ids = _split_recall_prefix(data, config)
    n, labels = len(data), data.labels
    if needs_calibration:
        size = max(4, int(round(config.selection.calibration_fraction * n)))
        calibration = stratified_sample(labels, size, derive_seed(config.seed, "calibration"))
    else:
        calibration = np.array([], dtype=np.int64)
    evaluation = np.setdiff1d(np.arange(n), calibration)
    for part, index in (("calibration", calibration), ("evaluation", evaluation)):
        if index.size and (labels[index].all() or not labels[index].any()):
            raise DataError(f"the {part} split has only one class; add documents or change "
                            "selection.calibration_fraction")

    target = _build_main_target(config, progress, trained)
    reference = None
    reference_config = _reference_model_config(config, trained)
    if reference_config is not None:
        reference = _build_target(reference_config, config, progress)
        if isinstance(target, HFCausalLM):
            target.check_same_tokenizer(reference)
    needed = {f for f in signal_names if f in EXTRA_PASSES}
    if "neighbour_logprobs" in needed and perturb is None:
        key = next(k for k, a in attacks.items() if "neighbour_logprobs" in a.signals)
        raise ConfigError(f"attack {key!r} needs a perturbation model: set neighbourhood.perturb to "
                          "'package.module:function' (or pass perturb= to run_llm_audit)")
    counts = _corpus_counts(config, target, counted, trained.reference_texts if trained else ()) if counted else None

    log.info("%s: %d documents (%d members): %d for calibration, %d evaluated", data.name, n, int(labels.sum()),
             calibration.size, evaluation.size)
    if isinstance(target, APICausalLM):
        plan = _api_estimate(target, config, data.texts, needed, shots, bool(counted))
        log.info("API target %s: about %d requests, ~%d prompt tokens to send (%s)", target.name, plan.requests,
                 plan.prompt_tokens, plan.note)
    if "lowercase_logprob" in needed:
        caseless = _caseless_warning(data.texts)
        if caseless:
            warnings.append(caseless)
    extra = _extra_signals(target, data.texts, needed, config=config, reference=reference, shots=shots,
                           perturb=perturb)
    plans = [_Plan(spec, attacks[spec.key], tuned[spec.key], config.selection.grids.get(spec.key), counts, n)
             for spec in config.attacks]
    view_docs = _token_view_documents(config, labels, evaluation)
    keep = set(evaluation[view_docs].tolist()) | (set(range(n)) if any(p.holds_records for p in plans) else set())
    kept: dict[int, TokenSignals] = {}
    n_tokens = np.empty(n, dtype=np.int64)
    # documents stream through scoring a block at a time: only scores (and the few kept records) stay
    records = target.iter_token_signals(data.texts)
    for first in range(0, n, STREAM_BLOCK):
        block = [_with_extra(next(records), extra, first + i) for i in range(min(STREAM_BLOCK, n - first))]
        for plan in plans:
            plan.add(block)
        for i, record in enumerate(block):
            n_tokens[first + i] = record.n_tokens
            if first + i in keep:
                kept[first + i] = record
        release_free_memory()  # the block's forward passes freed memory that glibc would otherwise keep
    cal_labels, eval_labels = labels[calibration], labels[evaluation]
    held = [plan for plan in plans if plan.holds_records]
    calibration_docs = selection.LLMCalibration([kept[i] for i in calibration], cal_labels) if held else None
    for plan in held:
        plan.finish([kept[i] for i in range(n)], calibration_docs)
    eval_groups = None if data.groups is None else data.groups[evaluation]

    def calibrated_threshold(row: np.ndarray) -> float | None:
        """The threshold maximising TPR - FPR on the calibration documents (none without them)."""
        return best_threshold(cal_labels.astype(bool), row[calibration]) if calibration.size else None

    scored: list[ScoredAttack] = []
    chosen: dict[str, Any] = {}
    for plan in plans:
        spec, table = plan.spec, plan.scores()
        t0 = time.perf_counter()
        if plan.param is None:
            assert plan.fitted is not None  # set by the first scored block
            scored.append(ScoredAttack(spec.key, plan.fitted, data.ids[evaluation], eval_labels.astype(bool),
                                       table[0, evaluation], plan.seconds,
                                       extra={"learned": plan.fitted.learned_state()}, groups=eval_groups,
                                       threshold=calibrated_threshold(table[0]), threshold_source="calibration"))
            continue
        # the held-out choice (the result) and the oracle, both from the same (grid, n) score table
        grid = plan.grid
        assert grid is not None  # set by the first scored block
        held_out, cal_aucs = selection.best_value(grid, table[:, calibration], cal_labels)
        oracle, test_aucs = selection.best_value(grid, table[:, evaluation], eval_labels)
        chosen[spec.key] = {"parameter": plan.param, "grid": grid.tolist(), "held_out": held_out,
                            "oracle": oracle, "calibration_aucs": cal_aucs.tolist(),
                            "evaluation_aucs": test_aucs.tolist()}
        for key, value, which in ((spec.key, held_out, "held-out"), (f"{spec.key}.oracle", oracle, "oracle")):
            attack = plan.attack(calibration_docs, **{plan.param: value})
            row = table[int(np.flatnonzero(grid == value)[0])]
            scored.append(ScoredAttack(key, attack, data.ids[evaluation], eval_labels.astype(bool), row[evaluation],
                                       time.perf_counter() - t0 + plan.seconds,
                                       extra={"selection": which, plan.param: value,
                                              "learned": attack.learned_state()}, groups=eval_groups,
                                       threshold=calibrated_threshold(row), threshold_source="calibration"))

    sections: dict[str, Any] = {} if trained is None else {"training": trained.section}
    sections["selection"] = {
        "calibration_fraction": config.selection.calibration_fraction if needs_calibration else 0.0,
        "n_calibration": int(calibration.size), "calibration_ids": data.ids[calibration].tolist(),
        "note": "'<attack>' uses the hyper-parameter chosen on the calibration split (the result); "
                "'<attack>.oracle' uses the best value on the evaluation labels themselves (optimistic: not a "
                "result, shown for comparison with papers that tune on the test set)",
        "attacks": chosen}
    if shots:
        sections["recall"] = {"prefix_ids": shot_ids, "n_shots": len(shots), "separator": config.recall.separator,
                              "note": "the prefix documents are non-members taken out of the evaluation set"}
    if config.blind_baseline.enabled:
        baseline_section = _blind_baseline(config, folder, data, evaluation, scored, warnings)
        if baseline_section is not None:
            sections["blind_baseline"] = baseline_section
    _write_token_view(folder, config, target, data, evaluation, view_docs, kept, scored)
    if isinstance(target, APICausalLM):
        target_info = target.info()
        target.close()
        if shots or counted:
            warnings.append("API target: the server tokenises; ReCaLL's prefix is joined to each document as text "
                            "and DC-PDD counts the server's token strings")
    else:
        target_info = {"model": _target_name(config), "access": "white-box",
                       "n_parameters": sum(p.numel() for p in target.model.parameters()),
                       "dtype": str(next(target.model.parameters()).dtype).replace("torch.", ""),
                       "vocab_size": target.vocab_size, "max_length": target.max_length, "bos": target.has_bos,
                       "long_documents": target.long_documents, "fingerprint": target.fingerprint()}
    target_info["reference_model"] = reference_config.name_or_path if reference_config else None
    if trained is not None and trained.reference is not None and reference_config is not None \
            and reference_config.name_or_path == trained.reference and Path(trained.reference).is_relative_to(folder):
        target_info["reference_model"] = str(Path(trained.reference).relative_to(folder))  # models/reference
    data_info = {"dataset": data.name, "n_members": int(eval_labels.sum()),  # audited = evaluated documents
                 "n_nonmembers": int(evaluation.size - eval_labels.sum()), "n_documents": n,
                 "n_members_total": int(labels.sum()), "n_evaluated": int(evaluation.size),
                 "n_calibration": int(calibration.size), "n_recall_prefix": len(shots),
                 "skipped": [list(s) for s in data.skipped], "tokens_per_document_mean": float(n_tokens.mean()),
                 "tokens_per_document_max": int(n_tokens.max()), "seconds": round(time.perf_counter() - start, 2)}
    return AuditOutcome(target=target_info, data=data_info, attacks=scored, sections=sections, warnings=warnings)


def _blind_baseline(config: LLMAuditConfig, folder: Path, data: TextDataset, evaluation: np.ndarray,
                    scored: list[ScoredAttack], warnings: list[str]) -> dict[str, Any] | None:
    """The blind baseline on the evaluation documents beside the scored attacks
    (:func:`~miaudit.evaluation.blind_baseline.run_beside_attacks`): the ``blind_baseline`` section of
    ``metrics.json``, or ``None`` (with a warning) when the documents are too few for its folds."""
    ev = config.evaluation
    return run_beside_attacks(
        data.labels[evaluation], data.ids[evaluation], None if data.groups is None else data.groups[evaluation],
        lambda sample: text_features([data.texts[i] for i in evaluation[sample]]), scored,
        config.blind_baseline, evidence="the text", unit="documents", folder=folder,
        seed=derive_seed(config.seed, "baseline"), n_bootstrap=ev.n_bootstrap, confidence=ev.confidence,
        warnings=warnings)


def _token_view_documents(config: LLMAuditConfig, labels: np.ndarray, evaluation: np.ndarray) -> np.ndarray:
    """Positions in ``evaluation`` of the documents shown in ``token_view.html`` (half members)."""
    n = min(config.token_view.n_documents, evaluation.size)
    if n <= 0:
        return np.array([], dtype=np.int64)
    rng = np.random.default_rng(derive_seed(config.seed, "token_view"))
    labels = labels[evaluation]
    members, nonmembers = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    k = min(members.size, (n + 1) // 2)
    return np.r_[rng.choice(members, k, replace=False), rng.choice(nonmembers, min(nonmembers.size, n - k),
                                                                   replace=False)].astype(np.int64)


def _write_token_view(folder: Path, config: LLMAuditConfig, target: Target, data: TextDataset,
                      evaluation: np.ndarray, picks: np.ndarray, kept: Mapping[int, TokenSignals],
                      scored: list[ScoredAttack]) -> None:
    if picks.size == 0:
        return
    labels = data.labels[evaluation]
    first = scored[0] if scored else None
    method = config.token_view.method if isinstance(target, HFCausalLM) else "loss"  # an API gives no moments
    views = [token_view(target, data.texts[evaluation[p]], kept[int(evaluation[p])],
                        doc_id=str(data.ids[evaluation[p]]), label=int(labels[p]),
                        document_score=float(first.scores[p]) if first else None, method=method) for p in picks]
    model_name = "the trained model" if config.training is not None else Path(_target_name(config)).name
    title = f"Token-level membership view: {data.name} on {model_name}"
    if first is not None:
        title += f" (document score: {first.key})"
    write_html(folder / "token_view.html", views, title=title)


def summary_table(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown rows of an LLM run's ``metrics.json``: every attack by AUC with its CI, TPR at 1% / 5% FPR and
    whether it beats the blind baseline, held-out choices first, oracle entries after them (marked), then the
    blind baseline with its verdict."""
    from miaudit.evaluation.run_result import ranked
    from miaudit.report.headline import beats_baseline

    chosen = metrics["selection"]["attacks"]
    rows = ["| attack | hyper-parameter choice | AUC [95% CI] | TPR@1%FPR | TPR@5%FPR | beats the blind baseline |",
            "|---|---|---|---|---|---|"]

    def cells(entry: Mapping[str, Any]) -> str:
        low, high = entry["auc_ci"]
        return (f"{entry['auc']:.3f} [{low:.3f}, {high:.3f}] | {entry['tpr_at_fpr']['0.01']:.3f} | "
                f"{entry['tpr_at_fpr']['0.05']:.3f}")

    for entry in (e.fields for e in ranked(metrics["attacks"]) if e.scored):
        key = entry["name"]
        base = key.removesuffix(".oracle")
        if base in chosen:
            which = "oracle" if key.endswith(".oracle") else "held_out"
            choice = f"{which.replace('_', '-')}: {chosen[base]['parameter']}={chosen[base][which]:.4g}"
        elif entry["needs_reference"] == "calibration":
            choice = "fitted on the calibration split"
        else:
            choice = "none"
        label = f"{base} (oracle: comparison only)" if key.endswith(".oracle") else base
        rows.append(f"| {label} | {choice} | {cells(entry)} | {beats_baseline(entry)} |")
    if "blind_baseline" in metrics:
        baseline = metrics["blind_baseline"]
        verdict = (baseline.get("verdict") or {}).get("text", "")
        rows.append(f"| blind bag-of-words baseline | cross-validated on the text only | {cells(baseline)} | "
                    f"{verdict} |")
    return rows


# -- public entry point and registration ----------------------------------------------------------

def parse_llm_config(data: Mapping[str, Any]) -> LLMAuditConfig:
    """Strictly parse a ``kind: llm`` config mapping."""
    from miaudit.config import from_dict

    return from_dict(LLMAuditConfig, dict(data))


def run_llm_audit(config: Mapping[str, Any] | str | Path | LLMAuditConfig, out_dir: str | Path, *,
                  progress: bool = True, overwrite: bool = False,
                  perturb: Callable[[str], Sequence[str]] | None = None) -> RunResult:
    """Run an LLM audit from a config (mapping, YAML path or parsed) into ``out_dir``; return its
    :class:`~miaudit.evaluation.run_result.RunResult` (reads as ``metrics.json``).

    ``perturb`` (``text -> neighbour texts``) is the neighbourhood attack's perturbation model when
    given from Python rather than as ``neighbourhood.perturb`` in the config.
    """
    if not isinstance(config, LLMAuditConfig):
        if isinstance(config, Mapping):
            config = {"kind": "llm", **config}
        config = parse_config(config)
    if not isinstance(config, LLMAuditConfig):
        raise ConfigError(f"run_llm_audit needs a kind: llm config, got kind {getattr(config, 'kind', None)!r}")
    if perturb is None:
        return run_audit(config, out_dir, overwrite=overwrite, progress=progress)
    _PERTURB[id(config)] = perturb
    try:
        return run_audit(config, out_dir, overwrite=overwrite, progress=progress)
    finally:
        _PERTURB.pop(id(config), None)


_PERTURB: dict[int, Callable[[str], Sequence[str]]] = {}


def _runner(config: LLMAuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    return run_llm(config, Path(folder), progress=progress, perturb=_PERTURB.get(id(config)))


register_kind("llm", LLMAuditConfig, _runner, parse=parse_llm_config, resolve=to_dict, estimate=estimate_llm)

__all__ = ["LLMAuditConfig", "LLMDatasetConfig", "LLMModelConfig", "parse_llm_config", "run_llm", "run_llm_audit",
           "summary_table"]
