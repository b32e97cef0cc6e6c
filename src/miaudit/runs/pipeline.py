"""``run_audit``: config -> attacks' scores -> evaluation with CIs -> a complete run directory.

Audits of different kinds of target (``kind: classifier``, ``kind: llm``, ...) differ in how they
obtain scores and share everything after: evaluation, ``metrics.json``, figures and report. A kind
is a row of a small table::

    register_kind("llm", LLMAuditConfig, run_llm_audit)

where ``run_llm_audit(config, folder, *, progress) -> AuditOutcome`` fills an :class:`AuditOutcome`
(it may also write extra files into ``folder``, the run directory being built). The config class
must have ``kind``, ``seed``, ``attacks`` (list of :class:`~miaudit.classifier.config.AttackSpec`) and
``evaluation`` (:class:`~miaudit.classifier.config.EvaluationConfig`) fields. Modules of the
``miaudit.runs`` package are imported on first use, so a kind may register itself from a module
there; code elsewhere registers by calling :func:`register_kind` before :func:`run_audit`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miaudit import __version__
from miaudit.attacks.base import Attack
from miaudit.attacks.registry import create_attack, get_attack_class
from miaudit.config import from_dict, load_yaml, to_dict
from miaudit.errors import ConfigError
from miaudit.evaluation import AttackResult, evaluate
from miaudit.evaluation.epsilon import DEFAULT_DELTA, empirical_epsilon
from miaudit.evaluation.run_result import RunResult, accountant_claim
from miaudit.evaluation.verdict import risk_verdict
from miaudit.report.rundir import write_run_dir
from miaudit.runs.config import AttackSpec
from miaudit.utils.atomic import atomic_output_dir
from miaudit.utils.logs import run_log
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)


@dataclass
class ScoredAttack:
    """One fitted attack's scores on the audited examples.

    ``ids`` ``(n,)`` example identifiers, ``membership`` ``(n,)`` bool ground truth, ``scores``
    ``(n,)`` higher = member; ``key`` is the attack's unique label in the run; ``extra`` is added
    to the attack's ``metrics.json`` entry (e.g. ``{"cost": ...}``); ``groups`` ``(n,)`` are group
    ids of examples that are not independent (evaluation then resamples whole groups), or None;
    ``threshold_from_attack``: False when the scores have no single learned decision threshold (scores
    pooled over targets that each gave the attack its own), so decision metrics use the ``oracle`` one;
    ``threshold``: a decision threshold learned outside the attack (an LLM audit's calibration documents),
    used instead of the attack's own; ``threshold_source``: where the threshold was learned (``"reference"``
    models or data, ``"calibration"`` documents);
    ``targets`` ``(n,)``: which target each score comes from, when scores of several targets are pooled
    (a record's scores on several targets are not independent, one target's records are: the empirical
    epsilon bound is then the largest per-target bound, Bonferroni-corrected over the targets).
    """

    key: str
    attack: Attack
    ids: np.ndarray
    membership: np.ndarray
    scores: np.ndarray
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None
    threshold_from_attack: bool = True
    threshold: float | None = None
    threshold_source: str = "reference"
    targets: np.ndarray | None = None


@dataclass
class AuditOutcome:
    """What a kind's runner hands back: sections of ``metrics.json`` and the scored attacks.

    ``target`` and ``data`` become the top-level ``"target"`` / ``"data"`` objects; ``sections``
    are further top-level objects (e.g. ``"shadow"``); ``warnings`` are run-level warnings.
    """

    target: dict[str, Any]
    data: dict[str, Any]
    attacks: list[ScoredAttack]
    sections: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


Runner = Callable[..., AuditOutcome]


@dataclass(frozen=True)
class AuditKind:
    config_cls: type
    runner: Runner
    parse: Callable[[dict[str, Any]], Any] | None = None  # default: strict from_dict(config_cls, data)
    resolve: Callable[[Any], dict[str, Any]] = to_dict  # the config as written to config.yaml
    estimate: Callable[[Any], dict[str, Any]] | None = None  # dry run: what the audit would do, nothing run


_KINDS: dict[str, AuditKind] = {}


def register_kind(kind: str, config_cls: type, runner: Runner, *, parse: Callable[[dict[str, Any]], Any] | None = None,
                  resolve: Callable[[Any], dict[str, Any]] = to_dict,
                  estimate: Callable[[Any], dict[str, Any]] | None = None) -> None:
    """Add an audit kind: configs with ``kind: <kind>`` parse into ``config_cls`` and run with ``runner``;
    ``estimate(config)`` (optional) answers ``miaudit audit --dry-run`` without running anything."""
    existing = _KINDS.get(kind)
    if existing is not None and existing.runner is not runner:
        raise TypeError(f"audit kind {kind!r} is registered twice")
    _KINDS[kind] = AuditKind(config_cls, runner, parse, resolve, estimate)


def dry_run(config: Any) -> dict[str, Any]:
    """What the audit ``config`` would do (documents, requests, tokens), from its kind's ``estimate``."""
    entry = _kind_of(config)
    if entry.estimate is None:
        raise ConfigError(f"--dry-run is not available for kind {config.kind!r} audits (they send no requests)")
    return entry.estimate(config)


def _discover() -> None:
    from miaudit.kinds import load_kinds

    load_kinds()


def audit_kinds() -> list[str]:
    _discover()
    return sorted(_KINDS)


def _kind_of(config: Any) -> AuditKind:
    _discover()
    kind = getattr(config, "kind", None)
    if kind not in _KINDS:
        raise ConfigError(f"config.kind: {kind!r} is not an audit kind; choose one of {', '.join(sorted(_KINDS))}")
    return _KINDS[kind]


def parse_config(source: Mapping[str, Any] | str | Path, *, data_dir: str | None = None) -> Any:
    """Strictly parse a config mapping (or YAML file) into the dataclass of its ``kind`` (default "classifier").

    ``data_dir`` (the CLI's ``--data-dir``) overrides ``dataset.data_dir``.
    """
    _discover()
    data = dict(load_yaml(source) if isinstance(source, (str, Path)) else source)
    kind = data.get("kind", "classifier")
    if kind not in _KINDS:
        raise ConfigError(f"config.kind: {kind!r} is not an audit kind; choose one of {', '.join(sorted(_KINDS))}")
    if data_dir is not None:
        if not isinstance(data.get("dataset"), dict):
            raise ConfigError("--data-dir was given but the config has no 'dataset' mapping to apply it to")
        data["dataset"] = {**data["dataset"], "data_dir": str(data_dir)}
    entry = _KINDS[kind]
    return entry.parse(data) if entry.parse else from_dict(entry.config_cls, data)


def resolved_config(config: Any) -> dict[str, Any]:
    """The parsed ``config`` as plain data, as written to ``config.yaml`` (re-running it reproduces the run)."""
    return _kind_of(config).resolve(config)


def build_attacks(specs: list[AttackSpec], *, kind: str, seed: int) -> list[tuple[str, Attack]]:
    """Instantiate every attack before any heavy work, so a bad name or parameter (type or value, see
    :meth:`~miaudit.attacks.base.Attack.check_param`) fails at once, naming the attack's place in the config.

    An attack with a ``seed`` parameter the config leaves unset gets one derived from the run's seed.
    """
    attacks = []
    for i, spec in enumerate(specs):
        cls = get_attack_class(spec.name)
        if cls.target_kind != kind:
            raise ConfigError(f"config.attacks[{i}]: attack {spec.name!r} is for {cls.target_kind} targets, not "
                              f"{kind}; run 'miaudit list attacks --kind {kind}'")
        params = dict(spec.params)
        if "seed" in cls.param_names() and "seed" not in params:
            params["seed"] = derive_seed(seed, "attack", spec.key)
        try:
            attacks.append((spec.key, create_attack(spec.name, **params)))
        except ConfigError as exc:
            raise ConfigError(f"config.attacks[{i}]: {exc}") from None
    return attacks


def _attack_entry(scored: ScoredAttack, config: Any, *, delta: float) -> dict[str, Any]:
    """The ``metrics.json`` entry of one scored attack: what it is, its metrics with CIs, and its
    empirical epsilon lower bound at ``delta`` (same confidence level as the CIs)."""
    ev = config.evaluation
    cls = type(scored.attack)
    threshold = scored.threshold
    if threshold is None and scored.threshold_from_attack:
        threshold = scored.attack.decision_threshold
    metrics = evaluate(scored.membership, scored.scores, threshold=threshold, threshold_source=scored.threshold_source,
                       fprs=tuple(ev.fprs), n_bootstrap=ev.n_bootstrap, confidence=ev.confidence,
                       seed=derive_seed(config.seed, "bootstrap"), groups=scored.groups)
    return {"name": scored.key, "attack": cls.name, "params": scored.attack.get_params(),
            "target_kind": cls.target_kind, "access": cls.access, "needs_reference": cls.needs_reference,
            "citation": cls.citation, "seconds": round(scored.seconds, 3), **scored.extra, **metrics,
            "empirical_epsilon": _epsilon_bound(scored, delta=delta, confidence=ev.confidence)}


def _epsilon_bound(scored: ScoredAttack, *, delta: float, confidence: float) -> dict[str, Any]:
    """The empirical epsilon lower bound of one attack; of pooled targets, the largest per-target bound,
    each at confidence ``1 - (1 - confidence) / K`` so that the largest holds at ``confidence``."""
    if scored.targets is None:
        return empirical_epsilon(scored.membership, scored.scores, delta=delta, confidence=confidence).to_dict()
    membership, scores, targets = np.asarray(scored.membership), np.asarray(scored.scores), np.asarray(scored.targets)
    blocks = np.unique(targets)
    level = 1.0 - (1.0 - confidence) / blocks.size
    bounds = [empirical_epsilon(membership[targets == k], scores[targets == k], delta=delta, confidence=level)
              for k in blocks]
    best = max(range(blocks.size), key=lambda i: bounds[i].epsilon)
    out = bounds[best].to_dict()
    out.update(confidence=confidence, target=int(blocks[best]), n_targets=int(blocks.size),
               method=f"{out['method']}; the largest of {blocks.size} per-target bounds, each at confidence "
                      f"{level:.4g} (Bonferroni over the targets)")
    return out


def bound_delta(outcome: AuditOutcome, requested: float | None) -> float:
    """Delta of the empirical epsilon bounds: ``requested``, else the DP accountant's delta of the run
    (a ``dp`` section or the target's ``delta``), else :data:`~miaudit.evaluation.epsilon.DEFAULT_DELTA`."""
    if requested is not None:
        return float(requested)
    claim = accountant_claim({"target": outcome.target, **outcome.sections})
    return float(claim["delta"]) if claim.get("delta") is not None else DEFAULT_DELTA


def run_audit(config: Any, out_dir: str | Path, *, overwrite: bool = False, progress: bool = True,
              epsilon_delta: float | None = None) -> RunResult:
    """Run the audit ``config`` describes and write its complete run directory at ``out_dir``.

    ``config`` is a parsed config (see :func:`parse_config`), a mapping or a YAML path. The folder
    (``metrics.json`` with every attack's metrics, CIs and empirical epsilon, ``config.yaml``,
    per-example scores, figures, ``report.md``, ``report.html``, ``log.txt``) is built in a temporary
    sibling and appears only when everything succeeded. ``epsilon_delta`` is the delta of the
    empirical epsilon bounds (default: the DP accountant's delta of the run, else 1e-5). Returns the
    run's :class:`~miaudit.evaluation.run_result.RunResult` (it reads as the ``metrics.json`` mapping).
    """
    if isinstance(config, (Mapping, str, Path)):
        config = parse_config(config)
    entry = _kind_of(config)
    resolved = entry.resolve(config)
    start = time.perf_counter()
    with atomic_output_dir(out_dir, overwrite=overwrite) as folder, run_log(folder, quiet=not progress):
        log.info("miaudit %s: %s audit, seed %d -> %s", __version__, config.kind, config.seed, out_dir)
        outcome = entry.runner(config, folder, progress=progress)
        log.info("evaluating %d attacks (%d bootstrap resamples each)", len(outcome.attacks),
                 config.evaluation.n_bootstrap)
        delta = bound_delta(outcome, epsilon_delta)
        entries, results = [], []
        for scored in outcome.attacks:
            attack_metrics = _attack_entry(scored, config, delta=delta)
            log.info("%s: AUC %.4f [%.4f, %.4f]", scored.key, attack_metrics["auc"], *attack_metrics["auc_ci"])
            entries.append(attack_metrics)
            results.append(AttackResult(name=scored.key, ids=np.asarray(scored.ids),
                                        labels=np.asarray(scored.membership).astype(np.int64),
                                        scores=scored.scores, params=attack_metrics["params"],
                                        metrics=attack_metrics, groups=scored.groups))
        ev = config.evaluation
        evaluation = {"n_bootstrap": ev.n_bootstrap, "confidence": ev.confidence, "fprs": list(ev.fprs)}
        run_warnings = list(outcome.warnings)
        if (rough := ev.interval_warning()) is not None:
            run_warnings.append(rough)
        grouping = next((e["grouping"] for e in entries if e.get("grouping")), None)
        by_example = all(s.targets is not None and s.groups is not None and np.array_equal(s.groups, s.ids)
                         for s in outcome.attacks)  # pooled targets: a group is one example's scores
        if grouping is not None:
            evaluation["grouping"] = grouping
        if grouping is not None and not by_example:
            run_warnings.append(f"the audited records form {grouping['n_groups']} groups: every interval resamples "
                                "whole groups (cluster bootstrap), but the empirical epsilon bounds treat records as "
                                "independent (a record-level DP statement); read them with care")
        metrics = {
            "kind": config.kind, "miaudit_version": __version__, "seed": config.seed,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": resolved, "target": outcome.target, "data": outcome.data, **outcome.sections,
            "evaluation": evaluation, "attacks": entries, "warnings": run_warnings,
            "seconds": round(time.perf_counter() - start, 2),
        }
        metrics["verdict"] = risk_verdict(metrics, ev.risk)
        written = write_run_dir(folder, metrics, results, resolved)
        log.info("wrote %s in %.1f s", out_dir, metrics["seconds"])
    return RunResult(written, path=Path(out_dir))


__all__ = ["AuditKind", "AuditOutcome", "ScoredAttack", "audit_kinds", "bound_delta", "build_attacks",
           "parse_config", "register_kind", "resolved_config", "run_audit"]
