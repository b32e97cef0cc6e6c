"""Audits of the user's own models: a torch module from its state dict, a trusted scikit-learn pickle."""

import pickle
import textwrap
import warnings

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression

from miaudit.classifier.attacks.lira import LiRA
from miaudit.classifier.targets import TorchClassifierTarget
from miaudit.cli import main
from miaudit.data import load_dataset
from miaudit.errors import ConfigError, DataError
from miaudit.runs import parse_config, run_audit

MODEL_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        """Digits (1, 8, 8) -> 10 logits."""

        def __init__(self, hidden=16, n_classes=10):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

        def forward(self, x):
            return self.body(x)


    NOT_A_MODULE = 3
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A user's package (my_models.TinyNet), its overfit weights and the member / non-member / population files."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "my_models.py").write_text(MODEL_SOURCE)
    digits = load_dataset("digits")
    order = np.random.default_rng(0).permutation(len(digits))
    parts = {"members": order[:60], "nonmembers": order[60:120], "population": order[120:220]}
    for name, rows in parts.items():
        np.savez(folder / f"{name}.npz", x=digits.x[rows], y=digits.y[rows])
    namespace: dict = {}
    exec(compile(MODEL_SOURCE, "my_models.py", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["TinyNet"]()
    x, y = torch.as_tensor(digits.x[parts["members"]]), torch.as_tensor(digits.y[parts["members"]])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):  # full batch: the model memorises its 60 members
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    torch.save(model.state_dict(), folder / "model.pt")
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), folder / "whole_model.pt")
    flat = digits.x[parts["members"]].reshape(60, -1)
    with open(folder / "logreg.pkl", "wb") as handle:
        pickle.dump(LogisticRegression(C=100, max_iter=2000).fit(flat, digits.y[parts["members"]]), handle)
    return folder, model.eval()


@pytest.fixture
def importable(files, monkeypatch):
    monkeypatch.syspath_prepend(str(files[0]))
    return files[0]


def torch_config(folder, **target):
    return {
        "seed": 1,
        "target": {"torch_module": {"path": str(folder / "model.pt"), "class": "my_models:TinyNet",
                                    "kwargs": {"hidden": 16}}, "trust_code": True,
                   "members": str(folder / "members.npz"), "nonmembers": str(folder / "nonmembers.npz"),
                   "population": str(folder / "population.npz"), **target},
        "training": {"model": "mlp", "hidden": [16], "epochs": 20, "batch_size": 16, "lr": 0.01, "family": "zoo"},
        "reference": {"n_models": 4, "views": "flip", "executor": "vectorised"},
        "attacks": [{"name": "loss"}, {"name": "population"}, {"name": "gradient_norm"},
                    {"name": "lira", "params": {"variance": "global"}},
                    {"name": "rmia", "params": {"online": False}}],
        "evaluation": {"n_bootstrap": 20},
    }


def test_torch_module_audit_with_reference_pool_and_query_views(importable, files, tmp_path, monkeypatch):
    folder, model = files
    seen = []
    original = LiRA._score
    monkeypatch.setattr(LiRA, "_score", lambda self, signals: seen.append(signals) or original(self, signals))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*plain query only")  # LiRA must get every view
        metrics = run_audit(torch_config(folder), tmp_path / "run", progress=False)

    target = metrics["target"]
    assert target["source"] == "torch_module" and target["class"] == "my_models:TinyNet"
    assert target["access"] == "logits" and target["n_parameters"] == 64 * 16 + 16 + 16 * 10 + 10
    assert target["train_accuracy"] == 1.0 and target["test_accuracy"] < 1.0
    assert metrics["data"]["n_members"] == 60 and metrics["data"]["n_nonmembers"] == 60
    assert metrics["data"]["n_population"] == 100 and metrics["reference"]["views"] == "flip"
    entries = {a["name"]: a for a in metrics["attacks"]}
    assert entries["loss"]["auc"] > 0.6  # the memorising model leaks

    # LiRA scored the target's outputs on both views: the plain query and the mirror image
    (views,) = seen
    members = np.load(folder / "members.npz")
    nonmembers = np.load(folder / "nonmembers.npz")
    x = np.concatenate([members["x"], nonmembers["x"]])
    y = np.concatenate([members["y"], nonmembers["y"]])
    expected = TorchClassifierTarget(model).outputs(x[..., ::-1].copy(), y)
    assert len(views) == 2
    np.testing.assert_allclose(views[0].logits, TorchClassifierTarget(model).outputs(x, y).logits, atol=1e-6)
    np.testing.assert_allclose(views[1].logits, expected.logits, atol=1e-6)
    lira = entries["lira"]["learned"]
    assert set(lira) == {"variance", "n_views", "std_in_", "std_out_"}
    assert lira["variance"] == "global" and lira["n_views"] == 2 and lira["std_in_"] > 0 and lira["std_out_"] > 0

    # RMIA's offline a, chosen on the reference models, with the AUC of every candidate
    learned = entries["rmia"]["learned"]
    assert learned["offline_a_"] in [round(0.1 * i, 1) for i in range(11)]
    assert list(learned["tuning_auc_"]) == [f"{round(0.1 * i, 1):g}" for i in range(11)]
    assert learned["tuning_auc_"][f"{learned['offline_a_']:g}"] == max(learned["tuning_auc_"].values())

    # the run re-parses from its own config.yaml
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert parse_config(resolved).target.torch_module["class"] == "my_models:TinyNet"


def test_sklearn_pickle_needs_explicit_trust(files, tmp_path):
    folder, _ = files
    target = {"sklearn": str(folder / "logreg.pkl"), "members": str(folder / "members.npz"),
              "nonmembers": str(folder / "nonmembers.npz")}
    config = {"target": target, "attacks": [{"name": "loss"}, {"name": "correctness"}],
              "evaluation": {"n_bootstrap": 20}}
    with pytest.raises(ConfigError, match="trust_pickle: true"):
        parse_config(config)
    trusted = {**config, "target": {**target, "trust_pickle": True}}
    metrics = run_audit(trusted, tmp_path / "run", progress=False)
    assert metrics["target"]["source"] == "sklearn" and metrics["target"]["estimator"] == "LogisticRegression"
    assert metrics["target"]["access"] == "probabilities" and metrics["target"]["train_accuracy"] == 1.0
    assert metrics["attacks"][0]["auc"] > 0.5
    with pytest.raises(ConfigError, match="white-box"):
        run_audit({**trusted, "attacks": [{"name": "gradient_norm"}]}, tmp_path / "wb", progress=False)
    assert not (tmp_path / "wb").exists()


def _bad(folder, tmp_path, **changes):
    config = torch_config(folder)
    config["reference"] = {}
    config["attacks"] = [{"name": "loss"}]
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            config[section] = {**config[section], name: value}
        else:
            config[section] = value
    return config


@pytest.mark.parametrize("changes,message", [
    ({"target__torch_module": {"path": "nowhere.pt", "class": "my_models:TinyNet"}}, "nowhere.pt does not exist"),
    ({"target__torch_module": {"path": "WHOLE", "class": "my_models:TinyNet"}}, "holds more than tensors"),  # pickled
    ({"target__torch_module": {"path": "MODEL", "class": "no_such_pkg.models:Net"}},
     "cannot import 'no_such_pkg.models'"),
    ({"target__torch_module": {"path": "MODEL", "class": "my_models:Missing"}}, "has no 'Missing'"),
    ({"target__torch_module": {"path": "MODEL", "class": "my_models:NOT_A_MODULE"}}, "not a torch.nn.Module"),
    ({"target__torch_module": {"path": "MODEL", "class": "my_models:TinyNet", "kwargs": {"hidden": 32}}},
     "shape mismatch (file vs model) body.1.weight (16, 64) vs (32, 64)"),
    ({"target__torch_module": {"path": "MODEL", "class": "my_models:TinyNet", "kwargs": {"width": 3}}},
     "TinyNet(**kwargs) failed"),
    ({"target__torch_module": {"path": "MODEL", "class": "TinyNet"}}, "must read \"pkg.module:ClassName\""),
    ({"target__torch_module": {"path": "MODEL", "class": "my_models:TinyNet", "weights": 1}}, "unknown key 'weights'"),
    ({"target__members": "missing_members.npz"}, "config.target.members: missing_members.npz does not exist"),
    ({"target__nonmembers": None}, "config.target.nonmembers: give the .npz"),
    ({"target__precomputed": "outputs.npz"}, "give one of precomputed, torch_module, sklearn"),
    ({"target__trust_pickle": True}, "only applies to target.sklearn"),
    ({"split": {"n_members": 10, "n_nonmembers": 10}}, "come from target.members / target.nonmembers"),
    ({"shadow": {"n_models": 1}, "dataset": {"source": "digits"}, "split": {"n_shadow": 100}, "training": None},
     "config.training: shadow and reference models are trained by the tool"),
])
def test_bad_user_model_configs_exit_code_2(importable, tmp_path, capsys, changes, message):
    paths = {"MODEL": str(importable / "model.pt"), "WHOLE": str(importable / "whole_model.pt")}
    module = changes.get("target__torch_module")
    if module and module["path"] in paths:
        changes = {**changes, "target__torch_module": {**module, "path": paths[module["path"]]}}
    config = _bad(importable, tmp_path, **changes)
    config = {k: v for k, v in config.items() if v is not None}
    config["target"] = {k: v for k, v in config["target"].items() if v is not None}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["audit", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_audited_files(importable, tmp_path, capsys):
    np.savez(tmp_path / "no_labels.npz", x=np.zeros((4, 1, 8, 8)))
    np.savez(tmp_path / "wrong_shape.npz", x=np.zeros((4, 64)), y=np.zeros(4, int))
    for name, message in [("no_labels.npz", "has no 'y' array"), ("wrong_shape.npz", "must share one input shape")]:
        config = _bad(importable, tmp_path, target__nonmembers=str(tmp_path / name))
        path = tmp_path / "audit.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["audit", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
        assert message in capsys.readouterr().err


def test_member_files_from_different_distributions_make_the_run_inconclusive(importable, tmp_path):
    folder = importable
    nonmembers = np.load(folder / "nonmembers.npz")
    np.savez(tmp_path / "rescanned.npz", x=np.clip(nonmembers["x"] * 1.3 + 0.05, 0, 1), y=nonmembers["y"])
    config = {**torch_config(folder), "reference": {"n_models": 0}, "attacks": [{"name": "loss"}],
              "evaluation": {"n_bootstrap": 200}}
    same = run_audit(config, tmp_path / "same", progress=False)
    baseline = same["blind_baseline"]
    assert baseline["verdict"]["shift"] is False and same["verdict"]["level"] != "inconclusive"
    assert baseline["unit"] == "records" and baseline["n_used"] == baseline["n_evaluated"] == 120
    assert "principal components" in baseline["features"] and "one-hot label" in baseline["features"]
    assert (tmp_path / "same" / "scores" / "blind_baseline.scores.npz").is_file()
    assert same["data"]["audited_from"] == "members.npz + nonmembers.npz"
    assert same["attacks"][0]["vs_blind_baseline"]["auc_difference"] == pytest.approx(
        same["attacks"][0]["auc"] - max(baseline["auc"], 0.5))

    config["target"] = {**config["target"], "nonmembers": str(tmp_path / "rescanned.npz")}
    shifted = run_audit(config, tmp_path / "shifted", progress=False)
    assert shifted["blind_baseline"]["verdict"]["shift"] is True and shifted["blind_baseline"]["auc"] > 0.9
    assert shifted["verdict"]["level"] == "inconclusive" and "records alone" in shifted["verdict"]["summary"]
    assert shifted["blind_baseline"]["verdict"]["text"] in shifted["warnings"]
    assert "Blind baseline (records only, never queries the model)" in (tmp_path / "shifted" / "report.md").read_text()

    off = run_audit({**config, "blind_baseline": {"enabled": False}}, tmp_path / "off", progress=False)
    assert "blind_baseline" not in off and off["verdict"]["level"] != "inconclusive"


def test_record_features_are_fitted_on_the_training_fold():
    from miaudit.classifier.blind_baseline import MAX_COMPONENTS, record_features

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3, 5, 5)), rng.integers(0, 3, 40)
    featurize, described = record_features(x, y, 3)
    train, test = np.arange(30), np.arange(30, 40)
    fitted, held_out = featurize(train, test)
    assert fitted.shape == (30, 29 + 3) and held_out.shape == (10, 29 + 3)  # PCA keeps at most n_train - 1
    assert "principal components" in described
    small, described = record_features(x[:, 0, 0], y, 3)  # 5 features: no reduction
    fitted, held_out = small(train, test)
    assert fitted.shape == (30, 5 + 3) and described.startswith("the standardised inputs")
    np.testing.assert_allclose(fitted[:, :5].mean(axis=0), 0, atol=1e-12)  # standardised on the training rows
    np.testing.assert_array_equal(held_out[:, 5:], np.eye(3)[y[test]])
    assert MAX_COMPONENTS == 50
    large, described = record_features(rng.normal(size=(40, 3, 40, 40)).astype(np.float32), y, 3)  # 4,800 values
    assert large(train, test)[0].shape == (30, 29 + 3)
    assert described.endswith("(at a seeded random 4,096 of their 4,800 values) and the one-hot label")


def test_too_few_records_for_the_blind_baseline_leave_a_warning(importable, tmp_path):
    folder = importable
    for name in ("members", "nonmembers"):
        arrays = np.load(folder / f"{name}.npz")
        np.savez(tmp_path / f"{name}.npz", x=arrays["x"][:4], y=arrays["y"][:4])
    config = {**torch_config(folder), "reference": {"n_models": 0}, "attacks": [{"name": "loss"}]}
    config["target"] = {**config["target"], "members": str(tmp_path / "members.npz"),
                        "nonmembers": str(tmp_path / "nonmembers.npz")}
    metrics = run_audit(config, tmp_path / "run", progress=False)
    assert "blind_baseline" not in metrics and metrics["attacks"][0]["auc"] is not None
    (warned,) = [w for w in metrics["warnings"] if w.startswith("no blind baseline")]
    assert "needs at least 5 members and non-members; the smaller class has 4" in warned


# -- member / non-member tables ---------------------------------------------------------------------

def _write_table(path, x, y, *, label="label", extra=None):
    """A CSV of 64 pixel columns and the label (plus ``extra`` columns), as a user's tabular export would be."""
    columns = [f"px{i}" for i in range(x.shape[1])] + [label] + list(extra or {})
    lines = [",".join(columns)]
    for i, (row, target) in enumerate(zip(x, y)):
        cells = [f"{v:g}" for v in row] + [str(int(target))] + [str(values[i]) for values in (extra or {}).values()]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


def test_member_tables_give_the_audit_of_the_same_npz_files(files, tmp_path):
    """The logistic regression on flattened digits audited from CSV tables (label column 'digit', ids and
    groups from columns) scores exactly as from the .npz files."""
    folder, _ = files
    for name in ("members", "nonmembers"):
        arrays = np.load(folder / f"{name}.npz")
        x, y = arrays["x"].reshape(len(arrays["y"]), -1), arrays["y"]
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
        _write_table(tmp_path / f"{name}.csv", x, y, label="digit",
                     extra={"record": [f"{name}-{i}" for i in range(len(y))],
                            "person": [f"{name}-p{i // 2}" for i in range(len(y))]})
    common = {"sklearn": str(folder / "logreg.pkl"), "trust_pickle": True}
    config = {"attacks": ["loss", "confidence"], "evaluation": {"n_bootstrap": 20}}
    from_npz = run_audit(config | {"target": common | {"members": str(tmp_path / "members.npz"),
                                                       "nonmembers": str(tmp_path / "nonmembers.npz")}},
                         tmp_path / "npz", progress=False)
    tables = common | {"members": str(tmp_path / "members.csv"), "nonmembers": str(tmp_path / "nonmembers.csv"),
                       "label_column": "digit", "id_column": "record", "group_column": "person"}
    from_csv = run_audit(config | {"target": tables}, tmp_path / "csv", progress=False)
    assert [a["auc"] for a in from_csv["attacks"]] == [a["auc"] for a in from_npz["attacks"]]
    assert from_csv["target"]["train_accuracy"] == from_npz["target"]["train_accuracy"] == 1.0
    scores = np.load(tmp_path / "csv" / "scores" / "loss.scores.npz")
    assert scores["ids"][0] == "members-0" and from_csv["data"]["audited_from"] == "members.csv + nonmembers.csv"
    assert from_csv["evaluation"]["grouping"]["n_groups"] == 60  # two records per person


@pytest.mark.parametrize("edit,message", [
    (lambda text: text.replace(",0\n", ",zero\n", 1), "has the label 'zero', a class name, but the model was fitted "
                                                        "on class indices (0, 1, 2, 3, 4); give those"),
    (lambda text: text.replace(",0\n", ",\n", 1), "column 'label' has no label; give every record its class"),
    (lambda text: text.replace("\n0,", "\nn/a,", 1), "column 'px0' holds 'n/a', not a number"),
    (lambda text: text.replace("\n0,", "\n,", 1), "column 'px0' is missing or not finite"),
    (lambda text: text.replace("px1,", "pxA,", 1), "the tables' feature columns differ"),
    (lambda text: text.replace(",label\n", ",digit\n", 1), "has no column 'label' (columns: px0"),
])
def test_bad_member_tables_are_one_line_errors(files, tmp_path, capsys, edit, message):
    folder, _ = files
    for name in ("members", "nonmembers"):
        arrays = np.load(folder / f"{name}.npz")
        _write_table(tmp_path / f"{name}.csv", arrays["x"].reshape(len(arrays["y"]), -1), arrays["y"])
    (tmp_path / "nonmembers.csv").write_text(edit((tmp_path / "nonmembers.csv").read_text()))
    config = {"target": {"sklearn": str(folder / "logreg.pkl"), "trust_pickle": True,
                         "members": str(tmp_path / "members.csv"), "nonmembers": str(tmp_path / "nonmembers.csv")},
              "attacks": ["loss"]}
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    assert main(["audit", str(tmp_path / "audit.yaml"), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_table_columns_only_name_columns_of_tables(files):
    folder, _ = files
    target = {"sklearn": str(folder / "logreg.pkl"), "trust_pickle": True, "members": str(folder / "members.npz"),
              "nonmembers": str(folder / "nonmembers.npz"), "label_column": "y"}
    with pytest.raises(ConfigError, match="config.target.label_column: names a column of the members / nonmembers "
                                          "tables"):
        parse_config({"target": target, "attacks": ["loss"]})


def test_a_model_fitted_on_named_columns_gets_the_tables_columns_in_its_order(files, tmp_path):
    """A scikit-learn model fitted on a data frame keeps its column names (feature_names_in_): tables whose columns
    come in another order are matched by name (the scores equal those of the .npz files), a missing or an extra
    column is an error, and .npz files (no names) get a warning that their order is assumed."""
    folder, _ = files
    with open(folder / "logreg.pkl", "rb") as handle:
        model = pickle.load(handle)
    names = [f"px{i}" for i in range(64)]
    model.feature_names_in_ = np.array(names, dtype=object)  # what fitting on a pandas DataFrame stores
    with open(tmp_path / "named.pkl", "wb") as handle:
        pickle.dump(model, handle)
    order = np.random.default_rng(0).permutation(64)
    for name in ("members", "nonmembers"):
        arrays = np.load(folder / f"{name}.npz")
        x, y = arrays["x"].reshape(len(arrays["y"]), -1), arrays["y"]
        _write_table(tmp_path / f"{name}.csv", x[:, order], y)
        text = (tmp_path / f"{name}.csv").read_text().split("\n", 1)
        (tmp_path / f"{name}.csv").write_text(",".join([names[j] for j in order] + ["label"]) + "\n" + text[1])
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    config = {"attacks": ["loss"], "evaluation": {"n_bootstrap": 20}}

    def target(suffix, model_file="named.pkl"):
        return {"sklearn": str(tmp_path / model_file), "trust_pickle": True,
                "members": str(tmp_path / f"members{suffix}"), "nonmembers": str(tmp_path / f"nonmembers{suffix}")}

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # scikit-learn's "X does not have valid feature names" silenced
        from_csv = run_audit(config | {"target": target(".csv")}, tmp_path / "csv", progress=False)
    from_npz = run_audit(config | {"target": target(".npz")}, tmp_path / "npz", progress=False)
    assert from_csv["attacks"][0]["auc"] == from_npz["attacks"][0]["auc"]
    assert from_csv["target"]["train_accuracy"] == 1.0
    assert any("fitted on named columns (px0, px1, px2, ...); the .npz files' x columns are taken to be in that order"
               in w for w in from_npz["warnings"])
    assert not any("named columns" in w for w in from_csv["warnings"])
    header, body = (tmp_path / "nonmembers.csv").read_text().split("\n", 1)
    (tmp_path / "nonmembers.csv").write_text(header.replace("px5,", "px5b,", 1) + "\n" + body)
    with pytest.raises(DataError, match="nonmembers.csv has no column 'px5', an input of LogisticRegression"):
        run_audit(config | {"target": target(".csv")}, tmp_path / "missing", progress=False)
    model.feature_names_in_ = np.array([n for n in names if n != "px5"], dtype=object)
    model.n_features_in_ = 63
    with open(tmp_path / "fewer.pkl", "wb") as handle:
        pickle.dump(model, handle)
    (tmp_path / "nonmembers.csv").write_text(header + "\n" + body)
    with pytest.raises(DataError, match="has the column 'px5', which is not an input of LogisticRegression"):
        run_audit(config | {"target": target(".csv", "fewer.pkl")}, tmp_path / "extra", progress=False)


def test_model_feature_names_of_scikit_learn_xgboost_and_lightgbm_models():
    from types import SimpleNamespace

    from miaudit.classifier.targets.tables import model_feature_names

    assert model_feature_names(SimpleNamespace(feature_names_in_=np.array(["age", "income"], dtype=object))) == [
        "age", "income"]
    assert model_feature_names(SimpleNamespace(feature_name_=["age", "income"])) == ["age", "income"]  # LightGBM
    assert model_feature_names(SimpleNamespace(feature_name_=["Column_0", "Column_1"])) is None  # fitted on arrays
    assert model_feature_names(LogisticRegression()) is None


def test_a_shadow_table_of_your_own_model_is_read_like_the_member_tables(files, tmp_path):
    """Shadow data for your own tabular model: the raw numbers as the model takes them (no standardisation),
    columns matched to the member tables' by name, no id column needed; dataset.options are refused."""
    from miaudit.attacks import create_attack
    from miaudit.classifier.experiment import ClassifierExperiment

    folder, _ = files
    digits = load_dataset("digits")
    for name in ("members", "nonmembers"):
        arrays = np.load(folder / f"{name}.npz")
        _write_table(tmp_path / f"{name}.csv", arrays["x"].reshape(len(arrays["y"]), -1), arrays["y"],
                     extra={"record": [f"{name}-{i}" for i in range(len(arrays["y"]))]})
    shadow_x, shadow_y = digits.x[1000:1200].reshape(200, -1), digits.y[1000:1200]
    order = np.random.default_rng(1).permutation(64)
    _write_table(tmp_path / "shadow.csv", shadow_x[:, order], shadow_y)
    header, body = (tmp_path / "shadow.csv").read_text().split("\n", 1)
    (tmp_path / "shadow.csv").write_text(",".join([f"px{j}" for j in order] + ["label"]) + "\n" + body)
    config = parse_config({
        "target": {"sklearn": str(folder / "logreg.pkl"), "trust_pickle": True, "id_column": "record",
                   "members": str(tmp_path / "members.csv"), "nonmembers": str(tmp_path / "nonmembers.csv")},
        "dataset": {"source": str(tmp_path / "shadow.csv")}, "split": {"n_shadow": 200},
        "shadow": {"n_models": 1}, "attacks": ["shokri"]})
    experiment = ClassifierExperiment.from_config(config, [("shokri", create_attack("shokri"))], progress=False)
    assert experiment.dataset is not None and experiment.dataset.feature_names == [f"px{i}" for i in range(64)]
    np.testing.assert_array_equal(experiment.dataset.x, shadow_x.astype(np.float32))  # as given, in the model's order
    config.dataset.options = {"scale": False}
    with pytest.raises(ConfigError, match="shadow.csv of your own model is read like your member tables"):
        ClassifierExperiment.from_config(config, [("shokri", create_attack("shokri"))], progress=False)


def test_tables_whose_columns_differ_name_the_first_difference(tmp_path):
    from miaudit.classifier.config import TableColumns
    from miaudit.classifier.targets.tables import read_table_examples
    from miaudit.classifier.targets.user_model import join_examples

    (tmp_path / "a.csv").write_text("age,income,label\n30,1.5,0\n40,2.5,1\n")
    (tmp_path / "b.csv").write_text("income,age,label\n1.5,30,0\n2.5,40,1\n")
    parts = [read_table_examples(tmp_path / name, name, TableColumns()) for name in ("a.csv", "b.csv")]
    with pytest.raises(DataError, match=r"differ at column 1 \(a.csv has 'age', b.csv has 'income'\)"):
        join_examples(parts, None)


def test_labels_given_as_the_class_names_a_scikit_learn_model_was_fitted_on(files, tmp_path):
    """A model fitted on class names ("digit-0", ...) is audited as it is: the tables' names are matched to its
    classes_ (a population table lacking a class included), with the scores of the same model fitted on indices."""
    from miaudit.classifier.targets import SklearnTarget

    folder, _ = files
    names = np.array([f"digit-{k}" for k in range(10)])
    with open(folder / "logreg.pkl", "rb") as handle:
        by_index = pickle.load(handle)
    members = np.load(folder / "members.npz")
    x_in = members["x"].reshape(60, -1)
    by_name = LogisticRegression(C=100, max_iter=2000).fit(x_in, names[members["y"]])
    with open(tmp_path / "named.pkl", "wb") as handle:
        pickle.dump(by_name, handle)
    for name in ("members", "nonmembers", "population"):
        arrays = np.load(folder / f"{name}.npz")
        keep = arrays["y"] != 3 if name == "population" else np.ones(len(arrays["y"]), bool)
        x, y = arrays["x"].reshape(len(arrays["y"]), -1)[keep], arrays["y"][keep]
        _write_table(tmp_path / f"{name}.csv", x, y)
        text = (tmp_path / f"{name}.csv").read_text().splitlines()
        rows = [",".join(line.split(",")[:-1] + [str(names[int(line.split(",")[-1])])]) for line in text[1:]]
        (tmp_path / f"{name}.csv").write_text("\n".join(text[:1] + rows) + "\n")
    target = {"sklearn": str(tmp_path / "named.pkl"), "trust_pickle": True, "members": str(tmp_path / "members.csv"),
              "nonmembers": str(tmp_path / "nonmembers.csv"), "population": str(tmp_path / "population.csv")}
    result = run_audit({"target": target, "attacks": ["loss", "population"], "evaluation": {"n_bootstrap": 20}},
                       tmp_path / "run", progress=False)
    probs = SklearnTarget(by_name).outputs(x_in, members["y"]).probs
    np.testing.assert_allclose(probs, SklearnTarget(by_index).outputs(x_in, members["y"]).probs, atol=1e-6)
    assert result["target"]["train_accuracy"] == 1.0 and result["data"]["n_population"] == len(
        np.load(folder / "population.npz")["y"]) - int((np.load(folder / "population.npz")["y"] == 3).sum())
    predicted = SklearnTarget(by_name, output="labels").outputs(x_in, members["y"]).predictions
    np.testing.assert_array_equal(predicted, members["y"])  # predict's names as positions in classes_
    digits = load_dataset("digits")  # shadow data as a table of names too: numbered as the model's classes
    _write_table(tmp_path / "shadow.csv", digits.x[1000:1300].reshape(300, -1), digits.y[1000:1300])
    text = (tmp_path / "shadow.csv").read_text().splitlines()
    rows = [",".join(line.split(",")[:-1] + [str(names[int(line.split(",")[-1])])]) for line in text[1:]]
    (tmp_path / "shadow.csv").write_text("\n".join(text[:1] + rows) + "\n")
    shadowed = run_audit({"target": target, "dataset": {"source": str(tmp_path / "shadow.csv")},
                          "split": {"n_shadow": 300}, "shadow": {"n_models": 1}, "attacks": ["shokri"],
                          "evaluation": {"n_bootstrap": 20}}, tmp_path / "shadowed", progress=False)
    assert shadowed["shadow"]["train_accuracy_mean"] == 1.0 and shadowed["shadow"]["test_accuracy_mean"] > 0.8
    target["sklearn"] = str(folder / "logreg.pkl")
    with pytest.raises(DataError, match="has the label 'digit-0', a class name, but the model was fitted on class "
                                        "indices"):
        run_audit({"target": target, "attacks": ["loss"]}, tmp_path / "indices", progress=False)


def test_reference_models_of_your_own_class_on_the_vectorised_executor(importable, tmp_path):
    """Your class trained by miaudit's loop: the vectorised executor trains it (the scores of the process executor
    up to float summation order); with your training function it is refused before any model is trained."""
    config = torch_config(importable)
    config["training"]["family"] = "auto"  # reference models of my_models:TinyNet
    config["attacks"] = [{"name": "lira", "params": {"variance": "global"}}]
    vectorised = run_audit(config, tmp_path / "vectorised", progress=False)
    config["reference"]["executor"] = "process"
    process = run_audit(config, tmp_path / "process", progress=False)
    assert vectorised["reference"]["models"] == process["reference"]["models"]
    assert vectorised["reference"]["models"].startswith("my_models:TinyNet trained by miaudit's loop")
    assert abs(vectorised["attacks"][0]["auc"] - process["attacks"][0]["auc"]) < 0.01
    (importable / "my_fit.py").write_text("def fit(model_factory, data, seed, device):\n    return model_factory()\n")
    config["reference"]["executor"] = "vectorised"
    config["training"] |= {"function": "my_fit:fit", "trust_code": True}
    with pytest.raises(ConfigError, match="config.reference.executor: vectorised trains zoo models and your torch "
                                          "class .* not my_models:TinyNet trained by my_fit:fit"):
        run_audit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
