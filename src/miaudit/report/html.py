"""``report.html``: one self-contained page per run (inline CSS, images as data URIs, no network).

Sections: a plain-language summary, what was audited (model, data sizes, seed, config), the
attacks table with confidence intervals, the log-log ROC and score histograms, the most exposed
records, the empirical epsilon next to the accountant's epsilon where the model was trained with
DP, and, where the run has them, the blind baseline (LLM runs), token heat maps (``token*.html``
files, embedded in sandboxed frames) and a privacy-utility plot (``defenses.json``).

A ``miaudit defend`` folder (``defenses.json``, no ``metrics.json``) gets a defense-comparison page
instead: what was compared and how, a plain-language summary (what the undefended model leaks, what
the most private defense leaks and costs), the privacy-utility plot, a utility / cost table with
accountant and empirical epsilon, a table of attacks per defense, and the log-log ROC curves and
score histograms of each defense's strongest attack. :func:`build_html_report` picks the page.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from miaudit import __version__
from miaudit.errors import DataError
from miaudit.evaluation import AttackResult
from miaudit.report.markdown import MIN_FALSE_POSITIVES, headline_fpr, n_nonmembers, unsupported_fpr_note
from miaudit.report.plots import plot_roc, plot_score_histograms
from miaudit.report.rundir import Run, load_run
from miaudit.runs.gate import is_baseline

REPORT_NAME = "report.html"
_ACCESS = {"label-only": "only the predicted labels",
           "top-k log-probs": "the log-probability of each token (as an API gives it)",
           "probabilities": "the output probabilities",
           "logits": "the raw outputs (logits)", "embeddings": "the embeddings",
           "white-box": "the weights and gradients"}
_REFERENCE = {"none": "no data beyond the records it tests", "population": "data from the same population",
              "shadow": "data to train shadow models", "reference-pool": "data to train reference models",
              "calibration": "a labelled calibration set"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #dde;padding-bottom:.2em}
.meta{color:#667;font-size:.9em}
.summary{background:#eef4ff;border-left:4px solid #3a6fd8;padding:12px 16px;margin:16px 0}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:8px 14px;margin:8px 0}
.alert{background:#fde8e8;border-left:4px solid #c92a2a;padding:8px 14px;margin:8px 0}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}th,td{border:1px solid #dde;padding:4px 8px;text-align:left}
th{background:#f0f2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}pre{background:#f6f7f9;padding:10px;overflow:auto;font-size:.82em}
iframe{width:100%;height:320px;border:1px solid #dde}figure{margin:10px 0}figcaption{color:#667;font-size:.85em}
.wide{overflow-x:auto}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _ci(value: Any, ci: Sequence[float] | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _img(png: bytes, alt: str, caption: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">{cap}</figure>'


def _figure(run_dir: Path, name: str, make: Callable[[Path], Any], alt: str, caption: str) -> str:
    """The run's own PNG ``name`` if present, else one drawn by ``make(path)``."""
    path = run_dir / name
    if path.is_file():
        return _img(path.read_bytes(), alt, caption)
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / name
        make(made)
        return _img(made.read_bytes(), alt, caption)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """HTML table; cells are already escaped / formatted HTML."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _key_values(mapping: dict[str, Any]) -> str:
    rows = [[_e(k.replace("_", " ")), f"{v:.4g}" if isinstance(v, float) else _num(v)]
            for k, v in mapping.items() if not isinstance(v, (dict, list))]
    return _table(["", ""], rows) if rows else "<p>-</p>"


def model_attacks(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Attack entries on the model (blind baselines left out)."""
    return [a for a in metrics.get("attacks", []) if not is_baseline(a)]


def strongest_attack(metrics: dict[str, Any], key: Callable[[dict[str, Any]], float]) -> dict[str, Any] | None:
    attacks = model_attacks(metrics)
    return max(attacks, key=key) if attacks else None


# -- sections -----------------------------------------------------------------------------------

def _summary(metrics: dict[str, Any]) -> str:
    """The headline: the strongest attack's TPR at the lowest evaluated FPR the non-member count supports."""
    lines = []
    attacks = model_attacks(metrics)
    if not attacks:
        return '<div class="summary"><p>This run has no attack results.</p></div>'
    fpr_keys = sorted({k for a in attacks for k in a.get("tpr_at_fpr", {})}, key=float)
    n_non = n_nonmembers({**metrics, "attacks": attacks})
    key, supported = headline_fpr(fpr_keys, n_non)
    if key is not None:
        best = strongest_attack(metrics, lambda a: a.get("tpr_at_fpr", {}).get(key, 0.0))
        fpr, tpr = float(key), float(best["tpr_at_fpr"].get(key, 0.0))
        ci = best.get("tpr_at_fpr_ci", {}).get(key)
        access = _ACCESS.get(best.get("access", ""), "access to the model")
        reference = _REFERENCE.get(best.get("needs_reference", ""), "")
        ratio = f", {tpr / fpr:.1f} times what blind guessing finds" if tpr > 0 else ""
        if not supported:
            note = unsupported_fpr_note(fpr_keys, n_non, key, rate="false alarm rate", errors="false alarms")
            lines.append(f"<p><b>Too few non-members for a reliable headline figure</b>: {_e(note)}.</p>")
        who = f"{'An' if supported else 'an'} attacker who sees {_e(access)}"
        lines.append(
            f"<p>{'' if supported else 'Indicative only: '}"
            f"<b>{who}{' and has ' + _e(reference) if reference else ''} identifies "
            f"{_pct(tpr)} of the {_records(metrics)} at a {_pct(fpr)} false alarm rate</b>"
            + (f" (95% CI {_pct(ci[0])} to {_pct(ci[1])})" if ci else "")
            + f"{ratio}; guessing at random flags {_pct(fpr)} of them. Strongest attack here: "
            f"<code>{_e(best['name'])}</code>.</p>")
        lower = [k for k in fpr_keys if float(k) < fpr]
        if supported and lower:
            lines.append(f"<p>Lower false alarm rates ({', '.join(_pct(float(k)) for k in lower)}) are not quoted "
                         f"here: {n_non} non-members give fewer than {MIN_FALSE_POSITIVES} expected false alarms "
                         "there (see the table).</p>")
    by_auc = strongest_attack(metrics, lambda a: a.get("auc", 0.0))
    if by_auc is not None and "auc" in by_auc:
        lines.append(f"<p>Best AUC: {_ci(by_auc['auc'], by_auc.get('auc_ci'))} (<code>{_e(by_auc['name'])}</code>); "
                     "0.5 means the attacks cannot tell members from non-members, 1.0 means they always can.</p>")
    eps = [a for a in model_attacks(metrics) if (a.get("empirical_epsilon") or {}).get("epsilon") is not None]
    if eps:
        top = max(eps, key=lambda a: a["empirical_epsilon"]["epsilon"])
        e = top["empirical_epsilon"]
        lines.append(f"<p>Empirical privacy: with {e['confidence']:.0%} confidence, the training is <b>not</b> "
                     f"(ε, {e['delta']:g})-differentially private for any ε below {e['epsilon']:.2f} "
                     f"(lower bound from <code>{_e(top['name'])}</code>'s error rates).</p>")
    return '<div class="summary">' + "".join(lines) + "</div>"


def _records(metrics: dict[str, Any]) -> str:
    """What the members of this run are, in the headline's words."""
    return "inserted canaries" if metrics.get("kind") == "dp_canary" else "training records"


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
                   f"<code>{_e(dp.get('defense', '-'))}</code>): the lower bound is compared against nothing.</div>")
    elif one_run["epsilon"] > claimed:
        verdict = ('<div class="alert"><b>DP claim violated.</b> The one-run lower bound '
                   f"ε ≥ {one_run['epsilon']:.3f} exceeds the accountant's ε = {claimed:.3f}: the DP "
                   "implementation or its accounting is broken (or the audit's assumptions were violated). "
                   "Do not trust this run's privacy claim.</div>")
    else:
        verdict = (f"<p>The accountant's ε = {claimed:.3f} (δ = {_e(dp.get('delta', '-'))}) is an upper bound; the "
                   f"one-run lower bound is {one_run['epsilon']:.3f}. Consistent: the bound does not exceed the "
                   "claim.</p>")
    return ("<h2>One-run canary audit (Steinke, Nasr &amp; Jagielski 2023)</h2>"
            f"<p>{canaries['n']} {_e(canaries['kind'])} canaries, each inserted into the single training run "
            f"independently with probability 1/2 ({canaries['n_inserted']} inserted). Each canary is scored by "
            f"<code>{_e(one_run.get('attack', '-'))}</code> ({_e(one_run.get('score', '-'))}); the auditor guesses "
            "\"inserted\" for the k+ highest scores and \"left out\" for the k− lowest, and the number of correct "
            f"guesses gives a lower bound on ε at δ = {one_run['delta']:g} with {one_run['confidence']:.0%} "
            "confidence. Only the row with k fixed in the config is a valid bound; the oracle rows chose k on these "
            "scores.</p>"
            + _table(["guesses", "k+", "k−", "correct", "ε lower bound"], rows) + verdict
            + "<p>A lower bound never proves privacy: with about a thousand canaries and a black-box score it lies "
              "far below the accountant's ε even for a correct DP-SGD (so are the paper's black-box audits).</p>")


def _audited(run: Run) -> str:
    m = run.metrics
    parts = [f"<p>Kind: <b>{_e(m.get('kind', '-'))}</b> &middot; seed: <b>{_e(m.get('seed', '-'))}</b></p>"]
    if m.get("target"):
        parts.append("<h3>Model</h3>" + _key_values(m["target"]))
    if m.get("data"):
        parts.append("<h3>Data</h3>" + _key_values(m["data"]))
    if run.config:
        parts.append("<details><summary>Full configuration (config.yaml)</summary><pre>"
                     + _e(yaml.safe_dump(run.config, sort_keys=False)) + "</pre></details>")
    return "<h2>What was audited</h2>" + "".join(parts)


def _attack_table(metrics: dict[str, Any]) -> str:
    attacks = sorted(model_attacks(metrics), key=lambda a: -a.get("auc", 0.0))
    if not attacks:
        return ""
    keys = sorted({k for a in attacks for k in a.get("tpr_at_fpr", {})}, key=float)
    conf = attacks[0].get("confidence_level", 0.95)
    head = (["attack", "access", f"AUC [{conf:.0%} CI]"] + [f"TPR @ {float(k):.3g} FPR" for k in keys]
            + ["advantage", "balanced acc. (threshold)", "empirical ε (lower bound)"])
    rows = []
    for a in attacks:
        eps = (a.get("empirical_epsilon") or {}).get("epsilon")
        rows.append([f"<code>{_e(a['name'])}</code>", _e(a.get("access", "-")), _ci(a.get("auc"), a.get("auc_ci"))]
                    + [_ci(a.get("tpr_at_fpr", {}).get(k), a.get("tpr_at_fpr_ci", {}).get(k)) for k in keys]
                    + [_ci(a.get("advantage"), a.get("advantage_ci")),
                       f"{_num(a.get('balanced_accuracy'))} ({_e(a.get('threshold_source', '-'))})", _num(eps, 2)])
    warnings = sorted({w for a in attacks for w in a.get("warnings", [])})
    notes = "".join(f'<div class="warn">{_e(w)}</div>' for w in warnings)
    return (f"<h2>Attacks</h2><p>Sorted by AUC. Intervals: {conf:.0%} bootstrap confidence intervals, members "
            "and non-members resampled separately. \"oracle\" thresholds were chosen on the evaluation labels.</p>"
            + _table(head, rows, numeric_from=2) + notes)


def _exposed(metrics: dict[str, Any], results: dict[str, AttackResult], n: int) -> str:
    scored = [a for a in model_attacks(metrics) if a["name"] in results]
    if not scored:
        return ""
    best = max(scored, key=lambda a: a.get("auc", 0.0))
    r = results[best["name"]]
    labels, scores = np.asarray(r.labels).astype(bool), np.asarray(r.scores, float)
    order = np.argsort(-scores, kind="mergesort")[:n]
    non = np.sort(scores[~labels])
    rows = []
    for rank, i in enumerate(order, 1):
        flagged_fpr = (non.size - np.searchsorted(non, scores[i], side="left")) / max(non.size, 1)
        rows.append([str(rank), _e(r.ids[i]), f"{scores[i]:.4g}", "member" if labels[i] else "non-member",
                     _pct(flagged_fpr)])
    return (f"<h2>Most exposed records</h2><p>The {len(order)} records that <code>{_e(best['name'])}</code> (highest "
            "AUC) scores as most likely members. \"Flagged at FPR\": the share of non-members scoring at least as "
            "high, i.e. the false alarm rate at which an attacker would flag this record.</p>"
            + _table(["rank", "id", "score", "truth", "flagged at FPR"], rows, numeric_from=2))


def _epsilon_vs_accountant(metrics: dict[str, Any]) -> str:
    accountant = metrics.get("dp") or {k: metrics.get("target", {}).get(k) for k in ("epsilon", "delta")
                                      if metrics.get("target", {}).get(k) is not None}
    eps = [(a["name"], a["empirical_epsilon"]) for a in model_attacks(metrics)
           if (a.get("empirical_epsilon") or {}).get("epsilon") is not None]
    one_run = metrics.get("one_run_audit")
    if not (eps or one_run):
        return ""
    corrections = {"none": "max over thresholds, per-threshold confidence", "bonferroni": "Bonferroni over thresholds"}
    rows = [[f"<code>{_e(name)}</code>", f"{e['epsilon']:.3f}", f"{e['delta']:g}", f"{e['confidence']:.0%}",
             _e(corrections.get(e.get("correction"), e.get("correction", "-")))] for name, e in eps]
    if one_run:
        rows.append(["one-run canary audit (Steinke et al. 2023)", f"{one_run['epsilon']:.3f}",
                     f"{one_run['delta']:g}", f"{one_run['confidence']:.0%}",
                     f"{one_run.get('correct', '-')} of {one_run.get('guesses', '-')} guesses correct"])
    out = ["<h2>Empirical privacy (epsilon lower bounds)</h2>",
           "<p>Lower bounds: with the stated confidence, the training algorithm is not (ε, δ)-DP for any smaller "
           "ε. They come from the attacks' error rates (Clopper-Pearson) and are far below the true ε when the "
           "attack is weak; they never prove privacy.</p>",
           _table(["from", "ε lower bound", "δ", "confidence", "notes"], rows, numeric_from=1)]
    if accountant.get("epsilon") is not None:
        claimed = float(accountant["epsilon"])
        best = max([e["epsilon"] for _, e in eps] + ([one_run["epsilon"]] if one_run else []))
        out.append(f"<p>The DP accountant reports ε = {claimed:.3f} (δ = {_e(accountant.get('delta', '-'))}), an "
                   f"upper bound; the audit's best lower bound is {best:.3f}.</p>")
        if best > claimed:
            out.append('<div class="alert">The empirical lower bound exceeds the accountant\'s epsilon: the DP '
                       "claim does not hold for this training run (or the audit's assumptions are violated).</div>")
    return "".join(out)


def _blind_baseline(metrics: dict[str, Any]) -> str:
    entries = [a for a in metrics.get("attacks", []) if is_baseline(a)]
    if isinstance(metrics.get("blind_baseline"), dict):
        entries.append({"name": "blind_baseline", **metrics["blind_baseline"]})
    if not entries:
        return ""
    rows = [[f"<code>{_e(b['name'])}</code>", _ci(b.get("auc"), b.get("auc_ci"))]
            + [_ci(b.get("tpr_at_fpr", {}).get(k), b.get("tpr_at_fpr_ci", {}).get(k))
               for k in sorted(b.get("tpr_at_fpr", {}), key=float)] for b in entries]
    keys = sorted(entries[0].get("tpr_at_fpr", {}), key=float)
    best = strongest_attack(metrics, lambda a: a.get("auc", 0.0))
    verdict = ""
    if best is not None and entries[0].get("auc") is not None:
        if entries[0]["auc"] >= best.get("auc", 0.0):
            verdict = ('<div class="alert">The blind baseline, which never queries the model, does as well as the '
                       "best attack: members and non-members differ in distribution, so the attack results do not "
                       "measure memorisation.</div>")
    return ("<h2>Blind baseline</h2><p>A classifier that sees only the text (no model), cross-validated. If it "
            "separates members from non-members, the benchmark is biased (Das et al. 2024; Duan et al. 2024).</p>"
            + _table(["baseline", "AUC"] + [f"TPR @ {float(k):.3g} FPR" for k in keys], rows) + verdict)


def _token_views(run_dir: Path) -> str:
    files = sorted(run_dir.glob("token*.html")) + sorted((run_dir / "tokens").glob("*.html"))
    if not files:
        return ""
    frames = [f'<h3>{_e(f.name)}</h3><iframe sandbox="" title="{_e(f.name)}" srcdoc="'
              f'{html.escape(f.read_text(encoding="utf-8", errors="replace"), quote=True)}"></iframe>' for f in files]
    return ("<h2>Token heat maps</h2><p>Per-token membership evidence written by the LLM audit (colours and "
            "legend as in each token view); it shows which passages look memorised.</p>" + "".join(frames))


def _defense_entries(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "defenses.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data.get("defenses", []) if isinstance(data, dict) else data
    return [e for e in entries if isinstance(e, dict)]


def _defense_point(entry: dict[str, Any]) -> tuple[str, float | None, float | None, float | None]:
    """(name, test accuracy, strongest TPR@1%FPR, epsilon) of one defenses.json entry."""
    name = str(entry.get("label") or entry.get("name") or entry.get("defense") or "?")
    acc = entry.get("test_accuracy", (entry.get("target") or {}).get("test_accuracy"))
    tprs = [a.get("tpr_at_fpr", {}).get("0.01") for a in entry.get("attacks", []) if isinstance(a, dict)]
    tprs = [t for t in tprs if t is not None]
    return name, acc, (max(tprs) if tprs else None), entry.get("epsilon")


def _privacy_utility(run_dir: Path, *, table: bool = True) -> str:
    """The privacy-utility plot of ``run_dir/defenses.json`` (its ``privacy_utility.png``, else drawn),
    with a small table of the plotted points unless ``table`` is False."""
    points = [_defense_point(e) for e in _defense_entries(run_dir)]
    if not points:
        return ""
    rows = [[_e(n), _num(a), _num(t), _num(e, 2)] for n, a, t, e in points]
    plottable = [(n, a, t) for n, a, t, _ in points if a is not None and t is not None]

    def draw(path: Path) -> None:  # same axes as miaudit.defenses.compare.plot_privacy_utility
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name, acc, tpr in plottable:
            ax.scatter(tpr, acc, s=40)
            ax.annotate(name, (tpr, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.axvline(0.01, color="grey", ls="--", lw=1, label="chance (TPR = FPR = 1%)")
        ax.set_xlabel("strongest attack's TPR at 1% FPR (higher = leaks more)")
        ax.set_ylabel("test accuracy")
        ax.set_title("Privacy-utility trade-off")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    figure = _figure(run_dir, "privacy_utility.png", draw, "privacy-utility plot",
                     "Each point is one defense: higher is more useful, further left leaks less; the dashed line "
                     "is chance.") if plottable else ""
    listed = _table(["defense", "test accuracy", "strongest TPR @ 1% FPR", "ε (accountant)"], rows) if table else ""
    return "<h2>Defenses: privacy vs utility</h2>" + figure + listed


# -- the defense-comparison page (miaudit defend) -----------------------------------------------

DEFENSES_FILE = "defenses.json"
_DEFENSES_VERSION = 1  # the "version" miaudit.defenses.compare writes


def load_defense_comparison(folder: str | Path) -> dict[str, Any]:
    """``defenses.json`` of a ``miaudit defend`` output folder; a clear :class:`DataError` if it is not one."""
    path = Path(folder) / DEFENSES_FILE
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}); re-run miaudit defend") from None
    if not (isinstance(result, dict) and result.get("kind") == "defenses" and isinstance(result.get("defenses"), list)
            and all(isinstance(r, dict) and "label" in r for r in result["defenses"])):
        raise DataError(f"{path} is not a defense comparison written by miaudit defend (no 'kind: defenses' with "
                        "labelled rows); pass the --out folder of a finished 'miaudit defend' run")
    if result.get("version") != _DEFENSES_VERSION:
        raise DataError(f"{path} was written in format version {result.get('version')!r}, this miaudit reads version "
                        f"{_DEFENSES_VERSION}; re-run miaudit defend with this version")
    return result


def _scored(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in row.get("attacks", []) if "auc" in a]


def _row_strongest(row: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The row's attack with the highest TPR at FPR ``key`` (ties: AUC), as ``defenses.md`` and the plot pick it."""
    from miaudit.defenses.compare import strongest_attack

    return strongest_attack(row, key)


def _tpr(attack: dict[str, Any] | None, key: str) -> float | None:
    return None if attack is None else attack.get("tpr_at_fpr", {}).get(key)


def _best_empirical(row: dict[str, Any]) -> tuple[str, float] | None:
    """(attack, epsilon) of the row's largest empirical epsilon lower bound, if any attack has one."""
    bounds = [(a["name"], a["empirical_epsilon"]["epsilon"]) for a in _scored(row)
              if (a.get("empirical_epsilon") or {}).get("epsilon") is not None]
    return max(bounds, key=lambda b: b[1]) if bounds else None


def _headline(result: dict[str, Any]) -> tuple[list[str], str | None, bool]:
    """(evaluated FPR keys, the FPR the headline quotes, whether the non-member count supports it)."""
    keys = sorted({k for r in result["defenses"] for a in _scored(r) for k in a.get("tpr_at_fpr", {})}, key=float)
    key, supported = headline_fpr(keys, result.get("data", {}).get("n_nonmembers"))
    return keys, key, supported


def _risk(attack: dict[str, Any], key: str, records: str) -> str:
    """``(<code>rmia</code>) finds <b>50.3%</b> of {records} at a 1.0% false alarm rate (95% CI ...)``."""
    ci = attack.get("tpr_at_fpr_ci", {}).get(key)
    return (f"(<code>{_e(attack['name'])}</code>) finds <b>{_pct(attack['tpr_at_fpr'][key])}</b> of {records} at a "
            f"{_pct(float(key))} false alarm rate" + (f" (95% CI {_pct(ci[0])} to {_pct(ci[1])})" if ci else ""))


def _defense_summary(result: dict[str, Any]) -> str:
    """Plain language: what the undefended model leaks, what the most private defense leaks and costs."""
    keys, key, supported = _headline(result)
    if key is None:
        return '<div class="summary"><p>No attack produced a result in this comparison.</p></div>'
    n_non = result.get("data", {}).get("n_nonmembers")
    lines = []
    if not supported:
        note = unsupported_fpr_note(keys, n_non, key, rate="false alarm rate", errors="false alarms")
        lines.append(f"<p><b>Too few non-members for reliable figures</b>: {_e(note)}. Indicative only:</p>")
    points = [(r, s) for r in result["defenses"]
              if (s := _row_strongest(r, key)) is not None and key in s["tpr_at_fpr"]]
    base = next(((r, s) for r, s in points if not r.get("components")), None)
    defended = [(r, s) for r, s in points if r.get("components")]
    if base is not None:
        acc = base[0]["target"]["test_accuracy"]
        lines.append(f"<p>Without a defense, the strongest attack {_risk(base[1], key, 'the training records')}; "
                     f"guessing at random flags {_pct(float(key))} of them. The model's test accuracy is "
                     f"{_pct(acc)}.</p>")
    if defended:
        row, attack = min(defended, key=lambda p: (p[1]["tpr_at_fpr"][key], -p[0]["target"]["test_accuracy"]))
        acc = row["target"]["test_accuracy"]
        dp = (f", with a DP guarantee of ε = {row['epsilon']:.2f} (δ = {row['delta']:g})"
              if row.get("epsilon") is not None else "")
        text = (f"<p>With <b>{_e(row['label'])}</b>, the defense against which the strongest attack finds the fewest, "
                f"that attack {_risk(attack, key, 'them')}{dp}")
        if base is not None:
            before = base[0]["target"]["test_accuracy"]
            drop = round(100 * (before - acc), 1)
            change = f"({_pct(before)} → {_pct(acc)})"
            text += (f", at a cost of {drop:.1f} points of test accuracy {change}." if drop > 0
                     else f", and test accuracy rises by {-drop:.1f} points {change}." if drop < 0
                     else f", at the same test accuracy ({_pct(acc)}).")
            b_ci, d_ci = base[1].get("tpr_at_fpr_ci", {}).get(key), attack.get("tpr_at_fpr_ci", {}).get(key)
            if attack["tpr_at_fpr"][key] >= base[1]["tpr_at_fpr"][key]:
                text += " No defense here lowers the strongest attack's success at this false alarm rate."
            elif b_ci and d_ci and d_ci[1] >= b_ci[0]:
                text += (" The two confidence intervals overlap, so this run does not establish that the defense "
                         "lowers the risk; audit more records to tell.")
        else:
            text += (f"; test accuracy {_pct(acc)}. The comparison has no undefended row (<code>name: none</code>) "
                     "to measure the gain and the cost against.")
        lines.append(text + "</p>")
    lines.append("<p>Attacks are adaptive: shadow and reference models are trained with the same defense. An attack "
                 "that cannot use a defended model's outputs (e.g. <code>loss</code> behind <code>label_only</code>) "
                 "is not counted for that defense.</p>")
    return '<div class="summary">' + "".join(lines) + "</div>"


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return _e(json.dumps(value))
    return _num(value)


def _compared(result: dict[str, Any], folder: Path) -> str:
    """What was compared and how: data, recipe, attack models, evaluation, each defense's components."""
    data, cfg, ev = result.get("data", {}), result.get("config", {}), result.get("evaluation", {})
    training = cfg.get("training", {})
    data_rows = [[_e(k.replace("_", " ")), _setting(data[k])] for k in
                 ("dataset", "n_examples", "n_classes", "n_members", "n_nonmembers", "n_shadow", "n_population",
                  "n_reference") if k in data]
    recipe = [[_e(k.replace("_", " ")), _setting(v)] for k, v in training.items() if v not in ({}, None)]
    how = (f"<p>Seed <b>{_e(result.get('seed', '-'))}</b>; {_e(cfg.get('shadow', {}).get('n_models', 0))} shadow "
           f"models and {_e(cfg.get('reference', {}).get('n_models', 0))} reference models per defense, trained with "
           f"that defense; {ev.get('confidence', 0.95):.0%} confidence intervals from {_e(ev.get('n_bootstrap', '-'))} "
           "bootstrap resamples (members and non-members resampled separately); TPR evaluated at FPR "
           f"{', '.join(_pct(f) for f in ev.get('fprs', []))}; {_e(result.get('seconds', '-'))} s in total.</p>")
    defenses = []
    for row in result["defenses"]:
        parts = [f"<code>{_e(c['name'])}</code> ({_e(c.get('kind', '-'))}"
                 + (f"; {_e(', '.join(f'{k}={v}' for k, v in c['params'].items()))}" if c.get("params") else "") + ")"
                 for c in row.get("components") or []] or ["no defense"]
        cites = "; ".join(_e(c["citation"]) for c in row.get("components") or [] if c.get("citation")) or "-"
        overrides = ", ".join(f"{k}={v}" for k, v in (row.get("training_overrides") or {}).items()) or "-"
        defenses.append([_e(row["label"]), " + ".join(parts), _e(overrides), cites])
    config = folder / "config.yaml"
    text = config.read_text(encoding="utf-8") if config.is_file() else yaml.safe_dump(cfg, sort_keys=False)
    return ("<h2>What was compared and how</h2>" + how
            + "<h3>Data</h3>" + _table(["", ""], data_rows)
            + "<h3>Model and training recipe (every defense, every model)</h3>" + _table(["", ""], recipe)
            + "<h3>Defenses</h3>" + _table(["row", "defenses", "training overrides", "citation"], defenses,
                                           numeric_from=9)
            + "<details><summary>Full configuration (config.yaml)</summary><pre>" + _e(text) + "</pre></details>")


def _utility_cost(result: dict[str, Any]) -> str:
    """One row per defense: utility, accountant and empirical epsilon, costs, strongest attack."""
    _, key, _ = _headline(result)
    base = next((r for r in result["defenses"] if not r.get("components")), None)
    rows, alerts = [], []
    for row in result["defenses"]:
        t = row["target"]
        delta_acc = ("-" if base is None else "(reference)" if row is base
                     else f"{100 * (t['test_accuracy'] - base['target']['test_accuracy']):+.1f}")
        accountant = f"{row['epsilon']:.2f} (δ {row['delta']:g})" if row.get("epsilon") is not None else "-"
        empirical = _best_empirical(row)
        strongest = _row_strongest(row, key) if key else None
        rows.append([
            _e(row["label"]), _num(t.get("test_accuracy"), 4), delta_acc, accountant,
            f"{empirical[1]:.2f} (<code>{_e(empirical[0])}</code>)" if empirical else "-",
            f"{t.get('train_seconds', 0):.1f}" + (" (shared)" if t.get("shared_training") else ""),
            _num(t.get("peak_memory_mb"), 0), _num(t.get("postprocess_seconds"), 3),
            _num(t.get("seconds_all_models"), 1),
            (f"<code>{_e(strongest['name'])}</code> " + _ci(_tpr(strongest, key), strongest["tpr_at_fpr_ci"].get(key))
             if strongest and key in strongest["tpr_at_fpr"] else "-"),
            _ci(strongest["auc"], strongest.get("auc_ci")) if strongest else "-"])
        if empirical and row.get("epsilon") is not None and empirical[1] > row["epsilon"]:
            alerts.append(f'<div class="alert"><b>{_e(row["label"])}: DP claim contradicted.</b> The empirical lower '
                          f"bound ε ≥ {empirical[1]:.2f} exceeds the accountant's ε = {row['epsilon']:.2f}.</div>")
    head = ["defense", "test accuracy", "Δ test acc. (points)", "ε (accountant)",
            "empirical ε (lower bound)", "train time (s)", "peak memory (MB)", "post-processing (s)",
            "all models (s)", f"strongest attack: TPR @ {_pct(float(key)) if key else '-'} FPR", "its AUC"]
    return ("<h2>Utility and cost</h2><p>Test accuracy is measured on the audited non-members; Δ is against the "
            "undefended row. Train time and peak memory are the target's (\"shared\": the models of a defense with "
            "the same training, e.g. an output defense, are reused); \"all models\" includes shadow and reference "
            "models. The empirical ε is the largest Clopper-Pearson lower bound over the row's attacks; it never "
            "proves privacy.</p>" + f'<div class="wide">{_table(head, rows)}</div>' + "".join(alerts))


def _defense_attacks(result: dict[str, Any]) -> str:
    """A table per defense: every attack's AUC, TPR at each FPR, advantage (CIs), empirical epsilon."""
    keys, _, _ = _headline(result)
    conf = result.get("evaluation", {}).get("confidence", 0.95)
    head = (["attack", "access", f"AUC [{conf:.0%} CI]"] + [f"TPR @ {float(k):.3g} FPR" for k in keys]
            + ["advantage", "threshold source", "empirical ε"])
    parts = []
    for row in result["defenses"]:
        rows = []
        for a in row.get("attacks", []):
            if "auc" not in a:
                why = a.get("reason") or f"failed: {a.get('error', 'no result')}"
                rows.append([f"<code>{_e(a['name'])}</code>", f"n/a: {_e(why)}"] + ["-"] * (len(head) - 2))
                continue
            eps = (a.get("empirical_epsilon") or {}).get("epsilon")
            rows.append([f"<code>{_e(a['name'])}</code>", _e(a.get("access", "-")), _ci(a["auc"], a.get("auc_ci"))]
                        + [_ci(a["tpr_at_fpr"].get(k), a.get("tpr_at_fpr_ci", {}).get(k)) for k in keys]
                        + [_ci(a.get("advantage"), a.get("advantage_ci")), _e(a.get("threshold_source", "-")),
                           _num(eps, 2)])
        t = row["target"]
        eps = (f"; accountant ε = {row['epsilon']:.2f} (δ = {row['delta']:g})" if row.get("epsilon") is not None
               else "")
        notes = "".join(f'<p class="meta">Note: {_e(n)}</p>' for n in row.get("notes") or [])
        parts.append(f"<h3>{_e(row['label'])}</h3><p>Test accuracy {_pct(t['test_accuracy'])}, train accuracy "
                     f"{_pct(t['train_accuracy'])}{eps}.</p>" + _table(head, rows, numeric_from=2) + notes)
    attack_notes = sorted({f"{a['name']}: {a['note']}" for r in result["defenses"] for a in r.get("attacks", [])
                           if a.get("note")})
    warnings = sorted({w for r in result["defenses"] for a in r.get("attacks", []) for w in a.get("warnings", [])})
    return ("<h2>Attacks per defense</h2><p>Intervals: bootstrap confidence intervals. \"oracle\" thresholds were "
            "chosen on the evaluation labels. Empirical ε: Clopper-Pearson lower bound from the attack's error "
            "rates.</p>" + "".join(parts)
            + "".join(f"<p><i>{_e(n)}</i></p>" for n in attack_notes)
            + "".join(f'<div class="warn">{_e(w)}</div>' for w in warnings))


def _defense_curves(result: dict[str, Any], folder: Path) -> str:
    """Log-log ROC and score histograms of each defense's strongest attack, from ``scores/<defense>/``."""
    _, key, _ = _headline(result)
    curves = []
    for row in result["defenses"]:
        strongest = _row_strongest(row, key) if key else None
        scores = folder / "scores" / row["label"]
        if strongest is None or not (scores / f"{strongest['name']}.scores.npz").is_file():
            continue
        res = AttackResult.load(scores, strongest["name"])
        curves.append(dataclasses.replace(res, name=f"{row['label']}: {strongest['name']}"))
    if not curves:
        return ""
    return ("<h2>ROC curves of each defense's strongest attack (log-log)</h2>"
            + _figure(folder, "roc_defenses_loglog.png",
                      lambda p: plot_roc(curves, p, log_scale=True, title="Strongest attack per defense, log-log"),
                      "ROC curves of the strongest attack per defense, log-log axes",
                      f"One curve per defense (its strongest attack at {_pct(float(key))} FPR). Low false-alarm rates "
                      "(left) are where an attack is a real threat; the dashed diagonal is chance.")
            + "<h2>Score distributions</h2>"
            + _figure(folder, "score_histograms_defenses.png", lambda p: plot_score_histograms(curves, p),
                      "histograms of the strongest attack's scores per defense, members and non-members",
                      "The more the two histograms are apart, the better the attack separates members."))


def render_defense_html(folder: str | Path, result: dict[str, Any] | None = None) -> str:
    """The report page of a ``miaudit defend`` output folder, as one HTML string."""
    folder = Path(folder)
    result = result if result is not None else load_defense_comparison(folder)
    dataset = result.get("data", {}).get("dataset", "?")
    model = result.get("config", {}).get("training", {}).get("model", "?")
    body = "".join([
        f"<h1>Defense comparison: {_e(dataset)}, {_e(model)}</h1><p class=\"meta\">{_e(folder.name)} &middot; written "
        f"{_e(result.get('created', '-'))} by miaudit {_e(result.get('miaudit_version', '-'))} &middot; report by "
        f"miaudit {_e(__version__)}</p>",
        _defense_summary(result), _compared(result, folder), _privacy_utility(folder, table=False),
        _utility_cost(result), _defense_attacks(result), _defense_curves(result, folder),
    ])
    return _page(f"miaudit defenses: {folder.name}", body)


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
                   + _figure(run.path, "roc_loglog.png", lambda p: plot_roc(plotted, p, log_scale=True),
                             "ROC curves, log-log axes",
                             "Low false-alarm rates (left) are where an attack is a real threat; the dashed "
                             "diagonal is chance.")
                   + "<h2>Score distributions</h2>"
                   + _figure(run.path, "score_histograms.png", lambda p: plot_score_histograms(plotted, p),
                             "histograms of attack scores for members and non-members",
                             "The more the two histograms are apart, the better the attack separates members."))
    body = "".join([
        f"<h1>Membership inference audit</h1><p class=\"meta\">{_e(run.path.name)} &middot; written {created} "
        f"&middot; report by miaudit {_e(__version__)}</p>",
        _summary(run.metrics), _audited(run), _attack_table(run.metrics), figures,
        _exposed(run.metrics, results, max_records), _one_run_audit(run.metrics), _epsilon_vs_accountant(run.metrics),
        _blind_baseline(run.metrics), _token_views(run.path), _privacy_utility(run.path),
    ])
    return _page(f"miaudit report: {run.path.name}", body)


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main></body></html>")


def build_html_report(run_dir: str | Path, *, out: str | Path | None = None, max_records: int = 20) -> Path:
    """Write ``report.html`` (or ``out``) for the folder ``run_dir``; return its path.

    The page follows the folder: an audit page for a run folder (``metrics.json``, from ``miaudit
    audit`` / ``demo``), a defense-comparison page for a ``miaudit defend`` folder
    (``defenses.json``). A folder with neither, or one from another format version, is a clear
    :class:`~miaudit.errors.DataError`. The file is written atomically.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise DataError(f"run folder {folder} does not exist; pass the --out folder of a finished 'miaudit audit', "
                        "'miaudit demo' or 'miaudit defend' run")
    path = Path(out) if out is not None else folder / REPORT_NAME
    if (folder / "metrics.json").is_file():
        text = render_html(load_run(folder), max_records=max_records)
    elif (folder / DEFENSES_FILE).is_file():
        text = render_defense_html(folder)
    else:
        raise DataError(f"{folder} is not a miaudit run folder (no metrics.json) nor a defense comparison (no "
                        f"{DEFENSES_FILE}); pass the --out folder of a finished 'miaudit audit', 'miaudit demo' or "
                        "'miaudit defend' run")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["DEFENSES_FILE", "REPORT_NAME", "build_html_report", "load_defense_comparison", "model_attacks",
           "render_defense_html", "render_html", "strongest_attack"]
