"""``kind: dp_canary``: the one-run canary audit (Steinke, Nasr & Jagielski 2023) beside the DP accountant."""

import json
import re
import shutil

import numpy as np
import pytest
import yaml

from miaudit.classifier.experiment import majority_rate
from miaudit.cli import main
from miaudit.data import ArrayDataset, load_dataset
from miaudit.defenses.dp_canary import (
    CANARIES_FILE,
    CanaryConfig,
    DefenseConfig,
    DPCanaryConfig,
    _training_set,
    _verdict,
    draw_canaries,
)
from miaudit.errors import ConfigError, DataError, MiauditError
from miaudit.evaluation import AttackResult
from miaudit.evaluation.epsilon import one_run_epsilon
from miaudit.report.html import build_html_report
from miaudit.report.markdown import render_report
from miaudit.runs import parse_config, run_audit
from miaudit.runs.config import DatasetConfig

TRAINING = {"model": "mlp", "hidden": [256], "epochs": 30, "batch_size": 32, "lr": 0.003}


def _config(**overrides):
    config = {"kind": "dp_canary", "seed": 3, "dataset": {"source": "digits"}, "n_train": 300, "n_test": 100,
              "canaries": {"n": 200, "kind": "mislabeled", "k_pos": 20, "k_neg": 20},
              "training": dict(TRAINING), "defense": {"name": "none"}, "delta": 1e-5,
              "evaluation": {"n_bootstrap": 100}}
    config.update(overrides)
    return config


DP = {"name": "dp_sgd", "params": {"target_epsilon": 2.0, "delta": 1e-5, "max_grad_norm": 1.0}}


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"canaries": {"n": 200, "colour": "red"}}, "unknown key 'colour'"),
    ({"canaries": {"n": 200, "k_pos": 150, "k_neg": 100}}, "k_pos + k_neg = 250 must lie in 1..200"),
    ({"canaries": {"n": 200, "kind": "noisy"}}, "choose one of 'mislabeled', 'clean'"),
    ({"delta": None}, "has no privacy accountant, so there is no delta"),
    ({"defense": DP, "delta": 1e-6}, "differs from the accountant's delta"),
    ({"defense": {"name": "dp_sgd", "params": {"epsilon": 8}}}, "has no parameter 'epsilon'"),
    ({"defense": {"name": "top_k"}}, "post-processes the model's outputs"),
    ({"defense": {"name": "distillation"}}, "needs the defender's reference data"),
    ({"training": {**TRAINING, "seed": 1}}, "training.seed"),
    ({"bound_attack": "lira"}, "not one of the attacks"),
    ({"sweep_ks": [500]}, "no k in [500] fits 200 canaries"),
])
def test_bad_configs_name_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(_config(**overrides))


def test_k_defaults_are_fixed_in_the_resolved_config():
    config = parse_config(_config(canaries={"n": 200}))
    assert (config.canaries.k_pos, config.canaries.k_neg) == (20, 20)
    assert config.delta == 1e-5 and parse_config(_config(defense=DP, delta=None)).delta is None


@pytest.mark.parametrize("delta, defense, message", [
    (None, DefenseConfig(), "has no privacy accountant, so there is no delta"),
    (1e-6, DefenseConfig(DP["name"], dict(DP["params"])), "differs from the accountant's delta"),
])
def test_a_config_built_in_python_has_its_delta_checked_before_training(tmp_path, delta, defense, message):
    config = DPCanaryConfig(dataset=DatasetConfig("digits"), n_train=300, n_test=100, canaries=CanaryConfig(n=200),
                            defense=defense, delta=delta)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_audit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, error, message", [
    ({"n_train": 1000, "canaries": {"n": 1000}}, DataError, r"lower canaries.n \(at most 697 here\)"),
    ({"attacks": [{"name": "shokri"}]}, ConfigError, "scores each canary from those outputs alone"),
])
def test_bad_input_found_before_training_leaves_no_folder(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        run_audit(_config(**overrides), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# -- canaries -----------------------------------------------------------------------------------
def test_canaries_are_disjoint_mislabeled_and_inserted_independently_with_probability_half():
    labels = np.random.default_rng(0).integers(0, 10, 30_000)
    kwargs = dict(n_train=1000, n_canaries=20_000, n_test=500, seed=7)
    draw = draw_canaries(labels, 10, kind="mislabeled", **kwargs)
    parts = np.concatenate([draw.train, draw.canaries, draw.test])
    assert np.unique(parts).size == parts.size == 21_500
    assert (draw.canary_labels != labels[draw.canaries]).all() and draw.canary_labels.max() <= 9
    inc = draw.included
    assert abs(inc.mean() - 0.5) < 0.015                                     # 4.2 standard errors
    assert abs(np.mean(inc[1:] == inc[:-1]) - 0.5) < 0.015                   # no serial dependence
    for c in range(10):                                                      # nor dependence on the label
        assert abs(inc[draw.canary_labels == c].mean() - 0.5) < 0.05
    again = draw_canaries(labels, 10, kind="mislabeled", **kwargs)
    clean = draw_canaries(labels, 10, kind="clean", **kwargs)
    other = draw_canaries(labels, 10, kind="mislabeled", **{**kwargs, "seed": 8})
    assert (again.included == inc).all() and (again.canary_labels == draw.canary_labels).all()
    assert (clean.included == inc).all() and (clean.canary_labels == labels[clean.canaries]).all()
    assert (other.included != inc).any()


def test_training_set_holds_the_fixed_examples_and_exactly_the_inserted_canaries():
    fixed = ArrayDataset(np.zeros((3, 2)), np.array([0, 1, 2]), n_classes=4)
    canaries = ArrayDataset(np.arange(8.0).reshape(4, 2), np.array([3, 3, 1, 0]), n_classes=4, ids=np.arange(4))
    data = _training_set(fixed, canaries, np.array([True, False, True, False]))
    assert data.y.tolist() == [0, 1, 2, 3, 1]
    assert data.x[3:].tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert data.ids[3:].tolist() == ["canary/0", "canary/2"]


# -- runs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpc") / "none"
    metrics = run_audit(parse_config(_config()), out, progress=False)
    return out, metrics


@pytest.fixture(scope="module")
def dp_cli_run(tmp_path_factory):
    """DP-SGD through the CLI: exit code, report.html, run store."""
    folder = tmp_path_factory.mktemp("dpc")
    config = folder / "dp.yaml"
    config.write_text(yaml.safe_dump(_config(defense=DP, delta=None, training={**TRAINING, "epochs": 3})))
    code = main(["audit", str(config), "--out", str(folder / "run"), "--home", str(folder / "home"), "-q",
                 "--threads", "1"])
    return code, folder / "run"


def test_bound_from_saved_canary_scores_matches_metrics(overfit_run):
    out, metrics = overfit_run
    one_run = metrics["one_run_audit"]
    result = AttackResult.load(out / "scores", one_run["attack"])
    with np.load(out / CANARIES_FILE) as saved:
        assert (saved["included"] == result.labels.astype(bool)).all()
        assert (saved["ids"] == result.ids).all() and np.allclose(saved["score_loss"], result.scores)
        assert (saved["canary_label"] != saved["true_label"]).all()
    again = one_run_epsilon(result.scores, result.labels, k_pos=20, k_neg=20, delta=1e-5, confidence=0.95,
                            seed=one_run["tie_break_seed"])
    assert again.to_dict() == {k: one_run[k] for k in again.to_dict()}
    written = json.loads((out / "metrics.json").read_text())
    assert written["one_run_audit"]["epsilon"] == one_run["epsilon"]
    assert metrics["data"]["n_members"] == int(result.labels.sum()) == metrics["canaries"]["n_inserted"]


def test_target_accuracies_are_on_the_fixed_training_and_test_sets_not_the_canaries(overfit_run):
    _, metrics = overfit_run
    data = load_dataset("digits", seed=3)
    draw = draw_canaries(data.y, 10, n_train=300, n_canaries=200, n_test=100, kind="mislabeled", seed=3)
    target = metrics["target"]
    assert target["majority_rate"] == majority_rate(data.y[draw.train], data.y[draw.test])
    assert target["test_accuracy"] > 0.5 > target["canary_accuracy_left_out"]  # mislabeled: wrong when unseen
    assert not any("no better than always predicting" in w for w in metrics["warnings"])


def test_undefended_overfit_model_leaks_its_canaries(overfit_run):
    _, metrics = overfit_run
    attack = metrics["attacks"][0]
    assert attack["name"] == "loss" and attack["auc_ci"][0] > 0.7
    assert metrics["one_run_audit"]["epsilon"] > 0.5
    assert metrics["one_run_audit"]["oracle"]["selection"] == "oracle"
    assert metrics["one_run_audit"]["oracle"]["oracle_best"]["epsilon"] >= metrics["one_run_audit"]["epsilon"]
    assert metrics["dp"]["epsilon"] is None and metrics["dp"]["delta"] == 1e-5
    assert any("compared against nothing" in w for w in metrics["warnings"])


def test_dp_sgd_run_records_the_accountant_and_stays_below_it(dp_cli_run):
    code, run = dp_cli_run
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    dp, one_run = metrics["dp"], metrics["one_run_audit"]
    assert dp["accountant"] == "rdp" and dp["defense"] == "dp_sgd" and dp["delta"] == one_run["delta"] == 1e-5
    assert abs(dp["epsilon"] - 2.0) < 0.1 and dp["noise_multiplier"] > 0
    assert one_run["accountant_epsilon"] == dp["epsilon"]
    assert 0 <= one_run["epsilon"] < dp["epsilon"] and "consistent" in one_run["verdict"]
    assert metrics["attacks"][0]["empirical_epsilon"]["delta"] == 1e-5    # the tracker used the accountant's delta
    assert not [w for w in metrics["warnings"] if "VIOLATED" in w]


def test_cli_report_shows_the_one_run_section(dp_cli_run):
    _, run = dp_cli_run
    page = (run / "report.html").read_text()
    assert "One-run canary audit (Steinke, Nasr &amp; Jagielski 2023)" in page
    assert "fixed in the config (valid bound)" in page and "oracle sweep" in page
    assert "DP claim violated" not in page
    assert "One-run DP audit" in (run / "report.md").read_text()


def test_a_bound_above_the_accountant_is_reported_loudly(overfit_run, tmp_path):
    out, _ = overfit_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    bound = metrics["one_run_audit"]["epsilon"]
    metrics["dp"] = {**metrics["dp"], "epsilon": bound / 2, "accountant": "rdp"}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    assert "DP claim violated" in build_html_report(copy).read_text()
    assert "DP CLAIM VIOLATED" in render_report(metrics)
    _, warnings = _verdict(bound, bound, {"defense": "dp_sgd", "epsilon": bound / 2})
    assert warnings and warnings[0].startswith("DP CLAIM VIOLATED") and "broken" in warnings[0]
    assert _verdict(0.1, 0.1, {"defense": "dp_sgd", "epsilon": 1.0})[1] == []


def test_errors_are_miaudit_errors_for_the_cli(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(_config(canaries={"n": 200, "k_pos": 300})))
    assert main(["audit", str(config), "--out", str(tmp_path / "run"), "--no-store", "-q"]) == 2
    assert "k_pos + k_neg" in capsys.readouterr().err
    assert issubclass(ConfigError, MiauditError)
