"""The classifier experiment shared by ``audit``, ``defend`` and the DP canary audit."""

import copy
import itertools

import numpy as np
import pytest

from miaudit.classifier.experiment import ClassifierExperiment
from miaudit.classifier.training import TrainConfig, TrainingPlugin
from miaudit.defenses.compare import parse_defend_config, run_defense_comparison
from miaudit.errors import ConfigError
from miaudit.evaluation import AttackResult
from miaudit.runs import parse_config, run_audit
from miaudit.runs.pipeline import build_attacks

#: the sections an audit and a defense comparison share; every attack family the experiment feeds
SHARED = {
    "seed": 5,
    "dataset": {"source": "digits"},
    "split": {"n_members": 100, "n_nonmembers": 100, "n_shadow": 300, "n_population": 150},
    "training": {"model": "mlp", "hidden": [32], "epochs": 4, "batch_size": 32, "lr": 0.01},
    "shadow": {"n_models": 2},
    "reference": {"n_models": 4},
    "attacks": [{"name": "loss"}, {"name": "loss", "label": "loss_per_class", "params": {"per_class": True}},
                {"name": "population"}, {"name": "shokri", "params": {"classifier": "lr"}},
                {"name": "lira", "params": {"variance": "global"}}, {"name": "rmia"},
                {"name": "rmia", "label": "rmia_offline", "params": {"online": False}},
                {"name": "difficulty_calibration"}, {"name": "noise_robustness", "params": {"n_samples": 4}},
                {"name": "gradient_norm"}],
    "evaluation": {"n_bootstrap": 10},
}


def test_defend_undefended_row_scores_exactly_what_audit_scores(tmp_path):
    """``name: none`` in ``miaudit defend`` and ``miaudit audit`` of the same sections train the same models
    (the target in a fresh process for defend, in process for audit) and give the same scores, bit for bit."""
    run_audit(parse_config({"kind": "classifier", **SHARED}), tmp_path / "audit", progress=False)
    defend = parse_defend_config({**SHARED, "defenses": [{"name": "none"}, {"name": "top_k", "params": {"k": 3}}]})
    assert defend.isolate_training
    result = run_defense_comparison(defend, tmp_path / "defend", progress=False)
    for spec in SHARED["attacks"]:
        key = spec.get("label", spec["name"])
        audited = AttackResult.load(tmp_path / "audit" / "scores", key)
        undefended = AttackResult.load(tmp_path / "defend" / "scores" / "none", key)
        np.testing.assert_array_equal(undefended.ids, audited.ids)
        np.testing.assert_array_equal(undefended.labels, audited.labels)
        np.testing.assert_array_equal(undefended.scores, audited.scores, err_msg=key)
    rows = {e["label"]: e for e in result["defenses"]}
    assert rows["top_k"]["target"]["shared_training"]  # the post-processor reuses the undefended models


def _experiment(attacks, **overrides):
    config = parse_config({"kind": "classifier", **SHARED, "attacks": attacks, **overrides})
    return ClassifierExperiment.from_config(config, build_attacks(config.attacks, kind="classifier", seed=5),
                                            progress=False)


class CountingPlugin(TrainingPlugin):
    """Records, for every model trained, the serial number of the plugin instance that set it up."""

    name = "counting"
    made = itertools.count()

    def __init__(self, seen):
        self.seen = seen
        self.serial = next(CountingPlugin.made)

    def setup(self, model, optimizer, loader):
        self.seen.append(self.serial)
        return model, optimizer, loader

    def __deepcopy__(self, memo):  # the reference pool copies its plugins per model; they share the record
        return CountingPlugin(self.seen)


def test_outputs_carry_ids_and_every_model_gets_fresh_plugins():
    experiment = _experiment([{"name": "lira", "params": {"variance": "global"}}, {"name": "rmia"}])
    seen, factory_calls = [], []

    def factory():
        factory_calls.append(1)
        return [CountingPlugin(seen)]

    models = experiment.run(plugins=factory)
    split, dataset = experiment.split, experiment.dataset
    target = models.target
    np.testing.assert_array_equal(target.ids, dataset.ids[split.audited])
    np.testing.assert_array_equal(target.population.ids, dataset.ids[split.population])
    for out in models.pool.outputs:
        np.testing.assert_array_equal(out.ids, target.ids)
    for z in models.pool.population:
        np.testing.assert_array_equal(z.ids, target.population.ids)
    for shadow in models.shadow:
        assert set(shadow.scored.ids) <= set(dataset.ids[split.shadow])
    # target, 2 shadow models and the pool ask the factory; 1 + 2 + 4 models each set up their own instance
    assert len(factory_calls) == 1 + 2 + 1 and len(seen) == 1 + 2 + 4 and len(set(seen)) == len(seen)


@pytest.mark.parametrize("attacks, overrides, message", [
    ([{"name": "population"}], {"split": {"n_members": 50, "n_nonmembers": 50, "n_shadow": 100}},
     "set split.n_population"),
    ([{"name": "rmia"}], {"split": {"n_members": 50, "n_nonmembers": 50, "n_shadow": 100}},
     "'rmia' needs population data the target never saw; set split.n_population"),
    ([{"name": "lira"}], {"reference": {"n_models": 0}}, "set reference.n_models"),
    ([{"name": "shokri"}], {"shadow": {"n_models": 0}, "split": {"n_members": 50, "n_nonmembers": 50}},
     "set shadow.n_models >= 1"),
    ([{"name": "loss"}], {"shadow": {"n_models": 2, "members_per_model": 200, "nonmembers_per_model": 200}},
     "need 200 members \\+ 200 non-members each but split.n_shadow is 300"),
    ([{"name": "loss"}], {"shadow": {"n_models": 2, "members_per_model": 400}},
     "need 400 members \\+ 0 non-members each but split.n_shadow is 300"),
])
def test_needs_are_refused_before_any_training(attacks, overrides, message, monkeypatch):
    from miaudit.classifier import experiment as module

    monkeypatch.setattr(module, "train_model", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(ConfigError, match=message):
        _experiment(attacks, **overrides)


def test_outputs_only_experiments_refuse_attacks_that_need_more():
    config = parse_config({"kind": "classifier", **SHARED, "attacks": [{"name": "loss"}]})
    for spec, needs in [({"name": "lira"}, "a reference pool"), ({"name": "noise_robustness"}, "queries"),
                        ({"name": "loss", "params": {"per_class": True}}, "shadow models")]:
        attacks = build_attacks(parse_config({"kind": "classifier", **SHARED, "attacks": [spec]}).attacks,
                                kind="classifier", seed=0)
        with pytest.raises(ConfigError, match=f"needs more than the target's outputs \\({needs}.*use loss only"):
            ClassifierExperiment(attacks, seed=0, training=TrainConfig(), dataset=config.dataset, split=config.split,
                                 outputs_only="use loss only")


def test_models_of_a_tool_trained_target_refuse_plugins_for_a_precomputed_one(tmp_path):
    experiment = _experiment([{"name": "loss"}], shadow={"n_models": 0}, reference={"n_models": 0})
    models = experiment.run()
    path = tmp_path / "target.npz"
    np.savez(path, logits=models.target.outputs.logits, labels=models.target.outputs.labels,
             membership=models.target.membership, ids=models.target.ids)
    config = parse_config({"kind": "classifier", "target": {"precomputed": str(path)}, "attacks": [{"name": "loss"}]})
    precomputed = ClassifierExperiment.from_config(config, build_attacks(config.attacks, kind="classifier", seed=0),
                                                   progress=False)
    np.testing.assert_array_equal(precomputed.run().target.ids, models.target.ids)
    with pytest.raises(ConfigError, match="trained elsewhere"):
        precomputed.run(plugins=lambda: [copy.deepcopy(CountingPlugin([]))])
