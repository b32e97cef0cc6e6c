"""The smaller items: suspicious labels, tokenizers and outputs; exit codes on signals; quiet and plain-text
progress; ``miaudit list defenses``; Markdown reports that print user strings literally."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
import time

import numpy as np
import pytest
from reliability_helpers import one_error_line, run_cli, start_cli, trained_config, write_yaml

from miaudit.classifier.targets import PrecomputedTarget
from miaudit.cli import main
from miaudit.errors import DataError
from miaudit.evaluation import evaluate
from miaudit.report.markdown import render_report
from miaudit.runs import RunStore, default_store_path
from miaudit.utils import logs


def test_csv_labels_of_one_class_or_absurd_range(tmp_path, capsys):
    for labels, message in [(["1"] * 40, "every label is 1; a classifier audit needs at least two classes"),
                            (["0", "100000"] * 20, "labels go up to 100000 but only 2 distinct values occur")]:
        rows = ["a,b,label"] + [f"{i},{i % 7},{y}" for i, y in enumerate(labels)]
        (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
        config = write_yaml(tmp_path / "csv.yaml", trained_config(dataset={"source": str(tmp_path / "data.csv")},
                                                                  split={"n_members": 10, "n_nonmembers": 10}))
        assert main(["audit", str(config), "--out", str(tmp_path / "out"), "-q"]) == 2
        assert message in one_error_line(capsys.readouterr().err)


def test_tokenizer_far_smaller_than_the_model_vocabulary_is_reported(shared_data, caplog):
    import transformers

    from miaudit.llm.target import HFCausalLM, load_tokenizer

    config = transformers.GPT2Config(vocab_size=5000, n_embd=16, n_layer=1, n_head=2, n_positions=64)
    model = transformers.GPT2LMHeadModel(config)
    tokenizer = load_tokenizer(str(shared_data / "models" / "stories260K"), local_files_only=True)  # 512 tokens
    caplog.set_level(logging.WARNING)
    HFCausalLM(model, tokenizer, name="gpt2-5000", progress=False)
    assert any("512 tokens but the model's output layer 5000" in r.getMessage() for r in caplog.records)


def test_complex_boolean_and_duplicate_id_outputs_are_refused(tmp_path, capsys):
    n = 20
    base = {"labels": np.arange(n) % 2, "membership": np.arange(n) % 2 == 0}
    cases = [({"logits": np.ones((n, 2)) * (1 + 1j)}, "logits holds complex numbers"),
             ({"probs": np.ones((n, 2), bool)}, "probs holds booleans"),
             ({"logits": np.zeros((n, 2)), "labels": np.arange(n) % 2 == 0}, "labels holds booleans"),
             ({"logits": np.zeros((n, 2)), "ids": np.array(["a", "b"] * 10)}, "ids occur more than once")]
    for arrays, message in cases:
        np.savez(tmp_path / "out.npz", **{**base, **arrays})
        with pytest.raises(DataError, match=message):
            PrecomputedTarget.from_npz(tmp_path / "out.npz")
    config = write_yaml(tmp_path / "pre.yaml", {"target": {"precomputed": str(tmp_path / "out.npz")},
                                                "attacks": [{"name": "loss"}]})
    assert main(["audit", str(config), "--out", str(tmp_path / "run"), "-q"]) == 2
    assert "ids occur more than once (e.g. 'a')" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("signum,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130,
                                                                                     "interrupted")])
def test_sigterm_exits_143_and_sigint_130(tmp_path, run_store_home, signum, code, word):
    config = write_yaml(tmp_path / "slow.yaml", trained_config(training={"model": "mlp", "epochs": 100_000}))
    # Ctrl-C as in a terminal's foreground: a shell starts background jobs (CI runners too) with SIGINT
    # ignored, which Python then leaves ignored, so the child gets the default disposition back
    process = start_cli("audit", str(config), "--out", str(tmp_path / "run"), "--home", str(run_store_home),
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stderr:  # the audit has started once its first log line is out
            if "classifier audit, seed" in line:
                break
        time.sleep(0.5)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code and err.strip().splitlines()[-1] == word, err
    assert list(tmp_path.glob(".*")) == [] and not (tmp_path / "run").exists()  # temporaries and claim gone
    with RunStore(default_store_path(run_store_home)) as store:
        (row,) = store.list_runs()
    assert row["status"] == "interrupted" and row["run_dir"] is None


def test_quiet_also_hides_transformers_loading_bars(shared_data, tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(logs, "_stderr_is_terminal", lambda: True)  # as on a terminal, where bars are drawn
    config = write_yaml(tmp_path / "llm.yaml", {
        "kind": "llm", "dataset": {"source": "wikimia", "path": "32", "data_dir": str(shared_data),
                                   "max_documents": 12},
        "model": {"name_or_path": str(shared_data / "models" / "stories260K"), "local_files_only": True},
        "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 10}, "blind_baseline": {"enabled": False}})
    assert main(["audit", str(config), "--out", str(tmp_path / "loud"), "--no-store"]) == 0
    assert "Loading weights" in capfd.readouterr().err  # transformers' bar, shown without -q
    assert main(["audit", str(config), "--out", str(tmp_path / "quiet"), "--no-store", "-q"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err and "\r" not in err


def test_progress_in_non_terminal_output_is_plain_lines(tmp_path, monkeypatch):
    stream = io.StringIO()  # a CI log: not a terminal
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in logs.progress(range(100_000), desc="fast"):
        pass
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert len(lines) <= 3 and "100000/100000" in lines[-1]  # start and end, not one line per redraw
    monkeypatch.setattr(logs, "NON_TERMINAL_INTERVAL", 0.05)
    stream.seek(0)
    stream.truncate()
    for _ in logs.progress(range(20), desc="slow"):
        time.sleep(0.02)
    lines = stream.getvalue().splitlines()
    assert 3 <= len(lines) <= 20 and all(line.startswith("slow:") for line in lines)  # a line every interval

    # a whole audit with its stderr going to a file: no carriage returns, no escape codes
    config = write_yaml(tmp_path / "audit.yaml", trained_config(training={"model": "mlp", "hidden": [8],
                                                                           "epochs": 30, "batch_size": 8}))
    result = run_cli("audit", str(config), "--out", str(tmp_path / "run"), "--no-store")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr and "train mlp:" in result.stderr


def test_defend_shows_progress_inside_each_targets_training(tmp_path):
    config = write_yaml(tmp_path / "defend.yaml", {
        "seed": 0, "dataset": {"source": "digits"}, "split": {"n_members": 40, "n_nonmembers": 40},
        "training": {"model": "mlp", "hidden": [8], "epochs": 3, "batch_size": 16},
        "defenses": [{"name": "none"}, {"name": "dropout", "params": {"p": 0.2}}],
        "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 10}})
    result = run_cli("defend", str(config), "--out", str(tmp_path / "run"), "--no-store")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    started = [line for line in lines if line.startswith("train mlp:   0%")]
    finished = [line for line in lines if line.startswith("train mlp: 100%")]
    assert len(started) == 2 and len(finished) >= 2, result.stderr  # a bar in each target's training process
    assert len([line for line in lines if line.startswith("train mlp:")]) <= 6  # not a line per epoch
    quiet = run_cli("defend", str(config), "--out", str(tmp_path / "quiet"), "--no-store", "-q")
    assert quiet.returncode == 0 and "train mlp" not in quiet.stderr


def test_list_defenses(capsys):
    assert main(["list", "defenses", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["distillation"]["kind"] == "training" and rows["distillation"]["needs_reference"]
    assert rows["memguard"]["kind"] == "output" and rows["dp_sgd"]["params"]["target_epsilon"] == 8.0
    assert all(r["citation"] for r in rows.values())
    assert main(["list", "defenses"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["name", "kind", "needs_reference", "params"] and len(table) == len(rows) + 1
    assert main(["list", "defenses", "--kind", "llm"]) == 2


def test_report_md_prints_user_strings_literally():
    labels = np.r_[np.ones(50, int), np.zeros(50, int)]
    scores = np.random.default_rng(0).normal(size=100) + labels
    name = "<img src=x onerror=alert(1)>|`x`"
    entry = {"name": name, "params": {}, "access": "probabilities", "needs_reference": "none",
             **evaluate(labels, scores, n_bootstrap=10, seed=0), "warnings": ["file <script>.npz | *odd*"]}
    metrics = {"kind": "classifier", "seed": 0, "target": {"description": "model <b>bold</b> | piped"},
               "data": {"dataset": "<svg onload=x>", "n_members": 50, "n_nonmembers": 50},
               "evaluation": {"fprs": [0.01], "confidence": 0.95, "n_bootstrap": 10}, "attacks": [entry]}
    report = render_report(metrics)
    for raw in ("<img", "<script>", "<b>", "<svg"):
        assert raw not in report
    assert "&lt;img src=x onerror=alert(1)&gt;\\|\\`x\\`" in report
    row = next(line for line in report.splitlines() if "onerror" in line and line.startswith("|"))
    assert row.count(" | ") == report.splitlines()[report.splitlines().index(row) - 2].count(" | ")  # no extra cell
