"""A readable Markdown report of one run, built from its ``metrics.json`` content only.

Strings that come from the user (attack labels, dataset and model names, file paths, warnings that
quote them) go through :func:`md_text` / :func:`md_code`, so a name can neither inject HTML into a
viewer that renders it nor break the tables.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from typing import Any

from miaudit.evaluation.run_result import RunResult, strongest
from miaudit.evaluation.verdict import RiskThresholds, verdict_of
from miaudit.report.headline import (
    baseline_sentence,
    baseline_subsample,
    beats_baseline,
    epsilon_sentence,
    has_baseline_comparison,
    interval_note,
    pooled_targets_sentence,
    tpr_degenerate,
)

_FPR_NAMES = {"0.001": "0.1%", "0.01": "1%", "0.05": "5%", "0.1": "10%"}
#: fewest expected false positives (``n_nonmembers * fpr``) for a TPR at that FPR to make a headline;
#: the verdict's rule, and the bound below which ``miaudit.evaluation.low_fpr_warnings`` warns
MIN_FALSE_POSITIVES = RiskThresholds.min_false_positives


_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|~])|(?<!\w)_|_(?!\w)")
_PLAIN_CODE = re.compile(r"[\w.:+@/ -]*")


def md_text(value: Any) -> str:
    """``value`` as literal Markdown text on one line: HTML characters as entities, Markdown syntax escaped."""
    text = " ".join(str(value).split())
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), html.escape(text, quote=False))


def md_code(value: Any) -> str:
    """``value`` as inline code when it is a plain name (letters, digits, ``_.:+@/-``), else as :func:`md_text`."""
    text = str(value)
    return f"`{text}`" if _PLAIN_CODE.fullmatch(text) else md_text(text)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return md_text(value)


def _with_ci(value: float | None, ci: list[float] | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not ci:
        return _fmt(value, digits)
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _fpr_label(key: str) -> str:
    return _FPR_NAMES.get(key, f"{float(key):.3g}")


def n_nonmembers(metrics: dict[str, Any]) -> int | None:
    """Non-members behind the run's TPR figures: the fewest of any attack entry, else ``data.n_nonmembers``."""
    return RunResult(metrics).n_nonmembers


def headline_fpr(fpr_keys: Iterable[str], n_nonmembers: int | None) -> tuple[str | None, bool]:
    """Which evaluated FPR a headline may quote, and whether the data supports it.

    The lowest FPR ``f`` (keys as in ``tpr_at_fpr``, e.g. ``"0.01"``) with ``n_nonmembers * f >=
    MIN_FALSE_POSITIVES`` and ``True``; when none qualifies, the 5% key (else the largest evaluated
    FPR) and ``False``.
    """
    keys = sorted(set(fpr_keys), key=float)
    if not keys:
        return None, False
    for key in keys:
        if (n_nonmembers or 0) * float(key) >= MIN_FALSE_POSITIVES:
            return key, True
    return ("0.05" if "0.05" in keys else keys[-1]), False


def unsupported_fpr_note(fpr_keys: Iterable[str], n_nonmembers: int | None, key: str, *,
                         rate: str = "false positive rate", errors: str = "false positives") -> str:
    """Plain-language caveat when no evaluated FPR has ``MIN_FALSE_POSITIVES`` expected false positives.

    ``key`` is the FPR still quoted (from :func:`headline_fpr`); ``rate`` / ``errors`` name the FPR
    and the false positives for the reader (the HTML report says "false alarm").
    """
    keys = sorted(set(fpr_keys), key=float)
    n = n_nonmembers or 0
    needed = math.ceil(MIN_FALSE_POSITIVES / float(key))
    return (f"with {n} non-members, each evaluated {rate} ({', '.join(_fpr_label(k) for k in keys)}) expects "
            f"fewer than {MIN_FALSE_POSITIVES} {errors}, so none of these figures is reliable; the "
            f"{_fpr_label(key)} figure rests on {n * float(key):.1f} expected {errors} and is indicative only "
            f"(audit at least {needed} non-members to quote it)")


def _key_values(rows: dict[str, Any]) -> list[str]:
    lines = ["| | |", "|---|---|"]
    for key, value in rows.items():
        if isinstance(value, (dict, list)):
            continue
        lines.append(f"| {key.replace('_', ' ')} | {_fmt(value, 4)} |")
    return lines


def _attack_table(attacks: list[dict[str, Any]], fpr_keys: list[str], confidence: float) -> list[str]:
    versus = has_baseline_comparison(attacks)
    head = (["attack", "access", "reference", f"AUC [{confidence:.0%} CI]"]
            + [f"TPR @ {_fpr_label(k)} FPR" for k in fpr_keys]
            + ["balanced acc. (threshold)", "advantage", "empirical ε (lower bound)"]
            + (["beats the blind baseline (AUC difference)"] if versus else []))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in attacks:
        tprs = [_with_ci(a["tpr_at_fpr"].get(k), a.get("tpr_at_fpr_ci", {}).get(k)) for k in fpr_keys]
        eps = (a.get("empirical_epsilon") or {}).get("epsilon")
        row = ([md_code(a["name"]), _fmt(a.get("access", "-")), _fmt(a.get("needs_reference", "-")),
                _with_ci(a["auc"], a.get("auc_ci"))] + tprs
               + [f"{_fmt(a.get('balanced_accuracy'))} ({_fmt(a.get('threshold_source', '-'))})",
                  _with_ci(a.get("advantage"), a.get("advantage_ci")), _fmt(eps, 2)]
               + ([beats_baseline(a)] if versus else []))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """The plain verdict for a compliance reader: risk level, why, and the rule (thresholds configurable)."""
    verdict = verdict_of(metrics)
    lines = ["## Verdict", "", f"**Risk: {verdict['level'].upper()}.** {md_text(verdict['summary'])}", ""]
    lines += [f"- {md_text(r)}" for r in verdict.get("reasons", [])]
    if verdict.get("reasons"):
        lines.append("")
    return lines + [f"Rule: {md_text(verdict['rule'])} (thresholds: `evaluation.risk` in the config).", ""]


def _one_run_lines(metrics: dict[str, Any]) -> list[str]:
    """The one-run canary audit of a ``kind: dp_canary`` run beside the accountant's epsilon (empty otherwise)."""
    one_run, canaries = metrics.get("one_run_audit"), metrics.get("canaries")
    if not (isinstance(one_run, dict) and isinstance(canaries, dict)):
        return []
    claimed = (metrics.get("dp") or {}).get("epsilon")
    oracle = (one_run.get("oracle") or {}).get("oracle_best") or {}
    lines = ["## One-run DP audit (Steinke, Nasr & Jagielski 2023)", "",
             f"{canaries['n']} {canaries['kind']} canaries, each inserted independently with probability 1/2 "
             f"({canaries['n_inserted']} inserted); scores from {md_code(one_run.get('attack', '-'))}.", "",
             "| | k+ / k- | correct / guesses | epsilon lower bound |", "|---|---|---|---|",
             f"| k fixed in the config (valid) | {one_run['k_pos']} / {one_run['k_neg']} | "
             f"{one_run['correct']} / {one_run['guesses']} | **{one_run['epsilon']:.3f}** |"]
    if oracle:
        lines.append(f"| oracle: best k on these scores (not a valid bound) | {oracle['k_pos']} / {oracle['k_neg']} | "
                     f"{oracle['correct']} / {oracle['guesses']} | {oracle['epsilon']:.3f} |")
    lines.append("")
    if claimed is None:
        lines.append("No privacy accountant for this training: the bound is compared against nothing.")
    else:
        lines.append(f"Accountant epsilon {claimed:.3f} at delta {one_run['delta']:g} (an upper bound) vs one-run "
                     f"lower bound {one_run['epsilon']:.3f}: "
                     + ("**DP CLAIM VIOLATED: the DP implementation or its accounting is broken.**"
                        if one_run["epsilon"] > claimed else "consistent."))
    return lines + ["", "A lower bound never proves privacy; with about a thousand canaries it lies far below the "
                        "accountant's epsilon even for a correct DP-SGD.", ""]


def _federated_lines(metrics: dict[str, Any]) -> list[str]:
    """A ``kind: federated`` run: each defense row's final global model and source inference (empty otherwise);
    the per-round tables are in ``federated.md``."""
    fed = metrics.get("federated")
    if not (isinstance(fed, dict) and isinstance(fed.get("defenses"), list)):
        return []
    lines = ["## Federated learning", "",
             f"{fed['n_clients']} clients, {fed['rounds']} rounds of FedAvg ({fed['framework']['name']} "
             f"{fed['framework']['version']}); client sizes {', '.join(map(str, fed['client_sizes']))}.", "",
             "| defense | test acc | epsilon (global models) | epsilon vs server | source inference acc (chance) |",
             "|---|---|---|---|---|"]
    for d in fed["defenses"]:
        eps = d["privacy"]
        si = d.get("source_inference")
        source = f"{_with_ci(si['accuracy'], si['accuracy_ci'])} ({si['chance']:.3f})" if si else "-"
        lines.append(f"| {d['label']} | {d['test_accuracy']:.4f} | {_fmt(eps.get('epsilon'))} | "
                     f"{_fmt(eps.get('epsilon_against_server'))} | {source} |")
    return lines + ["", "Per-round leakage, privacy spent and source inference: `federated.md`.", ""]


def _training_lines(training: Any) -> list[str]:
    """The models a controlled audit trained itself (metrics.json ``training``): where membership comes from,
    the recipe's outcome (loss on members vs non-members) and the reference (empty for other runs)."""
    if not isinstance(training, dict) or "split" not in training:
        return []
    split, target, recipe = training["split"], training.get("target", {}), training.get("recipe", {})
    base = md_text(str(recipe.get("base_model")))
    started = {"finetune": f"fine-tuned in full from {base}", "lora": f"fine-tuned with LoRA adapters from {base}"
               }.get(str(training.get("method")), "trained from scratch")
    lines = [f"- **Membership ground truth**: the target was {started} ("
             f"{recipe.get('epochs', '?')} epochs, lr {recipe.get('lr', '?')}) on a seeded random "
             f"{split['n_members']} of the corpus's documents; {split['n_nonmembers']} others are the non-members"
             + (f" and {split['n_reference']} others, disjoint, form the reference split" if split.get("n_reference")
                else "")]
    if "loss_members" in target:
        lines.append(f"- **Trained target** ({md_code(target.get('folder'))}): final train loss "
                     f"{_fmt(target.get('final_train_loss'))}; mean token loss on members "
                     f"{_fmt(target['loss_members'])} vs non-members {_fmt(target['loss_nonmembers'])} (perplexity "
                     f"{_fmt(target.get('perplexity_members'))} vs {_fmt(target.get('perplexity_nonmembers'))})")
    reference = training.get("reference", {})
    if reference.get("kind") == "trained":
        lines.append(f"- **Reference model**: the same recipe on the reference split "
                     f"({md_code(reference.get('folder'))})")
    elif reference.get("kind") == "base":
        lines.append(f"- **Reference model**: the base model {md_text(str(reference.get('model')))} (what "
                     "fine-tuning added)")
    return lines


def _selection_lines(metrics: dict[str, Any]) -> list[str]:
    """LLM runs: each tuned hyper-parameter, chosen on the calibration split (reported) and on the
    evaluation labels ("oracle", optimistic), with both AUCs (empty for runs without a selection)."""
    selection = metrics.get("selection")
    if not isinstance(selection, dict) or not selection.get("attacks"):
        return []
    auc = {a["name"]: a.get("auc") for a in metrics.get("attacks", [])}
    lines = ["## Hyper-parameter choice", "",
             f"Chosen on a stratified calibration split of {selection.get('n_calibration', '?')} documents "
             "(left out of the evaluation; this is the reported result) and, for comparison only, on the "
             "evaluation labels themselves (`oracle`, an optimistic bound).", "",
             "| attack | parameter | held-out choice | AUC | oracle choice | oracle AUC |", "|---|---|---|---|---|---|"]
    for key, chosen in selection["attacks"].items():
        lines.append(f"| {md_code(key)} | {_fmt(chosen['parameter'])} | {_fmt(chosen['held_out'], 4)} | "
                     f"{_fmt(auc.get(key))} | "
                     f"{_fmt(chosen['oracle'], 4)} | {_fmt(auc.get(f'{key}.oracle'))} |")
    return lines + [""]


def _baseline_documents(baseline: dict[str, Any]) -> str:
    subsample = baseline_subsample(baseline)
    if subsample is not None:
        used, evaluated, unit, option = subsample
        return (f"a random {used:,} of the {evaluated:,} evaluation {unit} (`{option}`; the attacks are compared "
                f"with it on the same {unit})")
    return f"the evaluation {baseline.get('unit', 'documents')}"


def _blind_baseline_lines(metrics: dict[str, Any], best: dict[str, Any] | None) -> list[str]:
    """Runs with a blind baseline (LLM documents, a classifier's member and non-member files): the classifier that
    never queries the model, its verdict, and the best attack."""
    baseline = metrics.get("blind_baseline")
    if not isinstance(baseline, dict) or "auc" not in baseline:
        return []
    tprs = ", ".join(f"TPR {_with_ci(v, baseline.get('tpr_at_fpr_ci', {}).get(k))} at {_fpr_label(k)} FPR"
                     for k, v in sorted(baseline.get("tpr_at_fpr", {}).items(), key=lambda kv: float(kv[0])))
    cv = baseline.get("cross_validation", "stratified k-fold")
    lines = ["## Blind baseline", "",
             f"A {baseline.get('classifier', 'text')} classifier on {baseline.get('features', 'the text')} alone, "
             f"{baseline.get('n_splits', '?')}-fold cross-validated ({cv}) on {_baseline_documents(baseline)}, "
             f"never querying the model: AUC {_with_ci(baseline['auc'], baseline.get('auc_ci'))}; {tprs}.", ""]
    verdict = baseline.get("verdict") or {}
    if verdict.get("text"):
        lines += [f"**Verdict: {verdict['text']}.**", "", f"Rule: {md_text(verdict['rule'])}.", ""]
    if best is not None and baseline["auc"] >= best["auc"]:
        lines += [f"It does at least as well as the strongest attack ({md_code(best['name'])}, AUC "
                  f"{best['auc']:.3f}).", ""]
    return lines


def _headline(run: RunResult, best: dict[str, Any], fpr_keys: list[str]) -> str:
    """The strongest held-out attack by AUC, its TPR at the lowest supported FPR (AUC first when that figure
    is degenerate), the blind baseline where there is one, and the empirical epsilon sentence."""
    n_non = run.n_nonmembers
    key, supported = headline_fpr(fpr_keys, n_non)
    auc = _with_ci(best["auc"], best.get("auc_ci"))
    headline = f"Strongest attack by AUC (held-out choices only): {md_code(best['name'])} with AUC {auc}"
    if key is None:  # a metrics.json without evaluated FPRs: the AUC is the whole headline
        headline += "."
    else:
        tpr = _with_ci(best["tpr_at_fpr"].get(key), best.get("tpr_at_fpr_ci", {}).get(key))
        if supported and tpr_degenerate(best, key):
            better = bool(best.get("auc_ci")) and best["auc_ci"][0] > 0.5
            headline += (f". At {_fpr_label(key)} FPR it is not shown to find more members than random guessing, "
                         f"which flags {_fpr_label(key)} of them (TPR {tpr})"
                         + (": the attacks separate members from non-members overall better than chance, not at a "
                            "low false positive rate." if better else
                            "; nor do the attacks separate members from non-members overall (the AUC interval "
                            "includes 0.5)."))
        elif supported:
            headline += (f" and TPR {tpr} at {_fpr_label(key)} FPR (the lowest evaluated FPR that {n_non} "
                         f"non-members support, with at least {MIN_FALSE_POSITIVES} expected false positives).")
        else:
            headline += (f". **Too few non-members for a low-FPR figure**: "
                         f"{unsupported_fpr_note(fpr_keys, n_non, key)}. Its TPR at {_fpr_label(key)} FPR is {tpr}.")
        at_fpr = run.strongest(f"tpr@{key}")
        if at_fpr is not None and at_fpr.name != best["name"]:
            ci = at_fpr.tpr_at_fpr_ci.get(key)
            headline += (f" At {_fpr_label(key)} FPR the strongest attack is {md_code(at_fpr.name)} (TPR "
                         f"{_with_ci(at_fpr.tpr_at_fpr[key], list(ci) if ci else None)}).")
    baseline = baseline_sentence(run)
    if baseline:
        headline += f"\n\n{baseline}"
    bound = epsilon_sentence(strongest(run.attacks, "epsilon"), name=md_code)
    if bound:
        headline += f"\n\n{bound}"
    return headline


def _data_lines(data: dict[str, Any]) -> list[str]:
    """Where the audited records come from; a dataset beside the user's own files fed only shadow / population data."""
    counts = f"{_fmt(data.get('n_members'))} members, {_fmt(data.get('n_nonmembers'))} non-members"
    if not data.get("audited_from"):
        aside = [f"{data[key]} more documents {what}" for key, what in (
            ("n_calibration", "calibrate thresholds and hyper-parameters"),
            ("n_recall_prefix", "are ReCaLL's prefix of known non-members")) if data.get(key)]
        note = f"; not evaluated: {', '.join(aside)}" if aside else ""
        return [f"- **Dataset**: {_fmt(data.get('dataset'))} ({counts} audited{note})"]
    lines = [f"- **Audited records**: {counts} from {md_code(data['audited_from'])}"]
    if data.get("dataset"):
        lines.append(f"- **Shadow / population data**: {_fmt(data['dataset'])} ({_fmt(data.get('n_examples'))} "
                     "examples, none of them audited)")
    return lines


def render_report(metrics: dict[str, Any], *, figures: dict[str, str] | None = None) -> str:
    """Markdown text for a run; ``figures`` maps a caption to a file name relative to the run folder."""
    target, data = metrics.get("target", {}), metrics.get("data", {})
    evaluation = metrics.get("evaluation", {})
    run = RunResult(metrics)
    ranked = [a for a in run.ranked() if a.scored and not a.baseline]
    attacks = [a.fields for a in ranked if not a.oracle]
    oracles = [a.fields for a in ranked if a.oracle]
    fpr_keys = [f"{f:g}" for f in evaluation.get("fprs", [0.001, 0.01, 0.05])]
    confidence = float(evaluation.get("confidence", 0.95))
    out = [f"# Membership inference audit ({metrics.get('kind', '?')})", ""]
    if ranked:
        out += _verdict_lines(metrics)

    what = _data_lines(data) + [
            f"- **Target**: {_fmt(target.get('description', target.get('source', target.get('model', '-'))))}",
            f"- **Seed**: {metrics.get('seed', '-')}; miaudit {metrics.get('miaudit_version', '?')}"]
    if metrics.get("shadow"):
        s = metrics["shadow"]
        accuracies = ("" if s.get("train_accuracy_mean") is None else
                      f" (mean train accuracy {_fmt(s.get('train_accuracy_mean'))}, "
                      f"mean test accuracy {_fmt(s.get('test_accuracy_mean'))})")
        what.append(f"- **Shadow models**: {s['n_models']} trained like the target{accuracies}")
    if metrics.get("reference"):
        ref = metrics["reference"]
        how = [str(ref[k]) + (" executor" if k == "executor" else "") for k in ("models", "executor") if ref.get(k)]
        what.append(f"- **Reference models**: {ref['n_models']}" + (" per target" if ref.get("per_target") else "")
                    + (f" ({md_text(', '.join(how))})" if how else ""))
    pooled = pooled_targets_sentence(metrics, name=md_code)
    if pooled:
        what.insert(2, f"- **Targets**: {pooled}")
    what += _training_lines(metrics.get("training"))
    out += ["## What was audited", "", *what, ""]

    out += ["## Target model", ""]
    if "train_accuracy" in target and "test_accuracy" in target:
        gap = target["train_accuracy"] - target["test_accuracy"]
        out += [f"Train accuracy **{target['train_accuracy']:.4f}**, test accuracy "
                f"**{target['test_accuracy']:.4f}** (generalisation gap {gap:+.4f}). A large gap usually "
                "means the model memorised its training set, which membership inference exploits.", ""]
    out += [*_key_values(target), ""]

    best_entry = run.strongest("auc")
    best = best_entry.fields if best_entry is not None else None
    if best is not None:
        out += ["## Attacks", "", _headline(run, best, fpr_keys), ""]
        out += [*_attack_table(attacks, fpr_keys, confidence), ""]
        if oracles:
            out += ["Oracle entries: the hyper-parameter was chosen on the evaluation labels themselves (an "
                    "optimistic bound, for comparison with papers that tune on the test set; never a result):", "",
                    *_attack_table(oracles, fpr_keys, confidence), ""]
        out += [interval_note(attacks + oracles, confidence),
                "Threshold `reference`: learned on shadow/reference data, an honest attacker's choice; "
                "`oracle`: chosen on the evaluation labels themselves, an optimistic upper bound.", ""]
    else:
        out += ["## Attacks", "", "No attack was run.", ""]

    out += _selection_lines(metrics)
    out += _blind_baseline_lines(metrics, best)
    out += _one_run_lines(metrics)
    out += _federated_lines(metrics)
    out += ["## How to read this", "",
            "- **AUC** 0.5 is chance; 1.0 separates members from non-members perfectly.",
            "- **TPR at low FPR** is the figure that matters for privacy: how many members an attacker "
            "identifies with high confidence while rarely accusing a non-member (Carlini et al. 2022).",
            "- **Balanced accuracy** = (TPR + TNR) / 2 at the decision threshold; **advantage** = max TPR - FPR "
            "(Yeom et al. 2018).", ""]

    warnings = [md_text(w) for w in run.all_warnings]
    if warnings:
        out += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]

    if figures:
        out += ["## Figures", ""]
        out += [f"![{caption}]({name})" for caption, name in figures.items()]
        out.append("")

    cited = {a.get("attack", a["name"]): a["citation"] for a in attacks + oracles if a.get("citation")}
    if cited:
        out += ["## Attacks' references", "",
                *[f"- {md_code(n)}: {md_text(c)}" for n, c in sorted(cited.items())], ""]
    return "\n".join(out)


def summary_table(metrics: dict[str, Any]) -> str:
    """Plain text for the terminal: the risk level, target accuracy, one row per held-out attack (strongest
    first), the oracle rows apart and marked, and the blind baseline with its verdict."""
    target = metrics.get("target", {})
    fpr_keys = [f"{f:g}" for f in metrics.get("evaluation", {}).get("fprs", [0.001, 0.01, 0.05])]
    run = RunResult(metrics)
    scored = [e for e in run.ranked() if e.scored and not e.baseline]
    lines = []
    if scored:
        risk = verdict_of(metrics)
        lines.append(f"risk: {risk['level'].upper()}. {risk['summary']}")
    if "train_accuracy" in target and "test_accuracy" in target:
        lines.append(f"target: train accuracy {target['train_accuracy']:.4f}, test accuracy "
                     f"{target['test_accuracy']:.4f}")
    versus = has_baseline_comparison([e.fields for e in scored])
    head = (["attack", "AUC [CI]"] + [f"TPR@{_fpr_label(k)}" for k in fpr_keys] + ["bal.acc", "threshold"]
            + (["beats blind baseline"] if versus else []))

    def row(a: dict[str, Any], name: str) -> list[str]:
        return ([name, _with_ci(a["auc"], a.get("auc_ci"))] + [_fmt(a["tpr_at_fpr"].get(k)) for k in fpr_keys]
                + [_fmt(a.get("balanced_accuracy")), str(a.get("threshold_source", "-"))]
                + ([beats_baseline(a)] if versus else []))

    held_out = [row(e.fields, e.name) for e in scored if not e.oracle]
    oracle = [row(e.fields, e.name if e.name.endswith(".oracle") else f"{e.name} (oracle)") for e in scored if e.oracle]
    rows = [head, *held_out, *oracle]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    lines += [fmt(r) for r in [head, *held_out]]
    if oracle:
        lines.append("oracle: hyper-parameter chosen on the evaluation labels (comparison only, never a result):")
        lines += [fmt(r) for r in oracle]
    baseline = run.baseline
    if baseline is not None and baseline.auc is not None:
        verdict = (baseline.fields.get("verdict") or {}).get("text")
        auc = f"AUC {_with_ci(baseline.auc, baseline.fields.get('auc_ci'))}"
        fields = baseline.fields
        subsample = baseline_subsample(fields)
        where = "" if subsample is None else f", on a random {subsample[0]:,} of {subsample[1]:,} {subsample[2]}"
        lines.append(f"blind baseline ({fields.get('inputs', 'text only')}{where}): {verdict or auc}")
    one_run = metrics.get("one_run_audit")
    if isinstance(one_run, dict) and "verdict" in one_run:
        lines.append(f"one-run canary audit: epsilon >= {one_run['epsilon']:.3f} at delta {one_run['delta']:g} "
                     f"({one_run['correct']} of {one_run['guesses']} guesses correct); {one_run['verdict']}")
    return "\n".join(lines)
