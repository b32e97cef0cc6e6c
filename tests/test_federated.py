"""The federated kind without a simulation: partitions, source inference, DP accounting, local training, config.

Simulation runs (Flower on Ray) are in ``test_federated_simulation.py``.
"""

import numpy as np
import pytest
import torch

from miaudit.classifier.training import TrainConfig
from miaudit.config import to_dict
from miaudit.data import ArrayDataset
from miaudit.defenses import DefenseContext, DefenseError, build_chain
from miaudit.errors import ConfigError, DataError
from miaudit.federated.local import federated_model, state_of, train_client
from miaudit.federated.partition import dirichlet_partition, label_counts, partition
from miaudit.federated.privacy import ServerDP, client_epsilon, server_epsilon, server_record_epsilon
from miaudit.federated.source_inference import cross_entropy, evaluate_source_inference, infer_sources
from miaudit.runs import parse_config

LABELS = np.repeat(np.arange(10), 30)  # 300 examples, 10 balanced classes


def _cover(parts, n):
    joined = np.concatenate(parts)
    return joined.size == n and np.unique(joined).size == n


# -- partitions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme,kwargs", [("iid", {}), ("dirichlet", {"alpha": 0.5}),
                                           ("shards", {"shards_per_client": 2})])
def test_partitions_are_disjoint_cover_everything_and_follow_the_seed(scheme, kwargs):
    parts = partition(LABELS, 5, scheme, seed=3, **kwargs)
    assert len(parts) == 5 and _cover(parts, LABELS.size)
    again = partition(LABELS, 5, scheme, seed=3, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition(LABELS, 5, scheme, seed=4, **kwargs)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_sizes_differ_by_at_most_one():
    sizes = [p.size for p in partition(LABELS, 7, "iid", seed=0)]
    assert max(sizes) - min(sizes) <= 1


def test_shards_give_each_client_few_labels_and_dirichlet_skew_grows_as_alpha_shrinks():
    shards = partition(LABELS, 5, "shards", seed=0, shards_per_client=2)
    assert max((label_counts(LABELS, shards, 10) > 0).sum(axis=1)) <= 4  # 2 shards of 30 sorted labels each
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 300)

    def skew(alpha):  # mean over clients of the largest class share
        counts = label_counts(labels, dirichlet_partition(labels, 5, alpha, rng), 10)
        return float((counts.max(axis=1) / counts.sum(axis=1)).mean())

    assert skew(0.1) > skew(1.0) > skew(100.0)
    assert skew(100.0) < 0.2  # close to the IID share of 1/10


def test_more_clients_than_examples_is_a_one_line_error():
    with pytest.raises(DataError, match=r"n_clients=20 needs at least 20 .* has 10; lower federation.n_clients"):
        partition(LABELS[:10], 20, "iid", seed=0, what="the target federation")


def test_a_dirichlet_draw_that_empties_a_client_is_a_one_line_error():
    labels = np.zeros(40, np.int64)  # one class: a tiny alpha puts (almost) everything on one client
    with pytest.raises(DataError, match=r"leaves client \d+ of the target federation with \d+ examples.*raise "
                                        "federation.alpha") as info:
        partition(labels, 8, "dirichlet", seed=0, alpha=0.01, what="the target federation")
    assert "\n" not in str(info.value)


def test_min_client_size_is_enforced_not_redrawn():
    with pytest.raises(DataError, match="min_client_size=50"):
        partition(LABELS, 5, "dirichlet", seed=0, alpha=0.3, min_client_size=50)


# -- source inference ------------------------------------------------------------------------------
def test_source_inference_names_the_client_with_the_smallest_loss():
    losses = np.array([[0.1, 2.0, 3.0], [1.0, 0.2, 3.0], [1.0, 2.0, 0.3]])  # (clients, records)
    assert infer_sources(losses).tolist() == [0, 1, 2]


def test_source_inference_accuracy_ci_and_baselines():
    rng = np.random.default_rng(0)
    n_clients, n = 4, 400
    owners = rng.integers(n_clients, size=n)
    labels = rng.integers(3, size=n)
    losses = rng.exponential(size=(n_clients, n))
    losses[owners, np.arange(n)] *= 0.2  # the owner's model fits its own record better
    counts = np.stack([np.bincount(labels[owners == k], minlength=3) for k in range(n_clients)])
    result = evaluate_source_inference(losses, owners, labels, counts, confidence=0.95)
    assert result["chance"] == 0.25
    low, high = result["accuracy_ci"]
    assert 0.25 < low < result["accuracy"] < high < 1  # two-sided Clopper-Pearson, well above chance
    assert result["p_value_vs_chance"] < 1e-10
    assert result["correct"] == round(result["accuracy"] * n)
    assert 0 <= result["label_baseline"] <= 1 and 0 <= result["largest_client_baseline"] <= 1
    assert len(result["per_client_accuracy"]) == n_clients


def test_source_inference_at_chance_is_not_significant():
    rng = np.random.default_rng(1)
    owners = rng.integers(5, size=1000)
    result = evaluate_source_inference(rng.normal(size=(5, 1000)), owners, np.zeros(1000, int),
                                       np.ones((5, 1), int))
    assert result["accuracy_ci"][0] < 0.2 < result["accuracy_ci"][1]
    assert result["p_value_vs_chance"] > 0.01


def test_source_inference_refuses_bad_losses():
    with pytest.raises(DataError, match="at least 2 clients"):
        infer_sources(np.ones((1, 5)))
    with pytest.raises(DataError, match="non-finite"):
        infer_sources(np.array([[1.0, np.nan], [1.0, 1.0]]))


def test_cross_entropy_matches_torch():
    logits = np.random.default_rng(0).normal(size=(6, 4))
    labels = np.array([0, 1, 2, 3, 0, 1])
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels), reduction="none")
    np.testing.assert_allclose(cross_entropy(logits, labels), expected.numpy(), rtol=1e-10)


# -- privacy accounting ----------------------------------------------------------------------------
def test_client_epsilon_composes_rounds_like_one_long_run():
    from opacus.accountants import RDPAccountant

    rounds = [{"noise_multiplier": 1.1, "sample_rate": 0.1, "steps": 20}] * 3
    one_run = RDPAccountant()
    one_run.history = [(1.1, 0.1, 60)]
    assert client_epsilon(rounds, 1e-5) == pytest.approx(one_run.get_epsilon(1e-5))
    assert client_epsilon(rounds[:1], 1e-5) < client_epsilon(rounds, 1e-5)


def test_dp_fedavg_epsilons_grow_with_rounds_and_record_level_is_weaker():
    assert server_epsilon(1.0, 10, 1e-5) > server_epsilon(1.0, 5, 1e-5) > server_epsilon(2.0, 5, 1e-5)
    # one record moves its client's clipped update by up to 2C: noise multiplier z / 2
    assert server_record_epsilon(2.0, 5, 1e-5) == pytest.approx(server_epsilon(1.0, 5, 1e-5))


def test_dp_fedavg_target_epsilon_is_reached_and_bad_params_are_refused():
    dp = ServerDP.from_params({"target_epsilon": 8.0, "clipping_norm": 0.5}, rounds=10, where="row")
    assert dp.epsilons(10)["client_epsilon"] == pytest.approx(8.0, rel=0.02)
    assert dp.noise_std(5) == pytest.approx(dp.noise_multiplier * 0.5 / 5)
    with pytest.raises(DefenseError, match="exactly one of noise_multiplier and target_epsilon"):
        ServerDP.from_params({"noise_multiplier": 1.0, "target_epsilon": 8.0}, rounds=10, where="row")
    with pytest.raises(DefenseError, match="no parameter 'clip'"):
        ServerDP.from_params({"noise_multiplier": 1.0, "clip": 1.0}, rounds=10, where="row")
    with pytest.raises(DefenseError, match="clipping_norm must be a number > 0"):
        ServerDP.from_params({"noise_multiplier": 1.0, "clipping_norm": 0}, rounds=10, where="row")


# -- local training --------------------------------------------------------------------------------
def _tiny_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return ArrayDataset(x, (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0), n_classes=4)


def test_local_training_is_deterministic_and_moves_the_weights():
    data = _tiny_data()
    recipe = TrainConfig(model="mlp", hidden=[16], epochs=2, batch_size=16, lr=0.01, seed=5)
    start = state_of(federated_model(recipe, data.input_shape, data.n_classes, private=False))
    first, report = train_client(start, data, recipe)
    second, _ = train_client(start, data, recipe)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], start[k]) for k in first)
    assert report["num-examples"] == 120 and np.isfinite(report["train-loss"])
    other, _ = train_client(start, data, TrainConfig(**{**to_dict(recipe), "seed": 6}))
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_private_local_training_reports_its_accounting():
    data = _tiny_data()
    recipe = TrainConfig(model="mlp", hidden=[16], epochs=1, batch_size=16, lr=0.01, seed=5)
    chain = build_chain([("dp_sgd", {"noise_multiplier": 1.0, "target_epsilon": None})],
                        DefenseContext(recipe, data.input_shape, data.n_classes, (len(data),)))
    start = state_of(federated_model(recipe, data.input_shape, data.n_classes, private=True))
    state, report = train_client(start, data, recipe, chain.plugins(), private=True)
    assert set(state) == set(start)  # same parameter names as the server's model
    assert report["noise_multiplier"] == 1.0 and report["sample_rate"] == pytest.approx(1 / 8)
    assert report["steps"] > 0


# -- config ----------------------------------------------------------------------------------------
BASE = {"kind": "federated", "dataset": {"source": "digits"}, "split": {"n_members": 200, "n_nonmembers": 100},
        "attacks": [{"name": "loss"}]}


def _config(**sections):
    return parse_config({**BASE, **sections})


def test_config_defaults_and_partition_specific_keys():
    config = _config(federation={"partition": "dirichlet"})
    assert config.federation.alpha == 0.5 and config.federation.shards_per_client is None
    assert _config(federation={"partition": "shards"}).federation.shards_per_client == 2
    assert [d.name for d in _config().defenses] == ["none"]


@pytest.mark.parametrize("sections,match", [
    ({"federation": {"n_clients": 1}}, r"n_clients=1 is invalid; federated learning needs at least 2"),
    ({"federation": {"alpha": 0.3}}, r"federation.alpha: only for partition: dirichlet"),
    ({"federation": {"partition": "dirichlet", "alpha": 0}}, r"alpha=0.0 is invalid"),
    ({"federation": {"partition": "random"}}, r"'random' is not allowed"),
    ({"federation": {"ray_address": "auto", "num_cpus": 2}}, r"remove num_cpus"),
    ({"training": {"epochs": 5}}, r"training.epochs: clients train federation.local_epochs"),
    ({"training": {"seed": 5}}, r"training.seed: remove it"),
    ({"reference": {"n_models": 3}}, r"even number"),
    ({"shadow": {"n_models": 1}}, r"split.n_shadow: shadow federations need shadow data"),
    ({"defenses": [{"name": "none"}, {"name": "none"}]}, r"'none' appears twice"),
    ({"federation": {"rounds": 0}}, r"rounds=0 is invalid"),
    ({"federation": {"clients": 3}}, r"unknown key 'clients'"),
])
def test_bad_configs_are_one_line_errors(sections, match):
    with pytest.raises(ConfigError, match=match) as info:
        _config(**sections)
    assert "\n" not in str(info.value)


def test_resolved_config_round_trips_without_seed_and_epochs():
    from miaudit.runs import resolved_config

    config = _config(federation={"partition": "dirichlet", "local_epochs": 3})
    resolved = resolved_config(config)
    assert "seed" not in resolved["training"] and "epochs" not in resolved["training"]
    assert resolved_config(parse_config(resolved)) == resolved


def test_a_defense_row_cannot_change_the_local_epochs(tmp_path):
    from miaudit.runs import run_audit

    config = {**BASE, "defenses": [{"name": "dp_sgd", "training": {"epochs": 3}}]}
    with pytest.raises(ConfigError, match=r"training.epochs: every row's clients train federation.local_epochs"):
        run_audit(config, tmp_path / "run", progress=False)


# -- report ----------------------------------------------------------------------------------------
def _round(r, auc, si=None, attacks=True):
    entry = {"round": r, "privacy": {"epsilon": None, "epsilon_against_server": None}}
    if attacks:
        entry.update(train_accuracy=0.9, test_accuracy=0.5 + r / 100, attacks=[
            {"name": "loss", "auc": auc, "auc_ci": [auc - 0.02, auc + 0.02], "tpr_at_fpr": {"0.01": 0.03},
             "tpr_at_fpr_ci": {"0.01": [0.01, 0.05]}}])
    if si is not None:
        entry["source_inference"] = {"accuracy": si, "accuracy_ci": [si - 0.05, si + 0.05], "chance": 0.25,
                                     "largest_client_baseline": 0.3, "label_baseline": 0.4, "p_value_vs_chance": 1e-9,
                                     "p_value_vs_label_baseline": 0.2}
    return entry


def _section(per_round=True, source=True):
    rounds = [_round(r, 0.5 + r / 20, si=0.5 if source else None, attacks=per_round or r == 3) for r in (1, 2, 3)]
    final = rounds[-1]
    defense = {"label": "none", "notes": ["a note"], "train_accuracy": 0.9, "test_accuracy": final["test_accuracy"],
               "privacy": final["privacy"], "source_inference": final.get("source_inference"), "rounds": rounds}
    return {"client_sizes": [10, 20, 30, 40], "client_label_counts": [[10, 0], [5, 15], [30, 0], [20, 20]],
            "n_federations": 1, "simulation_seconds": 12.0, "n_clients": 4, "defenses": [defense],
            "source_inference": {"citation": "Hu et al.", "n_records": 100, "chance": 0.25} if source else None}


@pytest.mark.parametrize("per_round,source", [(True, True), (False, True), (True, False)])
def test_the_federated_report_renders_every_layout(tmp_path, per_round, source):
    from miaudit.federated.report import plot_rounds, render_federated

    section = _section(per_round, source)
    text = render_federated(section, {"model": "mlp", "description": "FedAvg"},
                            {"dataset": "digits", "n_members": 100, "n_nonmembers": 50}, [0.001, 0.01])
    assert "| none | 0.5300 | 0.9000 | - | - | - | loss | 0.650 [0.630, 0.670] | 0.030 [0.010, 0.050] |" in text
    assert ("| none | 1 | 0.5100 |" if per_round else "| none | 1 | - | - | - | - | - |") in text
    assert ("## Source inference" in text) == source
    assert "classes per client 1, 2, 1, 2" in text and "- a note" in text
    assert plot_rounds(section, tmp_path / "rounds.png").stat().st_size > 0


@pytest.mark.parametrize("model,options", [("cnn", {"channels": [4, 8]}), ("resnet18", {"width": 4, "norm": "batch"})])
def test_private_clients_and_server_share_one_architecture_for_image_models(model, options):
    from torch import nn

    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.random((32, 1, 8, 8), dtype=np.float32), rng.integers(3, size=32), n_classes=3)
    recipe = TrainConfig(model=model, hidden=[8], epochs=1, batch_size=16, lr=0.01, seed=1, model_options=options)
    server = federated_model(recipe, data.input_shape, 3, private=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in server.modules())  # GroupNorm for DP-SGD
    chain = build_chain([("dp_sgd", {"noise_multiplier": 1.0, "target_epsilon": None})],
                        DefenseContext(recipe, data.input_shape, 3, (32,)))
    state, report = train_client(state_of(server), data, recipe, chain.plugins(), private=True)
    server.load_state_dict(state)  # the client's update fits the server's model
    assert report["steps"] > 0


def test_each_client_gets_the_noise_multiplier_its_own_dp_plugin_would_compute():
    from miaudit.federated.simulation import ClientJob, FederationJob

    recipe = TrainConfig(epochs=2, batch_size=16)
    chain = build_chain([("dp_sgd", {"target_epsilon": 8.0})], DefenseContext(recipe, (8,), 4, (40, 80)))
    job = FederationJob("j", [np.arange(40), np.arange(40, 120)], recipe, rounds=1, chain=chain)
    for part, client_chain in zip(job.partitions, ClientJob.of(job).chains):
        plugin = client_chain.training[0]
        assert plugin.target_epsilon is None and plugin.context is chain.training[0].context
        assert plugin.noise_multiplier == chain.training[0].noise_for(len(part))
    small, large = (c.training[0].noise_multiplier for c in ClientJob.of(job).chains)
    assert small > large  # fewer examples: a larger sampling rate, more noise for the same epsilon
