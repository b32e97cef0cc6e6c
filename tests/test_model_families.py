"""Models of the user's own family: estimator clones, torch training functions, black boxes from a config."""

import os
import pickle
import textwrap
import warnings

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from miaudit.classifier.attacks.lira import desaturate, saturation, saturation_edges
from miaudit.classifier.families import EstimatorFamily, ModelFactory, TorchFamily, seeded_clone
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference.pool import train_reference_pool
from miaudit.classifier.training import TrainConfig
from miaudit.data import ArrayDataset, load_dataset, paired_keep_matrix
from miaudit.errors import ConfigError, DataError
from miaudit.runs import parse_config, run_audit

USER_CODE = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn

    CALLS = []


    class Net(nn.Module):
        """Digits (1, 8, 8) -> 10 logits."""

        def __init__(self, hidden=16):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        def forward(self, x):
            return self.body(x)


    class DropNet(Net):
        """Net with dropout: its training draws from torch's global generator."""

        def __init__(self, hidden=16):
            super().__init__(hidden)
            self.body.insert(3, nn.Dropout(0.3))


    def fit(model_factory, data, seed, device):
        """Full-batch Adam, as the user trained the target."""
        CALLS.append(seed)
        torch.manual_seed(seed)
        model = model_factory().to(device)
        optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
        x, y = torch.as_tensor(data.x, device=device), torch.as_tensor(data.y, device=device)
        for _ in range(60):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()
        return model


    def not_a_model(model_factory, data, seed, device):
        return "weights"


    WEIGHTS = np.random.default_rng(0).normal(size=(64, 10))


    def predict_proba(x):
        z = x.reshape(len(x), -1) @ WEIGHTS
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


    def predict_logits(x):
        return x.reshape(len(x), -1) @ WEIGHTS


    def predict_labels(x):
        return (x.reshape(len(x), -1) @ WEIGHTS).argmax(1)
''')


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, digits):
    """A user's package (family_code: Net, fit, black boxes), a trained Net, a random forest pickle and data files."""
    folder = tmp_path_factory.mktemp("family")
    (folder / "family_code.py").write_text(USER_CODE)
    order = np.random.default_rng(0).permutation(len(digits))
    parts = {"members": order[:80], "nonmembers": order[80:160], "population": order[160:260],
             "shadow": order[260:760]}
    for name, rows in parts.items():
        np.savez(folder / f"{name}.npz", x=digits.x[rows], y=digits.y[rows])
    namespace: dict = {}
    exec(compile(USER_CODE, "family_code.py", "exec"), namespace)
    members = digits.subset(parts["members"])
    model = namespace["fit"](lambda: namespace["Net"](), members, 0, "cpu")
    torch.save(model.state_dict(), folder / "net.pt")
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(members.x.reshape(80, -1), members.y)
    with open(folder / "forest.pkl", "wb") as handle:
        pickle.dump(forest, handle)
    return folder


@pytest.fixture
def importable(user_files, monkeypatch):
    """The user's package importable here and in spawned workers (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(user_files))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(user_files), os.environ.get("PYTHONPATH", "")]))
    return user_files


# -- estimator clones -----------------------------------------------------------------------------
def test_seeded_clone_sets_every_random_state_and_keeps_hyper_parameters():
    template = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=7, random_state=3))
    clone = seeded_clone(template, 11)
    assert clone.get_params()["randomforestclassifier__random_state"] == 11
    assert clone.get_params()["randomforestclassifier__n_estimators"] == 7
    assert not hasattr(clone[-1], "estimators_")  # unfitted
    assert template.get_params()["randomforestclassifier__random_state"] == 3  # the template is untouched


def test_clones_fitted_on_a_half_without_a_class_line_up_with_the_labels():
    xgboost = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 4)).astype(np.float32), np.repeat([0, 1, 2], 30)
    x[:, 0] += y * 3
    half = ArrayDataset(x[y != 1], y[y != 1], n_classes=3)  # class 1 missing: XGBoost needs 0..k-1 labels
    for template in (xgboost.XGBClassifier(n_estimators=5, max_depth=2), LogisticRegression()):
        model = EstimatorFamily(template, n_classes=3).train(half, seed=0)
        probs = model.outputs(x, y).probs
        assert probs.shape == (90, 3) and np.all(probs[:, 1] == 0)
        assert (probs[y == 2].argmax(1) == 2).mean() > 0.9
    with pytest.raises(DataError, match="one class only"):
        EstimatorFamily(LogisticRegression(), n_classes=3).train(ArrayDataset(x[:30], y[:30], n_classes=3), seed=0)
    with pytest.raises(ConfigError, match="LinearSVC has no predict_proba"):
        EstimatorFamily(LinearSVC(), n_classes=2)
    with pytest.raises(ConfigError, match="object is not a scikit-learn-compatible estimator"):
        EstimatorFamily(object(), n_classes=2)


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_cloned_reference_models_are_identical_on_every_executor(digits, executor):
    data = digits.subset(np.arange(200))
    keep = paired_keep_matrix(4, len(data), seed=0)
    family = EstimatorFamily(RandomForestClassifier(n_estimators=10), n_classes=10)
    kwargs = {"seed": 5, "family": family, "progress": False}
    sequential = train_reference_pool(data, keep, TrainConfig(), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = train_reference_pool(data, keep, TrainConfig(), executor=executor, n_workers=2, **kwargs)
    for a, b in zip(sequential.outputs, other.outputs):
        assert a.access == "probabilities"
        np.testing.assert_array_equal(a.probs, b.probs)
    assert sequential.info["models"].startswith("clones of RandomForestClassifier")
    with pytest.raises(ConfigError, match="vectorised executor trains zoo models and your torch class trained by "
                                          "miaudit's loop, not clones of RandomForestClassifier"):
        train_reference_pool(data, keep, TrainConfig(), executor="vectorised", **kwargs)


def test_pool_cache_keeps_the_outputs_of_cloned_models(digits, tmp_path):
    data = digits.subset(np.arange(120))
    keep = paired_keep_matrix(2, len(data), seed=0)
    family = EstimatorFamily(RandomForestClassifier(n_estimators=5), n_classes=10)
    first = train_reference_pool(data, keep, TrainConfig(), family=family, cache_dir=tmp_path, progress=False)
    again = train_reference_pool(data, keep, TrainConfig(), family=family, cache_dir=tmp_path, progress=False)
    assert again.info["from_cache"] == 2 and not list(tmp_path.glob("*.pt"))  # outputs cached, no weights file
    np.testing.assert_array_equal(first.outputs[0].probs, again.outputs[0].probs)
    other = EstimatorFamily(RandomForestClassifier(n_estimators=6), n_classes=10)
    assert train_reference_pool(data, keep, TrainConfig(), family=other, cache_dir=tmp_path,
                                progress=False).info["from_cache"] == 0  # another hyper-parameter, another key


def test_lira_gives_saturated_probabilities_a_finite_scaled_logit_one_step_out():
    probs = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    outputs = ClassifierOutputs(np.array([0, 0, 0, 0]), probs=probs)
    saturated = saturation(outputs)
    assert saturated.tolist() == [1, 0, 0, -1]
    values = outputs.scaled_logit
    low, high = saturation_edges(values, saturated)
    step = np.log(9) - np.log(4)  # between the two most extreme unsaturated values, log(0.9/0.1) and log(0.8/0.2)
    np.testing.assert_allclose(high, np.log(9) + step)
    np.testing.assert_allclose(low, np.log(4) - step)
    np.testing.assert_allclose(desaturate(values, saturated, (low, high))[[0, 3]], [high, low])
    logits = ClassifierOutputs(np.array([0, 1]), logits=np.array([[80.0, 0.0], [0.0, 1.0]]))
    assert not saturation(logits).any()  # from logits the scaled logit is exact (here 80), never replaced
    assert saturation_edges(values, np.zeros(4, np.int8)) is None


# -- audits from a config -----------------------------------------------------------------------
def test_sklearn_target_is_audited_with_cloned_shadow_and_reference_models(importable, tmp_path):
    folder = importable
    config = {
        "seed": 2,
        "dataset": {"source": str(folder / "shadow.npz")},
        "split": {"n_shadow": 400},
        "target": {"sklearn": str(folder / "forest.pkl"), "trust_pickle": True,
                   "members": str(folder / "members.npz"), "nonmembers": str(folder / "nonmembers.npz"),
                   "population": str(folder / "population.npz")},
        "shadow": {"n_models": 1},
        "reference": {"n_models": 4},
        "attacks": [{"name": "loss", "params": {"per_class": True}}, {"name": "lira", "params": {"variance": "global"}},
                    {"name": "rmia", "params": {"online": False}}],
        "evaluation": {"n_bootstrap": 20},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(config), tmp_path / "run", progress=False)
    reference = result["reference"]
    assert reference["models"] == "clones of RandomForestClassifier (sklearn.base.clone, refitted)"
    assert abs(reference["fidelity"]["gaps"]["test_accuracy"]) < 0.15  # clones behave like the forest
    assert result["shadow"]["train_accuracy_mean"] == 1.0  # shadow clones memorise like the forest does
    lira = next(a for a in result["attacks"] if a["name"] == "lira")
    assert lira["learned"]["saturated_fraction"] > 0 and lira["auc"] > 0.7


@pytest.mark.parametrize("estimator", [
    {"class": "sklearn.ensemble:GradientBoostingClassifier", "kwargs": {"n_estimators": 10, "max_depth": 2}},
    {"class": "xgboost:XGBClassifier", "kwargs": {"n_estimators": 10, "max_depth": 2}},
    {"class": "lightgbm:LGBMClassifier", "kwargs": {"n_estimators": 10, "num_leaves": 4, "verbose": -1}},
])
def test_the_tool_trains_an_estimator_target_and_its_clones(estimator, tmp_path):
    pytest.importorskip(estimator["class"].split(".")[0].split(":")[0])
    config = {
        "dataset": {"source": "digits"},
        "split": {"n_members": 150, "n_nonmembers": 150, "n_population": 100},
        "training": {"estimator": estimator, "trust_code": True},
        "reference": {"n_models": 2},
        "attacks": [{"name": "loss"}, {"name": "rmia", "params": {"online": True}}],
        "evaluation": {"n_bootstrap": 10},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(config), tmp_path / "run", progress=False)
    target = result["target"]
    assert target["access"] == "probabilities" and target["test_accuracy"] > target["majority_rate"]
    assert result["reference"]["models"].startswith("clones of")
    with pytest.raises(ConfigError, match="names code that miaudit would import"):
        parse_config({**config, "training": {"estimator": estimator}})


def test_white_box_and_logit_attacks_are_refused_for_an_estimator_target():
    config = {"dataset": {"source": "digits"}, "split": {"n_members": 100, "n_nonmembers": 100},
              "training": {"estimator": {"class": "sklearn.ensemble:RandomForestClassifier"}, "trust_code": True},
              "attacks": [{"name": "gradient_norm"}]}
    with pytest.raises(ConfigError, match="needs the model's weights"):
        run_audit(parse_config(config), "/nonexistent/never-written", progress=False)


def _torch_config(folder, **training):
    return {
        "seed": 0,
        "dataset": {"source": str(folder / "shadow.npz")},
        "split": {"n_shadow": 300},
        "target": {"torch_module": {"path": str(folder / "net.pt"), "class": "family_code:Net",
                                    "kwargs": {"hidden": 16}}, "trust_code": True,
                   "members": str(folder / "members.npz"), "nonmembers": str(folder / "nonmembers.npz")},
        "training": {"function": "family_code:fit", "trust_code": True, **training},
        "shadow": {"n_models": 1},
        "reference": {"n_models": 2, "executor": "process", "n_workers": 2},
        "attacks": [{"name": "loss", "params": {"per_class": True}},
                    {"name": "lira", "params": {"variance": "global"}}],
        "evaluation": {"n_bootstrap": 10},
    }


def test_torch_target_with_a_training_function_on_a_process_pool(importable, tmp_path):
    import family_code

    family_code.CALLS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(_torch_config(importable)), tmp_path / "run", progress=False)
    assert len(family_code.CALLS) == 1  # the shadow model here; the reference models in the worker processes
    reference = result["reference"]
    assert reference["models"] == "family_code:Net trained by family_code:fit" and reference["trained"] == 2
    assert reference["fidelity"]["reference"]["train_accuracy"] == 1.0  # the user's recipe memorises, as the target
    assert result["shadow"]["train_accuracy_mean"] == 1.0


def test_the_tool_trains_the_target_with_the_training_function(importable, tmp_path):
    config = {"dataset": {"source": "digits"}, "split": {"n_members": 100, "n_nonmembers": 100},
              "training": {"function": "family_code:fit", "trust_code": True, "model": "mlp", "hidden": [32]},
              "reference": {"n_models": 2}, "attacks": [{"name": "loss"}, {"name": "gradient_norm"}],
              "evaluation": {"n_bootstrap": 10}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(config), tmp_path / "run", progress=False)
    assert result["target"]["model"] == "zoo mlp" and result["target"]["train_accuracy"] == 1.0
    assert result["target"]["n_parameters"] == 64 * 32 + 32 + 32 * 10 + 10


@pytest.mark.parametrize("training, error", [
    ({"function": "family_code:fit"}, "names code that miaudit would import and run; allow it with "
                                      "config.training.trust_code: true"),
    ({"function": "os:system", "trust_code": True}, "from Python's standard library"),
    ({"function": "family_code:fit", "estimator": {"class": "x:Y"}, "trust_code": True}, "not both"),
    ({"trust_code": True}, "only applies to training.estimator and training.function"),
])
def test_training_code_needs_an_explicit_opt_in(importable, training, error):
    with pytest.raises(ConfigError, match=error):
        parse_config(_torch_config(importable) | {"training": training})


def test_a_training_function_that_returns_no_module_is_a_clear_error(importable, tmp_path):
    config = _torch_config(importable, function="family_code:not_a_model")
    with pytest.raises(ConfigError, match="returned str; it must return the trained torch.nn.Module"):
        run_audit(parse_config(config | {"reference": {"n_models": 0}, "attacks": config["attacks"][:1]}),
                  tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_torch_family_without_a_function_uses_the_users_class_and_the_loop(importable, digits):
    factory = ModelFactory((1, 8, 8), 10, TrainConfig(epochs=2), "family_code:Net", {"hidden": 8})
    family = TorchFamily(factory)
    model = family.train(digits.subset(np.arange(50)), seed=3)
    assert type(model.model).__name__ == "Net" and model.model.body[1].out_features == 8
    again = family.train(digits.subset(np.arange(50)), seed=3)
    torch.testing.assert_close(model.model.body[1].weight, again.model.body[1].weight)  # seeded: same weights


@pytest.mark.parametrize("cls", ["Net", "DropNet"])
def test_the_vectorised_executor_trains_the_users_class_as_the_sequential_one_does(importable, digits, tmp_path, cls):
    """Your torch class trained by miaudit's loop: the vectorised executor (per-model batching) gives the sequential
    executor's models up to float summation order, dropout masks included (each model draws from its own stream,
    as trained alone: interleaved draws had moved a tiny BERT's logits by 0.026), caches outputs and resumes."""
    data = digits.subset(np.arange(160))
    keep = paired_keep_matrix(4, len(data), seed=0)
    recipe = TrainConfig(epochs=5, batch_size=16, lr=0.01)
    family = TorchFamily(ModelFactory((1, 8, 8), 10, recipe, f"family_code:{cls}", {"hidden": 16}))
    kwargs = {"seed": 5, "family": family, "progress": False}
    sequential = train_reference_pool(data, keep, recipe, **kwargs)
    before = torch.random.get_rng_state()
    vectorised = train_reference_pool(data, keep, recipe, executor="vectorised", cache_dir=tmp_path, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's generator is left as it was
    assert vectorised.info["numerics"] == "vectorised-per-model" and vectorised.info["trained"] == 4
    for a, b in zip(sequential.outputs, vectorised.outputs):
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-4, rtol=0)
    resumed = train_reference_pool(data, keep, recipe, executor="vectorised", cache_dir=tmp_path, **kwargs)
    assert resumed.info["trained"] == 0
    for a, b in zip(vectorised.outputs, resumed.outputs):
        np.testing.assert_array_equal(a.logits, b.logits)
    with_function = TorchFamily(family.factory, "family_code:fit")
    with pytest.raises(ConfigError, match=f"not family_code:{cls} trained by family_code:fit; use executor"):
        train_reference_pool(data, keep, recipe, executor="vectorised", seed=5, family=with_function, progress=False)


@pytest.mark.parametrize("function, access", [("family_code:predict_proba", "probabilities"),
                                              ("family_code:predict_logits", "logits"),
                                              ("family_code:predict_labels", "label-only")])
def test_black_box_functions_from_a_config(importable, tmp_path, function, access):
    folder = importable
    config = {"target": {"blackbox": function, "trust_code": True, "members": str(folder / "members.npz"),
                         "nonmembers": str(folder / "nonmembers.npz")},
              "attacks": [{"name": "correctness"}], "evaluation": {"n_bootstrap": 10}}
    result = run_audit(parse_config(config), tmp_path / "run", progress=False)
    assert result["target"]["source"] == "blackbox" and result["target"]["access"] == access
    assert result["target"]["description"].startswith(f"black-box function {function}")
    with pytest.raises(ConfigError, match="config.target.trust_code: true"):
        parse_config({**config, "target": {**config["target"], "trust_code": False}})


def test_black_box_reference_models_come_from_the_zoo(importable, tmp_path):
    folder = importable
    config = {"target": {"blackbox": "family_code:predict_proba", "blackbox_output": "probabilities",
                         "trust_code": True, "members": str(folder / "members.npz"),
                         "nonmembers": str(folder / "nonmembers.npz")},
              "reference": {"n_models": 2}, "attacks": [{"name": "lira", "params": {"variance": "global"}}],
              "evaluation": {"n_bootstrap": 10}}
    with pytest.raises(ConfigError, match="give the recipe closest to how your model was trained"):
        parse_config(config)
    config["training"] = {"model": "mlp", "hidden": [16], "epochs": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(config), tmp_path / "run", progress=False)
    assert result["reference"]["models"] == "zoo mlp"
    with pytest.raises(ConfigError, match="blackbox_output: only applies to target.blackbox"):
        parse_config({"target": {"blackbox_output": "logits"}, "attacks": [{"name": "loss"}]})
