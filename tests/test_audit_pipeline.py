"""End-to-end audits from a config: run directory, strict configs, atomic output, determinism, kinds."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from miaudit.attacks.registry import create_attack
from miaudit.cli import main
from miaudit.errors import ConfigError
from miaudit.evaluation import roc_auc
from miaudit.report import load_run
from miaudit.runs import (
    AttackSpec,
    AuditOutcome,
    EvaluationConfig,
    RunStore,
    ScoredAttack,
    default_store_path,
    parse_config,
    register_kind,
    run_audit,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny_config(**overrides):
    config = {
        "seed": 3,
        "dataset": {"source": "digits"},
        "split": {"n_members": 80, "n_nonmembers": 80, "n_shadow": 160, "n_population": 80},
        "training": {"model": "mlp", "hidden": [32], "epochs": 8, "batch_size": 16, "lr": 0.003},
        "shadow": {"n_models": 1},
        "attacks": [{"name": "loss"}, {"name": "loss", "label": "loss_per_class", "params": {"per_class": True}},
                    {"name": "population"}, {"name": "ml_leaks"}],
        "evaluation": {"n_bootstrap": 20},
    }
    config.update(overrides)
    return config


def write_config(tmp_path, config, name="audit.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    path = write_config(folder, tiny_config())
    args = ["audit", str(path), "--out", str(folder / "run"), "-q", "--home", str(folder / "home"),
            "--fail-if", "loss:auc > 0.999"]
    assert main(args) == 0  # the gate holds
    return folder / "run"


def test_run_directory(tiny_run):
    for name in ("metrics.json", "config.yaml", "report.md", "report.html", "log.txt", "roc_linear.png",
                 "roc_loglog.png", "score_histograms.png", "target_outputs.npz", "scores/loss_per_class.scores.npz"):
        assert (tiny_run / name).is_file(), name
    html = (tiny_run / "report.html").read_text(encoding="utf-8")  # written in a temporary sibling, then renamed
    assert "<title>miaudit report: run</title>" in html and ".tmp-" not in html
    with RunStore(default_store_path(tiny_run.parent / "home")) as store:
        (row,) = store.list_runs()
    assert row["command"] == "audit" and row["status"] == "completed" and row["config"]["seed"] == 3
    run = load_run(tiny_run)
    m = run.metrics
    assert m["kind"] == "classifier" and m["seed"] == 3
    assert set(m["target"]) >= {"train_accuracy", "test_accuracy", "source", "fingerprint"}
    assert "blind_baseline" not in m  # the tool drew the split at random: no distribution shift to look for
    assert m["data"]["n_members"] == 80 and m["data"]["n_nonmembers"] == 80
    assert m["shadow"]["n_models"] == 1 and m["shadow"]["members_per_model"] == 80
    assert run.attack_names == ["loss", "loss_per_class", "population", "ml_leaks"]
    for entry in m["attacks"]:
        assert 0 <= entry["auc_ci"][0] <= entry["auc"] <= entry["auc_ci"][1] <= 1
        assert set(entry["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"}
        assert entry["threshold_source"] == "reference"  # every one of these learns its threshold on shadow data
        assert 0 <= entry["balanced_accuracy"] <= 1
        assert entry["empirical_epsilon"]["epsilon"] >= 0
    # learned state needed to read the results: class thresholds learned on the shadow models
    learned = run.attack("loss_per_class")["learned"]
    assert len(learned["class_thresholds_"]) == 10 and isinstance(learned["global_threshold_"], float)
    assert run.attack("loss")["learned"] == {}  # its one learned threshold is the entry's "threshold"
    # metrics agree with the saved per-example scores
    loss = run.result("loss")
    assert roc_auc(loss.labels, loss.scores) == pytest.approx(run.attack("loss")["auc"])
    assert loss.labels.sum() == 80
    # the resolved config re-parses to the same audit (training.seed is dropped: the top-level seed drives it)
    assert parse_config(run.config) == parse_config(tiny_config())
    text = (tiny_run / "report.md").read_text()
    assert "`loss_per_class`" in text and "Train accuracy" in text
    assert "loss_per_class: AUC" in (tiny_run / "log.txt").read_text()


def test_same_config_same_scores(tiny_run, tmp_path, capsys):
    path = write_config(tmp_path, tiny_config())
    assert main(["audit", str(path), "--out", str(tmp_path / "again"), "-q", "--fail-if", "auc > 0.5"]) == 1
    assert "loss_per_class" in capsys.readouterr().out  # the summary table, then the tripped gate
    first, second = load_run(tiny_run), load_run(tmp_path / "again")
    for name in first.attack_names:
        np.testing.assert_array_equal(first.result(name).scores, second.result(name).scores)
        np.testing.assert_array_equal(first.result(name).ids, second.result(name).ids)
    other = run_audit(parse_config(tiny_config(seed=4, attacks=[{"name": "loss"}])), tmp_path / "seed4",
                      progress=False)
    assert other["target"]["fingerprint"] != first.metrics["target"]["fingerprint"]


def test_precomputed_target_reproduces_trained_run(tiny_run, tmp_path):
    config = {"target": {"precomputed": str(tiny_run / "target_outputs.npz")},
              "attacks": [{"name": "loss"}, {"name": "modified_entropy"}], "evaluation": {"n_bootstrap": 20}}
    metrics = run_audit(config, tmp_path / "pre", progress=False)
    trained = load_run(tiny_run).metrics
    assert metrics["target"]["source"] == "precomputed"
    assert metrics["target"]["train_accuracy"] == trained["target"]["train_accuracy"]
    assert metrics["attacks"][0]["auc"] == pytest.approx(trained["attacks"][0]["auc"])
    assert metrics["attacks"][0]["threshold_source"] == "oracle"  # no shadow data: nothing to learn it from
    assert "blind_baseline" not in metrics  # outputs only: no records to classify


def test_unknown_kind_and_keys(tmp_path):
    with pytest.raises(ConfigError, match="is not an audit kind"):
        parse_config(tiny_config(kind="quantum"))
    with pytest.raises(ConfigError, match=r"config.shadow: unknown key 'n_model'"):
        parse_config(tiny_config(shadow={"n_model": 2}))
    with pytest.raises(ConfigError, match=r"config.training.epochs: expected an integer"):
        parse_config(tiny_config(training={"epochs": "many"}))
    with pytest.raises(ConfigError, match="training.seed"):
        parse_config(tiny_config(training={"seed": 1}))
    with pytest.raises(ConfigError, match="appears twice"):
        parse_config(tiny_config(attacks=[{"name": "loss"}, {"name": "loss"}]))
    with pytest.raises(ConfigError, match="n_members"):
        parse_config(tiny_config(split={"n_members": 0, "n_nonmembers": 10}))


@pytest.mark.parametrize("change,message", [
    ({"attacks": [{"name": "no_such_attack"}]}, "unknown attack 'no_such_attack'"),
    ({"attacks": [{"name": "loss", "params": {"temperature": 2}}]}, "has no parameter 'temperature'"),
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"attacks": [{"name": "shokri"}], "shadow": {"n_models": 0}}, "shadow.n_models"),
    ({"attacks": [{"name": "lira"}]}, "reference.n_models"),
    ({"dataset": {"source": "missing_file.npz"}}, "missing_file.npz"),
    ({"split": {"n_members": 1000, "n_nonmembers": 1000, "n_shadow": 160, "n_population": 9}},
     "dataset has only 1797"),
    ({"target": {"precomputed": "nowhere.npz"}, "split": {}, "shadow": {}, "dataset": None,
      "attacks": [{"name": "loss"}]}, "does not exist"),
])
def test_bad_input_exit_code_2_and_no_output(tmp_path, capsys, change, message):
    config = {**tiny_config(), **change}
    config = {k: v for k, v in config.items() if v is not None}
    out = tmp_path / "out"
    assert main(["audit", str(write_config(tmp_path, config)), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.yaml"]  # no temporary folder left behind


@pytest.mark.parametrize("arrays,message", [
    ({"logits": np.array([[0.0, np.nan], [1.0, 0.0]])}, "NaN"),
    ({"probs": np.array([[0.5, 0.6], [1.0, 0.0]])}, "sum to 1"),
    ({"predictions": np.array([0, 1])}, "needs probabilities access"),  # labels only, but the loss attack
    ({"logits": np.array([[0.25, 0.75], [1.0, 0.0]])}, "look like probabilities"),  # saved under the wrong name
])
def test_bad_precomputed_outputs_exit_code_2(tmp_path, capsys, arrays, message):
    npz = tmp_path / "outputs.npz"
    np.savez(npz, labels=np.array([0, 1]), membership=np.array([1, 0]), **arrays)
    config = {"target": {"precomputed": str(npz)}, "attacks": [{"name": "loss"}]}
    assert main(["audit", str(write_config(tmp_path, config)), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["audit", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "--out" in capsys.readouterr().out


def test_missing_config_and_existing_output(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    config = write_config(tmp_path, tiny_config())
    assert main(["audit", str(config), "--out", str(tmp_path / "full"), "-q"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_audit_examples_parse():
    """Every example config meant for 'miaudit audit' (its comments say so) is valid."""
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml") if f"miaudit audit examples/{p.name}" in p.read_text())
    assert {"digits_audit.yaml", "location_audit.yaml", "precomputed_audit.yaml"} <= set(names)
    for name in names:
        config = parse_config(EXAMPLES / name)
        assert config.attacks


@dataclass
class ToyConfig:
    attacks: list[AttackSpec]
    kind: str = "toy"
    seed: int = 0
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


def run_toy(config, folder, *, progress=True):
    """A kind whose 'target' leaks membership through a shifted score."""
    rng = np.random.default_rng(config.seed)
    membership = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    scores = rng.normal(size=100) + 2.0 * membership
    attack = create_attack("loss")
    return AuditOutcome(target={"model": "toy"}, data={"n_members": 50, "n_nonmembers": 50},
                        attacks=[ScoredAttack("toy_scores", attack, np.arange(100), membership, scores, 0.0)])


def test_registered_kind_runs_through_the_shared_pipeline(tmp_path):
    register_kind("toy", ToyConfig, run_toy)
    metrics = run_audit({"kind": "toy", "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 10}},
                        tmp_path / "toy", progress=False)
    assert metrics["kind"] == "toy" and metrics["attacks"][0]["auc"] > 0.8
    assert json.loads((tmp_path / "toy" / "metrics.json").read_text())["target"] == {"model": "toy"}
    assert [w for w in metrics["warnings"] if "bootstrap resamples" in w] == [
        "the 95% intervals rest on 10 bootstrap resamples (0.25 beyond each bound; a stable bound needs 5): set "
        "evaluation.n_bootstrap >= 200 (default 1000) for figures you report"]
    enough = run_audit({"kind": "toy", "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 200}},
                       tmp_path / "toy200", progress=False)
    assert not [w for w in enough["warnings"] if "bootstrap resamples" in w]


@pytest.mark.parametrize("n_bootstrap, confidence, needed", [(199, 0.95, 200), (999, 0.99, 1000), (50, 0.9, 100)])
def test_too_few_resamples_for_the_confidence_level_are_warned_about(n_bootstrap, confidence, needed):
    from miaudit.runs.config import EvaluationConfig

    assert f"n_bootstrap >= {needed} " in EvaluationConfig(n_bootstrap=n_bootstrap, confidence=confidence
                                                            ).interval_warning()
    assert EvaluationConfig(n_bootstrap=needed, confidence=confidence).interval_warning() is None
    assert EvaluationConfig(n_bootstrap=0).interval_warning() is None  # no intervals at all, said elsewhere


def test_ray_executor_gets_the_cluster_address(tmp_path, monkeypatch):
    """reference.ray_address reaches the Ray executor (stood in for by the sequential one: no cluster in tests)."""
    from miaudit.classifier.reference import executors

    calls = []

    def fake_ray(context, tasks, *, n_workers=None, address=None):
        calls.append((n_workers, address))
        return executors.run_sequential(context, tasks)

    monkeypatch.setattr(executors, "run_ray", fake_ray)
    config = tiny_config(shadow={}, split={"n_members": 40, "n_nonmembers": 40},
                         reference={"n_models": 2, "executor": "ray", "ray_address": "ray://head:10001"},
                         attacks=[{"name": "difficulty_calibration"}])
    metrics = run_audit(config, tmp_path / "ray", progress=False)
    assert calls == [(None, "ray://head:10001")]
    assert metrics["reference"]["executor"] == "ray" and metrics["reference"]["ray_address"] == "ray://head:10001"


@pytest.mark.parametrize("reference,message", [
    ({"n_models": 2, "ray_address": "ray://head:10001"}, "only for executor: ray"),
    ({"n_models": 2, "executor": "ray", "ray_address": "ray://head:10001", "n_workers": 4}, "remove n_workers"),
    ({"n_models": 2, "executor": "process", "n_workers": 0}, "n_workers: must be >= 1"),
])
def test_ray_address_config_errors(reference, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(tiny_config(reference=reference))
