"""The run-level gate ``one_run_epsilon`` (kind dp_canary) and the one-run audit in the ``--json`` summary."""

import argparse
import json
from pathlib import Path

import pytest
import yaml

from miaudit.cli import main
from miaudit.errors import MiauditError
from miaudit.runs.gate import check_defense_gate_targets, check_gates, describe, parse_gate
from miaudit.runs.tracking import RunOptions, add_common_run_flags, finalize_run
from run_fixtures import make_run_dir

# the smallest canary audit that still leaks: 100 mislabeled canaries, undefended MLP, about 4 s
TINY = {"kind": "dp_canary", "seed": 3, "dataset": {"source": "digits"}, "n_train": 200, "n_test": 100,
        "canaries": {"n": 100, "kind": "mislabeled", "k_pos": 10, "k_neg": 10},
        "training": {"model": "mlp", "hidden": [64], "epochs": 20, "batch_size": 32, "lr": 0.003},
        "defense": {"name": "none"}, "delta": 1e-5, "evaluation": {"n_bootstrap": 20}}
ONE_RUN = {"epsilon": 1.3, "delta": 1e-5, "confidence": 0.95, "correct": 19, "guesses": 20, "attack": "loss",
           "verdict": "accountant epsilon = 2.000 (upper bound) vs one-run lower bound 1.300 (consistent)"}
METRICS = {"kind": "dp_canary", "attacks": [{"name": "loss", "auc": 0.8}], "one_run_audit": ONE_RUN,
           "dp": {"defense": "dp_sgd", "epsilon": 2.0, "delta": 1e-5}}


def test_parse_run_level_metric():
    gate = parse_gate(" one_run_epsilon>=2.5 ")
    assert (gate.attack, gate.metric, gate.fpr, gate.op, gate.threshold) == (None, "one_run_epsilon", None, ">=", 2.5)
    assert parse_gate("one_run_epsilon:auc > 0.5").attack == "one_run_epsilon"  # still a valid attack name


@pytest.mark.parametrize("text", ["loss:one_run_epsilon > 8", "rmia : one_run_epsilon < 1"])
def test_attack_prefix_is_refused(text):
    with pytest.raises(MiauditError, match="belongs to the run .* drop the '(loss|rmia)': prefix"):
        parse_gate(text)


@pytest.mark.parametrize("threshold, tripped", [(1.0, True), (1.3, False), (2.0, False)])
def test_evaluated_from_the_one_run_audit(threshold, tripped):
    result = check_gates(METRICS, [f"one_run_epsilon > {threshold}", "auc > 0.9"])
    detail = result.details[0]
    assert result.tripped is tripped and detail["tripped"] is tripped and detail["value"] == 1.3
    assert detail["attack"] == "one_run_audit" and detail["bound_attack"] == "loss" and not detail["strongest"]
    assert detail["accountant_epsilon"] == 2.0
    assert "one-run canary audit, scored by loss: one_run_epsilon = 1.3" in describe(detail)
    assert result.details[1]["attack"] == "loss" and result.details[1]["strongest"]


def test_a_run_without_a_one_run_audit_is_a_clear_error(tmp_path):
    metrics = {k: v for k, v in METRICS.items() if k != "one_run_audit"} | {"kind": "classifier"}
    with pytest.raises(MiauditError, match="kind 'classifier'.* has no one-run canary audit.*kind dp_canary"):
        check_gates(metrics, ["one_run_epsilon > 1"])
    # through the tracker, as `miaudit audit` ends: completed run, then the error (exit code 2 on the CLI)
    folder = make_run_dir(tmp_path / "run", figures=False)
    args = RunOptions(fail_if=("one_run_epsilon > 1",), json=False, store=False)
    with pytest.raises(MiauditError, match="needs an audit of kind dp_canary"):
        finalize_run(folder, args)
    assert (folder / "report.html").is_file()


def test_defense_comparisons_refuse_it_before_training():
    with pytest.raises(MiauditError, match="a defense comparison has none.*epsilon > 8"):
        check_defense_gate_targets(["one_run_epsilon > 8"], attacks=["loss"], defenses=["none"])


def test_cli_flag_refuses_a_prefixed_run_metric(capsys):
    parser = argparse.ArgumentParser(prog="miaudit audit")
    add_common_run_flags(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--fail-if", "loss:one_run_epsilon > 8"])
    assert info.value.code == 2 and "drop the 'loss': prefix" in capsys.readouterr().err


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "dp_canary.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _audit(config, out, capsys, gate):
    capsys.readouterr()
    code = main(["audit", str(config), "--out", str(out), "--no-store", "-q", "--threads", "1", "--json",
                 "--fail-if", gate])
    return code, json.loads(capsys.readouterr().out)


def test_cli_gate_holds_then_trips_and_the_summary_carries_the_audit(config, tmp_path, capsys):
    code, summary = _audit(config, tmp_path / "holds", capsys, "one_run_epsilon > 100")
    assert code == 0 == summary["exit_code"] and not summary["gates"]["tripped"]
    written = json.loads((tmp_path / "holds" / "metrics.json").read_text())
    one_run = summary["one_run_audit"]
    assert one_run == {k: written["one_run_audit"][k] for k in
                       ("epsilon", "delta", "confidence", "correct", "guesses", "verdict")}
    assert one_run["epsilon"] > 0.5 and one_run["guesses"] == 20 and "no accountant" in one_run["verdict"]
    assert summary["dp"] == written["dp"] and summary["dp"]["defense"] == "none" and summary["dp"]["epsilon"] is None
    assert summary["gates"]["details"][0]["value"] == one_run["epsilon"]
    code, summary = _audit(config, tmp_path / "trips", capsys, f"one_run_epsilon > {one_run['epsilon'] / 2}")
    assert code == 1 == summary["exit_code"] and summary["gates"]["details"][0]["tripped"]


def test_summary_of_an_ordinary_audit_has_no_one_run_fields(tmp_path, capsys):
    folder = make_run_dir(tmp_path / "run", figures=False)
    args = RunOptions(fail_if=("auc > 0.99",), json=True, store=False)
    assert finalize_run(folder, args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "one_run_audit" not in summary and "dp" not in summary and summary["kind"] == "classifier"


def test_audit_of_another_kind_refuses_it_before_running(tmp_path, capsys):
    config = Path(__file__).resolve().parents[1] / "examples" / "digits_audit.yaml"
    out = tmp_path / "out"
    code = main(["audit", str(config), "--out", str(out), "--no-store", "-q", "--fail-if", "one_run_epsilon > 1"])
    assert code == 2 and not out.exists()
    assert "exists only in audits of kind dp_canary" in capsys.readouterr().err
