"""The plain verdict of a run for a compliance reader: a risk level and the rule that produced it.

The level is read from confidence bounds, never from point estimates, of the attacks that may
headline a run (held-out entries: no oracle entry, no model-free baseline; the candidates of
:func:`miaudit.evaluation.run_result.strongest`):

- **high**: some attack identifies members at a low FPR ``f`` at least ``high_tpr_ratio`` times more
  often than it falsely accuses non-members, by the *lower* confidence bound of its TPR
  (``TPR_low >= high_tpr_ratio * f``), or the empirical epsilon lower bound is at least
  ``high_epsilon``;
- **medium**: the same with ``medium_tpr_ratio`` and ``medium_epsilon``;
- **low**: leakage is demonstrated but small: some attack's AUC interval lies above 0.5, or its TPR
  lower bound exceeds ``f``;
- **none demonstrated**: no attack beats chance with confidence (this does not prove privacy: a
  stronger attack may succeed);
- **inconclusive**: the blind baseline (on LLM documents, or on the member and non-member files of a
  classifier audit) shows that members and non-members differ in distribution, so attack scores are
  not evidence of membership.

Only FPRs with at least ``min_false_positives`` expected false positives among the non-members
count (``n_nonmembers * f``: the headline's own rule); the epsilon bound is valid at any sample size.
A TPR ratio of 10 at FPR f corresponds to a likelihood ratio of 10, i.e. epsilon = ln 10 = 2.3 for a
single test, which is why the default epsilon thresholds (2, 0.5) sit next to the ratios (10, 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from miaudit.errors import ConfigError
from miaudit.evaluation.run_result import AttackEntry, RunResult, strongest

LEVELS = ("high", "medium", "low", "none demonstrated", "inconclusive")


@dataclass
class RiskThresholds:
    """Thresholds of the risk levels (see the module docstring); ``evaluation.risk`` in a config."""

    high_tpr_ratio: float = 10.0
    medium_tpr_ratio: float = 2.0
    high_epsilon: float = 2.0
    medium_epsilon: float = 0.5
    min_false_positives: int = 10

    def __post_init__(self) -> None:
        if not 1.0 <= self.medium_tpr_ratio <= self.high_tpr_ratio:
            raise ConfigError(f"config.evaluation.risk: need 1 <= medium_tpr_ratio <= high_tpr_ratio, got "
                              f"{self.medium_tpr_ratio} and {self.high_tpr_ratio}")
        if not 0.0 < self.medium_epsilon <= self.high_epsilon:
            raise ConfigError(f"config.evaluation.risk: need 0 < medium_epsilon <= high_epsilon, got "
                              f"{self.medium_epsilon} and {self.high_epsilon}")
        if self.min_false_positives < 1:
            raise ConfigError(f"config.evaluation.risk.min_false_positives: must be >= 1, got "
                              f"{self.min_false_positives}")


def _tpr_lower(entry: AttackEntry, key: str) -> float | None:
    ci = entry.tpr_at_fpr_ci.get(key)
    return ci[0] if ci is not None else None


def _best_ratio(run: RunResult, keys: Sequence[str]) -> tuple[float, AttackEntry, str] | None:
    """The largest ``TPR_low / f`` over supported FPR keys, with its entry and key (the one strongest rule per key)."""
    best = None
    for key in keys:
        entry = strongest(run.attacks, f"tpr@{key}", value=partial(_tpr_lower, key=key))
        if entry is None:
            continue
        ratio = (_tpr_lower(entry, key) or 0.0) / float(key)
        if best is None or ratio > best[0]:
            best = (ratio, entry, key)
    return best


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if value >= 0.001 else f"{100 * value:.2g}%"


def _what_baseline_sees(fields: Mapping[str, Any]) -> str:
    """"text" or "records": what a blind baseline classified (its section's ``unit``)."""
    return "records" if fields.get("unit") == "records" else "text"


def risk_verdict(metrics: Mapping[str, Any], thresholds: RiskThresholds | None = None) -> dict[str, Any]:
    """``{"level", "summary", "reasons": [...], "rule", "thresholds"}`` of a run's ``metrics.json`` content."""
    t = thresholds or RiskThresholds()
    run = RunResult(dict(metrics))
    confidence = float((metrics.get("evaluation") or {}).get("confidence", 0.95))
    n_non = run.n_nonmembers or 0
    keys = [k for k in run.fpr_keys if n_non * float(k) >= t.min_false_positives]
    out: dict[str, Any] = {"thresholds": asdict(t), "rule": _rule(t, confidence), "supported_fprs": keys}
    baseline = run.baseline
    if baseline is not None and (baseline.fields.get("verdict") or {}).get("shift"):
        beating = [a for a in run.attacks if a.candidate and (a.fields.get("vs_blind_baseline") or {}).get("beats")]
        reasons: list[str] = [baseline.fields["verdict"]["text"]]
        reasons += [f"{a.name} beats the blind baseline (AUC difference "
                    f"{a.fields['vs_blind_baseline']['auc_difference']:+.3f}, interval above 0): a signal beyond the "
                    "shift, though not a clean measure of membership" for a in beating]
        out |= {"level": "inconclusive",
                "summary": "Inconclusive: members and non-members differ in distribution (the blind baseline tells "
                           f"them apart from the {_what_baseline_sees(baseline.fields)} alone), so attack scores are "
                           "not evidence of membership.",
                "reasons": reasons}
        return out
    if not any(a.candidate for a in run.attacks):
        return out | {"level": "none demonstrated", "summary": "No attack result to judge.", "reasons": []}
    reasons = []
    ratio = _best_ratio(run, keys)
    eps_entry = strongest(run.attacks, "epsilon")
    eps = eps_entry.empirical_epsilon if eps_entry is not None and eps_entry.empirical_epsilon else 0.0
    auc_entry = strongest(run.attacks, "auc", value=lambda e: e.auc_ci[0] if e.auc_ci else None)
    level = "none demonstrated"
    if ratio is not None and ratio[0] > 1.0:  # a lower bound at the FPR is what guessing achieves
        r, entry, key = ratio
        times = f"{r:.1f}" if r >= 2 else f"{r:.2f}"  # 1.02, not "1.0 times", close to what guessing achieves
        reasons.append(f"{entry.name} identifies at least {_pct(r * float(key))} of the members at a "
                       f"{_pct(float(key))} false positive rate ({confidence:.0%} lower bound; {times} times the FPR)")
    if eps > 0 and eps_entry is not None:
        delta = (eps_entry.fields.get("empirical_epsilon") or {}).get("delta", "δ")
        reasons.append(f"from {eps_entry.name}'s error rates, the training is not (ε, {delta:g})-differentially "
                       f"private for any ε below {eps:.2f} ({confidence:.0%} confidence)")
    r = ratio[0] if ratio is not None else 0.0
    if r >= t.high_tpr_ratio or eps >= t.high_epsilon:
        level = "high"
    elif r >= t.medium_tpr_ratio or eps >= t.medium_epsilon:
        level = "medium"
    elif r > 1.0 or (auc_entry is not None and auc_entry.auc_ci and auc_entry.auc_ci[0] > 0.5):
        level = "low"
        if auc_entry is not None and auc_entry.auc_ci and auc_entry.auc_ci[0] > 0.5:
            reasons.append(f"{auc_entry.name} separates members from non-members better than chance (AUC "
                           f"{auc_entry.auc:.3f}, {confidence:.0%} interval from {auc_entry.auc_ci[0]:.3f})")
    if not keys:
        reasons.append(f"no evaluated FPR has {t.min_false_positives} expected false positives among {n_non} "
                       "non-members, so no low-FPR figure counts")
    summaries = {
        "high": "High risk: an attacker can identify training records with high confidence.",
        "medium": "Medium risk: an attacker can identify some training records more reliably than by chance.",
        "low": "Low risk: the attacks tell members from non-members slightly better than chance, not reliably at "
               "low false positive rates.",
        "none demonstrated": "No leakage demonstrated: no attack did better than chance with confidence. This does "
                             "not prove privacy; stronger attacks or more data may find leakage.",
    }
    return out | {"level": level, "summary": summaries[level], "reasons": reasons}


def _rule(t: RiskThresholds, confidence: float) -> str:
    return (f"high if some held-out attack's TPR lower bound ({confidence:.0%}) is at least {t.high_tpr_ratio:g} x "
            f"the FPR at an FPR with ≥ {t.min_false_positives} expected false positives, or the empirical ε lower "
            f"bound is ≥ {t.high_epsilon:g}; medium with {t.medium_tpr_ratio:g} x and ε ≥ {t.medium_epsilon:g}; "
            "low if an AUC interval lies above 0.5 (or a TPR lower bound above the FPR); otherwise none demonstrated; "
            "inconclusive when the blind baseline shows a distribution shift")


def defense_verdict(comparison: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The risk verdict of one defense row of a ``defenses.json`` (its attacks, the comparison's evaluation
    settings and data sizes), by the same rule and thresholds as an audit."""
    evaluation = comparison.get("evaluation") or {}
    risk = (comparison.get("config") or {}).get("evaluation", {}).get("risk")
    return risk_verdict({"attacks": row.get("attacks") or [], "evaluation": evaluation,
                         "data": comparison.get("data") or {}}, RiskThresholds(**risk) if risk else None)


def verdict_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The stored verdict of a run, or one computed with the default thresholds (runs written before it existed)."""
    stored = metrics.get("verdict")
    if isinstance(stored, Mapping) and stored.get("level") in LEVELS:
        return dict(stored)
    return risk_verdict(metrics)


__all__ = ["LEVELS", "RiskThresholds", "defense_verdict", "risk_verdict", "verdict_of"]
