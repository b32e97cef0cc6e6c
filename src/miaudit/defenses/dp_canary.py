"""``kind: dp_canary``: a one-run privacy audit with inserted canaries, beside the DP accountant's epsilon.

Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training Run" (NeurIPS), Algorithm 1
in the black-box (input-space) setting:

1. From the dataset (shuffled with the run's seed) take ``n_train`` fixed training examples,
   ``canaries.n = m`` canaries and ``n_test`` test examples, all disjoint. A ``mislabeled`` canary
   gets a uniformly random *wrong* label (the strongest black-box canary: the model can only fit
   it by memorising it); a ``clean`` canary keeps its true label.
2. Every canary is inserted into the training set independently with probability 1/2 (seeded).
3. The target is trained **once** with the configured defense (typically DP-SGD through Opacus,
   whose RDP accountant reports the epsilon the run spent at ``delta``).
4. Every canary gets a black-box membership score from the trained model's outputs (higher =
   inserted). The default is the loss attack's ``-CE(f(x), y_canary)`` on the final model, the
   black-box score of open re-implementations of the paper's input-space audit (e.g.
   isaacyclai/metagradient-canary-optimization, ``src/auditing/steinke.py``); ``calibrate:
   initial`` subtracts the same score on the initial weights (``loss_init - loss_final``, as the
   reproduction zj-jayzhang/one_round_auditing, ``src/dp_audit.py``, does).
5. The auditor guesses "in" for the ``k_pos`` highest and "out" for the ``k_neg`` lowest scores
   (both fixed in the config, before any score exists) and
   :func:`~miaudit.evaluation.epsilon.one_run_epsilon` turns the number of correct guesses into a
   lower bound on epsilon at the accountant's ``delta``. The best bound over several k
   (:func:`~miaudit.evaluation.epsilon.one_run_epsilon_sweep`) is reported beside it, labelled
   **oracle**: choosing k on the scores voids the confidence level.

The bound is a *lower* bound: with about 1000 canaries and a black-box score it lies far below the
accountant's epsilon for DP-SGD (the paper reports about 1.8 against an accountant's 4 even with
white-box gradient canaries on CIFAR-10). A bound *above* the accountant's
epsilon means the DP implementation or its accounting is broken (or the audit's assumptions were
violated); the run says so loudly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.classifier.experiment import ClassifierExperiment, GivenData, majority_rate, no_better_than_majority
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference
from miaudit.classifier.training import TrainConfig
from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.data import ArrayDataset, load_dataset
from miaudit.defenses.base import DefenseContext, DefenseError, TrainingDefense, ids_of, n_classes_of
from miaudit.defenses.dp import PrivateOptimiser, private_optimiser
from miaudit.defenses.registry import NONE, build_chain, create_defense
from miaudit.errors import ConfigError, DataError
from miaudit.evaluation.epsilon import one_run_epsilon, one_run_epsilon_sweep
from miaudit.runs.config import AttackSpec, DatasetConfig, EvaluationConfig, check_attack_specs
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, register_kind
from miaudit.utils.atomic import save_npz_atomic
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)

STEINKE_2023 = ("Steinke, Nasr & Jagielski, 'Privacy Auditing with One (1) Training Run', NeurIPS 2023 "
                "(Algorithm 1, Theorem 5.2)")
CANARIES_FILE = "canaries.npz"


# -- configuration ------------------------------------------------------------------------------
@dataclass
class CanaryConfig:
    """``n`` canaries (m in the paper), their ``kind``, and the auditor's guesses fixed in advance.

    ``k_pos`` / ``k_neg``: how many of the highest / lowest scored canaries are guessed "in" /
    "out" (default ``n // 10`` each); the others are abstentions.
    """

    n: int = 1000
    kind: Literal["mislabeled", "clean"] = "mislabeled"
    k_pos: int | None = None
    k_neg: int | None = None

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ConfigError(f"config.canaries.n: need at least 2 canaries (the paper uses ~1000), got {self.n}")
        default = max(1, self.n // 10)
        self.k_pos = default if self.k_pos is None else self.k_pos
        self.k_neg = default if self.k_neg is None else self.k_neg
        if self.k_pos < 0 or self.k_neg < 0:
            raise ConfigError(f"config.canaries: k_pos and k_neg must be >= 0, got {self.k_pos} and {self.k_neg}")
        if not 0 < self.k_pos + self.k_neg <= self.n:
            raise ConfigError(f"config.canaries: k_pos + k_neg = {self.k_pos + self.k_neg} must lie in 1..{self.n} "
                              "(the number of canaries); lower k_pos / k_neg or raise n")

    @property
    def guesses(self) -> tuple[int, int]:
        """``(k_pos, k_neg)``, as given or filled in by the constructor."""
        if self.k_pos is None or self.k_neg is None:
            raise ConfigError("config.canaries: k_pos and k_neg are unset; give them or leave both to the default "
                              "(build the config through CanaryConfig(...) / from_dict)")
        return self.k_pos, self.k_neg


@dataclass
class DefenseConfig:
    """One training-time defense of :mod:`miaudit.defenses` (``name: none`` trains without one)."""

    name: str = NONE
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name == NONE and self.params:
            raise ConfigError("config.defense.params: defense 'none' takes no parameters; remove them")


@dataclass
class DPCanaryConfig:
    """A one-run canary audit of a training run (``kind: dp_canary``); see the module docstring.

    ``delta``: delta of the bound; defaults to the DP defense's own ``delta`` (the accountant's) and
    must equal it when both are given; required when the defense has no accountant.
    ``confidence``: confidence level of the one-run bound (``evaluation.confidence`` is that of
    the bootstrap CIs of the canary attack's AUC / TPR). ``attacks``: black-box scores of the
    canaries (classifier attacks that need no reference data, default ``loss``);
    ``bound_attack``: the label whose scores feed the bound (default: the first);
    ``calibrate``: ``initial`` subtracts each attack's score on the initial weights (default ``none``).
    ``sweep_ks``: symmetric k of the oracle sweep.
    """

    dataset: DatasetConfig
    kind: Literal["dp_canary"] = "dp_canary"
    seed: int = 0
    n_train: int = 1000
    n_test: int = 500
    canaries: CanaryConfig = field(default_factory=CanaryConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    delta: float | None = None
    confidence: float = 0.95
    attacks: list[AttackSpec] = field(default_factory=lambda: [AttackSpec("loss")])
    bound_attack: str | None = None
    calibrate: Literal["none", "initial"] = "none"
    sweep_ks: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 200, 500, 1000])
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        if self.n_train < 1:
            raise ConfigError("config.n_train: the target needs training data besides the canaries; give a "
                              f"positive size, got {self.n_train}")
        if self.n_test < 0:
            raise ConfigError(f"config.n_test: must be >= 0, got {self.n_test}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"config.confidence: must lie in (0, 1), e.g. 0.95; got {self.confidence}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"config.delta: must lie in (0, 1), e.g. 1e-5; got {self.delta}")
        check_attack_specs(self.attacks)
        keys = [a.key for a in self.attacks]
        self.bound_attack = self.bound_attack or keys[0]
        if self.bound_attack not in keys:
            raise ConfigError(f"config.bound_attack: {self.bound_attack!r} is not one of the attacks "
                              f"({', '.join(keys)}); name one of them")
        if not self.sweep_ks or min(self.sweep_ks) < 1:
            raise ConfigError(f"config.sweep_ks: give positive k values, got {self.sweep_ks}")
        if 2 * min(self.sweep_ks) > self.canaries.n:
            raise ConfigError(f"config.sweep_ks: no k in {self.sweep_ks} fits {self.canaries.n} canaries (need "
                              "2k <= canaries.n); add smaller k values")


def _defense(spec: DefenseConfig) -> TrainingDefense | None:
    """The configured defense, created (unknown names / parameters are errors); None for ``none``."""
    if spec.name == NONE:
        return None
    defense = create_defense(spec.name, spec.params)
    if not isinstance(defense, TrainingDefense):  # an OutputDefense
        raise DefenseError(f"config.defense: {spec.name!r} post-processes the model's outputs; the canary audit "
                           "tests the training algorithm's DP claim, so give a training-time defense (e.g. dp_sgd) "
                           "or none")
    if defense.needs_reference:
        raise DefenseError(f"config.defense: {spec.name!r} needs the defender's reference data, which the dp_canary "
                           "audit does not hold out; use dp_sgd, a regulariser, or none")
    return defense


def accountant_delta(defense: TrainingDefense | None) -> float | None:
    """The delta a private optimiser (DP-SGD, LADP) is accounted at; None for defenses without an accountant."""
    return float(defense.delta) if isinstance(defense, PrivateOptimiser) else None


def audit_delta(config: DPCanaryConfig, defense: TrainingDefense | None) -> float:
    """The delta of the bound: ``config.delta``, else the accountant's of ``defense`` (the configured one).

    A :class:`ConfigError` when the two differ, or when neither exists.
    """
    own = accountant_delta(defense)
    if own is not None and config.delta is not None and config.delta != own:
        raise ConfigError(f"config.delta: {config.delta:g} differs from the accountant's delta {own:g} "
                          f"(defense.params.delta); the bound must be at the accountant's delta: set one of them")
    if config.delta is not None:
        return config.delta
    if own is None:
        raise ConfigError(f"config.delta: defense {config.defense.name!r} has no privacy accountant, so there is no "
                          "delta to audit at; give delta (e.g. 1.0e-5)")
    return own


def parse(data: dict[str, Any]) -> DPCanaryConfig:
    """Strict parse; the defense and the delta of the bound are checked here, before any data is read."""
    refuse_nested_seed(data, "training")
    config = from_dict(DPCanaryConfig, data)
    audit_delta(config, _defense(config.defense))
    return config


def resolve(config: DPCanaryConfig) -> dict[str, Any]:
    """The config as written to ``config.yaml`` (k values filled in; re-running it reproduces the run)."""
    return resolved_without_seed(config, "training")


# -- canaries -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CanaryDraw:
    """Dataset indices of the disjoint parts, the canaries' labels and which canaries were inserted.

    ``train`` ``(n_train,)``, ``canaries`` ``(m,)``, ``test`` ``(n_test,)``; ``canary_labels`` ``(m,)``
    (random wrong labels for mislabeled canaries); ``included`` ``(m,)`` bool, each True with
    probability 1/2 independently.
    """

    train: np.ndarray
    canaries: np.ndarray
    test: np.ndarray
    canary_labels: np.ndarray
    included: np.ndarray


def draw_canaries(labels: np.ndarray, n_classes: int, *, n_train: int, n_canaries: int, n_test: int,
                  kind: str, seed: int) -> CanaryDraw:
    """Split ``len(labels)`` examples from ``seed``, label the canaries, flip each one's inclusion coin.

    ``labels`` ``(N,)`` true classes. Three independent generators (split, labels, inclusion), each
    seeded from ``seed``, so changing the canary kind leaves the split and the coins unchanged.
    """
    n = labels.shape[0]
    need = n_train + n_canaries + n_test
    if need > n:
        room = n - n_train - n_test
        raise DataError(f"canaries.n={n_canaries} plus n_train={n_train} and n_test={n_test} need {need} examples but "
                        f"the dataset has {n}; lower canaries.n (at most {max(room, 0)} here) or n_train / n_test")
    order = np.random.default_rng(derive_seed(seed, "dp-canary-split")).permutation(n)
    train, canaries = order[:n_train], order[n_train:n_train + n_canaries]
    test = order[n_train + n_canaries:need]
    truth = labels[canaries]
    if kind == "mislabeled":
        if n_classes < 2:
            raise DataError("mislabeled canaries need at least 2 classes; use canaries.kind: clean")
        shift = np.random.default_rng(derive_seed(seed, "canary-labels")).integers(1, n_classes, size=n_canaries)
        canary_labels = (truth + shift) % n_classes  # uniform over the n_classes - 1 wrong labels
    else:
        canary_labels = truth.copy()
    included = np.random.default_rng(derive_seed(seed, "canary-inclusion")).random(n_canaries) < 0.5
    return CanaryDraw(np.sort(train), canaries, np.sort(test), canary_labels.astype(np.int64), included)


def _canary_set(dataset: ArrayDataset, draw: CanaryDraw) -> ArrayDataset:
    part = dataset.subset(draw.canaries)
    return ArrayDataset(part.x, draw.canary_labels, n_classes=dataset.n_classes, name=f"{dataset.name} canaries",
                        ids=part.ids)


def _training_set(fixed: ArrayDataset, canaries: ArrayDataset, included: np.ndarray) -> ArrayDataset:
    """The fixed training examples followed by the inserted canaries (with their canary labels)."""
    inserted = canaries.subset(included)
    ids = np.concatenate([ids_of(fixed).astype(str), np.char.add("canary/", ids_of(inserted).astype(str))])
    return ArrayDataset(np.concatenate([fixed.x, inserted.x]), np.concatenate([fixed.y, inserted.y]),
                        n_classes=fixed.n_classes, name=f"{fixed.name} + {len(inserted)} canaries", ids=ids)


# -- the audit ----------------------------------------------------------------------------------
#: why the canary audit takes no attack that needs more than the final model's outputs on the canaries
OUTPUTS_ONLY = ("the canary audit scores each canary from those outputs alone (the final model's, on the canaries): "
                "use loss, confidence, entropy, modified_entropy or correctness")


def _score(attacks: list[tuple[str, Attack]], final: ClassifierOutputs, initial: ClassifierOutputs | None,
           draw: CanaryDraw, ids: np.ndarray) -> list[ScoredAttack]:
    """Every attack's canary scores ``(m,)``: on the final model, minus on the initial weights when given."""
    how = ("score on the final model minus score on the initial weights" if initial is not None
           else "score on the final model")
    scored = []
    for key, attack in attacks:
        start = time.perf_counter()
        attack.fit(AttackReference())
        scores = attack.score(final) - (attack.score(initial) if initial is not None else 0.0)
        scored.append(ScoredAttack(key, attack, ids, draw.included, scores, time.perf_counter() - start,
                                   extra={"canary_score": how, "members": "inserted canaries",
                                          "nonmembers": "canaries left out"}))
    return scored


def _accountant(reports: dict[str, dict[str, Any]], defense: DefenseConfig, delta: float,
                notes: list[str]) -> dict[str, Any]:
    """``metrics.json`` ``"dp"``: the accountant's report, or epsilon None when the defense has none."""
    report = next((r for r in reports.values() if r.get("epsilon") is not None), None)
    if report is None:
        return {"defense": defense.name, "epsilon": None, "delta": delta, "accountant": None, "notes": notes,
                "note": f"defense {defense.name!r} reports no privacy accounting: the one-run bound is compared "
                        "against nothing"}
    return {"defense": defense.name, **report, "notes": notes}


def _verdict(bound: float, oracle: float, dp: dict[str, Any]) -> tuple[str, list[str]]:
    """One-line comparison with the accountant, and the warnings the run must carry."""
    claimed = dp.get("epsilon")
    if claimed is None:
        return (f"no accountant epsilon to compare with (defense {dp['defense']!r}); the one-run lower bound is "
                f"{bound:.3f}", [f"defense {dp['defense']!r} has no privacy accountant: the one-run lower bound "
                                 f"epsilon >= {bound:.3f} is compared against nothing"])
    warnings = []
    if bound > claimed:
        warnings.append(f"DP CLAIM VIOLATED: the one-run lower bound epsilon >= {bound:.3f} exceeds the accountant's "
                        f"epsilon = {claimed:.3f}; the DP implementation or its accounting is broken (or the "
                        "audit's assumptions, independent 1/2 inclusion and k fixed in advance, were violated): do "
                        "not trust this run's privacy claim")
    elif oracle > claimed:
        warnings.append(f"the oracle one-run bound {oracle:.3f} (k chosen on the scores, not a valid bound at the "
                        f"stated confidence) exceeds the accountant's epsilon = {claimed:.3f}: suspicious; re-run "
                        "with that k fixed in the config and a new seed")
    return (f"accountant epsilon = {claimed:.3f} (upper bound) vs one-run lower bound {bound:.3f} "
            f"({'VIOLATED' if bound > claimed else 'consistent'})"), warnings


def run_dp_canary_audit(config: DPCanaryConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Insert canaries, train the target once with the defense, score the canaries, bound epsilon."""
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    ds = config.dataset
    dataset = load_dataset(ds.source, data_dir=ds.data_dir, seed=config.seed, **ds.options)
    cc = config.canaries
    k_pos, k_neg = cc.guesses
    n_classes = n_classes_of(dataset)
    draw = draw_canaries(dataset.y, n_classes, n_train=config.n_train, n_canaries=cc.n,
                         n_test=config.n_test, kind=cc.kind, seed=config.seed)
    canaries = _canary_set(dataset, draw)
    canary_ids = ids_of(canaries)
    fixed = dataset.subset(draw.train)
    train_set = _training_set(fixed, canaries, draw.included)
    experiment = ClassifierExperiment(attacks, seed=config.seed, training=config.training,
                                      given=GivenData(train_set, canaries, draw.included), outputs_only=OUTPUTS_ONLY,
                                      progress=progress)
    log.info("dataset %s: %d fixed training examples, %d %s canaries (%d inserted), %d test examples",
             dataset.name, len(fixed), cc.n, cc.kind, int(draw.included.sum()), draw.test.size)

    recipe = dataclasses.replace(config.training, seed=derive_seed(config.seed, "target"))
    context = DefenseContext(recipe, dataset.input_shape, n_classes, experiment.train_sizes)
    chain = build_chain([(config.defense.name, dict(config.defense.params))], context, label=config.defense.name)
    delta = audit_delta(config, private_optimiser(chain.training))
    models = experiment.run(plugins=chain.plugins, initial_outputs=config.calibrate == "initial",
                            label=f"defense {config.defense.name}")
    target, record = models.target.model, models.target.training
    assert target is not None and record is not None  # the experiment trained the target
    final, initial = models.target.outputs, models.target.initial

    scored = _score(attacks, final, initial, draw, canary_ids)
    chosen = next(s for s in scored if s.key == config.bound_attack)
    tie_seed = derive_seed(config.seed, "one-run-ties")
    bound = one_run_epsilon(chosen.scores, draw.included, k_pos=k_pos, k_neg=k_neg, delta=delta,
                            confidence=config.confidence, seed=tie_seed)
    ks = tuple(k for k in config.sweep_ks if 2 * k <= cc.n)
    oracle = one_run_epsilon_sweep(chosen.scores, draw.included, ks=ks, delta=delta, confidence=config.confidence,
                                   seed=tie_seed)
    dp = _accountant(record["reports"], config.defense, delta, chain.notes)
    verdict, run_warnings = _verdict(bound.epsilon, oracle["oracle_best"]["epsilon"], dp)
    log.info("one-run bound epsilon >= %.3f (%d of %d guesses correct; oracle best %.3f); %s", bound.epsilon,
             bound.correct, bound.guesses, oracle["oracle_best"]["epsilon"], verdict)
    for w in run_warnings:
        log.warning(w)

    save_npz_atomic(folder / CANARIES_FILE, {
        "ids": canary_ids, "index": draw.canaries, "true_label": dataset.y[draw.canaries],
        "canary_label": draw.canary_labels, "included": draw.included, **{f"score_{s.key}": s.scores for s in scored}})
    test = dataset.subset(draw.test) if draw.test.size else None
    inc = draw.included
    train_accuracy = float(target.outputs(fixed).correctness.mean())
    test_accuracy = float(target.outputs(test).correctness.mean()) if test is not None else None
    majority = majority_rate(fixed.y, test.y) if test is not None else None
    if test_accuracy is not None and majority is not None and test_accuracy <= majority:
        run_warnings.append(no_better_than_majority(test_accuracy, majority))
        log.warning(run_warnings[-1])
    target_info = {
        **models.target.info,
        "description": (f"{recipe.model} trained by miaudit with defense {config.defense.name} on {len(fixed)} "
                        f"{dataset.name} examples + {int(inc.sum())} of {cc.n} {cc.kind} canaries ({recipe.epochs} "
                        f"epochs, {recipe.optimizer}, lr {recipe.lr:g}, batch {recipe.batch_size})"),
        "defense": config.defense.name,
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "majority_rate": majority,
        "canary_accuracy_inserted": float(final.correctness[inc].mean()) if inc.any() else None,
        "canary_accuracy_left_out": float(final.correctness[~inc].mean()) if (~inc).any() else None,
    }
    one_run = {**bound.to_dict(), "attack": chosen.key, "score": chosen.extra["canary_score"],
               "tie_break_seed": tie_seed, "canary_kind": cc.kind, "accountant_epsilon": dp["epsilon"],
               "verdict": verdict, "citation": STEINKE_2023, "oracle": oracle}
    data_info = {"dataset": dataset.name, "n_examples": len(dataset), "n_classes": dataset.n_classes,
                 "n_train": len(fixed), "n_canaries": cc.n, "n_test": int(draw.test.size),
                 "n_members": int(inc.sum()), "n_nonmembers": int((~inc).sum())}
    canary_info = {"n": cc.n, "kind": cc.kind, "k_pos": k_pos, "k_neg": k_neg, "n_inserted": int(inc.sum()),
                   "inclusion": "each canary independently with probability 1/2", "calibrate": config.calibrate,
                   "file": CANARIES_FILE}
    return AuditOutcome(target=target_info, data=data_info, attacks=scored,
                        sections={"dp": dp, "one_run_audit": one_run, "canaries": canary_info},
                        warnings=run_warnings)


register_kind("dp_canary", DPCanaryConfig, run_dp_canary_audit, parse=parse, resolve=resolve)

__all__ = ["CanaryConfig", "CanaryDraw", "DPCanaryConfig", "DefenseConfig", "accountant_delta", "audit_delta",
           "draw_canaries", "parse", "resolve", "run_dp_canary_audit"]
