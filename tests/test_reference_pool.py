"""Reference pools: caching, resume, stale-cache invalidation, executors agree, fidelity, data checks."""

import dataclasses
import warnings

import numpy as np
import pytest

from miaudit.attacks.registry import create_attack
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference, executors
from miaudit.classifier.reference.fidelity import FidelityWarning, check_fidelity
from miaudit.classifier.reference.pool import build_reference_pool_for_audit, check_pool_data, train_reference_pool
from miaudit.classifier.reference.views import query_views
from miaudit.classifier.targets import TorchClassifierTarget
from miaudit.classifier.training import TrainConfig, TrainingPlugin, build_model_from_config, train_classifier
from miaudit.data import load_dataset, make_split, paired_keep_matrix
from miaudit.errors import ConfigError, DataError

RECIPE = TrainConfig(model="mlp", hidden=[16], epochs=2, batch_size=32, lr=3e-3, seed=0)
#: largest |logit difference| allowed between vectorised and sequential training (measured ~1e-6 here)
VECTORISED_ATOL = 1e-4


@pytest.fixture(scope="module")
def location(shared_data):
    data = load_dataset("location", data_dir=shared_data)
    return data.subset(np.arange(160)), data.subset(np.arange(160, 200))  # pool data, population z


def _logits(pool):
    return np.stack([o.logits for o in pool.outputs])


def test_cache_resume_after_interruption(location, tmp_path, monkeypatch):
    data, population = location
    keep = paired_keep_matrix(4, len(data), seed=1)
    fresh = train_reference_pool(data, keep, RECIPE, population=population, progress=False)

    calls = {"n": 0}
    original = executors.train_task

    def crash_after_two(context, task):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(context, task)

    monkeypatch.setattr(executors, "train_task", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_reference_pool(data, keep, RECIPE, population=population, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(executors, "train_task", original)
    resumed = train_reference_pool(data, keep, RECIPE, population=population, cache_dir=tmp_path, progress=False)
    assert resumed.info["from_cache"] == 2 and resumed.info["trained"] == 2
    np.testing.assert_array_equal(_logits(resumed), _logits(fresh))
    np.testing.assert_array_equal(resumed.population[3].logits, fresh.population[3].logits)
    again = train_reference_pool(data, keep, RECIPE, population=population, cache_dir=tmp_path, progress=False)
    assert again.info["trained"] == 0 and again.fingerprint == resumed.fingerprint


def test_stale_cache_is_never_reused(location, tmp_path):
    data, _ = location
    keep = paired_keep_matrix(2, len(data), seed=1)
    first = train_reference_pool(data, keep, RECIPE, cache_dir=tmp_path, progress=False)
    changed = train_reference_pool(data, keep, dataclasses.replace(RECIPE, lr=1e-3), cache_dir=tmp_path,
                                   progress=False)
    assert changed.info["from_cache"] == 0 and changed.fingerprint != first.fingerprint
    other_data = dataclasses.replace(data, x=data.x[::-1].copy())
    assert train_reference_pool(other_data, keep, RECIPE, cache_dir=tmp_path, progress=False).info["from_cache"] == 0
    # a larger pool with the same seed reuses the models it shares with the smaller one
    bigger = train_reference_pool(data, paired_keep_matrix(4, len(data), seed=1), RECIPE, cache_dir=tmp_path,
                                  progress=False)
    assert bigger.info["from_cache"] == 2
    np.testing.assert_array_equal(_logits(bigger)[:2], _logits(first))
    # weights without outputs for these queries: rescored, not retrained
    for path in tmp_path.glob("*.npz"):
        path.unlink()
    rescored = train_reference_pool(data, keep, RECIPE, cache_dir=tmp_path, progress=False)
    assert rescored.info["trained"] == 0
    np.testing.assert_array_equal(_logits(rescored), _logits(first))


@pytest.fixture(scope="module")
def sequential_pool(location):
    data, population = location
    keep = paired_keep_matrix(4, len(data), seed=2)
    return keep, train_reference_pool(data, keep, RECIPE, population=population, progress=False)


@pytest.mark.parametrize("executor", ["vectorised", "process", "ray"])
def test_executors_agree_with_sequential(location, sequential_pool, executor):
    data, population = location
    keep, seq = sequential_pool
    # process: a spawned worker; ray: a local instance with 1 CPU (users pass ray_address for a cluster)
    pool = train_reference_pool(data, keep, RECIPE, population=population, executor=executor, n_workers=1,
                                progress=False)
    assert pool.info["numerics"] == ("vectorised" if executor == "vectorised" else "exact")
    if executor == "vectorised":
        np.testing.assert_allclose(_logits(pool), _logits(seq), atol=VECTORISED_ATOL, rtol=0)
        np.testing.assert_allclose(pool.population[1].logits, seq.population[1].logits, atol=VECTORISED_ATOL)
    else:  # the same train_task in another process: bit-identical
        np.testing.assert_array_equal(_logits(pool), _logits(seq))
        np.testing.assert_array_equal(pool.population[1].logits, seq.population[1].logits)


def test_vectorised_cnn_matches_sequential():
    digits = load_dataset("digits").subset(np.arange(120))
    recipe = TrainConfig(model="cnn", hidden=[16], epochs=2, batch_size=16, model_options={"channels": [4, 8]})
    keep = paired_keep_matrix(2, len(digits), seed=0)
    seq = train_reference_pool(digits, keep, recipe, progress=False)
    vec = train_reference_pool(digits, keep, recipe, executor="vectorised", progress=False)
    np.testing.assert_allclose(_logits(vec), _logits(seq), atol=VECTORISED_ATOL, rtol=0)


def test_vectorised_refuses_what_it_cannot_train(location):
    data, _ = location
    keep = paired_keep_matrix(2, 16, seed=0)
    images = load_dataset("digits").subset(np.arange(16))
    resnet = TrainConfig(model="resnet18", epochs=1, model_options={"width": 4})
    with pytest.raises(ConfigError, match="batch statistics"):
        train_reference_pool(images, keep, resnet, executor="vectorised", progress=False)
    with pytest.raises(ConfigError, match="plugins"):
        train_reference_pool(data.subset(np.arange(16)), keep, RECIPE, plugins=[TrainingPlugin()],
                             executor="vectorised", progress=False)
    with pytest.raises(ConfigError, match="unknown executor"):
        train_reference_pool(data.subset(np.arange(16)), keep, RECIPE, executor="threads", progress=False)


def test_fidelity_warns_when_pool_differs_from_target(location):
    data, _ = location
    keep = paired_keep_matrix(4, len(data), seed=4)
    pool = train_reference_pool(data, keep, RECIPE, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_fidelity(pool, pool.outputs[0], keep[0], accuracy_tolerance=0.2, loss_tolerance=1.0)
    assert report["warnings"] == []
    # a target that memorised its members: near-zero train loss, perfect train accuracy
    members = keep[0]
    overfit = np.zeros((len(data), data.n_classes))
    overfit[np.arange(len(data)), data.y] = np.where(members, 30.0, 0.0)
    with pytest.warns(FidelityWarning, match="train loss"):
        report = check_fidelity(pool, ClassifierOutputs(data.y, logits=overfit), members)
    assert report["gaps"]["train_loss"] > 0.5


def test_pool_data_checks(location):
    data, population = location
    keep = paired_keep_matrix(2, len(data), seed=5)
    pool = train_reference_pool(data, keep, RECIPE, population=population, progress=False)
    check_pool_data(pool, data.ids)
    with pytest.raises(DataError, match="other examples"):
        check_pool_data(pool, data.ids[::-1])
    leaky = dataclasses.replace(pool, train_ids=[data.ids, pool.train_ids[1]])  # model 0 saw the OUT examples
    with pytest.raises(DataError, match="marks OUT"):
        check_pool_data(leaky, data.ids)
    overlap = dataclasses.replace(pool, population_ids=data.ids[:5])
    with pytest.raises(DataError, match="population examples z are also audited"):
        check_pool_data(overlap, data.ids)


def test_audit_pool_with_flip_views_feeds_lira_and_rmia():
    digits = load_dataset("digits")
    split = make_split(len(digits), n_members=100, n_nonmembers=100, n_population=60, seed=0)
    recipe = TrainConfig(model="mlp", hidden=[32], epochs=15, batch_size=16, lr=3e-3)
    target = build_model_from_config(recipe, digits.input_shape, digits.n_classes)
    target = train_classifier(target, digits.subset(split.target_members), recipe, progress=False).model
    wrapped = TorchClassifierTarget(target)
    audited = digits.subset(split.audited)
    views = [wrapped.outputs(x, audited.y) for x in query_views(audited.x, "flip")]
    pool = build_reference_pool_for_audit(digits, split, recipe, n_models=8, seed=1, target_outputs=views[0],
                                          views="flip", executor="vectorised", progress=False)
    assert pool.n_views == 2 and pool.fidelity["target"]["train_accuracy"] > 0.9
    ref = AttackReference(pool=pool, population=wrapped.outputs(digits.subset(split.population)))
    labels = split.membership.astype(int)
    from miaudit.evaluation import roc_auc
    for name, params, signals in [("lira", {}, views), ("lira", {"online": False}, views), ("rmia", {}, views[0])]:
        assert roc_auc(labels, create_attack(name, **params).fit(ref).score(signals)) > 0.6, name
