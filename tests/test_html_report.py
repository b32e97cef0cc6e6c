"""report.html: self-contained, complete, and rendered by headless Chromium with every image loaded."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from miaudit.errors import DataError
from miaudit.report import load_run, render_report
from miaudit.report.html import build_html_report
from run_fixtures import make_run_dir

TOKEN_VIEW = ('<html><body><p><span style="background:#f88" title="-0.2">Once</span> '
              '<span style="background:#fee" title="-3.1">upon</span></p></body></html>')
NETWORK_REFERENCE = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:|//)""", re.I)
_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.map(i => i.complete ? i.naturalWidth : -1).join(','));
  document.body.setAttribute('data-sections', [...document.querySelectorAll('h2')].map(h => h.textContent).join('|'));
  document.body.setAttribute('data-iframes', String(document.querySelectorAll('iframe').length));
  document.body.setAttribute('data-height', String(document.body.scrollHeight));
  document.body.setAttribute('data-summary-bg',
    getComputedStyle(document.querySelector('.summary')).backgroundColor);
});</script>"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run installs it)")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A run with attacks, a blind baseline, a DP claim and a token view."""
    folder = tmp_path_factory.mktemp("run") / "audit"
    make_run_dir(folder, shifts={"loss": 0.8, "rmia": 1.8, "blind_baseline": 0.1},
                 extra={"dp": {"epsilon": 1.0, "delta": 1e-5}})
    (folder / "token_view.html").write_text(TOKEN_VIEW, encoding="utf-8")
    build_html_report(folder)
    return folder


def test_report_is_self_contained_and_complete(full_run):
    text = (full_run / "report.html").read_text(encoding="utf-8")
    assert not NETWORK_REFERENCE.search(text)
    assert "<link" not in text and "<script" not in text
    assert text.count('<img src="data:image/png;base64,') == 2  # ROC, histograms
    for needle in ("false alarm rate", "What was audited", "n members", "Most exposed records", "rec0",
                   "Blind baseline", "Token heat maps", "Once", "accountant reports", "ε lower bound", "[",
                   "config.yaml"):
        assert needle in text, needle
    exposed = text[text.index("Most exposed records"):]
    assert "<code>rmia</code>" in exposed[:400]  # the strongest attack's records


def render_in_chromium(report: Path, workdir: Path) -> dict[str, str]:
    """Open ``report`` in headless Chromium with DNS disabled; what the page showed once loaded.

    Keys: ``images`` (each image's natural width, -1 when not loaded, comma-separated),
    ``sections`` (the ``h2`` texts, ``|``-separated), ``iframes``, ``height``, ``summary-bg``.
    """
    chromium = _chromium()
    page = workdir / "probe.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={workdir / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', out.stdout.split("<body", 1)[1].split(">", 1)[0]))


def test_report_renders_in_headless_chromium(full_run, tmp_path):
    attrs = render_in_chromium(full_run / "report.html", tmp_path)
    widths = [int(w) for w in attrs["images"].split(",")]
    assert len(widths) == 2 and all(w > 100 for w in widths), widths
    sections = attrs["sections"].split("|")
    assert {"What was audited", "Attacks", "ROC curves (log-log)", "Score distributions", "Most exposed records",
            "Blind baseline", "Token heat maps"} <= set(sections)
    assert attrs["iframes"] == "1" and int(attrs["height"]) > 2000
    assert attrs["summary-bg"] not in ("", "rgba(0, 0, 0, 0)")  # the inline stylesheet applied


def test_figures_are_drawn_from_scores_when_missing(tmp_path):
    folder = make_run_dir(tmp_path / "bare", figures=False)
    text = build_html_report(folder).read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 2 and "Blind baseline" not in text
    for f in (folder / "scores").iterdir():
        f.unlink()
    text = build_html_report(folder, out=tmp_path / "no_scores.html").read_text(encoding="utf-8")
    assert "<img" not in text and "Attacks" in text and "Most exposed" not in text


def test_run_folder_from_another_version_is_a_clear_error(tmp_path):
    folder = make_run_dir(tmp_path / "old", figures=False, report=False)
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "version": 0}))
    with pytest.raises(DataError, match="version"):
        build_html_report(folder)
    with pytest.raises(DataError, match="not a miaudit run folder"):
        build_html_report(tmp_path)
    assert not (folder / "report.html").exists()


def _headline(folder: Path) -> str:
    text = build_html_report(folder).read_text(encoding="utf-8")
    return re.sub(r"<[^>]+>", "", re.search(r'<div class="summary">(.*?)</div>', text).group(1))


def _markdown_headline(folder: Path) -> str:
    text = render_report(load_run(folder).metrics)
    return next(line for line in text.splitlines() if line.startswith("Strongest attack by AUC"))


def test_headline_quotes_only_an_fpr_the_non_members_support(full_run, tmp_path):
    # 150 non-members: 0.15, 1.5 and 7.5 expected false positives at 0.1%, 1% and 5% FPR; none supported
    summary = _headline(full_run)
    assert "Too few non-members" in summary and "with 150 non-members" in summary
    assert "Indicative only: an attacker" in summary and "at a 5.0% false alarm rate" in summary
    assert "7.5 expected false alarms" in summary and "at least 200 non-members" in summary
    assert "1.0% false alarm rate" not in summary and "0.1% false alarm rate" not in summary
    markdown = _markdown_headline(full_run)
    assert "Too few non-members" in markdown and "Its TPR at 5% FPR is" in markdown and "at 1% FPR" not in markdown

    # 2,000 non-members: 1% FPR (20 expected false positives) is the lowest supported, 0.1% (2) is not
    folder = make_run_dir(tmp_path / "large", n=4000, figures=False, n_bootstrap=20)
    for f in (folder / "scores").iterdir():
        f.unlink()
    metrics = load_run(folder).metrics
    rmia = next(a for a in metrics["attacks"] if a["name"] == "rmia")
    summary = _headline(folder)
    assert "Too few" not in summary and "Indicative" not in summary
    assert f"identifies {100 * rmia['tpr_at_fpr']['0.01']:.1f}% of the training records at a 1.0% false alarm rate" \
        in summary
    assert "Lower false alarm rates (0.1%) are not quoted" in summary
    markdown = _markdown_headline(folder)
    assert f"TPR {rmia['tpr_at_fpr']['0.01']:.3f} [" in markdown and "at 1% FPR (the lowest evaluated FPR that 2000" \
        in markdown


# -- the defense-comparison page (miaudit defend folders) ----------------------------------------
def _defense_row(label, components, accuracy, tpr, ci, *, epsilon=None, empirical=0.2):
    attack = {"name": "rmia", "access": "probabilities", "auc": 0.61, "auc_ci": [0.58, 0.64], "advantage": 0.2,
              "advantage_ci": [0.1, 0.3], "tpr_at_fpr": {"0.01": tpr}, "tpr_at_fpr_ci": {"0.01": ci},
              "threshold_source": "oracle", "empirical_epsilon": {"epsilon": empirical, "delta": 1e-5}}
    return {"label": label, "training_overrides": {}, "notes": [], "epsilon": epsilon,
            "delta": 1e-5 if epsilon is not None else None,
            "components": [{"name": c, "kind": "training", "params": {"p": 1}, "citation": f"{c} et al."}
                           for c in components],
            "target": {"test_accuracy": accuracy, "train_accuracy": 1.0, "train_seconds": 1.5, "peak_memory_mb": 50.0,
                       "postprocess_seconds": 0.0, "seconds_all_models": 2.5, "shared_training": False},
            "attacks": [attack, {"name": "loss", "applicable": False, "reason": "needs probabilities outputs"}]}


def _comparison(folder, rows, **changes):
    result = {"version": 1, "kind": "defenses", "miaudit_version": "0.0", "seed": 4, "created": "2025-01-01T00:00:00",
              "config": {"training": {"model": "mlp", "hidden": [8], "epochs": 3},
                         "shadow": {"n_models": 1}, "reference": {"n_models": 2}},
              "data": {"dataset": "digits", "n_members": 2000, "n_nonmembers": 2000},
              "evaluation": {"n_bootstrap": 20, "confidence": 0.95, "fprs": [0.01]},
              "defenses": rows, "seconds": 9.0, **changes}
    folder.mkdir()
    (folder / "defenses.json").write_text(json.dumps(result), encoding="utf-8")
    return folder


def _summary_text(folder):
    text = build_html_report(folder).read_text(encoding="utf-8")
    summary = re.search(r'<div class="summary">(.*?)</div>', text).group(1)
    return text, re.sub(r"<[^>]+>", "", summary)


def test_defense_page_summary_states_the_gain_and_the_cost(tmp_path):
    folder = _comparison(tmp_path / "defend", [
        _defense_row("none", [], 0.80, 0.30, [0.25, 0.35], empirical=3.1),
        _defense_row("dp_sgd", ["dp_sgd"], 0.73, 0.04, [0.02, 0.06], epsilon=8.0, empirical=0.5),
        _defense_row("smooth", ["label_smoothing"], 0.79, 0.28, [0.22, 0.33])])
    text, summary = _summary_text(folder)
    assert ("Without a defense, the strongest attack (rmia) finds 30.0% of the training records at a 1.0% false "
            "alarm rate (95% CI 25.0% to 35.0%)") in summary
    assert "With dp_sgd" in summary and "finds 4.0% of them" in summary and "ε = 8.00 (δ = 1e-05)" in summary
    assert "at a cost of 7.0 points of test accuracy (80.0% → 73.0%)" in summary
    assert "overlap" not in summary and "Too few" not in summary
    assert not NETWORK_REFERENCE.search(text) and "<script" not in text
    assert text.count('<img src="data:image/png;base64,') == 1  # the privacy-utility plot, drawn: no scores/ here
    for needle in ("What was compared and how", "dp_sgd et al.", "Utility and cost", "Attacks per defense",
                   "<h3>smooth</h3>", "n/a: needs probabilities outputs", "0.040 [0.020, 0.060]", "(reference)",
                   "-7.0", "8.00 (δ 1e-05)", "3.10 (<code>rmia</code>)", "Full configuration"):
        assert needle in text, needle
    assert "DP claim contradicted" not in text and "ROC curves" not in text


def test_defense_page_summary_does_not_claim_a_figure_that_does_not_beat_guessing(tmp_path):
    """A census comparison's DP-SGD row: loss found 1.5% at 1% FPR, interval 0.6% to 2.2% (guessing flags 1%)."""
    folder = _comparison(tmp_path / "defend", [_defense_row("none", [], 0.80, 0.066, [0.038, 0.081]),
                                               _defense_row("dp_sgd", ["dp_sgd"], 0.788, 0.015, [0.006, 0.022])])
    _, summary = _summary_text(folder)
    assert ("that attack (rmia) is not shown to find more of them than random guessing at a 1.0% false alarm rate (it "
            "finds 1.5%, 95% CI 0.6% to 2.2%)") in summary
    assert "the strongest attack (rmia) finds 6.6% of the training records" in summary


@pytest.mark.parametrize("rows, expected", [
    ([_defense_row("none", [], 0.8, 0.30, [0.25, 0.35]), _defense_row("dp", ["dp_sgd"], 0.7, 0.26, [0.2, 0.31])],
     "The two confidence intervals overlap"),
    ([_defense_row("none", [], 0.8, 0.30, [0.25, 0.35]), _defense_row("reg", ["l2"], 0.82, 0.31, [0.26, 0.36])],
     "No defense here lowers"),
    ([_defense_row("reg", ["l2"], 0.8, 0.30, [0.25, 0.35]), _defense_row("dp", ["dp_sgd"], 0.7, 0.1, [0.05, 0.2])],
     "no undefended row"),
    ([_defense_row("none", [], 0.8, 0.30, [0.25, 0.35]), _defense_row("top", ["top_k"], 0.8, 0.1, [0.05, 0.2])],
     "at the same test accuracy (80.0%)"),
])
def test_defense_page_summary_caveats(tmp_path, rows, expected):
    assert expected in _summary_text(_comparison(tmp_path / "defend", rows))[1]


def test_defense_page_flags_too_few_nonmembers_and_a_contradicted_dp_claim(tmp_path):
    rows = [_defense_row("none", [], 0.8, 0.3, [0.2, 0.4]),
            _defense_row("dp", ["dp_sgd"], 0.7, 0.1, [0.0, 0.2], epsilon=1.0, empirical=1.7)]
    for row in rows:
        row["attacks"][0]["tpr_at_fpr"]["0.05"] = row["attacks"][0]["tpr_at_fpr"]["0.01"] + 0.1
    text, summary = _summary_text(_comparison(tmp_path / "defend", rows,
                                              data={"dataset": "digits", "n_nonmembers": 100}))
    assert "Too few non-members" in summary and "at a 5.0% false alarm rate" in summary
    assert "finds 40.0% of the training records" in summary  # the 5% figure, not the unsupported 1%
    assert "dp: DP claim contradicted" in text and "ε ≥ 1.70 exceeds the accountant's ε = 1.00" in text


def test_folder_type_decides_the_page_and_bad_folders_are_clear_errors(tmp_path, full_run):
    assert "Membership inference audit" in (full_run / "report.html").read_text()  # metrics.json wins
    with pytest.raises(DataError, match="no metrics.json.*nor a defense comparison.*miaudit defend"):
        build_html_report(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        build_html_report(tmp_path / "missing")
    folder = _comparison(tmp_path / "old", [_defense_row("none", [], 0.8, 0.3, [0.2, 0.4])], version=0)
    with pytest.raises(DataError, match="format version 0"):
        build_html_report(folder)
    (folder / "defenses.json").write_text('{"kind": "defenses", "defenses": [{"name": "none"}]}')
    with pytest.raises(DataError, match="not a defense comparison written by miaudit defend"):
        build_html_report(folder)
    (folder / "defenses.json").write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        build_html_report(folder)
    assert not (folder / "report.html").exists()


@pytest.mark.parametrize("attack, needs", [("recall", "data from the same population"), ("ref", "a reference model")])
def test_headline_says_what_the_strongest_llm_attack_needs_beyond_the_records(tmp_path, attack, needs):
    from miaudit.attacks.registry import get_attack_class

    folder = make_run_dir(tmp_path / "run", shifts={attack: 2.0}, figures=False, report=False)
    metrics = json.loads((folder / "metrics.json").read_text())
    declared = get_attack_class(attack, "llm")
    metrics["attacks"][0].update(access=declared.access, needs_reference=declared.needs_reference)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    text = build_html_report(folder).read_text(encoding="utf-8")
    assert f"the log-probability of each token (as an API gives it) and has {needs} identifies" in text


def _headline_metrics(tpr, tpr_ci, auc_ci):
    """One attack at 5% FPR with 400 non-members (20 expected false positives: a supported figure)."""
    attack = {"name": "loss", "auc": sum(auc_ci) / 2, "auc_ci": auc_ci, "access": "probabilities",
              "needs_reference": "none", "tpr_at_fpr": {"0.05": tpr}, "tpr_at_fpr_ci": {"0.05": tpr_ci},
              "n_members": 400, "n_nonmembers": 400}
    return {"kind": "classifier", "data": {"n_members": 400, "n_nonmembers": 400},
            "evaluation": {"fprs": [0.05]}, "attacks": [attack]}


@pytest.mark.parametrize("tpr, tpr_ci, auc_ci, html_says, markdown_says", [
    (0.15, [0.11, 0.19], [0.60, 0.66], "attacker who sees the output probabilities and has no data beyond the "
     "records it tests identifies 15.0% of the training records", "and TPR 0.150 [0.110, 0.190] at 5% FPR"),
    (0.07, [0.03, 0.12], [0.55, 0.61], "the strongest attack, <code>loss</code>, is not shown to find more "
     "training records than random guessing</b>, which flags 5.0% of them (it finds 7.0%",
     "not shown to find more members than random guessing, which flags 5% of them (TPR 0.070 [0.030, 0.120]): "
     "the attacks separate members from non-members overall better than chance"),
    (0.047, [0.023, 0.074], [0.45, 0.55], "Nor do the attacks separate members from non-members overall",
     "; nor do the attacks separate members from non-members overall (the AUC interval includes 0.5)"),
])
def test_headline_claims_identification_only_when_the_tpr_beats_guessing(tpr, tpr_ci, auc_ci, html_says,
                                                                          markdown_says):
    from miaudit.report.html import _summary

    metrics = _headline_metrics(tpr, tpr_ci, auc_ci)
    assert html_says in _summary(metrics)
    assert markdown_says in render_report(metrics)


def test_key_value_tables_leave_out_entries_without_a_value():
    """A run on the user's files has no dataset (None): its data table shows no 'dataset -' row."""
    from miaudit.report.page import key_values

    html = key_values({"dataset": None, "n_members": 1000, "audited_from": "a.csv + b.csv"})
    assert "dataset" not in html and "n members" in html and "a.csv + b.csv" in html
