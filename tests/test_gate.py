"""--fail-if gates: parsing, the strongest attack, named attacks, metrics computed from saved scores."""

import argparse

import numpy as np
import pytest

from miaudit.errors import MiauditError
from miaudit.evaluation import AttackResult
from miaudit.runs.gate import Gate, check_gates, describe, metric_value, parse_gate
from miaudit.runs.tracking import add_common_run_flags


def _entry(name, auc, tpr01, advantage=0.2, eps=None):
    entry = {"name": name, "auc": auc, "advantage": advantage, "balanced_accuracy": 0.5 + advantage / 2,
             "tpr_at_fpr": {"0.001": tpr01 / 4, "0.01": tpr01, "0.05": min(1.0, tpr01 * 3)}}
    if eps is not None:
        entry["empirical_epsilon"] = {"epsilon": eps, "delta": 1e-5, "confidence": 0.95}
    return entry


METRICS = {"version": 1, "attacks": [_entry("loss", 0.62, 0.03, eps=0.4), _entry("rmia", 0.71, 0.09, 0.3, eps=1.7),
                                     _entry("lira", 0.69, 0.12, 0.25, eps=2.5),
                                     _entry("blind_baseline", 0.95, 0.60, 0.8)]}


@pytest.mark.parametrize("text, attack, metric, fpr, op, value", [
    ("tpr@0.01 > 0.05", None, "tpr@0.01", 0.01, ">", 0.05),
    ("rmia:tpr@0.01 > 0.05", "rmia", "tpr@0.01", 0.01, ">", 0.05),
    ("auc >= 0.6", None, "auc", None, ">=", 0.6),
    ("advantage>0.1", None, "advantage", None, ">", 0.1),
    ("epsilon > 2", None, "epsilon", None, ">", 2.0),
    ("  lira : tpr @ 1% <= 1e-1 ", "lira", "tpr@0.01", 0.01, "<=", 0.1),
    ("modified_entropy:balanced_accuracy < .7", "modified_entropy", "balanced_accuracy", None, "<", 0.7),
])
def test_parse(text, attack, metric, fpr, op, value):
    gate = parse_gate(text)
    assert (gate.attack, gate.metric, gate.op, gate.threshold) == (attack, metric, op, value)
    assert gate.fpr == (pytest.approx(fpr) if fpr is not None else None)


@pytest.mark.parametrize("text", ["", "auc", "auc > ", "auc => 0.5", "precision > 0.3", "tpr > 0.1",
                                  "auc > 0.5 and tpr@0.01 > 0.1", "rmia: > 0.3", "auc == 0.5"])
def test_unparseable_names_the_grammar(text):
    with pytest.raises(MiauditError, match="OP") as info:
        parse_gate(text)
    assert "tpr@" in str(info.value) or "FPR" in str(info.value)


@pytest.mark.parametrize("text", ["tpr@2 > 0.1", "tpr@0 > 0.1", "tpr@100% > 0.1"])
def test_fpr_out_of_range(text):
    with pytest.raises(MiauditError, match=r"must be in \(0, 1\)"):
        parse_gate(text)


def test_strongest_attack_is_the_max_of_each_metric_and_baselines_are_not_candidates():
    result = check_gates(METRICS, ["tpr@0.01 > 0.1", "auc > 0.8", "epsilon > 2", "advantage >= 0.3"])
    got = {d["expression"]: (d["attack"], d["value"], d["tripped"]) for d in result.details}
    assert got["tpr@0.01 > 0.1"] == ("lira", 0.12, True)
    assert got["auc > 0.8"] == ("rmia", 0.71, False)  # blind_baseline's 0.95 is not an attack on the model
    assert got["epsilon > 2"] == ("lira", 2.5, True)
    assert got["advantage >= 0.3"] == ("rmia", 0.3, True)
    assert result.tripped and all(d["strongest"] for d in result.details)


def test_named_attack_and_all_holding():
    result = check_gates(METRICS, ["loss:tpr@0.01 > 0.05", "rmia:auc >= 0.75", "blind_baseline:auc < 0.9"])
    assert not result.tripped
    assert [d["attack"] for d in result.details] == ["loss", "rmia", "blind_baseline"]
    assert "holds" in describe(result.details[0]) and "loss" in describe(result.details[0])
    assert check_gates(METRICS, []).tripped is False


def test_unknown_attack_lists_the_run_attacks():
    with pytest.raises(MiauditError, match="loss, rmia, lira"):
        check_gates(METRICS, ["shokri:auc > 0.5"])


def test_metric_not_stored_is_computed_from_saved_scores(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(500, int), np.zeros(500, int)]
    scores = rng.normal(size=1000) + 3 * labels
    AttackResult("loss", np.arange(1000), labels, scores).save(tmp_path / "scores")
    metrics = {"attacks": [{"name": "loss", "auc": 0.98, "advantage": 0.8, "tpr_at_fpr": {"0.01": 0.5}}]}
    result = check_gates(metrics, ["tpr@0.02 > 0.3", "epsilon > 1"], run_dir=tmp_path)
    assert result.details[0]["value"] > 0.3 and result.details[1]["value"] > 1
    with pytest.raises(MiauditError, match="stored FPRs: 0.01"):
        check_gates(metrics, ["tpr@0.02 > 0.3"])


def test_metrics_file_and_run_folder_are_accepted(tmp_path):
    (tmp_path / "metrics.json").write_text('{"attacks": [{"name": "loss", "auc": 0.7}]}')
    assert check_gates(tmp_path, ["auc > 0.6"]).tripped
    assert not check_gates(tmp_path / "metrics.json", ["auc > 0.8"]).tripped
    (tmp_path / "metrics.json").write_text("{broken")
    with pytest.raises(MiauditError, match="not valid JSON"):
        check_gates(tmp_path, ["auc > 0.6"])
    with pytest.raises(MiauditError, match="attacks"):
        check_gates({"version": 0}, ["auc > 0.6"])


def test_cli_flag_rejects_a_bad_gate_with_exit_code_2(capsys):
    parser = argparse.ArgumentParser(prog="miaudit audit")
    add_common_run_flags(parser)
    args = parser.parse_args(["--fail-if", "auc > 0.6", "--fail-if", "rmia:tpr@0.01 > 0.05", "-q"])
    assert args.fail_if == ["auc > 0.6", "rmia:tpr@0.01 > 0.05"] and args.quiet
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--fail-if", "auc is high"])
    assert info.value.code == 2
    assert "cannot parse gate" in capsys.readouterr().err


def test_hand_built_tpr_gate_without_fpr_is_a_clear_error():
    gate = Gate(expression="tpr > 0.1", attack=None, metric="tpr", fpr=None, op=">", threshold=0.1)
    with pytest.raises(MiauditError, match="has no FPR; use tpr@FPR"):
        metric_value(_entry("loss", 0.6, 0.05), gate)


def _with_intervals(entry, auc_ci, tpr_ci, n_nonmembers):
    return {**entry, "auc_ci": auc_ci, "tpr_at_fpr_ci": {"0.01": tpr_ci}, "n_nonmembers": n_nonmembers}


def test_bounds_gate_the_ends_of_the_stored_intervals_and_pick_the_strongest_by_the_bound():
    loss = _with_intervals(_entry("loss", 0.62, 0.03), [0.58, 0.66], [0.00, 0.09], 150)
    lira = _with_intervals(_entry("lira", 0.69, 0.12), [0.60, 0.77], [0.01, 0.30], 150)
    rmia = _with_intervals(_entry("rmia", 0.66, 0.10), [0.63, 0.70], [0.06, 0.15], 150)
    metrics = {"version": 1, "attacks": [loss, lira, rmia]}
    result = check_gates(metrics, ["tpr@0.01.lower > 0.05", "tpr@1%.upper > 0.2", "auc.lower >= 0.62",
                                   "lira:auc.upper < 0.7"])
    got = {d["expression"]: (d["attack"], d["bound"], d["value"], d["tripped"]) for d in result.details}
    assert got["tpr@0.01.lower > 0.05"] == ("rmia", "lower", 0.06, True)  # lira's point 0.12 is higher, its bound not
    assert got["tpr@1%.upper > 0.2"] == ("lira", "upper", 0.30, True)
    assert got["auc.lower >= 0.62"] == ("rmia", "lower", 0.63, True)
    assert got["lira:auc.upper < 0.7"] == ("lira", "upper", 0.77, False)
    assert all("note" not in d for d in result.details)  # bounds carry their uncertainty


def test_a_point_tpr_gate_at_an_fpr_with_few_expected_false_positives_carries_a_note():
    entry = _with_intervals(_entry("lira", 0.69, 0.12), [0.60, 0.77], [0.01, 0.30], 150)
    (detail,) = check_gates({"version": 1, "attacks": [entry]}, ["tpr@0.01 > 0.05"]).details
    assert detail["tripped"] and detail["note"].startswith("tpr@0.01 rests on 1.5 expected false positives among 150")
    assert "audit at least 1000 non-members" in detail["note"] and "note: tpr@0.01 rests on" in describe(detail)
    enough = {**entry, "n_nonmembers": 1000}
    assert "note" not in check_gates({"version": 1, "attacks": [enough]}, ["tpr@0.01 > 0.05"]).details[0]
    assert "note" not in check_gates({"version": 1, "attacks": [entry]}, ["auc > 0.6"]).details[0]


@pytest.mark.parametrize("text, message", [
    ("epsilon.lower > 1", "itself a lower confidence bound on epsilon; drop '.lower'"),
    ("one_run_epsilon.upper > 8", "itself a lower confidence bound"),
    ("balanced_accuracy.upper > 0.6", "balanced_accuracy has no stored confidence interval"),
])
def test_bounds_on_metrics_without_an_interval_are_refused(text, message):
    with pytest.raises(MiauditError, match=message):
        parse_gate(text)


def test_a_bound_at_an_fpr_without_a_stored_interval_names_the_stored_ones():
    entry = _with_intervals(_entry("lira", 0.69, 0.12), [0.60, 0.77], [0.01, 0.30], 150)
    with pytest.raises(MiauditError, match="no stored confidence interval for tpr@0.02 .*at FPRs 0.01"):
        check_gates({"version": 1, "attacks": [entry]}, ["lira:tpr@0.02.lower > 0.1"])
