"""Sentences every report shares (``report.md``, ``report.html``, the terminal table), as plain text.

They read a run's ``metrics.json`` content through :class:`~miaudit.evaluation.run_result.RunResult`,
so every view names the same strongest attack (held-out entries only), says the same thing about an
empirical epsilon bound of 0, and quotes the blind baseline and the risk level the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from miaudit.evaluation.run_result import AttackEntry, RunResult


def ci_text(value: float | None, ci: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not ci:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def epsilon_sentence(entry: AttackEntry | None, *, name: Callable[[str], str] = str) -> str | None:
    """The empirical-privacy sentence of the entry with the largest bound (None without any bound);
    ``name`` formats the attack's name (Markdown: inline code).

    A bound of 0 is no finding: it says that no privacy loss could be demonstrated, never "not DP for
    any epsilon below 0.00".
    """
    if entry is None or not isinstance(entry.fields.get("empirical_epsilon"), Mapping):
        return None
    e = entry.fields["empirical_epsilon"]
    if not entry.empirical_epsilon:
        return (f"Empirical privacy: no privacy loss could be demonstrated (every attack's error rates are "
                f"consistent with ε = 0 at δ = {e['delta']:g}, {e['confidence']:.0%} confidence). A lower bound of 0 "
                "proves nothing about privacy.")
    return (f"Empirical privacy: with {e['confidence']:.0%} confidence, the training is not "
            f"(ε, {e['delta']:g})-differentially private for any ε below {entry.empirical_epsilon:.2f} "
            f"(a lower bound from {name(entry.name)}'s error rates, Clopper-Pearson).")


def tpr_degenerate(entry: Mapping[str, Any], key: str) -> bool:
    """True when the TPR at FPR ``key`` is not shown to beat random guessing, which flags that share of the
    members too: its point value, or its lower confidence bound when one is stored, is at most the FPR."""
    ci = (entry.get("tpr_at_fpr_ci") or {}).get(key)
    value = (entry.get("tpr_at_fpr") or {}).get(key)
    return value is not None and (value <= float(key) or (ci is not None and ci[0] <= float(key)))


def baseline_sentence(run: RunResult) -> str | None:
    """The blind baseline's AUC with its interval and its verdict (None for runs without one)."""
    baseline = run.baseline
    if baseline is None or baseline.auc is None:
        return None
    verdict = baseline.fields.get("verdict") or {}
    sees = baseline.fields.get("inputs", "text only")
    if verdict.get("text"):
        return f"Blind baseline ({sees}, never queries the model): {verdict['text']}."
    return f"Blind baseline ({sees}, never queries the model): AUC {ci_text(baseline.auc, baseline.auc_ci)}."


def baseline_subsample(fields: Mapping[str, Any]) -> tuple[int, int, str, str] | None:
    """``(records used, records evaluated, unit, config option)`` of a blind baseline that ran on a random
    subsample, else ``None``. Runs recorded before the classifier baseline named the count ``n_documents``."""
    if not fields.get("subsample"):
        return None
    return (int(fields.get("n_used", fields.get("n_documents", 0))), int(fields["n_evaluated"]),
            str(fields.get("unit", "documents")), str(fields.get("limit_option", "blind_baseline.max_documents")))


def beats_baseline(entry: Mapping[str, Any]) -> str:
    """``yes`` / ``no`` / ``-``: does the attack's AUC beat the blind baseline's (paired-bootstrap interval above 0)?"""
    compared = entry.get("vs_blind_baseline")
    if not isinstance(compared, Mapping) or compared.get("beats") is None:
        return "-"
    ci = compared.get("auc_difference_ci")
    diff = f"{compared['auc_difference']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
    return f"{'yes' if compared['beats'] else 'no'} ({diff})"


def has_baseline_comparison(entries: Sequence[Mapping[str, Any]]) -> bool:
    return any(isinstance(e.get("vs_blind_baseline"), Mapping) for e in entries)


def interval_note(entries: Sequence[Mapping[str, Any]], confidence: float) -> str:
    """How the run's intervals were computed (from its entries), as one sentence."""
    methods = list(dict.fromkeys(e["interval_method"] for e in entries if e.get("interval_method")))
    n = next((e.get("n_bootstrap") for e in entries if e.get("n_bootstrap")), None)
    if not methods:
        return f"Brackets: {confidence:.0%} bootstrap confidence intervals ({n or '?'} resamples)."
    return f"Brackets: {confidence:.0%} confidence intervals, {n or '?'} resamples; {'; '.join(methods)}."


def pooled_targets_sentence(metrics: Mapping[str, Any], *, name: Callable[[str], str] = str) -> str | None:
    """What a run that pooled several targets (``evaluation.n_targets``) audited; None for one target;
    ``name`` formats the attack's name (Markdown: inline code).

    Names the number of targets, how they were trained and attacked, the pooled counts, how the
    intervals treat an example's repeated scores, and the range of the strongest attack's per-target AUC.
    """
    targets = metrics.get("targets")
    if not isinstance(targets, Mapping) or int(targets.get("n_targets", 1)) < 2:
        return None
    data, n = metrics.get("data") or {}, int(targets["n_targets"])
    n_audited = int(targets["pooled_scores"]) // n
    text = (f"{n} targets pooled: {n} models trained like the target on random halves of the same {n_audited} "
            f"examples, each in turn the target (its own half are its members) with the others' pairs as its "
            f"reference models, never itself; every attack's scores are pooled ({n} x {n_audited} = "
            f"{targets['pooled_scores']} scores: {data.get('pooled_members', '?')} member and "
            f"{data.get('pooled_nonmembers', '?')} non-member scores); intervals resample examples with all "
            f"their scores (cluster bootstrap) and each empirical ε bound is the largest of the {n} targets' own, "
            "Bonferroni-corrected.")
    best = RunResult(dict(metrics)).strongest("auc")
    aucs = best.fields.get("per_target_auc") if best is not None else None
    if best is not None and aucs:
        text += f" Per-target AUC of {name(best.name)}: {min(aucs):.3f} to {max(aucs):.3f}."
    return text


__all__ = ["baseline_sentence", "baseline_subsample", "beats_baseline", "ci_text", "epsilon_sentence",
           "has_baseline_comparison", "interval_note", "pooled_targets_sentence", "tpr_degenerate"]
