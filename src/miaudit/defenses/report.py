"""The report page of a ``miaudit defend`` folder (``report.html`` beside ``defenses.json``).

What was compared and how, a plain-language summary (what the undefended model leaks, what the most
private defense leaks and costs), the privacy-utility plot, a utility / cost table with accountant
and empirical epsilon, a table of attacks per defense, and the log-log ROC curves and score
histograms of each defense's strongest attack (chosen by the one rule of
:func:`miaudit.evaluation.run_result.strongest`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from miaudit import __version__
from miaudit.errors import DataError
from miaudit.evaluation import AttackResult
from miaudit.evaluation.run_result import strongest
from miaudit.evaluation.verdict import defense_verdict
from miaudit.report.headline import tpr_degenerate
from miaudit.report.html import register_page
from miaudit.report.markdown import headline_fpr, unsupported_fpr_note
from miaudit.report.page import esc, figure, num, page, pct, table, with_ci
from miaudit.report.plots import plot_roc, plot_score_histograms
from miaudit.utils.atomic import final_name


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


def _privacy_utility(run_dir: Path) -> str:
    """The privacy-utility plot of ``run_dir/defenses.json`` (its ``privacy_utility.png``, else drawn); the
    points' values are in the utility and cost table."""
    points = [_defense_point(e) for e in _defense_entries(run_dir)]
    if not points:
        return ""
    plottable = [(n, a, t) for n, a, t, _ in points if a is not None and t is not None]

    def draw(path: Path) -> None:  # same axes as plot_privacy_utility
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

    plot = figure(run_dir, "privacy_utility.png", draw, "privacy-utility plot",
                     "Each point is one defense: higher is more useful, further left leaks less; the dashed line "
                     "is chance.") if plottable else ""
    return "<h2>Defenses: privacy vs utility</h2>" + plot


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
    """The row's strongest attack at FPR ``key`` by the one rule of :mod:`miaudit.evaluation.run_result`."""
    best = strongest(row.get("attacks", []), f"tpr@{key}")
    return best.fields if best is not None else None


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
    """``(<code>rmia</code>) finds <b>50.3%</b> of {records} at a 1.0% false alarm rate (95% CI ...)``, or, when that
    figure is not shown to beat random guessing (:func:`~miaudit.report.headline.tpr_degenerate`), says so."""
    ci = attack.get("tpr_at_fpr_ci", {}).get(key)
    interval = f"95% CI {pct(ci[0])} to {pct(ci[1])}" if ci else ""
    name, tpr, fpr = f"(<code>{esc(attack['name'])}</code>)", pct(attack["tpr_at_fpr"][key]), pct(float(key))
    if tpr_degenerate(attack, key):
        return (f"{name} is not shown to find more of {records} than random guessing at a {fpr} false alarm rate "
                f"(it finds {tpr}{f', {interval}' if interval else ''})")
    return f"{name} finds <b>{tpr}</b> of {records} at a {fpr} false alarm rate" + (f" ({interval})" if ci else "")


def _defense_summary(result: dict[str, Any]) -> str:
    """Plain language: what the undefended model leaks, what the most private defense leaks and costs."""
    keys, key, supported = _headline(result)
    if key is None:
        return '<div class="summary"><p>No attack produced a result in this comparison.</p></div>'
    n_non = result.get("data", {}).get("n_nonmembers")
    lines = []
    if not supported:
        note = unsupported_fpr_note(keys, n_non, key, rate="false alarm rate", errors="false alarms")
        lines.append(f"<p><b>Too few non-members for reliable figures</b>: {esc(note)}. Indicative only:</p>")
    points = [(r, s) for r in result["defenses"]
              if (s := _row_strongest(r, key)) is not None and key in s["tpr_at_fpr"]]
    base = next(((r, s) for r, s in points if not r.get("components")), None)
    defended = [(r, s) for r, s in points if r.get("components")]
    if base is not None:
        acc = base[0]["target"]["test_accuracy"]
        lines.append(f"<p>Without a defense, the strongest attack {_risk(base[1], key, 'the training records')}; "
                     f"guessing at random flags {pct(float(key))} of them. The model's test accuracy is "
                     f"{pct(acc)}.</p>")
    if defended:
        row, attack = min(defended, key=lambda p: (p[1]["tpr_at_fpr"][key], -p[0]["target"]["test_accuracy"]))
        acc = row["target"]["test_accuracy"]
        dp = (f", with a DP guarantee of ε = {row['epsilon']:.2f} (δ = {row['delta']:g})"
              if row.get("epsilon") is not None else "")
        text = (f"<p>With <b>{esc(row['label'])}</b>, the defense against which the strongest attack finds the fewest, "
                f"that attack {_risk(attack, key, 'them')}{dp}")
        if base is not None:
            before = base[0]["target"]["test_accuracy"]
            drop = round(100 * (before - acc), 1)
            change = f"({pct(before)} → {pct(acc)})"
            text += (f", at a cost of {drop:.1f} points of test accuracy {change}." if drop > 0
                     else f", and test accuracy rises by {-drop:.1f} points {change}." if drop < 0
                     else f", at the same test accuracy ({pct(acc)}).")
            b_ci, d_ci = base[1].get("tpr_at_fpr_ci", {}).get(key), attack.get("tpr_at_fpr_ci", {}).get(key)
            if attack["tpr_at_fpr"][key] >= base[1]["tpr_at_fpr"][key]:
                text += " No defense here lowers the strongest attack's success at this false alarm rate."
            elif b_ci and d_ci and d_ci[1] >= b_ci[0]:
                text += (" The two confidence intervals overlap, so this run does not establish that the defense "
                         "lowers the risk; audit more records to tell.")
        else:
            text += (f"; test accuracy {pct(acc)}. The comparison has no undefended row (<code>name: none</code>) "
                     "to measure the gain and the cost against.")
        lines.append(text + "</p>")
    lines.append("<p>Attacks are adaptive: shadow and reference models are trained with the same defense. An attack "
                 "that cannot use a defended model's outputs (e.g. <code>loss</code> behind <code>label_only</code>) "
                 "is not counted for that defense.</p>")
    return '<div class="summary">' + "".join(lines) + "</div>"


def _defense_verdicts(result: dict[str, Any]) -> str:
    """The plain verdict per defense (risk level and its reasons), by the audit's rule and thresholds."""
    rows, rule = [], ""
    for row in result["defenses"]:
        verdict = defense_verdict(result, row)
        rule = verdict["rule"]
        rows.append([esc(row["label"]), f"<b>{esc(verdict['level'].upper())}</b>",
                     esc("; ".join(verdict["reasons"]) or verdict["summary"])])
    if not rows:
        return ""
    return ("<h2>Verdict per defense</h2>" + table(["defense", "risk", "why"], rows, numeric_from=9)
            + f'<p class="meta">Rule: {esc(rule)}.</p>')


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return esc(json.dumps(value))
    return num(value)


def _compared(result: dict[str, Any], folder: Path) -> str:
    """What was compared and how: data, recipe, attack models, evaluation, each defense's components."""
    data, cfg, ev = result.get("data", {}), result.get("config", {}), result.get("evaluation", {})
    training = cfg.get("training", {})
    data_rows = [[esc(k.replace("_", " ")), _setting(data[k])] for k in
                 ("dataset", "n_examples", "n_classes", "n_members", "n_nonmembers", "n_shadow", "n_population",
                  "n_reference") if k in data]
    recipe = [[esc(k.replace("_", " ")), _setting(v)] for k, v in training.items() if v not in ({}, None)]
    how = (f"<p>Seed <b>{esc(result.get('seed', '-'))}</b>; {esc(cfg.get('shadow', {}).get('n_models', 0))} shadow "
           f"models and {esc(cfg.get('reference', {}).get('n_models', 0))} reference models per defense, trained with "
           f"that defense; {ev.get('confidence', 0.95):.0%} confidence intervals from "
           f"{esc(ev.get('n_bootstrap', '-'))} bootstrap resamples (members and non-members resampled separately); "
           "TPR evaluated at FPR "
           f"{', '.join(pct(f) for f in ev.get('fprs', []))}; {esc(result.get('seconds', '-'))} s in total.</p>")
    defenses = []
    for row in result["defenses"]:
        parts = [f"<code>{esc(c['name'])}</code> ({esc(c.get('kind', '-'))}"
                 + (f"; {esc(', '.join(f'{k}={v}' for k, v in c['params'].items()))}" if c.get("params") else "") + ")"
                 for c in row.get("components") or []] or ["no defense"]
        cites = "; ".join(esc(c["citation"]) for c in row.get("components") or [] if c.get("citation")) or "-"
        overrides = ", ".join(f"{k}={v}" for k, v in (row.get("training_overrides") or {}).items()) or "-"
        defenses.append([esc(row["label"]), " + ".join(parts), esc(overrides), cites])
    config = folder / "config.yaml"
    text = config.read_text(encoding="utf-8") if config.is_file() else yaml.safe_dump(cfg, sort_keys=False)
    return ("<h2>What was compared and how</h2>" + how
            + "<h3>Data</h3>" + table(["", ""], data_rows)
            + "<h3>Model and training recipe (every defense, every model)</h3>" + table(["", ""], recipe)
            + "<h3>Defenses</h3>" + table(["row", "defenses", "training overrides", "citation"], defenses,
                                           numeric_from=9)
            + "<details><summary>Full configuration (config.yaml)</summary><pre>" + esc(text) + "</pre></details>")


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
            esc(row["label"]), num(t.get("test_accuracy"), 4), delta_acc, accountant,
            f"{empirical[1]:.2f} (<code>{esc(empirical[0])}</code>)" if empirical else "-",
            f"{t.get('train_seconds', 0):.1f}" + (" (shared)" if t.get("shared_training") else ""),
            num(t.get("peak_memory_mb"), 0), num(t.get("postprocess_seconds"), 3),
            num(t.get("seconds_all_models"), 1),
            (f"<code>{esc(strongest['name'])}</code> "
             + with_ci(_tpr(strongest, key), strongest["tpr_at_fpr_ci"].get(key))
             if strongest and key and key in strongest["tpr_at_fpr"] else "-"),
            with_ci(strongest["auc"], strongest.get("auc_ci")) if strongest else "-"])
        if empirical and row.get("epsilon") is not None and empirical[1] > row["epsilon"]:
            alerts.append(f'<div class="alert"><b>{esc(row["label"])}: DP claim contradicted.</b> The empirical lower '
                          f"bound ε ≥ {empirical[1]:.2f} exceeds the accountant's ε = {row['epsilon']:.2f}.</div>")
    head = ["defense", "test accuracy", "Δ test acc. (points)", "ε (accountant)",
            "empirical ε (lower bound)", "train time (s)", "peak memory (MB)", "post-processing (s)",
            "all models (s)", f"strongest attack: TPR @ {pct(float(key)) if key else '-'} FPR", "its AUC"]
    return ("<h2>Utility and cost</h2><p>Test accuracy is measured on the audited non-members; Δ is against the "
            "undefended row. Train time and peak memory are the target's (\"shared\": the models of a defense with "
            "the same training, e.g. an output defense, are reused); \"all models\" includes shadow and reference "
            "models. The empirical ε is the largest Clopper-Pearson lower bound over the row's attacks; it never "
            "proves privacy.</p>" + f'<div class="wide">{table(head, rows)}</div>' + "".join(alerts))


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
                rows.append([f"<code>{esc(a['name'])}</code>", f"n/a: {esc(why)}"] + ["-"] * (len(head) - 2))
                continue
            eps = (a.get("empirical_epsilon") or {}).get("epsilon")
            rows.append([f"<code>{esc(a['name'])}</code>", esc(a.get("access", "-")),
                         with_ci(a["auc"], a.get("auc_ci"))]
                        + [with_ci(a["tpr_at_fpr"].get(k), a.get("tpr_at_fpr_ci", {}).get(k)) for k in keys]
                        + [with_ci(a.get("advantage"), a.get("advantage_ci")), esc(a.get("threshold_source", "-")),
                           num(eps, 2)])
        t = row["target"]
        eps = (f"; accountant ε = {row['epsilon']:.2f} (δ = {row['delta']:g})" if row.get("epsilon") is not None
               else "")
        notes = "".join(f'<p class="meta">Note: {esc(n)}</p>' for n in row.get("notes") or [])
        parts.append(f"<h3>{esc(row['label'])}</h3><p>Test accuracy {pct(t['test_accuracy'])}, train accuracy "
                     f"{pct(t['train_accuracy'])}{eps}.</p>" + table(head, rows, numeric_from=2) + notes)
    attack_notes = sorted({f"{a['name']}: {a['note']}" for r in result["defenses"] for a in r.get("attacks", [])
                           if a.get("note")})
    warnings = result.get("warnings", []) + sorted({w for r in result["defenses"] for a in r.get("attacks", [])
                                                    for w in a.get("warnings", [])})
    return ("<h2>Attacks per defense</h2><p>Intervals: bootstrap confidence intervals. \"oracle\" thresholds were "
            "chosen on the evaluation labels. Empirical ε: Clopper-Pearson lower bound from the attack's error "
            "rates.</p>" + "".join(parts)
            + "".join(f"<p><i>{esc(n)}</i></p>" for n in attack_notes)
            + "".join(f'<div class="warn">{esc(w)}</div>' for w in warnings))


def _defense_curves(result: dict[str, Any], folder: Path) -> str:
    """Log-log ROC and score histograms of each defense's strongest attack, from ``scores/<defense>/``."""
    _, key, _ = _headline(result)
    if not key:  # no attack has a TPR to rank by
        return ""
    curves = []
    for row in result["defenses"]:
        strongest = _row_strongest(row, key)
        scores = folder / "scores" / row["label"]
        if strongest is None or not (scores / f"{strongest['name']}.scores.npz").is_file():
            continue
        res = AttackResult.load(scores, strongest["name"])
        curves.append(dataclasses.replace(res, name=f"{row['label']}: {strongest['name']}"))
    if not curves:
        return ""
    return ("<h2>ROC curves of each defense's strongest attack (log-log)</h2>"
            + figure(folder, "roc_defenses_loglog.png",
                      lambda p: plot_roc(curves, p, log_scale=True, title="Strongest attack per defense, log-log"),
                      "ROC curves of the strongest attack per defense, log-log axes",
                      f"One curve per defense (its strongest attack at {pct(float(key))} FPR). Low false-alarm rates "
                      "(left) are where an attack is a real threat; the dashed diagonal is chance.")
            + "<h2>Score distributions</h2>"
            + figure(folder, "score_histograms_defenses.png", lambda p: plot_score_histograms(curves, p),
                      "histograms of the strongest attack's scores per defense, members and non-members",
                      "The more the two histograms are apart, the better the attack separates members."))


def render_defense_html(folder: str | Path, result: dict[str, Any] | None = None) -> str:
    """The report page of a ``miaudit defend`` output folder, as one HTML string."""
    folder = Path(folder)
    result = result if result is not None else load_defense_comparison(folder)
    dataset = result.get("data", {}).get("dataset", "?")
    model = result.get("config", {}).get("training", {}).get("model", "?")
    body = "".join([
        f"<h1>Defense comparison: {esc(dataset)}, {esc(model)}</h1><p class=\"meta\">{esc(final_name(folder))} "
        f"&middot; written {esc(result.get('created', '-'))} by miaudit {esc(result.get('miaudit_version', '-'))} "
        "&middot; report by "
        f"miaudit {esc(__version__)}</p>",
        _defense_verdicts(result), _defense_summary(result), _compared(result, folder), _privacy_utility(folder),
        _utility_cost(result), _defense_attacks(result), _defense_curves(result, folder),
    ])
    return page(f"miaudit defenses: {final_name(folder)}", body)

register_page(DEFENSES_FILE, "a defense comparison", render_defense_html)

__all__ = ["DEFENSES_FILE", "load_defense_comparison", "render_defense_html"]
