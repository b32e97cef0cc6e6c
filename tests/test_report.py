"""Run-directory writing and reading, figures and the Markdown report, on synthetic scores."""

import json

import numpy as np
import pytest
from PIL import Image

from miaudit.errors import DataError
from miaudit.evaluation import AttackResult, evaluate
from miaudit.report import RUN_VERSION, load_run, render_report, write_run_dir


def _results(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    out = []
    for name, shift, threshold in (("strong", 2.0, 1.0), ("weak", 0.3, None), ("ties", 0.0, None)):
        scores = rng.normal(size=n) + shift * labels
        if name == "ties":
            scores = np.round(scores)  # many tied scores
        metrics = evaluate(labels, scores, threshold=threshold, n_bootstrap=50, seed=seed)
        out.append(AttackResult(name=name, ids=np.arange(n), labels=labels, scores=scores,
                                params={"shift": shift}, metrics=metrics))
    return out


def _metrics(results):
    return {"kind": "classifier", "seed": 0, "miaudit_version": "test",
            "target": {"source": "trained", "train_accuracy": 1.0, "test_accuracy": 0.8},
            "data": {"dataset": "synthetic", "n_members": 100, "n_nonmembers": 100},
            "evaluation": {"n_bootstrap": 50, "confidence": 0.95, "fprs": [0.001, 0.01, 0.05]},
            "attacks": [{"name": r.name, "attack": r.name, "params": r.params, **r.metrics} for r in results],
            "warnings": ["a run-level warning"]}


def test_markdown_headline_without_evaluated_fprs():
    """A metrics.json that lists no FPR (hand-written, or older) still renders: the AUC is the headline."""
    results = _results()
    metrics = _metrics(results)
    metrics["evaluation"]["fprs"] = []
    text = render_report(metrics)
    auc = results[0].metrics["auc"]
    assert f"Strongest attack by AUC (held-out choices only): `strong` with AUC {auc:.3f}" in text
    assert "FPR (the lowest evaluated FPR" not in text


def test_markdown_names_the_users_audited_files_apart_from_the_shadow_dataset():
    metrics = _metrics(_results())
    assert "- **Dataset**: synthetic (100 members, 100 non-members audited)" in render_report(metrics)
    metrics["data"].update(audited_from="members.npz + nonmembers.npz", dataset="shadow", n_examples=797)
    text = render_report(metrics)
    assert "- **Audited records**: 100 members, 100 non-members from `members.npz + nonmembers.npz`" in text
    assert "- **Shadow / population data**: shadow (797 examples, none of them audited)" in text
    assert "**Dataset**" not in text


def test_markdown_quotes_shadow_accuracies_only_where_the_models_have_them():
    metrics = _metrics(_results())
    metrics["shadow"] = {"n_models": 1, "final_train_loss": 0.3}  # a shadow encoder: no accuracy
    assert "- **Shadow models**: 1 trained like the target\n" in render_report(metrics)
    metrics["shadow"].update(train_accuracy_mean=0.95, test_accuracy_mean=0.9)
    assert "1 trained like the target (mean train accuracy 0.950" in render_report(metrics)


def test_write_and_load_run(tmp_path):
    results = _results()
    write_run_dir(tmp_path, _metrics(results), results, {"seed": 0, "kind": "classifier"})
    for name in ("metrics.json", "config.yaml", "report.md", "roc_linear.png", "roc_loglog.png",
                 "score_histograms.png", "scores/strong.scores.npz", "scores/strong.json"):
        assert (tmp_path / name).is_file(), name
    for png in ("roc_linear.png", "roc_loglog.png", "score_histograms.png"):
        with Image.open(tmp_path / png) as im:
            assert im.size[0] > 300 and im.size[1] > 300
    run = load_run(tmp_path)
    assert run.metrics["version"] == RUN_VERSION
    assert run.attack_names == ["strong", "weak", "ties"]
    assert run.config == {"seed": 0, "kind": "classifier"}
    loaded = run.result("ties")
    np.testing.assert_array_equal(loaded.scores, results[2].scores)
    assert run.attack("strong")["auc"] > run.attack("weak")["auc"]
    with pytest.raises(DataError, match="no attack 'nope'"):
        run.attack("nope")


def test_load_run_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(DataError, match="no metrics.json"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"version": 0, "attacks": []}))
    with pytest.raises(DataError, match="version 0"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_run(tmp_path)


def test_duplicate_names_rejected(tmp_path):
    results = _results()
    results[1].name = "strong"
    with pytest.raises(DataError, match="unique"):
        write_run_dir(tmp_path, _metrics(results), results, {})


def test_markdown_report_content():
    results = _results()
    text = render_report(_metrics(results), figures={"ROC": "roc_linear.png"})
    assert "Train accuracy **1.0000**, test accuracy **0.8000**" in text
    strong = results[0].metrics
    lo, hi = strong["auc_ci"]
    assert f"{strong['auc']:.3f} [{lo:.3f}, {hi:.3f}]" in text
    assert "TPR @ 0.1% FPR" in text and "TPR @ 5% FPR" in text
    assert "(reference)" in text and "(oracle)" in text  # threshold source of each attack
    assert "a run-level warning" in text
    assert "not meaningful below" in text  # 100 non-members cannot support 0.1% FPR
    assert "![ROC](roc_linear.png)" in text
    # attacks are listed strongest first
    assert text.index("`strong`") < text.index("`weak`")
