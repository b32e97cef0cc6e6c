"""report.html: self-contained, complete, and rendered by headless Chromium with every image loaded."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from run_fixtures import make_run_dir

from miaudit.errors import DataError
from miaudit.report import load_run, render_report
from miaudit.report.html import build_html_report
from miaudit.tracking import add_empirical_epsilon

TOKEN_VIEW = ('<html><body><p><span style="background:#f88" title="-0.2">Once</span> '
              '<span style="background:#fee" title="-3.1">upon</span></p></body></html>')
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
    """A run with attacks, a blind baseline, a DP claim, a token view and a defenses table."""
    folder = tmp_path_factory.mktemp("run") / "audit"
    make_run_dir(folder, shifts={"loss": 0.8, "rmia": 1.8, "blind_baseline": 0.1},
                 extra={"dp": {"epsilon": 1.0, "delta": 1e-5}})
    (folder / "token_view.html").write_text(TOKEN_VIEW, encoding="utf-8")
    defenses = {"defenses": [
        {"name": "none", "test_accuracy": 0.81, "attacks": [{"name": "loss", "tpr_at_fpr": {"0.01": 0.09}}]},
        {"name": "dp-sgd", "test_accuracy": 0.71, "epsilon": 3.0,
         "attacks": [{"name": "loss", "tpr_at_fpr": {"0.01": 0.012}}]}]}
    (folder / "defenses.json").write_text(json.dumps(defenses), encoding="utf-8")
    add_empirical_epsilon(folder)
    build_html_report(folder)
    return folder


def test_report_is_self_contained_and_complete(full_run):
    text = (full_run / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:|//)""", text, re.I)
    assert "<link" not in text and "<script" not in text
    assert text.count('<img src="data:image/png;base64,') == 3  # ROC, histograms, privacy-utility
    for needle in ("false alarm rate", "What was audited", "n members", "Most exposed records", "rec0",
                   "Blind baseline", "Token heat maps", "Once", "privacy vs utility", "dp-sgd",
                   "accountant reports", "ε lower bound", "[", "config.yaml"):
        assert needle in text, needle
    exposed = text[text.index("Most exposed records"):]
    assert "<code>rmia</code>" in exposed[:400]  # the strongest attack's records


def test_report_renders_in_headless_chromium(full_run, tmp_path):
    chromium = _chromium()
    page = tmp_path / "probe.html"
    page.write_text((full_run / "report.html").read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                    encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', out.stdout.split("<body", 1)[1].split(">", 1)[0]))
    widths = [int(w) for w in attrs["images"].split(",")]
    assert len(widths) == 3 and all(w > 100 for w in widths), widths
    sections = attrs["sections"].split("|")
    assert {"What was audited", "Attacks", "ROC curves (log-log)", "Score distributions", "Most exposed records",
            "Blind baseline", "Token heat maps", "Defenses: privacy vs utility"} <= set(sections)
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
    folder = make_run_dir(tmp_path / "old", figures=False)
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
