"""`miaudit defend` as a tracked run: --fail-if gates per defense row, --gate-defense, --json, the run store,
and its report.html (the defense-comparison page, rendered in headless Chromium)."""

import contextlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from miaudit.cli import main
from miaudit.errors import MiauditError
from miaudit.runs import RunStore, default_store_path
from miaudit.runs.gate import check_defense_gates
from run_fixtures import make_run_dir
from test_html_report import NETWORK_REFERENCE, render_in_chromium

# two defenses sharing one tiny MLP: `loss` cannot attack the label-only row
CONFIG = """
seed: 0
dataset: {source: digits}
split: {n_members: 100, n_nonmembers: 100}
training: {model: mlp, hidden: [32], epochs: 20, batch_size: 16, lr: 0.01}
defenses:
  - name: none
  - name: label_only
attacks:
  - name: loss
  - name: correctness
evaluation: {n_bootstrap: 20}
isolate_training: false
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "defend.yaml"
    path.write_text(CONFIG)
    return path


def _defend(config, out, *flags):
    return main(["defend", str(config), "--out", str(out), "-q", "--threads", "1", *flags])


@pytest.fixture(scope="module")
def tripped_run(config, tmp_path_factory):
    """One recorded run whose gates trip on the undefended row: (out, home, exit code, stdout)."""
    root = tmp_path_factory.mktemp("run")
    out, home = root / "out", root / "home"
    buffer = io.StringIO()  # module scope: no capsys
    with contextlib.redirect_stdout(buffer):
        code = _defend(config, out, "--home", str(home), "--fail-if", "auc >= 0", "--fail-if", "loss:tpr@0.01 > 1")
    return out, home, code, buffer.getvalue()


def _strongest_auc(out):
    rows = json.loads((out / "defenses.json").read_text())["defenses"]
    return {r["label"]: max(a["auc"] for a in r["attacks"] if "auc" in a) for r in rows}


def test_tripped_gate_exits_1_and_is_recorded(tripped_run):
    out, home, code, stdout = tripped_run
    assert code == 1
    assert "gate TRIPPED: auc >= 0 [none]" in stdout and "gate TRIPPED: auc >= 0 [label_only]" in stdout
    assert "gate holds: loss:tpr@0.01 > 1 [none]" in stdout
    assert "gate not applicable: loss:tpr@0.01 > 1 [label_only]" in stdout  # loss needs probabilities
    result = json.loads((out / "defenses.json").read_text())
    for row in result["defenses"]:
        for attack in row["attacks"]:
            assert ("empirical_epsilon" in attack) == ("auc" in attack)
    with RunStore(default_store_path(home)) as store:
        (row,) = store.list_runs()
    assert row["command"] == "defend" and row["status"] == "completed" and row["finished"]
    assert row["metrics"]["kind"] == "defenses" and row["config"]["defenses"][1]["name"] == "label_only"
    assert row["gates"]["tripped"] and {d["defense"] for d in row["gates"]["details"]} == {"none", "label_only"}
    assert row["run_dir"] == str(out.resolve())


def test_runs_list_show_and_compare_on_a_defend_run(tripped_run, tmp_path, capsys):
    out, home, _, _ = tripped_run
    home_flag = ["--home", str(home)]
    capsys.readouterr()
    assert main(["runs", "list", *home_flag]) == 0
    listed = capsys.readouterr().out
    auc = _strongest_auc(out)
    assert "defend" in listed and "completed" in listed
    assert f"{min(auc.values()):.3f}-{max(auc.values()):.3f}" in listed  # range over defenses
    assert main(["runs", "show", "latest", *home_flag]) == 0
    shown = capsys.readouterr().out
    assert "label_only" in shown and "test acc" in shown and "n/a: label_only/loss: needs probabilities" in shown
    assert "TRIPPED auc >= 0 [none]" in shown and "n/a     loss:tpr@0.01 > 1 [label_only]" in shown
    assert main(["runs", "compare", "latest", "latest", "--n-bootstrap", "20", *home_flag]) == 0
    assert "none/loss" in capsys.readouterr().out
    # a copy of the store plus an audit row: comparing the two kinds is refused with a clear message
    shutil.copytree(home, tmp_path / "home")
    with RunStore(default_store_path(tmp_path / "home")) as store:
        audit = store.start_run("audit", run_dir=make_run_dir(tmp_path / "audit", figures=False))
        store.finish_run(audit, "completed",
                         metrics=json.loads((tmp_path / "audit" / "metrics.json").read_text()))
        defend = store.list_runs(limit=2)[1]["id"]
    assert main(["runs", "compare", defend, audit, "--home", str(tmp_path / "home")]) == 2
    assert "is a defense comparison (miaudit defend)" in capsys.readouterr().err


def test_gate_defense_restricts_and_json_summary(config, tripped_run, tmp_path, capsys):
    auc = _strongest_auc(tripped_run[0])
    assert auc["none"] > auc["label_only"]  # labels alone leak less than the loss
    mid = (auc["none"] + auc["label_only"]) / 2
    # the same threshold trips on the undefended row only (the library, on the recorded run)
    assert check_defense_gates(tripped_run[0], [f"auc > {mid}"], defenses=["none"]).tripped
    assert not check_defense_gates(tripped_run[0], [f"auc > {mid}"], defenses=["label_only"]).tripped
    capsys.readouterr()
    code = _defend(config, tmp_path / "out", "--json", "--no-store", "--fail-if", f"auc > {mid}",
                   "--gate-defense", "label_only")
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout is only the JSON summary
    assert code == 0 == summary["exit_code"] and not summary["gates"]["tripped"]
    assert "strongest attack" in captured.err  # the human table went to stderr
    assert summary["run_id"] is None and summary["kind"] == "defenses" and summary["gate_defenses"] == ["label_only"]
    assert summary["report"] == summary["files"]["report.html"] == str(tmp_path / "out" / "report.html")
    assert (tmp_path / "out" / "report.html").is_file() and f"report: {summary['report']}" in captured.err
    assert ".tmp-" not in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")  # the folder's final name
    rows = {d["label"]: d for d in summary["defenses"]}
    assert set(rows) == {"none", "label_only"} and not rows["none"]["gated"] and rows["label_only"]["gated"]
    assert rows["none"]["gates"] == [] and rows["label_only"]["gates"][0]["attack"] == "correctness"
    assert rows["none"]["strongest"]["auc"] == {"attack": "loss", "value": pytest.approx(auc["none"])}
    assert {"auc", "advantage", "tpr@0.01", "epsilon"} <= set(rows["label_only"]["strongest"])
    assert rows["none"]["dp_accountant"] == {"epsilon": None, "delta": None}
    assert 0 < rows["none"]["test_accuracy"] <= 1
    loss = next(a for a in rows["label_only"]["attacks"] if a["name"] == "loss")
    assert loss["applicable"] is False and "label-only" in loss["reason"]


def test_defend_writes_a_self_contained_report(tripped_run):
    out, _, _, stdout = tripped_run
    report = out / "report.html"
    assert f"report: {report}" in stdout
    text = report.read_text(encoding="utf-8")
    assert not NETWORK_REFERENCE.search(text) and "<script" not in text and "<link" not in text
    assert text.count('<img src="data:image/png;base64,') == 3  # privacy-utility, ROC, score histograms
    rows = {r["label"]: r for r in json.loads((out / "defenses.json").read_text())["defenses"]}
    # 100 non-members support no FPR: the summary quotes the 5% figure of the strongest attack there, as indicative
    loss = next(a for a in rows["none"]["attacks"] if a["name"] == "loss")
    assert max(a["tpr_at_fpr"]["0.05"] for a in rows["none"]["attacks"]) == loss["tpr_at_fpr"]["0.05"]
    summary = re.sub(r"<[^>]+>", "", re.search(r'<div class="summary">(.*?)</div>', text).group(1))
    assert "Too few non-members" in summary
    assert (f"Without a defense, the strongest attack (loss) finds {100 * loss['tpr_at_fpr']['0.05']:.1f}% of the "
            "training records at a 5.0% false alarm rate") in summary
    assert f"The model's test accuracy is {100 * rows['none']['target']['test_accuracy']:.1f}%" in summary
    assert "With label_only" in summary
    for needle in ("Defense comparison: digits, mlp", "What was compared and how", "Utility and cost",
                   "Attacks per defense", "<h3>label_only</h3>", "n/a: needs probabilities outputs",
                   f"{loss['auc']:.3f} [{loss['auc_ci'][0]:.3f}, {loss['auc_ci'][1]:.3f}]",
                   "its strongest attack at 5.0% FPR",
                   "peak memory (MB)", "empirical ε (lower bound)"):
        assert needle in text, needle


def test_defend_report_renders_in_headless_chromium(tripped_run, tmp_path):
    attrs = render_in_chromium(tripped_run[0] / "report.html", tmp_path)
    widths = [int(w) for w in attrs["images"].split(",")]
    assert len(widths) == 3 and all(w > 100 for w in widths), widths
    assert {"What was compared and how", "Defenses: privacy vs utility", "Utility and cost", "Attacks per defense",
            "ROC curves of each defense's strongest attack (log-log)", "Score distributions"
            } <= set(attrs["sections"].split("|"))
    assert attrs["summary-bg"] not in ("", "rgba(0, 0, 0, 0)")


@pytest.mark.parametrize("flags, message", [
    (["--fail-if", "shokri:auc > 0.5"], "names attack 'shokri', which is not in this comparison; its attacks: "
                                        "loss, correctness"),
    (["--fail-if", "auc > 0.5", "--gate-defense", "dp_sgd"], "its defenses are: none, label_only"),
    (["--gate-defense", "none"], "give at least one --fail-if"),
])
def test_bad_gate_input_fails_before_training(config, tmp_path, capsys, flags, message):
    out, home = tmp_path / "out", tmp_path / "home"
    assert _defend(config, out, "--home", str(home), *flags) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not home.exists()  # nothing trained, written or recorded


def test_unparseable_gate_exits_2_without_output(config, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _defend(config, tmp_path / "out", "--home", str(tmp_path / "home"), "--fail-if", "auc is high")
    assert info.value.code == 2 and "cannot parse gate" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()


def test_failing_comparison_is_recorded_as_failed(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("  - name: label_only\n", "  - compose: [{name: label_only}, {name: memguard}]\n"))
    assert _defend(bad, tmp_path / "out", "--home", str(tmp_path / "home"), "--fail-if", "auc > 0.9") == 2
    assert "MemGuard cannot defend a label-only target" in capsys.readouterr().err
    with RunStore(default_store_path(tmp_path / "home")) as store:
        (row,) = store.list_runs()
    assert row["command"] == "defend" and row["status"] == "failed" and "MemGuard" in row["error"]
    assert not (tmp_path / "out").exists()


def test_gates_that_cannot_be_checked_on_the_written_comparison(tripped_run, tmp_path):
    out = tripped_run[0]
    with pytest.raises(MiauditError, match="applies to none of the checked defenses"):
        check_defense_gates(out, ["loss:auc > 0.5"], defenses=["label_only"])
    # epsilon comes from the stored bound, else from the saved scores, else a clear error naming the file
    result = json.loads((out / "defenses.json").read_text())
    stored = check_defense_gates(result, ["epsilon > 100"], run_dir=out).details
    for row in result["defenses"]:
        for attack in row["attacks"]:
            attack.pop("empirical_epsilon", None)
    recomputed = check_defense_gates(result, ["epsilon > 100"], run_dir=out).details
    assert [d["value"] for d in recomputed] == pytest.approx([d["value"] for d in stored])
    shutil.copytree(out, tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "scores")
    with pytest.raises(MiauditError, match=r"scores/none/\w+\.scores\.npz is missing"):
        check_defense_gates(result, ["epsilon > 1"], run_dir=tmp_path / "copy")
    with pytest.raises(MiauditError, match="no 'defenses' list"):
        check_defense_gates({"attacks": []}, ["auc > 0.5"])


_SWALLOWING_CHILD = textwrap.dedent("""
    import sys, time
    from miaudit.runs.tracking import RunOptions, tracked_run
    with tracked_run(RunOptions(home=sys.argv[1]), command="defend"):
        print("started", flush=True)
        for _ in range(600):
            try:
                time.sleep(0.1)
            except KeyboardInterrupt:  # what scikit-learn's MLPClassifier.fit does with Ctrl-C
                pass
    print("SIGTERM was swallowed", flush=True)
""")


def test_sigterm_is_not_swallowed_by_code_that_catches_ctrl_c(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", _SWALLOWING_CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert "swallowed" not in out and child.returncode != 0
    with RunStore(default_store_path(tmp_path)) as store:
        (row,) = store.list_runs()
    assert row["status"] == "interrupted" and "Terminated" in row["error"]
