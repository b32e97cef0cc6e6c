"""Federations run by Flower's simulation engine (Ray): the audit end to end, and FedAvg checked by hand.

Each Flower simulation starts (and, when it ends, shuts down) one Ray session, which costs tens of
seconds on 2 cores; this module runs three: a module-scoped audit shared by its tests, one
``run_federations`` call whose FedAvg, DP-FedAvg and DP-SGD jobs are checked against computations
done here, and one audit whose client fails on bad input.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from miaudit.classifier.training import TrainConfig
from miaudit.data import load_dataset
from miaudit.defenses import DefenseContext, build_chain
from miaudit.errors import ConfigError, DataError
from miaudit.federated.local import federated_model, state_of
from miaudit.federated.privacy import ServerDP, client_epsilon, server_epsilon
from miaudit.federated.simulation import ClientJob, FederationJob, failure_error, local_round, run_federations
from miaudit.federated.source_inference import cross_entropy
from miaudit.runs import run_audit

pytestmark = pytest.mark.slow

CONFIG = {
    "kind": "federated", "seed": 3, "dataset": {"source": "digits"},
    "split": {"n_members": 300, "n_nonmembers": 200, "n_shadow": 300, "n_population": 100, "n_reference": 100},
    "federation": {"n_clients": 3, "rounds": 2, "local_epochs": 3, "partition": "dirichlet", "alpha": 1.0,
                   "num_cpus": 2},
    "training": {"model": "mlp", "hidden": [16], "batch_size": 32, "lr": 0.01},
    "shadow": {"n_models": 1}, "reference": {"n_models": 2},
    "defenses": [{"name": "none"},
                 {"name": "dp_sgd", "params": {"noise_multiplier": 1.0, "target_epsilon": None}},
                 {"name": "ladp", "params": {"noise_multiplier": 1.0, "target_epsilon": None, "public_batch": 32}},
                 {"name": "dp_fedavg", "params": {"noise_multiplier": 0.5, "clipping_norm": 1.0}}],
    "attacks": [{"name": "loss"}, {"name": "population"}, {"name": "shokri", "params": {"per_class": False,
                                                                                     "classifier": "lr"}},
                {"name": "lira", "params": {"variance": "global"}}, {"name": "gradient_norm"}],
    "source_inference": {"n_records": 150},
    "evaluation": {"n_bootstrap": 50, "fprs": [0.01, 0.05]},
}
DEFENSES = ["none", "dp_sgd", "ladp", "dp_fedavg"]
ATTACKS = ["loss", "population", "shokri", "lira", "gradient_norm"]


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("federated") / "run"
    metrics = run_audit(CONFIG, out, progress=False)
    return out, metrics


def test_the_run_folder_is_complete(audit):
    out, metrics = audit
    for name in ("metrics.json", "config.yaml", "report.md", "federated.md", "federated_rounds.png", "log.txt"):
        assert (out / name).is_file(), name
    assert [a["name"] for a in metrics["attacks"]] == [f"{a}.{d}" for d in DEFENSES for a in ATTACKS]
    assert all((out / "scores" / f"{a['name']}.scores.npz").is_file() for a in metrics["attacks"])
    fed = metrics["federated"]
    assert fed["framework"]["name"] == "flower" and fed["n_federations"] == 4 * (1 + 1 + 2)
    assert sum(fed["client_sizes"]) == 300 and len(fed["client_sizes"]) == 3
    assert "Flower" in metrics["target"]["description"]
    report = (out / "federated.md").read_text()
    assert "## Privacy-utility of the final global model" in report and "| dp_fedavg | 2 |" in report
    assert "Federated learning" in (out / "report.md").read_text()


def test_every_round_is_attacked_and_the_final_round_is_the_runs_attacks(audit):
    _, metrics = audit
    by_name = {a["name"]: a for a in metrics["attacks"]}
    for d in metrics["federated"]["defenses"]:
        assert [r["round"] for r in d["rounds"]] == [1, 2]
        for r in d["rounds"]:
            names = [a["name"] for a in r["attacks"]]
            assert names == (ATTACKS if r["round"] == 2 else ATTACKS[:-1])  # white-box: final model only
            for a in r["attacks"]:
                assert a["auc_ci"][0] <= a["auc"] <= a["auc_ci"][1]
            assert 0 <= r["test_accuracy"] <= 1
        for a in d["rounds"][-1]["attacks"]:  # same scores, same bootstrap seed
            assert a["auc"] == pytest.approx(by_name[f"{a['name']}.{d['label']}"]["auc"])
    none = metrics["federated"]["defenses"][0]
    assert none["rounds"][1]["train_accuracy"] > 0.5  # digits: the global model learns


def test_source_inference_is_reported_against_chance(audit):
    _, metrics = audit
    for d in metrics["federated"]["defenses"]:
        for r in d["rounds"]:
            si = r["source_inference"]
            assert si["n_records"] == 150 and si["chance"] == pytest.approx(1 / 3)
            assert si["accuracy_ci"][0] <= si["accuracy"] <= si["accuracy_ci"][1]
    none = metrics["federated"]["defenses"][0]["source_inference"]
    assert none["accuracy"] > none["accuracy_ci"][0] > 1 / 3  # undefended updates reveal their source


def test_privacy_is_accounted_per_round(audit):
    _, metrics = audit
    rows = {d["label"]: d for d in metrics["federated"]["defenses"]}
    assert rows["none"]["privacy"]["epsilon"] is None
    dp = [r["privacy"] for r in rows["dp_sgd"]["rounds"]]
    assert 0 < dp[0]["client_dp_epsilon"] < dp[1]["client_dp_epsilon"]
    assert dp[1]["epsilon"] == dp[1]["epsilon_against_server"] == dp[1]["client_dp_epsilon"]
    fedavg = [r["privacy"] for r in rows["dp_fedavg"]["rounds"]]
    for round_, p in enumerate(fedavg, 1):
        assert p["dp_fedavg_client_level_epsilon"] == pytest.approx(server_epsilon(0.5, round_, 1e-5))
        assert p["epsilon_against_server"] is None  # the server sees the raw updates
    assert rows["ladp"]["privacy"]["client_dp_epsilon"] == pytest.approx(dp[1]["client_dp_epsilon"], rel=0.2)
    assert "ladp" in [c["name"] for c in rows["ladp"]["components"]]


def test_config_yaml_reproduces_the_config(audit):
    import yaml

    from miaudit.runs import parse_config, resolved_config

    out, metrics = audit
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved_config(parse_config(written)) == written
    assert json.loads((out / "metrics.json").read_text())["kind"] == "federated"


# -- FedAvg and DP-FedAvg through Flower, checked by hand ---------------------------------------------
def _fedavg_by_hand(job, dataset, rounds):
    """The same clients trained here, averaged by size in client order (what Flower's FedAvg computes)."""
    client_job = ClientJob.of(job)
    state = state_of(federated_model(job.recipe, dataset.input_shape, dataset.n_classes, private=False))
    history = []
    for round_ in range(1, rounds + 1):
        updates = [local_round(client_job, dataset, k, round_, state) for k in range(job.n_clients)]
        weights = np.array([r["num-examples"] for _, r in updates], dtype=float)
        weights /= weights.sum()
        history.append([u for u, _ in updates])
        state = {key: sum(torch.from_numpy(u[key].numpy() * float(w)) for (u, _), w in zip(updates, weights))
                 for key in state}
    return state, history


def test_flower_fedavg_matches_fedavg_by_hand_and_dp_fedavg_adds_calibrated_noise():
    dataset = load_dataset("digits")
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(dataset))[:240]
    parts = [np.sort(p) for p in np.array_split(rows, 3)]
    recipe = TrainConfig(model="mlp", hidden=[64], epochs=1, batch_size=16, lr=0.05, seed=11)
    dp = ServerDP(noise_multiplier=1.0, clipping_norm=0.5, delta=1e-5)
    context = DefenseContext(dataclasses.replace(recipe, epochs=2), dataset.input_shape, dataset.n_classes, (80,))
    dp_sgd = build_chain([("dp_sgd", {"noise_multiplier": 1.0, "target_epsilon": None})], context, label="dp")
    jobs = [FederationJob("plain", parts, recipe, rounds=2, probes={"all": rows}, audit_rounds=(1, 2),
                          source_records=rows[:50], keep_model=True),
            FederationJob("server-dp", parts, dataclasses.replace(recipe, seed=12), rounds=1, server_dp=dp,
                          keep_model=True),
            FederationJob("client-dp", parts, dataclasses.replace(recipe, seed=13), rounds=2, chain=dp_sgd)]
    results = run_federations(jobs, dataset, progress=False)

    plain = results["plain"]
    expected, history = _fedavg_by_hand(jobs[0], dataset, rounds=2)
    for key, value in expected.items():
        torch.testing.assert_close(plain.final_state[key], value, rtol=1e-5, atol=1e-6)
    model = federated_model(recipe, dataset.input_shape, dataset.n_classes, private=False)
    model.load_state_dict(expected)
    logits = model(torch.from_numpy(dataset.x[rows])).detach().numpy()
    np.testing.assert_allclose(plain.logits[2]["all"], logits, rtol=1e-4, atol=1e-4)
    for k, update in enumerate(history[0]):  # the server scored each client's own update
        model.load_state_dict(update)
        own = cross_entropy(model(torch.from_numpy(dataset.x[rows[:50]])).detach().numpy(), dataset.y[rows[:50]])
        np.testing.assert_allclose(plain.source_losses[1][k], own, rtol=1e-4, atol=1e-5)
    assert [r["partition-id"] for r in plain.client_reports[1]] == [0, 1, 2]

    # DP-FedAvg, one round: global = start + mean of the updates clipped to C + N(0, (z C / m)^2) per coordinate
    start = state_of(federated_model(jobs[1].recipe, dataset.input_shape, dataset.n_classes, private=False))
    updates = [local_round(ClientJob.of(jobs[1]), dataset, k, 1, start)[0] for k in range(3)]
    clipped = []
    for u in updates:
        delta = {key: u[key] - start[key] for key in start}
        norm = float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values())))
        clipped.append({key: d * min(1.0, dp.clipping_norm / norm) for key, d in delta.items()})
    noise = torch.cat([(results["server-dp"].final_state[key] - start[key] - sum(c[key] for c in clipped) / 3).flatten()
                       for key in start]).double()
    assert float(noise.mean()).__abs__() < 0.01
    assert float(noise.std()) == pytest.approx(dp.noise_std(3), rel=0.05)

    # client-side DP-SGD: every client reports its accounting; two rounds compose
    reports = results["client-dp"].client_reports
    assert all(r["noise_multiplier"] == 1.0 and r["steps"] > 0 for rr in reports.values() for r in rr)
    assert client_epsilon([reports[1][0], reports[2][0]], 1e-5) > client_epsilon([reports[1][0]], 1e-5)


def test_a_client_failing_on_bad_input_stops_the_run_with_its_one_line_error(tmp_path):
    config = {"kind": "federated", "dataset": {"source": "digits"}, "split": {"n_members": 60, "n_nonmembers": 50},
              "federation": {"n_clients": 2, "rounds": 1, "local_epochs": 3, "num_cpus": 2},
              "training": {"model": "mlp", "hidden": [16], "lr": 1e30, "optimizer": "sgd", "momentum": 0.0},
              "attacks": [{"name": "loss"}]}
    with pytest.raises(DataError, match=r"^federation 'none/target', round 1, client \d: training loss became nan "
                                        r"in epoch 2; lower training.lr$"):
        run_audit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# -- bad input, before any simulation --------------------------------------------------------------
def test_a_client_failure_becomes_the_same_one_line_error():
    failure = {"type": "DataError", "client": 2, "message": "training loss became nan; lower training.lr"}
    error = failure_error("federation 'none/target', round 3", failure)
    assert isinstance(error, DataError)
    assert str(error) == "federation 'none/target', round 3, client 2: training loss became nan; lower training.lr"
    assert type(failure_error("x", {"type": "KeyError", "message": "m"})).__name__ == "MiauditError"


@pytest.mark.parametrize("change,error,match", [
    ({"federation": {"n_clients": 400}}, DataError, r"n_clients=400 needs at least 400 training examples .* has 300"),
    ({"federation": {"n_clients": 10, "partition": "dirichlet", "alpha": 0.01}, "seed": 0}, DataError,
     r"leaves client \d+ of the target federation with 0 examples"),
    ({"attacks": [{"name": "rmia"}], "reference": {"n_models": 0}}, ConfigError, r"set reference.n_models"),
    ({"attacks": ["lira"], "reference": {"n_models": 2}}, ConfigError,
     r"needs at least 4 IN and 4 OUT reference federations per example, but 2 federations on paired halves"),
    ({"defenses": [{"name": "memguard"}]}, ConfigError, r"post-processes a deployed model's outputs"),
    ({"defenses": [{"name": "ladp", "params": {"noise_multiplier": 1.0, "target_epsilon": None}}],
      "split": {"n_members": 300, "n_nonmembers": 200}, "shadow": {"n_models": 0}, "reference": {"n_models": 0}},
     ConfigError, r"needs reference data"),
    ({"training": {"device": "cuda"}}, ConfigError, r"set federation.client_gpus"),
    ({"source_inference": {"n_records": 301}}, ConfigError, r"n_records=301 but there are 300 members"),
])
def test_bad_input_fails_before_any_training_with_one_line(tmp_path, change, error, match):
    config = {**CONFIG, "attacks": [{"name": "loss"}], "defenses": [{"name": "none"}], **change}
    with pytest.raises(error, match=match) as info:
        run_audit(config, tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # no partial output
