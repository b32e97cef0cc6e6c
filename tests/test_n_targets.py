"""``evaluation.n_targets``: several targets trained on random halves, each attacked in turn, scores pooled."""

import json

import numpy as np
import pytest

from miaudit.classifier.experiment import ClassifierExperiment
from miaudit.classifier.target_pool import pool_layout, pool_scores
from miaudit.data import paired_keep_matrix
from miaudit.errors import ConfigError
from miaudit.evaluation import AttackResult
from miaudit.runs import parse_config, run_audit
from miaudit.runs.pipeline import ScoredAttack, build_attacks
from miaudit.utils.fingerprint import fingerprint
from miaudit.utils.seed import derive_seed

N = 60  # audited examples: 30 + 30
CONFIG = {
    "kind": "classifier",
    "seed": 3,
    "dataset": {"source": "digits"},
    "split": {"n_members": N // 2, "n_nonmembers": N // 2, "n_shadow": 120, "n_population": 60},
    "training": {"model": "mlp", "hidden": [16], "epochs": 3, "batch_size": 16, "lr": 0.01},
    "shadow": {"n_models": 1},
    "reference": {"n_models": 4, "executor": "vectorised"},
    "attacks": [{"name": "loss"}, {"name": "population"}, {"name": "lira", "params": {"variance": "global"}},
                {"name": "rmia"}, {"name": "gradient_norm"}],
    "evaluation": {"n_bootstrap": 20, "n_targets": 3},
}


def _config(**overrides):
    data = json.loads(json.dumps(CONFIG))
    for section, value in overrides.items():
        data[section] = value if not isinstance(data.get(section), dict) else {**data[section], **value}
    return data


@pytest.fixture(scope="module")
def pooled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("n_targets") / "run"
    run_audit(parse_config(CONFIG), out, progress=False)
    return out


@pytest.mark.parametrize("n_targets,n_reference", [(1, 16), (7, 16), (3, 4), (9, 4), (2, 0), (5, 0)])
def test_layout_never_uses_a_target_or_its_complement_as_its_reference(n_targets, n_reference):
    n_models, reference = pool_layout(n_targets, n_reference)
    assert n_models % 2 == 0 and n_models >= n_targets
    assert len(reference) == n_targets
    for k, ref in enumerate(reference):
        assert ref.size == n_reference and np.unique(ref).size == n_reference
        assert k not in ref and (k ^ 1) not in ref  # itself and the model trained on its other half
        assert ref.max(initial=-1) < n_models
        assert set(ref[::2] + 1) == set(ref[1::2])  # whole pairs: every example IN for exactly half of them


def test_pooled_scores_and_membership_truth(pooled_run):
    metrics = json.loads((pooled_run / "metrics.json").read_text())
    section = metrics["targets"]
    assert section["n_targets"] == 3 and section["pooled_scores"] == 3 * N
    assert metrics["data"]["pooled_members"] == metrics["data"]["pooled_nonmembers"] == 3 * N // 2
    # ground truth: target k's members are the rows model k of the paired keep matrix trained on
    seed = derive_seed(3, "reference")
    keep = paired_keep_matrix(section["n_models_trained"], N, seed=int(fingerprint("reference-keep", seed), 16) % 2**31)
    for entry in metrics["attacks"]:
        assert entry["n_members"] == entry["n_nonmembers"] == 3 * N // 2
        assert len(entry["per_target_auc"]) == 3
        result = AttackResult.load(pooled_run / "scores", entry["name"])
        assert result.scores.shape == (3 * N,)
        ids = result.ids.reshape(3, N)
        assert (ids == ids[0]).all()  # each target scored on the same audited examples, in the same order
        np.testing.assert_array_equal(result.labels.reshape(3, N).astype(bool), keep[:3])
        for k in range(3):  # the recorded per-target AUC is that target's block of the pooled scores
            block = slice(k * N, (k + 1) * N)
            from miaudit.evaluation.metrics import roc_auc
            assert entry["per_target_auc"][k] == pytest.approx(roc_auc(result.labels[block], result.scores[block]),
                                                               abs=1e-6)


def test_cluster_bootstrap_over_examples_is_used(pooled_run):
    metrics = json.loads((pooled_run / "metrics.json").read_text())
    assert metrics["evaluation"]["grouping"]["n_groups"] == N
    for entry in metrics["attacks"]:
        assert entry["grouping"] == {"n_groups": N, "member_groups": entry["grouping"]["member_groups"],
                                     "nonmember_groups": entry["grouping"]["nonmember_groups"]}
        assert f"cluster bootstrap over {N} groups" in entry["interval_method"]
        result = AttackResult.load(pooled_run / "scores", entry["name"])
        np.testing.assert_array_equal(result.groups, result.ids)  # an example's K scores form one group


def test_report_says_targets_were_pooled(pooled_run):
    report = (pooled_run / "report.md").read_text()
    assert "- **Targets**: 3 targets pooled" in report and f"3 x {N} = {3 * N} scores" in report
    assert "Per-target AUC of" in report
    assert "3 targets pooled" in (pooled_run / "report.html").read_text()
    metrics = json.loads((pooled_run / "metrics.json").read_text())
    assert metrics["target"]["n_targets"] == 3 and "3 such targets" in metrics["target"]["description"]


def test_a_target_is_never_in_its_own_reference_pool():
    config = parse_config(CONFIG)
    experiment = ClassifierExperiment.from_config(config, build_attacks(config.attacks, kind="classifier", seed=3),
                                                  progress=False)
    runs = experiment.run_targets(3)
    assert len(runs) == 3
    trained_on = []
    for models in runs:
        target = models.target
        members = set(target.ids[target.membership].tolist())
        assert members == set(target.train.ids.tolist()) and len(members) == N // 2
        assert models.target.model is not None  # gradient_norm queries it
        for train_ids in models.pool.train_ids:  # no reference model trained on the target's half or its complement
            ref = set(np.asarray(train_ids).tolist())
            assert ref != members and ref != set(target.ids.tolist()) - members
        assert models.pool.n_models == 4
        trained_on.append(members)
    assert trained_on[0] != trained_on[2]  # different random halves
    assert runs[0].shadow is runs[1].shadow  # shadow models trained once, shared


def test_one_target_is_the_default_and_identical(tmp_path):
    single = _config(evaluation={"n_targets": 1})
    default = json.loads(json.dumps(single))
    del default["evaluation"]["n_targets"]
    run_audit(parse_config(single), tmp_path / "one", progress=False)
    run_audit(parse_config(default), tmp_path / "default", progress=False)
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert "targets" not in metrics and "n_targets" not in metrics["data"]
    for spec in CONFIG["attacks"]:
        a = AttackResult.load(tmp_path / "one" / "scores", spec["name"])
        b = AttackResult.load(tmp_path / "default" / "scores", spec["name"])
        assert a.scores.shape == (N,) and a.groups is None
        np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("overrides,message", [
    ({"evaluation": {"n_targets": 0}}, "must be an integer >= 1"),
    ({"split": {"n_members": 30, "n_nonmembers": 40}}, "split.n_members == split.n_nonmembers"),
    ({"reference": {"n_models": 0}}, "compares the target with reference models"),
])
def test_refusals(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config = parse_config(_config(**overrides))
        ClassifierExperiment.from_config(config, build_attacks(config.attacks, kind="classifier", seed=3),
                                         progress=False)


def test_refused_for_a_precomputed_target_or_your_own_model(tmp_path):
    path = tmp_path / "target.npz"
    np.savez(path, logits=np.zeros((4, 3)), labels=np.arange(4) % 3, membership=np.array([1, 0, 1, 0]))
    with pytest.raises(ConfigError, match="n_targets: 2 targets are trained by the tool, but a precomputed target"):
        parse_config({"target": {"precomputed": str(path)}, "attacks": [{"name": "loss"}],
                      "evaluation": {"n_targets": 2}})
    with pytest.raises(ConfigError, match="but your own model is one fixed model"):
        parse_config({"target": {"sklearn": "m.joblib", "trust_pickle": True, "members": "a.npz",
                                 "nonmembers": "b.npz"}, "attacks": [{"name": "loss"}],
                      "evaluation": {"n_targets": 2}})


def test_defend_and_other_kinds_do_not_accept_n_targets():
    from miaudit.defenses.compare import parse_defend_config

    with pytest.raises(ConfigError, match="n_targets"):
        parse_defend_config({**{k: v for k, v in CONFIG.items() if k != "kind"}, "defenses": [{"name": "none"}]})


def test_pooled_threshold_only_when_every_target_learned_the_same():
    class Fitted:
        decision_threshold = 0.5

    def scored(k):
        ids = np.arange(4)
        return ScoredAttack("a", Fitted(), ids, np.array([1, 1, 0, 0], bool), np.array([3, 2, 1, 0.0]) + k, 0.1,
                            extra={"learned": {"k": k}})

    same = pool_scores([[scored(0)], [scored(1)]], [[0.5], [0.5]])[0]
    differ = pool_scores([[scored(0)], [scored(1)]], [[0.5], [0.7]])[0]
    assert same.threshold_from_attack and not differ.threshold_from_attack
    assert same.scores.shape == (8,) and same.extra["learned"] == {"k": 0}
    np.testing.assert_array_equal(same.groups, np.r_[np.arange(4), np.arange(4)])
    assert same.extra["per_target_auc"] == [1.0, 1.0]


def test_epsilon_bound_is_per_target_with_bonferroni(pooled_run):
    from miaudit.evaluation.epsilon import empirical_epsilon

    metrics = json.loads((pooled_run / "metrics.json").read_text())
    assert not any("groups: every interval" in w for w in metrics["warnings"])  # bound is per target, not pooled
    for entry in metrics["attacks"]:
        bound = entry["empirical_epsilon"]
        assert bound["n_targets"] == 3 and bound["confidence"] == 0.95 and "Bonferroni over the targets" in \
            bound["method"]
        result = AttackResult.load(pooled_run / "scores", entry["name"])
        k = bound["target"]
        block = slice(k * N, (k + 1) * N)
        expected = empirical_epsilon(result.labels[block], result.scores[block], confidence=1 - 0.05 / 3)
        assert bound["epsilon"] == pytest.approx(expected.epsilon)


def test_an_estimator_family_is_pooled_too(tmp_path):
    """A scikit-learn estimator the tool trains (training.estimator): targets and reference models are its clones."""
    config = _config(training={"estimator": {"class": "sklearn.linear_model:LogisticRegression",
                                             "kwargs": {"max_iter": 200}}, "trust_code": True},
                     attacks=[{"name": "loss"}, {"name": "lira", "params": {"variance": "global"}}],
                     reference={"n_models": 4, "executor": "sequential"})
    result = run_audit(parse_config(config), tmp_path / "run", progress=False)
    assert result["targets"]["n_targets"] == 3 and result["target"]["access"] == "probabilities"
    assert "LogisticRegression" in result["target"]["description"]
    assert all(a["n_nonmembers"] == 3 * N // 2 for a in result["attacks"])
    with pytest.raises(ConfigError, match="need zoo models to query"):
        run_audit(parse_config({**config, "attacks": [{"name": "boundary_distance"}]}), tmp_path / "q",
                  progress=False)
