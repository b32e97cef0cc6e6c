"""``report.html``: one self-contained page per run (inline CSS, images as data URIs, no network).

Sections of an audit page: a plain-language summary, what was audited (model, data sizes, seed,
config), the attacks table with confidence intervals, the log-log ROC and score histograms, the most
exposed records, the empirical epsilon next to the accountant's epsilon where the model was trained
with DP, and, where the run has them, the blind baseline (LLM runs) and token heat maps
(``token*.html`` files, embedded in sandboxed frames).

Other folder types (e.g. a ``miaudit defend`` comparison, marked by its ``defenses.json``) bring
their own page: the kind that writes them registers a renderer with :func:`register_page`, and
:func:`build_html_report` picks the page by the folder's marker file.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from miaudit import __version__
from miaudit.errors import DataError
from miaudit.evaluation import AttackResult
from miaudit.evaluation.run_result import RunResult, entries_of, ranked, strongest
from miaudit.evaluation.verdict import verdict_of
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
from miaudit.report.markdown import (
    MIN_FALSE_POSITIVES,
    headline_fpr,
    n_nonmembers,
    unsupported_fpr_note,
)
from miaudit.report.page import esc, figure, key_values, num, page, pct, table, with_ci
from miaudit.report.plots import plot_roc, plot_score_histograms
from miaudit.report.rundir import Run, load_run
from miaudit.utils.atomic import final_name, write_text_atomic

REPORT_NAME = "report.html"
_ACCESS = {"label-only": "only the predicted labels",
           "top-k log-probs": "the log-probability of each token (as an API gives it)",
           "probabilities": "the output probabilities",
           "logits": "the raw outputs (logits)", "embeddings": "the embeddings",
           "white-box": "the weights and gradients"}
_REFERENCE = {"none": "no data beyond the records it tests", "population": "data from the same population",
              "shadow": "data to train shadow models", "reference-pool": "data to train reference models",
              "calibration": "a labelled calibration set", "reference-model": "a reference model"}
def model_attacks(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Attack entries on the model (blind baselines left out), in :func:`~miaudit.evaluation.run_result.ranked`
    order."""
    return [a.fields for a in ranked(metrics.get("attacks", [])) if not a.baseline]


def strongest_attack(metrics: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The run's strongest attack for ``metric`` by the one rule of :mod:`miaudit.evaluation.run_result`."""
    best = strongest(metrics.get("attacks", []), metric)
    return best.fields if best is not None else None


# -- sections -----------------------------------------------------------------------------------

def _verdict(metrics: dict[str, Any]) -> str:
    """The plain verdict at the top of the page: risk level, why, and the rule that produced it."""
    if not model_attacks(metrics):
        return ""
    verdict = verdict_of(metrics)
    box = "alert" if verdict["level"] in ("high", "inconclusive") else "warn" if verdict["level"] == "medium" \
        else "summary"
    reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict.get("reasons", []))
    return (f'<div class="{box}"><p><b>Risk: {esc(verdict["level"].upper())}.</b> {esc(verdict["summary"])}</p>'
            + (f"<ul>{reasons}</ul>" if reasons else "")
            + f'<p class="meta">Rule: {esc(verdict["rule"])} (thresholds: <code>evaluation.risk</code> in the '
              "config).</p></div>")


def _warnings(metrics: dict[str, Any]) -> str:
    """Every run-level and attack warning (reference-model fidelity, too few non-members, ties...)."""
    warnings = RunResult(metrics).all_warnings
    if not warnings:
        return ""
    return "<h2>Warnings</h2>" + "".join(f'<div class="warn">{esc(w)}</div>' for w in warnings)


def _summary(metrics: dict[str, Any]) -> str:
    """The headline: the strongest attack's TPR at the lowest evaluated FPR the non-member count supports
    (led by the AUC when that figure is not shown to beat random guessing)."""
    lines = []
    attacks = [a for a in model_attacks(metrics) if not entries_of([a])[0].oracle]
    if not attacks:
        return '<div class="summary"><p>This run has no attack results.</p></div>'
    fpr_keys = sorted({k for a in attacks for k in a.get("tpr_at_fpr", {})}, key=float)
    n_non = n_nonmembers({**metrics, "attacks": attacks})
    key, supported = headline_fpr(fpr_keys, n_non)
    best = None if key is None else strongest_attack(metrics, f"tpr@{key}") or strongest_attack(metrics, "auc")
    if key is not None and best is not None:
        fpr, tpr = float(key), float(best["tpr_at_fpr"].get(key, 0.0))
        ci = best.get("tpr_at_fpr_ci", {}).get(key)
        access = _ACCESS.get(best.get("access", ""), "access to the model")
        reference = _REFERENCE.get(best.get("needs_reference", ""), "")
        ratio = f", {tpr / fpr:.1f} times what blind guessing finds" if tpr > 0 else ""
        if not supported:
            note = unsupported_fpr_note(fpr_keys, n_non, key, rate="false alarm rate", errors="false alarms")
            lines.append(f"<p><b>Too few non-members for a reliable headline figure</b>: {esc(note)}.</p>")
        who = f"{'An' if supported else 'an'} attacker who sees {esc(access)}"
        by_auc = strongest_attack(metrics, "auc")
        if tpr_degenerate(best, key) and by_auc is not None and by_auc.get("auc_ci"):
            conf = by_auc.get("confidence_level", 0.95)
            better = by_auc["auc_ci"][0] > 0.5
            lines.append(
                f"<p>{'' if supported else 'Indicative only: '}<b>At a {pct(fpr)} false alarm rate the strongest "
                f"attack, <code>{esc(best['name'])}</code>, is not shown to find more {_records(metrics)} than random "
                f"guessing</b>, which flags {pct(fpr)} of them (it finds {pct(tpr)}"
                + (f", {conf:.0%} CI {pct(ci[0])} to {pct(ci[1])}" if ci else "") + "). "
                + (f"Overall the attacks do tell members from non-members better than chance: "
                   f"<code>{esc(by_auc['name'])}</code> reaches AUC {with_ci(by_auc['auc'], by_auc['auc_ci'])}."
                   if better else "Nor do the attacks separate members from non-members overall (the AUC "
                                  "interval includes 0.5).") + "</p>")
        else:
            lines.append(
                f"<p>{'' if supported else 'Indicative only: '}"
                f"<b>{who}{' and has ' + esc(reference) if reference else ''} identifies "
                f"{pct(tpr)} of the {_records(metrics)} at a {pct(fpr)} false alarm rate</b>"
                + (f" (95% CI {pct(ci[0])} to {pct(ci[1])})" if ci else "")
                + f"{ratio}; guessing at random flags {pct(fpr)} of them. Strongest attack at this false alarm "
                f"rate: <code>{esc(best['name'])}</code>.</p>")
        lower = [k for k in fpr_keys if float(k) < fpr]
        if supported and lower:
            lines.append(f"<p>Lower false alarm rates ({', '.join(pct(float(k)) for k in lower)}) are not quoted "
                         f"here: {n_non} non-members give fewer than {MIN_FALSE_POSITIVES} expected false alarms "
                         "there (see the table).</p>")
    by_auc = strongest_attack(metrics, "auc")
    if by_auc is not None and "auc" in by_auc:
        lines.append(f"<p>Best AUC: {with_ci(by_auc['auc'], by_auc.get('auc_ci'))} "
                     f"(<code>{esc(by_auc['name'])}</code>); 0.5 means the attacks cannot tell members from "
                     "non-members, 1.0 means they always can.</p>")
    run = RunResult(metrics)
    baseline = baseline_sentence(run)
    if baseline:
        lines.append(f"<p>{esc(baseline)}</p>")
    bound = epsilon_sentence(strongest(run.attacks, "epsilon"))
    if bound:
        lines.append(f"<p>{esc(bound)}</p>")
    return '<div class="summary">' + "".join(lines) + "</div>"


def _records(metrics: dict[str, Any]) -> str:
    """What the members of this run are, in the headline's words (AuditMI audits users, not texts)."""
    members = {"dp_canary": "inserted canaries", "text_generator": "training users"}
    return members.get(str(metrics.get("kind")), "training records")


def _one_run_audit(metrics: dict[str, Any]) -> str:
    """The one-run canary audit (``kind: dp_canary``): canaries, bound at fixed k, oracle sweep, verdict."""
    one_run, canaries = metrics.get("one_run_audit"), metrics.get("canaries")
    if not (isinstance(one_run, dict) and isinstance(canaries, dict)):
        return ""
    dp = metrics.get("dp") or {}
    claimed = dp.get("epsilon")
    rows = [["fixed in the config (valid bound)", str(one_run["k_pos"]), str(one_run["k_neg"]),
             f"{one_run['correct']} / {one_run['guesses']}", f"<b>{one_run['epsilon']:.3f}</b>"]]
    rows += [["oracle sweep", str(b["k_pos"]), str(b["k_neg"]), f"{b['correct']} / {b['guesses']}",
              f"{b['epsilon']:.3f}"] for b in (one_run.get("oracle") or {}).get("bounds", [])]
    if claimed is None:
        verdict = ('<div class="warn">The training has no privacy accountant (defense '
                   f"<code>{esc(dp.get('defense', '-'))}</code>): the lower bound is compared against nothing.</div>")
    elif one_run["epsilon"] > claimed:
        verdict = ('<div class="alert"><b>DP claim violated.</b> The one-run lower bound '
                   f"ε ≥ {one_run['epsilon']:.3f} exceeds the accountant's ε = {claimed:.3f}: the DP "
                   "implementation or its accounting is broken (or the audit's assumptions were violated). "
                   "Do not trust this run's privacy claim.</div>")
    else:
        verdict = (f"<p>The accountant's ε = {claimed:.3f} (δ = {esc(dp.get('delta', '-'))}) is an upper bound; the "
                   f"one-run lower bound is {one_run['epsilon']:.3f}. Consistent: the bound does not exceed the "
                   "claim.</p>")
    return ("<h2>One-run canary audit (Steinke, Nasr &amp; Jagielski 2023)</h2>"
            f"<p>{canaries['n']} {esc(canaries['kind'])} canaries, each inserted into the single training run "
            f"independently with probability 1/2 ({canaries['n_inserted']} inserted). Each canary is scored by "
            f"<code>{esc(one_run.get('attack', '-'))}</code> ({esc(one_run.get('score', '-'))}); the auditor guesses "
            "\"inserted\" for the k+ highest scores and \"left out\" for the k− lowest, and the number of correct "
            f"guesses gives a lower bound on ε at δ = {one_run['delta']:g} with {one_run['confidence']:.0%} "
            "confidence. Only the row with k fixed in the config is a valid bound; the oracle rows chose k on these "
            "scores.</p>"
            + table(["guesses", "k+", "k−", "correct", "ε lower bound"], rows) + verdict
            + "<p>A lower bound never proves privacy: with about a thousand canaries and a black-box score it lies "
              "far below the accountant's ε even for a correct DP-SGD (so are the paper's black-box audits).</p>")


def _audited(run: Run) -> str:
    m = run.metrics
    parts = [f"<p>Kind: <b>{esc(m.get('kind', '-'))}</b> &middot; seed: <b>{esc(m.get('seed', '-'))}</b></p>"]
    pooled = pooled_targets_sentence(m)
    if pooled:
        parts.append(f"<p><b>Targets.</b> {esc(pooled)}</p>")
    if m.get("target"):
        parts.append("<h3>Model</h3>" + key_values(m["target"]))
    if m.get("data"):
        parts.append("<h3>Data</h3>" + key_values(m["data"]))
    if run.config:
        parts.append("<details><summary>Full configuration (config.yaml)</summary><pre>"
                     + esc(yaml.safe_dump(run.config, sort_keys=False)) + "</pre></details>")
    return "<h2>What was audited</h2>" + "".join(parts)


def _attack_table(metrics: dict[str, Any]) -> str:
    attacks = model_attacks(metrics)
    if not attacks:
        return ""
    keys = sorted({k for a in attacks for k in a.get("tpr_at_fpr", {})}, key=float)
    conf = attacks[0].get("confidence_level", 0.95)
    versus = has_baseline_comparison(attacks)
    head = (["attack", "access", f"AUC [{conf:.0%} CI]"] + [f"TPR @ {float(k):.3g} FPR" for k in keys]
            + ["advantage", "balanced acc. (threshold)", "empirical ε (lower bound)"]
            + (["beats the blind baseline (AUC difference)"] if versus else []))

    def rows(entries: list[dict[str, Any]]) -> list[list[str]]:
        out = []
        for a in entries:
            eps = (a.get("empirical_epsilon") or {}).get("epsilon")
            out.append([f"<code>{esc(a['name'])}</code>", esc(a.get("access", "-")),
                        with_ci(a.get("auc"), a.get("auc_ci"))]
                       + [with_ci(a.get("tpr_at_fpr", {}).get(k), a.get("tpr_at_fpr_ci", {}).get(k)) for k in keys]
                       + [with_ci(a.get("advantage"), a.get("advantage_ci")),
                          f"{num(a.get('balanced_accuracy'))} ({esc(a.get('threshold_source', '-'))})", num(eps, 2)]
                       + ([esc(beats_baseline(a))] if versus else []))
        return out

    held_out = [a for a in attacks if not entries_of([a])[0].oracle]
    oracle = [a for a in attacks if entries_of([a])[0].oracle]
    text = (f"<h2>Attacks</h2><p>Sorted by AUC. {esc(interval_note(attacks, conf))} Threshold \"oracle\": chosen "
            "on the evaluation labels (an optimistic upper bound).</p>" + table(head, rows(held_out), numeric_from=2))
    if oracle:
        text += ("<h3>Oracle entries (comparison only)</h3><p>The hyper-parameter of these entries was chosen on the "
                 "evaluation labels themselves: an optimistic bound, shown beside the held-out choice for comparison "
                 "with papers that tune on the test set; never a result.</p>" + table(head, rows(oracle),
                                                                                     numeric_from=2))
    return text


def _exposed(metrics: dict[str, Any], results: dict[str, AttackResult], n: int) -> str:
    scored = [a for a in model_attacks(metrics) if a["name"] in results]
    if not scored:
        return ""
    best = strongest_attack({"attacks": scored}, "auc") or scored[0]
    r = results[best["name"]]
    labels, scores = np.asarray(r.labels).astype(bool), np.asarray(r.scores, float)
    order = np.argsort(-scores, kind="mergesort")[:n]
    non = np.sort(scores[~labels])
    rows = []
    for rank, i in enumerate(order, 1):
        flagged_fpr = (non.size - np.searchsorted(non, scores[i], side="left")) / max(non.size, 1)
        rows.append([str(rank), esc(r.ids[i]), f"{scores[i]:.4g}", "member" if labels[i] else "non-member",
                     pct(flagged_fpr)])
    return (f"<h2>Most exposed records</h2><p>The {len(order)} records that <code>{esc(best['name'])}</code> (highest "
            "AUC) scores as most likely members. \"Flagged at FPR\": the share of non-members scoring at least as "
            "high, i.e. the false alarm rate at which an attacker would flag this record.</p>"
            + table(["rank", "id", "score", "truth", "flagged at FPR"], rows, numeric_from=2))


def _epsilon_vs_accountant(metrics: dict[str, Any]) -> str:
    accountant = metrics.get("dp") or {k: metrics.get("target", {}).get(k) for k in ("epsilon", "delta")
                                      if metrics.get("target", {}).get(k) is not None}
    eps = [(a["name"], a["empirical_epsilon"]) for a in model_attacks(metrics)
           if (a.get("empirical_epsilon") or {}).get("epsilon") is not None]
    one_run = metrics.get("one_run_audit")
    if not (eps or one_run):
        return ""
    corrections = {"none": "max over thresholds, per-threshold confidence", "bonferroni": "Bonferroni over thresholds"}
    rows = [[f"<code>{esc(name)}</code>", f"{e['epsilon']:.3f}", f"{e['delta']:g}", f"{e['confidence']:.0%}",
             esc(corrections.get(e.get("correction"), e.get("correction", "-")))] for name, e in eps]
    if one_run:
        rows.append(["one-run canary audit (Steinke et al. 2023)", f"{one_run['epsilon']:.3f}",
                     f"{one_run['delta']:g}", f"{one_run['confidence']:.0%}",
                     f"{one_run.get('correct', '-')} of {one_run.get('guesses', '-')} guesses correct"])
    out = ["<h2>Empirical privacy (epsilon lower bounds)</h2>",
           "<p>Lower bounds: with the stated confidence, the training algorithm is not (ε, δ)-DP for any smaller "
           "ε. They come from the attacks' error rates (Clopper-Pearson) and are far below the true ε when the "
           "attack is weak; they never prove privacy.</p>",
           table(["from", "ε lower bound", "δ", "confidence", "notes"], rows, numeric_from=1)]
    if accountant.get("epsilon") is not None:
        claimed = float(accountant["epsilon"])
        best = max([e["epsilon"] for _, e in eps] + ([one_run["epsilon"]] if one_run else []))
        out.append(f"<p>The DP accountant reports ε = {claimed:.3f} (δ = {esc(accountant.get('delta', '-'))}), an "
                   f"upper bound; the audit's best lower bound is {best:.3f}.</p>")
        if best > claimed:
            out.append('<div class="alert">The empirical lower bound exceeds the accountant\'s epsilon: the DP '
                       "claim does not hold for this training run (or the audit's assumptions are violated).</div>")
    return "".join(out)


def _blind_baseline(metrics: dict[str, Any]) -> str:
    entries = [a.fields for a in entries_of(metrics.get("attacks", [])) if a.baseline]
    if isinstance(metrics.get("blind_baseline"), dict):
        entries.append({"name": "blind_baseline", **metrics["blind_baseline"]})
    if not entries:
        return ""
    rows = [[f"<code>{esc(b['name'])}</code>", with_ci(b.get("auc"), b.get("auc_ci"))]
            + [with_ci(b.get("tpr_at_fpr", {}).get(k), b.get("tpr_at_fpr_ci", {}).get(k))
               for k in sorted(b.get("tpr_at_fpr", {}), key=float)] for b in entries]
    keys = sorted(entries[0].get("tpr_at_fpr", {}), key=float)
    best = strongest_attack(metrics, "auc")
    stored = entries[0].get("verdict") or {}
    verdict = ""
    if stored.get("text"):
        verdict = (f'<div class="{"alert" if stored.get("shift") else "summary"}"><b>Verdict:</b> '
                   f"{esc(stored['text'])}.</div><p class=\"meta\">Rule: {esc(stored['rule'])}.</p>")
    if best is not None and entries[0].get("auc") is not None and entries[0]["auc"] >= best.get("auc", 0.0):
        verdict += ('<div class="alert">The blind baseline, which never queries the model, does as well as the '
                    "best attack: the attack results do not measure memorisation.</div>")
    section: dict[str, Any] = metrics.get("blind_baseline") or {}
    subsample = baseline_subsample(section)
    sample = "" if subsample is None else (
        f" It ran on a random {subsample[0]:,} of the {subsample[1]:,} evaluation {esc(subsample[2])} "
        f"(<code>{esc(subsample[3])}</code>); the attacks are compared with it on those.")
    sees = "the records (inputs and labels)" if section.get("unit") == "records" else "the text"
    return (f"<h2>Blind baseline</h2><p>A classifier that sees only {sees} (no model), cross-validated. If it "
            "separates members from non-members, they differ in distribution and the attacks measure that shift "
            f"as well as membership (Das et al. 2024; Duan et al. 2024).{sample}</p>"
            + table(["baseline", "AUC"] + [f"TPR @ {float(k):.3g} FPR" for k in keys], rows) + verdict)


def _token_views(run_dir: Path) -> str:
    files = sorted(run_dir.glob("token*.html")) + sorted((run_dir / "tokens").glob("*.html"))
    if not files:
        return ""
    frames = [f'<h3>{esc(f.name)}</h3><iframe sandbox="" title="{esc(f.name)}" srcdoc="'
              f'{html.escape(f.read_text(encoding="utf-8", errors="replace"), quote=True)}"></iframe>' for f in files]
    return ("<h2>Token heat maps</h2><p>Per-token membership evidence written by the LLM audit (colours and "
            "legend as in each token view); it shows which passages look memorised.</p>" + "".join(frames))


# -- page ---------------------------------------------------------------------------------------

def _load_results(run: Run) -> dict[str, AttackResult]:
    out = {}
    for name in run.attack_names:
        if (run.path / "scores" / f"{name}.scores.npz").is_file():
            out[name] = run.result(name)
    return out


def render_html(run: Run, *, max_records: int = 20) -> str:
    """The report page of a loaded run, as one HTML string."""
    results = _load_results(run)
    plotted = [results[a["name"]] for a in model_attacks(run.metrics) if a["name"] in results]
    created = run.metrics.get("created") or _dt.datetime.fromtimestamp(
        (run.path / "metrics.json").stat().st_mtime).isoformat(timespec="seconds")
    figures = ""
    if plotted:
        figures = ("<h2>ROC curves (log-log)</h2>"
                   + figure(run.path, "roc_loglog.png", lambda p: plot_roc(plotted, p, log_scale=True),
                             "ROC curves, log-log axes",
                             "Low false-alarm rates (left) are where an attack is a real threat; the dashed "
                             "diagonal is chance.")
                   + "<h2>Score distributions</h2>"
                   + figure(run.path, "score_histograms.png", lambda p: plot_score_histograms(plotted, p),
                             "histograms of attack scores for members and non-members",
                             "The more the two histograms are apart, the better the attack separates members."))
    body = "".join([
        f"<h1>Membership inference audit</h1><p class=\"meta\">{esc(final_name(run.path))} &middot; written {created} "
        f"&middot; report by miaudit {esc(__version__)}</p>",
        _verdict(run.metrics), _summary(run.metrics), _warnings(run.metrics), _audited(run),
        _attack_table(run.metrics), figures,
        _exposed(run.metrics, results, max_records), _one_run_audit(run.metrics), _epsilon_vs_accountant(run.metrics),
        _blind_baseline(run.metrics), _token_views(run.path),
    ])
    return page(f"miaudit report: {final_name(run.path)}", body)


#: marker file -> (what such a folder is, renderer of its page); registered by the kinds that write them
_PAGES: dict[str, tuple[str, Callable[[Path], str]]] = {}


def register_page(marker: str, what: str, render: Callable[[Path], str]) -> None:
    """Let :func:`build_html_report` render folders holding ``marker`` (a file name; ``what`` names such a
    folder in errors, e.g. "a defense comparison") with ``render(folder)``."""
    _PAGES[marker] = (what, render)


def build_html_report(run_dir: str | Path, *, out: str | Path | None = None, max_records: int = 20) -> Path:
    """Write ``report.html`` (or ``out``) for the folder ``run_dir``; return its path.

    The page follows the folder: an audit page for a run folder (``metrics.json``), or the page a
    kind registered for its marker file (a ``miaudit defend`` folder's ``defenses.json``). A folder
    with neither, or one from another format version, is a clear :class:`~miaudit.errors.DataError`.
    The file is written atomically.
    """
    from miaudit.kinds import load_kinds

    folder = Path(run_dir)
    if not folder.is_dir():
        raise DataError(f"run folder {folder} does not exist; pass the --out folder of a finished 'miaudit audit', "
                        "'miaudit demo' or 'miaudit defend' run")
    path = Path(out) if out is not None else folder / REPORT_NAME
    if (folder / "metrics.json").is_file():
        return write_text_atomic(path, render_html(load_run(folder), max_records=max_records))
    load_kinds()
    for marker, (_, render) in _PAGES.items():
        if (folder / marker).is_file():
            return write_text_atomic(path, render(folder))
    others = "".join(f" nor {what} ({marker})" for marker, (what, _) in _PAGES.items())
    raise DataError(f"{folder} is not a miaudit run folder (no metrics.json{others}); pass the --out folder of a "
                    "finished 'miaudit audit', 'miaudit demo' or 'miaudit defend' run")


__all__ = ["REPORT_NAME", "build_html_report", "model_attacks", "register_page", "render_html", "strongest_attack"]
