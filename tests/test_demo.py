"""End-to-end ``miaudit demo``: an overfit digits MLP audited by every registered classifier attack."""

import json

import pytest

from miaudit.attacks.registry import list_attacks
from miaudit.classifier.audit import SUPPORTED_REFERENCE
from miaudit.cli import main
from miaudit.commands.demo import VARIANTS, demo_config
from miaudit.runs import parse_config

ISSUE_ATTACKS = {"correctness", "loss", "confidence", "entropy", "modified_entropy", "population", "shokri", "ml_leaks"}


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "-q", "--home", str(tmp_path / "home"),
                 "--fail-if", "loss:auc < 0.6"]) == 0  # exit code 0: the gate holds
    printed = capsys.readouterr().out
    assert "target: train accuracy" in printed and "report.html" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["version"] == 1 and metrics["kind"] == "classifier"
    target = metrics["target"]
    assert target["train_accuracy"] == 1.0  # deliberately overfit
    assert target["train_accuracy"] - target["test_accuracy"] > 0.03
    entries = {a["name"]: a for a in metrics["attacks"]}
    registered = {a["name"] for a in list_attacks(target_kind="classifier")
                  if a["needs_reference"] in SUPPORTED_REFERENCE}
    assert ISSUE_ATTACKS <= registered
    assert set(entries) == registered | {v["label"] for v in VARIANTS}  # every registered classifier attack ran
    for entry in entries.values():
        assert {"name", "auc", "auc_ci", "tpr_at_fpr", "tpr_at_fpr_ci", "balanced_accuracy", "advantage",
                "threshold_source", "params", "warnings"} <= set(entry)
        assert set(entry["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"}
        low, high = entry["auc_ci"]
        assert low <= entry["auc"] <= high
    assert metrics["targets"]["n_targets"] == 7  # pooled targets: TPR at 1% FPR rests on >= 10 false positives
    assert all(e["n_nonmembers"] * 0.01 >= 10 for e in entries.values())
    assert "lowest evaluated FPR that 1050 non-members support" in (out / "report.md").read_text()
    assert entries["loss"]["auc"] > 0.6
    assert entries["loss"]["threshold_source"] == "reference"  # learned on the shadow models
    for name in ("report.md", "report.html", "log.txt", "roc_linear.png", "roc_loglog.png", "config.yaml",
                 "scores/loss.scores.npz"):
        assert (out / name).is_file(), name
    # the saved config is the demo's: 'miaudit audit DIR/config.yaml' reproduces it
    assert parse_config(out / "config.yaml") == parse_config(demo_config())
