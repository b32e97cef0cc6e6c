"""``report.html``: one self-contained page per run (inline CSS, images as data URIs, no network).

Sections: a plain-language summary, what was audited (model, data sizes, seed, config), the
attacks table with confidence intervals, the log-log ROC and score histograms, the most exposed
records, the empirical epsilon next to the accountant's epsilon where the model was trained with
DP, and, where the run has them, the blind baseline (LLM runs), token heat maps (``token*.html``
files, embedded in sandboxed frames) and the privacy-utility plot of a defense run
(``defenses.json``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from miaudit import __version__
from miaudit.evaluation import AttackResult
from miaudit.gate import is_baseline
from miaudit.report.markdown import MIN_FALSE_POSITIVES, headline_fpr, n_nonmembers, unsupported_fpr_note
from miaudit.report.plots import plot_roc, plot_score_histograms
from miaudit.report.rundir import Run, load_run

REPORT_NAME = "report.html"
_ACCESS = {"label-only": "only the predicted labels", "probabilities": "the output probabilities",
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
    name = str(entry.get("name") or entry.get("defense") or "?")
    acc = entry.get("test_accuracy", (entry.get("target") or {}).get("test_accuracy"))
    tprs = [a.get("tpr_at_fpr", {}).get("0.01") for a in entry.get("attacks", []) if isinstance(a, dict)]
    tprs = [t for t in tprs if t is not None]
    return name, acc, (max(tprs) if tprs else None), entry.get("epsilon")


def _privacy_utility(run_dir: Path) -> str:
    points = [_defense_point(e) for e in _defense_entries(run_dir)]
    if not points:
        return ""
    rows = [[_e(n), _num(a), _num(t), _num(e, 2)] for n, a, t, e in points]
    plottable = [(n, a, t) for n, a, t, _ in points if a is not None and t is not None]

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name, acc, tpr in plottable:
            ax.scatter(acc, tpr, s=40)
            ax.annotate(name, (acc, tpr), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.axhline(0.01, color="k", ls="--", lw=0.8, label="chance (TPR = FPR = 1%)")
        ax.set_xlabel("test accuracy (utility)")
        ax.set_ylabel("strongest attack's TPR at 1% FPR (privacy risk)")
        ax.set_title("Privacy-utility trade-off")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    figure = _figure(run_dir, "privacy_utility.png", draw, "privacy-utility plot",
                     "Each point is one defense: right is more useful, lower is more private.") if plottable else ""
    return ("<h2>Defenses: privacy vs utility</h2>" + figure
            + _table(["defense", "test accuracy", "strongest TPR @ 1% FPR", "ε (accountant)"], rows))


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
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>miaudit report: {_e(run.path.name)}</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main></body></html>")


def build_html_report(run_dir: str | Path, *, out: str | Path | None = None, max_records: int = 20) -> Path:
    """Write ``report.html`` (or ``out``) for the run in ``run_dir``; return its path.

    A run folder from another format version, or without ``metrics.json``, is a clear
    :class:`~miaudit.errors.DataError`. The file is written atomically.
    """
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / REPORT_NAME
    text = render_html(run, max_records=max_records)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["REPORT_NAME", "build_html_report", "model_attacks", "render_html", "strongest_attack"]
