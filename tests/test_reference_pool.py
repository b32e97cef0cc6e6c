"""Reference pools: caching, resume, stale-cache invalidation, executors agree, fidelity, data checks."""

import dataclasses
import json
import threading
import warnings

import numpy as np
import pytest
import torch

from miaudit.attacks.registry import create_attack
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference, executors
from miaudit.classifier.reference.fidelity import FidelityWarning, check_fidelity
from miaudit.classifier.reference.pool import build_reference_pool_for_audit, check_pool_data, train_reference_pool
from miaudit.classifier.reference.vectorised import (
    auto_group_size,
    choose_batching,
    choose_group_size,
    keep_gradients_channels_last,
    prefers_channels_last,
    train_vectorised,
    training_bytes,
)
from miaudit.classifier.reference.views import query_views
from miaudit.classifier.targets import TorchClassifierTarget
from miaudit.classifier.training import (
    TrainConfig,
    TrainingPlugin,
    build_model,
    build_model_from_config,
    train_classifier,
)
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


@pytest.mark.parametrize("batching", ["auto", "stacked", "per-model"])
def test_vectorised_cnn_matches_sequential(batching):
    digits = load_dataset("digits").subset(np.arange(120))
    recipe = TrainConfig(model="cnn", hidden=[16], epochs=2, batch_size=16, model_options={"channels": [4, 8]})
    keep = paired_keep_matrix(2, len(digits), seed=0)
    seq = train_reference_pool(digits, keep, recipe, progress=False)
    vec = train_reference_pool(digits, keep, recipe, executor="vectorised", batching=batching, progress=False)
    np.testing.assert_allclose(_logits(vec), _logits(seq), atol=VECTORISED_ATOL, rtol=0)
    # on CPU a CNN trains model by model (channels-last), not as one stacked grouped convolution
    assert vec.info["numerics"] == ("vectorised" if batching == "stacked" else "vectorised-per-model")


def test_per_model_groups_share_models_among_threads_without_changing_them():
    from miaudit.classifier.reference.vectorised import in_model_threads, model_threads

    digits = load_dataset("digits").subset(np.arange(120))
    recipe = TrainConfig(model="cnn", hidden=[16], epochs=2, batch_size=16, model_options={"channels": [4, 8]})
    keep = paired_keep_matrix(6, len(digits), seed=0)  # 6 models: 3 per thread
    outer = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = train_reference_pool(digits, keep, recipe, executor="vectorised", progress=False)
        torch.set_num_threads(2)
        assert model_threads(torch.device("cpu"), 6) == 2 and model_threads(torch.device("cpu"), 1) == 1
        noisy = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
        assert model_threads(torch.device("cpu"), 6, noisy) == 1  # threads would interleave their random draws
        shared = train_reference_pool(digits, keep, recipe, executor="vectorised", progress=False)
        assert torch.get_num_threads() == 2  # the caller's intra-op threads come back
        np.testing.assert_array_equal(_logits(shared), _logits(alone))  # each model runs whole in one thread
        assert in_model_threads(lambda j: (j, torch.get_num_threads()), 5, 2) == \
            [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]  # in order, one intra-op thread each
    finally:
        torch.set_num_threads(outer)


def test_a_failing_share_stops_the_others_and_its_error_reaches_the_caller(monkeypatch):
    from miaudit.classifier.reference import vectorised

    digits = load_dataset("digits").subset(np.arange(120))
    recipe = TrainConfig(model="cnn", hidden=[8], epochs=300, batch_size=30, model_options={"channels": [2]})
    keep = paired_keep_matrix(4, len(digits), seed=0)
    steps, original = [], vectorised._PerModel.step

    def step(self, x, y, precision):
        steps.append(threading.get_ident())
        if self.models[0] is first_share[0] and steps.count(threading.get_ident()) == 20:
            raise ValueError("share 0 broke")
        return original(self, x, y, precision)

    first_share: list = []
    build = vectorised.build_model_from_config

    def remember(*args, **kwargs):
        model = build(*args, **kwargs)
        if not first_share:
            first_share.append(model)
        return model

    monkeypatch.setattr(vectorised._PerModel, "step", step)
    monkeypatch.setattr(vectorised, "build_model_from_config", remember)
    outer = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="share 0 broke"):
            train_reference_pool(digits, keep, recipe, executor="vectorised", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(outer)
    assert len(set(steps)) == 2  # two shares ran, in two threads
    assert len(steps) < 300 * 2  # the other share stopped long before its 600 steps


def test_vectorised_groups_and_worker_processes_change_nothing(location):
    data, population = location
    keep = paired_keep_matrix(4, len(data), seed=2)
    one = train_reference_pool(data, keep, RECIPE, population=population, executor="vectorised", progress=False)
    pairs = train_reference_pool(data, keep, RECIPE, population=population, executor="vectorised", group_size=2,
                                 progress=False)
    workers = train_reference_pool(data, keep, RECIPE, population=population, executor="vectorised", group_size=2,
                                   n_workers=2, progress=False)
    np.testing.assert_array_equal(_logits(pairs), _logits(one))  # a model's gradients are its own
    np.testing.assert_array_equal(_logits(workers), _logits(one))
    np.testing.assert_array_equal(workers.population[3].logits, one.population[3].logits)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_vectorised_models_rescore_from_cached_weights_exactly(tmp_path, model):
    digits = load_dataset("digits").subset(np.arange(80))
    recipe = TrainConfig(model=model, hidden=[16], epochs=1, batch_size=16,
                         model_options={"channels": [4]} if model == "cnn" else {})
    keep = paired_keep_matrix(2, len(digits), seed=0)
    first = train_reference_pool(digits, keep, recipe, executor="vectorised", cache_dir=tmp_path, progress=False)
    for path in tmp_path.glob("*.npz"):
        path.unlink()
    rescored = train_reference_pool(digits, keep, recipe, executor="vectorised", cache_dir=tmp_path, progress=False)
    assert rescored.info["trained"] == 0
    np.testing.assert_array_equal(_logits(rescored), _logits(first))


def test_vectorised_batch_norm_trains_model_by_model():
    images = load_dataset("digits").subset(np.arange(64))
    keep = paired_keep_matrix(2, len(images), seed=0)
    resnet = TrainConfig(model="resnet18", epochs=1, batch_size=16, model_options={"width": 4})
    seq = train_reference_pool(images, keep, resnet, progress=False)
    vec = train_reference_pool(images, keep, resnet, executor="vectorised", progress=False)
    assert vec.info["numerics"] == "vectorised-per-model"  # running statistics cannot be stacked
    np.testing.assert_allclose(_logits(vec), _logits(seq), atol=1e-3, rtol=0)
    with pytest.raises(ConfigError, match="batch statistics"):
        train_reference_pool(images, keep, resnet, executor="vectorised", batching="stacked", progress=False)


def test_vectorised_records_history_and_stops_on_divergence(location, tmp_path):
    data, _ = location
    keep = paired_keep_matrix(2, len(data), seed=3)
    train_reference_pool(data, keep, RECIPE, executor="vectorised", cache_dir=tmp_path, progress=False)
    histories = [json.loads(p.read_text())["history"] for p in sorted(tmp_path.glob("*.json"))]
    assert [len(h) for h in histories] == [RECIPE.epochs] * 2
    assert all(0 <= e["accuracy"] <= 1 and e["loss"] > 0 for h in histories for e in h)
    exploding = dataclasses.replace(RECIPE, optimizer="sgd", lr=1e12)
    for executor in ("sequential", "vectorised"):
        with pytest.raises(DataError, match="lower training.lr"):
            train_reference_pool(data, keep, exploding, executor=executor, progress=False)


def test_bfloat16_pool_follows_the_recipe(location):
    data, _ = location
    keep = paired_keep_matrix(2, len(data), seed=2)
    recipe = dataclasses.replace(RECIPE, precision="bfloat16")
    seq = train_reference_pool(data, keep, recipe, progress=False)
    vec = train_reference_pool(data, keep, recipe, executor="vectorised", progress=False)
    float32 = train_reference_pool(data, keep, RECIPE, progress=False)
    # bfloat16 autocast changes the models far more than the executors' summation order does
    assert np.abs(_logits(vec) - _logits(seq)).max() < 1e-2 < np.abs(_logits(seq) - _logits(float32)).max()


def test_vectorised_refuses_what_it_cannot_train(location):
    data, _ = location
    small = data.subset(np.arange(16))
    keep = paired_keep_matrix(2, 16, seed=0)
    with pytest.raises(ConfigError, match="plugins"):
        train_reference_pool(small, keep, RECIPE, plugins=[TrainingPlugin()], executor="vectorised", progress=False)
    with pytest.raises(ConfigError, match="unknown executor"):
        train_reference_pool(small, keep, RECIPE, executor="threads", progress=False)
    with pytest.raises(ConfigError, match="group_size"):
        train_reference_pool(small, keep, RECIPE, executor="vectorised", group_size=0, progress=False)
    with pytest.raises(ConfigError, match="batching"):
        train_reference_pool(small, keep, RECIPE, executor="vectorised", batching="grouped", progress=False)
    with pytest.raises(ConfigError, match="only the seed may differ"):
        train_vectorised(small, [np.arange(8)] * 2, [RECIPE, dataclasses.replace(RECIPE, lr=1.0)], progress=False)
    with pytest.raises(ConfigError, match="one size"):
        train_vectorised(small, [np.arange(8), np.arange(6)], [RECIPE, RECIPE], progress=False)


def test_pool_device_and_cuda_need_a_gpu(location, monkeypatch):
    data, _ = location
    keep = paired_keep_matrix(2, len(data), seed=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for executor in ("sequential", "vectorised"):
        with pytest.raises(ConfigError, match="training.device: 'cuda' asks for a GPU"):
            train_reference_pool(data, keep, RECIPE, executor=executor, device="cuda", progress=False)
    pool = train_reference_pool(data, keep, dataclasses.replace(RECIPE, device="cuda"), device="cpu", progress=False)
    assert pool.info["device"] == "cpu"
    auto = train_reference_pool(data, keep, RECIPE, device="auto", progress=False)
    assert auto.info["device"] == "cpu"  # "auto" is resolved before it enters the cache key


def test_batching_and_channels_last_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # devices as values: no GPU needed
    mlp = build_model("mlp", (10,), 3, hidden=(8,))
    cnn = build_model("cnn", (3, 8, 8), 3, hidden=(8,), channels=(4,))
    group_norm = build_model("resnet18", (3, 8, 8), 3, width=4, norm="group")
    batch_norm = build_model("resnet18", (3, 8, 8), 3, width=4, norm="batch")
    assert [choose_batching(m, cpu) for m in (mlp, cnn, group_norm, batch_norm)] == \
        ["stacked", "per-model", "per-model", "per-model"]
    assert [choose_batching(m, cuda) for m in (mlp, cnn, group_norm, batch_norm)] == \
        ["stacked", "stacked", "stacked", "per-model"]
    assert prefers_channels_last(cnn, cpu) and not prefers_channels_last(group_norm, cpu)
    assert not prefers_channels_last(cnn, cuda) and not prefers_channels_last(mlp, cpu)


def test_channels_last_cnn_gets_its_gradients_channels_last_unchanged():
    torch.manual_seed(0)
    model = build_model("cnn", (3, 16, 16), 5, hidden=(8,), channels=(4, 6)).to(memory_format=torch.channels_last)
    hooked = build_model("cnn", (3, 16, 16), 5, hidden=(8,), channels=(4, 6)).to(memory_format=torch.channels_last)
    hooked.load_state_dict(model.state_dict())
    keep_gradients_channels_last(hooked)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (8,))
    layouts = []

    def loss(net):  # records the layout of the gradient that reaches the features' output
        features = net.features(x)
        logits = net.head(features)  # flatten's hook (if any) comes first: tensor hooks run in order
        features.register_hook(lambda g: layouts.append(g.is_contiguous(memory_format=torch.channels_last)))
        return torch.nn.functional.cross_entropy(logits, y)

    loss(model).backward()
    loss(hooked).backward()
    assert layouts == [False, True]  # flatten hands back a row-major gradient unless hooked
    for plain, kept in zip(model.parameters(), hooked.parameters()):
        torch.testing.assert_close(kept.grad, plain.grad, rtol=0, atol=0)  # the same numbers, another layout
    with torch.no_grad():  # scoring: nothing to hook
        torch.testing.assert_close(hooked(x), model(x), rtol=0, atol=0)


def test_predict_logits_default_chunks_change_no_logit():
    from miaudit.classifier.training import predict_logits, scoring_batch_size

    assert scoring_batch_size(torch.device("cpu")) < scoring_batch_size(torch.device("cuda"))
    model = build_model("cnn", (3, 16, 16), 5, hidden=(8,), channels=(4, 6), seed=0)
    x = np.random.default_rng(0).normal(size=(300, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(predict_logits(model, x), predict_logits(model, x, batch_size=300))


def test_group_size_from_memory():
    gib = 2**30
    assert choose_group_size(64, gib, 10 * gib) == 6  # 0.6 of 10 GiB holds 6 models of 1 GiB
    assert choose_group_size(64, gib, 10 * gib, fixed_bytes=2 * gib) == 4
    assert choose_group_size(4, gib, 100 * gib) == 4  # never more than the models to train
    assert choose_group_size(64, gib, 100 * gib, limit=16) == 16
    assert choose_group_size(64, gib, None) == 64  # unknown free memory: no bound
    assert choose_group_size(64, 50 * gib, gib) == 1  # at least one model
    with pytest.raises(ConfigError, match="at least one model"):
        choose_group_size(0, gib, gib)
    with pytest.raises(ConfigError, match="fraction"):
        choose_group_size(4, gib, gib, fraction=1.5)


def test_training_memory_estimate_and_auto_group_size(monkeypatch):
    from miaudit.classifier.reference import vectorised

    mlp = build_model("mlp", (100,), 10, hidden=(50,))
    params, activations = training_bytes(mlp, (100,), 32, "adam")
    assert params == (100 * 50 + 50 + 50 * 10 + 10) * 4 * 4  # weights, gradients, two Adam buffers
    _, doubled = training_bytes(mlp, (100,), 64, "adam")
    assert activations > 32 * (100 + 50) * 4 and doubled > 1.9 * activations  # activations grow with the batch
    resnet = build_model("resnet18", (3, 32, 32), 10, width=8, norm="group")
    assert training_bytes(resnet, (3, 32, 32), 64, "sgd")[1] > 64 * 3 * 32 * 32 * 4 * 10
    recipe = TrainConfig(model="resnet18", batch_size=64, model_options={"width": 8, "norm": "group"})
    per_model = sum(training_bytes(resnet, (3, 32, 32), 64, "adam"))
    monkeypatch.setattr(vectorised, "available_memory", lambda device: 10 * per_model)
    stacked = auto_group_size(resnet, (3, 32, 32), recipe, 64, "stacked", torch.device("cuda"))
    assert stacked == 6  # 0.6 of the free memory, every model's activations at once
    assert auto_group_size(resnet, (3, 32, 32), recipe, 64, "stacked", torch.device("cuda"), n_workers=2) == 3
    assert auto_group_size(resnet, (3, 32, 32), recipe, 64, "per-model", torch.device("cpu")) > stacked


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
