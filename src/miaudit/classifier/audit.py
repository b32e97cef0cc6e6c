"""The classifier audit (``kind: classifier``): data -> target -> shadow / reference / population -> attacks.

What attacks need (the target's outputs on the audited examples, membership and ids, shadow
models, the reference pool, population outputs, the models for query-based attacks) comes from
:class:`~miaudit.classifier.experiment.ClassifierExperiment`, shared with ``miaudit defend`` and
the DP canary audit; every random choice is derived from the config's ``seed`` there. This module
parses the config, fits and scores the attacks, and hands the scores to the shared pipeline.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from miaudit.attacks.base import Attack
from miaudit.classifier.blind_baseline import record_baseline
from miaudit.classifier.config import AuditConfig
from miaudit.classifier.experiment import SUPPORTED_REFERENCE, ClassifierExperiment, ExperimentModels
from miaudit.classifier.target_pool import pool_scores
from miaudit.classifier.targets import PrecomputedTarget
from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.errors import ConfigError
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, register_kind
from miaudit.utils.logs import progress as progress_bar
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)


def parse(data: dict[str, Any]) -> AuditConfig:
    """Strict parse; ``training.seed`` is refused because the top-level ``seed`` drives every random choice."""
    refuse_nested_seed(data, "training")
    training = data.get("training")
    config = from_dict(AuditConfig, data)
    rebuilt = config.target.source == "sklearn"  # shadow and reference models are clones of the estimator
    if config.target.user_model and (config.shadow.n_models or config.reference.n_models) and training is None \
            and not rebuilt:
        raise ConfigError("config.training: shadow and reference models are trained by the tool; give the recipe "
                          "closest to how your model was trained (epochs, lr, ...; model and hidden too for a black "
                          "box), or your training function (training.function)")
    return config


def resolve(config: AuditConfig) -> dict[str, Any]:
    """The config as written to ``config.yaml`` (re-running it reproduces the run)."""
    return resolved_without_seed(config, "training")


def _score_attacks(attacks: list[tuple[str, Attack]], models: ExperimentModels, *, views: str,
                   progress: bool, fitted: frozenset[str] = frozenset()) -> list[ScoredAttack]:
    """Fit and score every attack; those that query the model (label-only, white-box) go through
    :mod:`miaudit.classifier.queried`.

    Attacks that accept query views (LiRA) score the target's outputs on every view of ``views``,
    the same augmentations the reference pool was scored on. Attacks named in ``fitted`` are already
    fitted on the same reference data and only score.
    """
    target, reference = models.target, models.reference
    queried = models.queried(attacks)
    with_views = [k for k, a in attacks if getattr(a, "accepts_query_views", False)]
    view_outputs = None
    if views != "none" and with_views:
        log.info("querying the target on the %s views for %s", views, ", ".join(with_views))
        view_outputs = models.view_outputs(views)
    scored = []
    for key, attack in progress_bar(attacks, desc="attacks", enabled=progress, unit="attack"):
        if key in queried:
            r = queried[key]
            scored.append(ScoredAttack(key, attack, target.ids, target.membership, r.scores, r.seconds,
                                       extra={"cost": r.cost, "learned": attack.learned_state()},
                                       groups=target.groups))
            continue
        start = time.perf_counter()
        signals = view_outputs if view_outputs is not None and key in with_views else target.outputs
        scores = (attack if key in fitted else attack.fit(reference)).score(signals)
        scored.append(ScoredAttack(key, attack, target.ids, target.membership, scores, time.perf_counter() - start,
                                   extra={"learned": attack.learned_state()}, groups=target.groups))
    return scored


def _score_pooled(attacks: list[tuple[str, Attack]], runs: list[ExperimentModels], *, views: str,
                  progress: bool) -> list[ScoredAttack]:
    """Fit and score every attack on each target in turn (its own reference data); pool the scores.

    Attacks that learn only from shadow models (or nothing) are fitted once: every target shares them.
    """
    shared = frozenset(k for k, a in attacks if _fit_shared(a))
    per_target, thresholds = [], []
    for k, models in enumerate(progress_bar(runs, desc="targets", enabled=progress, unit="target")):
        log.info("attacking target %d of %d", k + 1, len(runs))
        scored = _score_attacks(attacks, models, views=views, progress=False, fitted=shared if k else frozenset())
        per_target.append(scored)
        thresholds.append([s.attack.decision_threshold for s in scored])
    return pool_scores(per_target, thresholds)


def _fit_shared(attack: Attack) -> bool:
    """True when ``attack`` learns nothing about the target: from shadow models or from nothing at all."""
    needs = {attack.needs_reference, *attack.fit_input}
    return needs <= {"none", "shadow"}


def _pooled_target_info(runs: list[ExperimentModels]) -> dict[str, Any]:
    """``metrics.json`` ``"target"`` of a pooled audit: what every target is, accuracies averaged over them."""
    first, section = runs[0].target.info, runs[0].sections["targets"]
    n = len(runs)
    description = first["description"].rsplit("; target 0", 1)[0]
    return {"source": "trained", "model": first["model"], "access": first["access"],
            "description": f"{description}; {n} such targets, each in turn the target, scores pooled",
            "n_targets": n, "train_accuracy": section["train_accuracy_mean"],
            "test_accuracy": section["test_accuracy_mean"], "fingerprint": first["fingerprint"]}


def run_classifier_audit(config: AuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Build target outputs, shadow models, reference pool and population outputs; fit and score every attack.

    With ``evaluation.n_targets`` ``K >= 2`` each of ``K`` targets is attacked in turn and every
    attack's scores are pooled (:mod:`miaudit.classifier.target_pool`); ``target_outputs.npz`` then
    holds target 0's outputs.
    """
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    experiment = ClassifierExperiment.from_config(config, attacks, progress=progress)
    n_targets = config.evaluation.n_targets
    runs = experiment.run_targets(n_targets)
    models = runs[0]
    target = models.target
    outputs, membership = target.outputs, target.membership
    PrecomputedTarget.save_npz(folder / "target_outputs.npz", outputs, membership, ids=target.ids,
                               groups=target.groups)
    views = config.reference.views
    if n_targets == 1:
        scored, target_info = _score_attacks(attacks, models, views=views, progress=progress), target.info
    else:
        scored, target_info = _score_pooled(attacks, runs, views=views, progress=progress), _pooled_target_info(runs)
    if experiment.preprocessor is not None:
        experiment.preprocessor.save(folder)
    dataset = experiment.dataset
    data_info: dict[str, Any] = {"dataset": dataset.name if dataset is not None else None,
                                 "n_examples": len(dataset) if dataset is not None else None,
                 "n_classes": outputs.n_classes if outputs.access != "label-only" else None,
                 "n_members": int(membership.sum()), "n_nonmembers": int((~membership).sum()),
                 "n_shadow": int(target.shadow_pool.size),
                 "n_population": len(target.population) if target.population is not None else 0}
    if config.target.audited_files is not None:  # the dataset, if any, fed only shadow models and the population
        data_info["audited_from"] = config.target.audited_files
    if n_targets > 1:
        data_info.update(n_targets=n_targets, pooled_members=n_targets * int(membership.sum()),
                         pooled_nonmembers=n_targets * int((~membership).sum()))
    if experiment.preprocessor is not None:
        p = experiment.preprocessor
        data_info["preprocessing"] = {"numeric": len(p.numeric), "categorical": len(p.categorical),
                                      "n_features": len(p.feature_names), "fitted_on_rows": p.fitted_rows,
                                      "scale": p.scale, "files": ["preprocessing.json", "preprocessing.joblib"]}
    warnings, sections = experiment.warnings + models.warnings, dict(models.sections)
    audited = target.audited if config.target.hf_classifier is None else None  # token ids: no features
    if config.blind_baseline.enabled and experiment.loaded is not None and audited is not None:
        ev = config.evaluation
        section = record_baseline(config.blind_baseline, audited, scored, folder=folder,
                                  seed=derive_seed(config.seed, "baseline"), n_bootstrap=ev.n_bootstrap,
                                  confidence=ev.confidence, warnings=warnings)
        if section is not None:
            sections["blind_baseline"] = section
    return AuditOutcome(target=target_info, data=data_info, attacks=scored, sections=sections, warnings=warnings)


register_kind("classifier", AuditConfig, run_classifier_audit, parse=parse, resolve=resolve)

__all__ = ["SUPPORTED_REFERENCE", "parse", "resolve", "run_classifier_audit"]
