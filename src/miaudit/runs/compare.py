"""Compare two stored runs attack by attack: metric differences and whether each is significant.

Two methods, chosen per attack:

* ``paired-bootstrap`` (preferred): both run directories still hold the attack's per-example scores
  (``scores/<attack>.scores.npz``) on the same examples (same ids, same membership labels). The
  examples are resampled jointly, members and non-members separately, and the metric of both runs
  is recomputed on each resample; the difference ``b - a`` is significant when its percentile
  confidence interval excludes 0. Pairing removes the variance due to which examples were drawn,
  so it detects smaller differences than comparing two separate intervals.
* ``ci-overlap`` (fallback): only the stored bootstrap intervals are available (scores deleted, or
  the runs audited different examples); a difference is called significant when the two runs'
  intervals do not overlap. This is conservative (it misses some real differences).

The empirical epsilon bound is compared without a significance call (it is itself a bound).

Two defense comparisons (``miaudit defend``) are compared per (defense, attack) pair, keyed
``"<defense>/<attack>"`` with the scores in ``scores/<defense>/``; a defense comparison and an audit
cannot be compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from miaudit.errors import MiauditError
from miaudit.evaluation.bootstrap import stratified_bootstrap
from miaudit.evaluation.report import _curve_stats
from miaudit.evaluation.result import AttackResult
from miaudit.evaluation.run_result import RunResult


def is_defense_comparison(metrics: dict[str, Any] | None) -> bool:
    """True for the stored ``defenses.json`` of a ``miaudit defend`` run (rows of attacks per defense)."""
    return metrics is not None and metrics.get("kind") == "defenses" and isinstance(metrics.get("defenses"), list)


def _attacks(row: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Path | None, str]]:
    """Comparable attack entries by key: ``(entry, folder of its saved scores, its name there)``."""
    metrics = row.get("metrics") or {}
    scores = Path(row["run_dir"]) / "scores" if row.get("run_dir") else None
    if is_defense_comparison(metrics):
        return {f"{d['label']}/{a['name']}": (a, scores / d["label"] if scores else None, a["name"])
                for d in metrics["defenses"] for a in d.get("attacks", []) if "auc" in a}
    out = {a["name"]: (a, scores, a["name"]) for a in metrics.get("attacks", []) if "name" in a}
    baseline = RunResult(metrics).baseline  # the LLM blind baseline, compared like an attack
    if baseline is not None and baseline.name not in out:
        out[baseline.name] = (baseline.fields, scores, baseline.name)
    return out


def _scores(folder: Path | None, name: str) -> AttackResult | None:
    if folder is None or not (folder / f"{name}.scores.npz").is_file():
        return None
    try:
        return AttackResult.load(folder, name)
    except (MiauditError, OSError, ValueError, KeyError):
        return None


def _align(a: AttackResult, b: AttackResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(labels, scores_a, scores_b, groups) on the same examples in the same order, or None if not the same set;
    ``groups`` are run a's group ids (None when its examples are not grouped)."""
    ids_a, ids_b = np.asarray(a.ids).astype(str), np.asarray(b.ids).astype(str)
    if ids_a.size != ids_b.size or np.unique(ids_a).size != ids_a.size:
        return None
    order_a, order_b = np.argsort(ids_a), np.argsort(ids_b)
    if not np.array_equal(ids_a[order_a], ids_b[order_b]):
        return None
    labels_a, labels_b = np.asarray(a.labels).astype(bool)[order_a], np.asarray(b.labels).astype(bool)[order_b]
    if not np.array_equal(labels_a, labels_b):
        return None
    groups = None if a.groups is None else np.asarray(a.groups)[order_a]
    return labels_a, np.asarray(a.scores, float)[order_a], np.asarray(b.scores, float)[order_b], groups


def _metric_keys(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, float | None]]:
    """(metric name, fpr) pairs present in both entries, in display order."""
    keys: list[tuple[str, float | None]] = [(m, None) for m in ("auc", "advantage") if m in a and m in b]
    common = sorted(set(a.get("tpr_at_fpr", {})) & set(b.get("tpr_at_fpr", {})), key=float)
    keys += [(f"tpr@{k}", float(k)) for k in common]
    return keys


def _stored(entry: dict[str, Any], metric: str) -> tuple[float, list[float] | None]:
    if metric.startswith("tpr@"):
        key = metric[4:]
        return float(entry["tpr_at_fpr"][key]), entry.get("tpr_at_fpr_ci", {}).get(key)
    return float(entry[metric]), entry.get(f"{metric}_ci")


def compare_runs(run_a: dict[str, Any], run_b: dict[str, Any], *, n_bootstrap: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Rows ``{attack, metric, a, b, diff (= b - a), diff_ci, significant, method}`` for shared attacks.

    For two defense comparisons ``attack`` is ``"<defense>/<attack>"``.
    """
    kinds = [r.get("command") == "defend" or is_defense_comparison(r.get("metrics")) for r in (run_a, run_b)]
    if kinds[0] != kinds[1]:
        defend, audit = (run_a, run_b) if kinds[0] else (run_b, run_a)
        raise MiauditError(f"run {defend['id']} is a defense comparison (miaudit defend) and run {audit['id']} is an "
                           "audit; compare two audits or two defense comparisons")
    attacks_a, attacks_b = _attacks(run_a), _attacks(run_b)
    shared = [name for name in attacks_a if name in attacks_b]
    rows: list[dict[str, Any]] = []
    unpaired: list[str] = []  # attacks whose saved scores cover different examples in the two runs
    for name in shared:
        (ea, folder_a, file_a), (eb, folder_b, file_b) = attacks_a[name], attacks_b[name]
        keys = _metric_keys(ea, eb)
        paired = None
        ra, rb = _scores(folder_a, file_a), _scores(folder_b, file_b)
        if ra is not None and rb is not None and keys:
            paired = _align(ra, rb)
        if paired is not None:
            rows += _paired_rows(name, keys, *paired, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
        else:
            rows += _overlap_rows(name, keys, ea, eb)
            if ra is not None and rb is not None:
                unpaired.append(name)
        eps_a, eps_b = (e.get("empirical_epsilon") or {} for e in (ea, eb))
        if eps_a.get("epsilon") is not None and eps_b.get("epsilon") is not None:
            rows.append({"attack": name, "metric": "epsilon", "a": eps_a["epsilon"], "b": eps_b["epsilon"],
                         "diff": eps_b["epsilon"] - eps_a["epsilon"], "diff_ci": None, "significant": None,
                         "method": "lower bounds (no test)"})
    return {"run_a": run_a["id"], "run_b": run_b["id"], "confidence": confidence, "rows": rows,
            "only_in_a": [n for n in attacks_a if n not in attacks_b],
            "only_in_b": [n for n in attacks_b if n not in attacks_a],
            "notes": _notes(run_a.get("metrics") or {}, run_b.get("metrics") or {}, unpaired)
            + _setting_notes(run_a, run_b, [(name, attacks_a[name][0], attacks_b[name][0]) for name in shared])}


def _audited(metrics: dict[str, Any]) -> str | None:
    """What a run audited, in words ("a classifier audit of digits: 150 members, 150 non-members"), if recorded."""
    data = metrics.get("data") or {}
    source = data.get("audited_from") or data.get("dataset")
    if not source:
        return None
    kind = "a defense comparison" if is_defense_comparison(metrics) else f"a {metrics.get('kind', 'miaudit')} audit"
    counts = (f": {data['n_members']} members, {data['n_nonmembers']} non-members"
              if "n_members" in data and "n_nonmembers" in data else "")
    return f"{kind} of {source}{counts}"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"section.key": value}``."""
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())) or "defaults"


def _setting_notes(run_a: dict[str, Any], run_b: dict[str, Any],
                   shared: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Config keys and shared attacks' parameters that differ between the runs (besides what was meant to change)."""
    notes = []
    config_a, config_b = _flat(run_a.get("config") or {}), _flat(run_b.get("config") or {})
    changed = sorted(k for k in set(config_a) | set(config_b)
                     if k.split(".")[0] != "attacks" and config_a.get(k) != config_b.get(k))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        notes.append(f"the runs' configs differ in {shown}: each difference below may come from any of them")
    for name, entry_a, entry_b in shared:
        params_a, params_b = entry_a.get("params") or {}, entry_b.get("params") or {}
        if params_a != params_b:
            notes.append(f"{name} ran with other parameters (a: {_params(params_a)}; b: {_params(params_b)})")
    return notes


def _notes(metrics_a: dict[str, Any], metrics_b: dict[str, Any], unpaired: list[str]) -> list[str]:
    """What the reader must know before reading the differences as the effect of one change."""
    notes = []
    kinds = [(m.get("kind"), (m.get("data") or {}).get("dataset")) for m in (metrics_a, metrics_b)]
    if all(k[1] for k in kinds) and kinds[0] != kinds[1]:
        notes.append(f"the runs audit different data (a: {_audited(metrics_a)}; b: {_audited(metrics_b)}), so the "
                     "differences compare two experiments, not one model before and after a change")
    if unpaired:
        notes.append(f"{', '.join(unpaired)}: the two runs scored different examples, so differences are judged by "
                     "whether the two intervals overlap (conservative); the paired test needs the same examples "
                     "(same data, split and seed)")
    return notes


def _paired_rows(name: str, keys: list[tuple[str, float | None]], labels: np.ndarray, scores_a: np.ndarray,
                 scores_b: np.ndarray, groups: np.ndarray | None, *, n_bootstrap: int, confidence: float, seed: int
                 ) -> list[dict[str, Any]]:
    fprs = tuple(f for _, f in keys if f is not None)
    stats = _curve_stats(fprs)  # [auc, advantage, tpr@fprs...]
    tpr_metrics = [m for m, f in keys if f is not None]
    positions = {"auc": 0, "advantage": 1, **{m: 2 + i for i, m in enumerate(tpr_metrics)}}

    def diff(resample_labels: np.ndarray, index: np.ndarray) -> np.ndarray:
        idx = index.astype(np.int64)
        return stats(resample_labels, scores_b[idx]) - stats(resample_labels, scores_a[idx])

    point_a, point_b = stats(labels, scores_a), stats(labels, scores_b)
    low, high = stratified_bootstrap(labels, np.arange(labels.size, dtype=float), diff, n_resamples=n_bootstrap,
                                     confidence=confidence, seed=seed, groups=groups)
    rows = []
    for metric, _ in keys:
        i = positions[metric]
        ci = [float(low[i]), float(high[i])]
        rows.append({"attack": name, "metric": metric, "a": float(point_a[i]), "b": float(point_b[i]),
                     "diff": float(point_b[i] - point_a[i]), "diff_ci": ci,
                     "significant": bool(ci[0] > 0 or ci[1] < 0), "method": "paired-bootstrap"})
    return rows


def _overlap_rows(name: str, keys: list[tuple[str, float | None]], ea: dict[str, Any], eb: dict[str, Any]
                  ) -> list[dict[str, Any]]:
    rows = []
    for metric, _ in keys:
        (va, ci_a), (vb, ci_b) = _stored(ea, metric), _stored(eb, metric)
        significant = None if not (ci_a and ci_b) else bool(ci_a[1] < ci_b[0] or ci_b[1] < ci_a[0])
        rows.append({"attack": name, "metric": metric, "a": va, "b": vb, "diff": vb - va, "diff_ci": None,
                     "ci_a": ci_a, "ci_b": ci_b, "significant": significant,
                     "method": "ci-overlap" if significant is not None else "no CI stored"})
    return rows


__all__ = ["compare_runs", "is_defense_comparison"]
