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
from miaudit.classifier.config import AuditConfig
from miaudit.classifier.experiment import SUPPORTED_REFERENCE, ClassifierExperiment, ExperimentModels
from miaudit.classifier.targets import PrecomputedTarget
from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.errors import ConfigError
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, register_kind
from miaudit.utils.logs import progress as progress_bar

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
                   progress: bool) -> list[ScoredAttack]:
    """Fit and score every attack; those that query the model (label-only, white-box) go through
    :mod:`miaudit.classifier.queried`.

    Attacks that accept query views (LiRA) score the target's outputs on every view of ``views``,
    the same augmentations the reference pool was scored on.
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
        scores = attack.fit(reference).score(signals)
        scored.append(ScoredAttack(key, attack, target.ids, target.membership, scores, time.perf_counter() - start,
                                   extra={"learned": attack.learned_state()}, groups=target.groups))
    return scored


def run_classifier_audit(config: AuditConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Build target outputs, shadow models, reference pool and population outputs; fit and score every attack."""
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    experiment = ClassifierExperiment.from_config(config, attacks, progress=progress)
    models = experiment.run()
    target = models.target
    outputs, membership = target.outputs, target.membership
    PrecomputedTarget.save_npz(folder / "target_outputs.npz", outputs, membership, ids=target.ids,
                               groups=target.groups)
    scored = _score_attacks(attacks, models, views=config.reference.views, progress=progress)
    if experiment.preprocessor is not None:
        experiment.preprocessor.save(folder)
    dataset = experiment.dataset
    data_info: dict[str, Any] = {"dataset": dataset.name if dataset is not None else None,
                 "n_examples": len(dataset) if dataset is not None else None,
                 "n_classes": outputs.n_classes if outputs.access != "label-only" else None,
                 "n_members": int(membership.sum()), "n_nonmembers": int((~membership).sum()),
                 "n_shadow": int(target.shadow_pool.size),
                 "n_population": len(target.population) if target.population is not None else 0}
    if experiment.preprocessor is not None:
        p = experiment.preprocessor
        data_info["preprocessing"] = {"numeric": len(p.numeric), "categorical": len(p.categorical),
                                      "n_features": len(p.feature_names), "fitted_on_rows": p.fitted_rows,
                                      "scale": p.scale, "files": ["preprocessing.json", "preprocessing.joblib"]}
    return AuditOutcome(target=target.info, data=data_info, attacks=scored, sections=models.sections,
                        warnings=experiment.warnings + models.warnings)


register_kind("classifier", AuditConfig, run_classifier_audit, parse=parse, resolve=resolve)

__all__ = ["SUPPORTED_REFERENCE", "parse", "resolve", "run_classifier_audit"]
