from dataclasses import dataclass, field
from typing import Literal

import pytest

from miaudit.attacks import create_attack
from miaudit.config import convert, from_dict, load_yaml, to_dict
from miaudit.defenses.registry import create_defense
from miaudit.errors import ConfigError, MiauditError


@dataclass
class Inner:
    lr: float = 0.1
    kind: Literal["mlp", "cnn"] = "mlp"


@dataclass
class Outer:
    name: str
    seed: int = 0
    inner: Inner = field(default_factory=Inner)
    attacks: list[str] = field(default_factory=list)


def test_round_trip():
    cfg = from_dict(Outer, {"name": "x", "inner": {"lr": 1, "kind": "cnn"}, "attacks": ["loss"]})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize("data,msg", [
    ({"name": "x", "sede": 1}, r"unknown key 'sede' \(did you mean 'seed'\?\)"),
    ({"name": "x", "seed": "1"}, r"config.seed: expected an integer"),
    ({"name": "x", "seed": True}, "expected an integer"),
    ({"name": "x", "inner": {"kind": "rnn"}}, "choose one of 'mlp', 'cnn'"),
    ({"name": "x", "inner": {"momentum": 0.9}}, r"config.inner: unknown key 'momentum'; allowed"),  # no near key
    ({"seed": 1}, "missing required key 'name'"),
    ({"name": "x", "attacks": "loss"}, "expected a list"),
])
def test_errors_name_the_key(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Outer, data)


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")


@pytest.mark.parametrize("make, message", [
    (lambda: create_attack("los"), "unknown attack 'los' (did you mean 'loss'?)"),
    (lambda: create_attack("rmia", onlin=True), "attack 'rmia' has no parameter 'onlin' (did you mean 'online'?)"),
    (lambda: create_defense("dp-sgd"), "unknown defense 'dp-sgd' (did you mean 'dp_sgd'?)"),
])
def test_typos_in_names_get_a_suggestion(make, message):
    with pytest.raises(MiauditError) as info:
        make()
    assert message in str(info.value)


def test_paths_from_python_callers_are_accepted_as_strings():
    from pathlib import Path

    from miaudit.utils.user_module import checked_torch_module_spec

    assert from_dict(Outer, {"name": Path("runs") / "x"}).name == str(Path("runs") / "x")
    spec = checked_torch_module_spec({"path": Path("w.pt"), "class": "pkg.mod:Net"}, "config.target.torch_module")
    assert spec == {"path": "w.pt", "class": "pkg.mod:Net"}
    with pytest.raises(ConfigError, match="expected a string, got 3"):
        from_dict(Outer, {"name": 3})


def test_attacks_and_defenses_may_be_given_by_name_alone():
    from miaudit.defenses.compare import DefenseSpec
    from miaudit.runs import parse_config
    from miaudit.runs.config import AttackSpec

    base = {"dataset": {"source": "digits"}, "split": {"n_members": 50, "n_nonmembers": 50}}
    config = parse_config(base | {"attacks": ["loss", {"name": "lira", "label": "l"}]})
    assert [(a.name, a.params, a.key) for a in config.attacks] == [("loss", {}, "loss"), ("lira", {}, "l")]
    assert convert(["none"], list[DefenseSpec], "config.defenses")[0].key == "none"
    assert convert("loss", AttackSpec, "x").name == "loss"
    with pytest.raises(ConfigError, match=r"config.attacks\[0\]: expected a mapping of keys to values, got 3"):
        parse_config(base | {"attacks": [3]})


def test_a_reference_pool_too_small_for_an_attack_is_refused_before_training(tmp_path):
    """LiRA's per-example variances need 4 IN and 4 OUT models per example: 4 models (2 of each) fail in the config
    check, not after the pool is trained."""
    from miaudit.runs import parse_config, run_audit

    config = {"dataset": {"source": "digits"}, "split": {"n_members": 50, "n_nonmembers": 50, "n_shadow": 0,
                                                          "n_population": 0},
              "reference": {"n_models": 4}, "attacks": ["loss", "lira"]}
    with pytest.raises(ConfigError, match=r"attack 'lira' needs at least 4 IN and 4 OUT reference models per example, "
                                          r"but 4 models on paired halves give 2 of each: .* variance='global'"):
        run_audit(parse_config(config), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    config["attacks"] = [{"name": "rmia", "params": {"online": False}}]
    config["reference"] = {"n_models": 2}
    config["split"]["n_population"] = 50
    with pytest.raises(ConfigError, match="attack 'rmia' needs at least 2 IN and 2 OUT .* tuning offline_a"):
        run_audit(parse_config(config), tmp_path / "run", progress=False)
