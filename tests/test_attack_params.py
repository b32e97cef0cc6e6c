"""Attack hyper-parameters are checked when the attack is built: types strictly (a string is not a boolean
or a number; an int is a float), values against the attack's declared constraints, with a one-line
ConfigError naming attack, parameter, value and what is allowed.

Each pipeline case uses a dataset that does not exist: a parameter error that came after loading data,
training a model or running a forward pass would be hidden behind the dataset error.
"""

import pytest
import yaml

from miaudit.attacks.registry import create_attack, get_attack_class
from miaudit.classifier.attacks.lira import LiRA
from miaudit.cli import main
from miaudit.errors import ConfigError, MiauditError
from miaudit.llm.attacks.mink import MinK
from miaudit.runs import run_audit

MISSING = "/nonexistent/miaudit-test/data.npz"

CLASSIFIER_CASES = [
    ("lira", {"online": "false"}, "attack 'lira' parameter 'online': expected true or false, got 'false'"),
    ("loss", {"per_class": "no"}, "attack 'loss' parameter 'per_class': expected true or false, got 'no'"),
    ("population", {"alpha": "0.05"}, "attack 'population' parameter 'alpha': expected a number, got '0.05'"),
    ("rmia", {"gamma": -1}, "attack 'rmia' parameter 'gamma': -1 is not allowed; allowed: a likelihood-ratio "
                            "threshold (1 compares ratios), 0 < gamma"),
]


def classifier_config(name, params):
    return {"seed": 0, "dataset": {"source": MISSING},
            "split": {"n_members": 50, "n_nonmembers": 50, "n_shadow": 100, "n_population": 50},
            "shadow": {"n_models": 1}, "reference": {"n_models": 2},
            "attacks": [{"name": "correctness"}, {"name": name, "params": params}]}


def llm_config(params):
    return {"kind": "llm", "dataset": {"source": "text", "members": MISSING, "nonmembers": MISSING},
            "model": {"name_or_path": "/nonexistent/miaudit-test/model", "local_files_only": True},
            "attacks": [{"name": "loss"}, {"name": "min_k", "params": params}]}


def _one_line_error(config, tmp_path) -> str:
    out = tmp_path / "run"
    with pytest.raises(MiauditError) as info:
        run_audit(config, out, progress=False)
    assert not out.exists()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name,params,message", CLASSIFIER_CASES)
def test_classifier_bad_parameter_fails_before_loading_data(name, params, message, tmp_path):
    error = _one_line_error(classifier_config(name, params), tmp_path)
    assert error == f"config.attacks[1]: {message}"


def test_llm_min_k_out_of_range_fails_before_the_forward_pass(tmp_path):
    error = _one_line_error(llm_config({"k": 5}), tmp_path)
    assert error == ("config.attacks[1]: attack 'min_k' parameter 'k': 5 is not allowed; allowed: a fraction of the "
                     "tokens, 0 < k <= 1")


def test_the_missing_dataset_would_be_the_error_with_good_parameters(tmp_path):
    """The trap of the tests above works: with valid parameters the same configs fail on the dataset."""
    for name, _, _ in CLASSIFIER_CASES:
        with pytest.raises(MiauditError, match="nonexistent") as info:
            run_audit(classifier_config(name, {}), tmp_path / name, progress=False)
        assert "parameter" not in str(info.value)
    with pytest.raises(MiauditError, match="nonexistent"):
        run_audit(llm_config({"k": 0.5}), tmp_path / "llm", progress=False)


def test_cli_reports_a_bad_parameter_in_one_line_with_exit_code_2(tmp_path, capsys):
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump(classifier_config("lira", {"online": "false"})))
    assert main(["audit", str(config), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: config.attacks[1]: {CLASSIFIER_CASES[0][2]}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name,params,message", CLASSIFIER_CASES)
def test_create_attack_and_plain_construction_check_parameters(name, params, message):
    with pytest.raises(ConfigError) as info:
        create_attack(name, **params)
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:
        get_attack_class(name)(**params)
    assert str(info.value) == message


def test_types_are_strict_and_an_int_is_a_float():
    with pytest.raises(ConfigError, match="expected true or false, got 1"):
        LiRA(online=1)
    with pytest.raises(ConfigError, match="'center': 'avg' is not allowed; choose one of 'median', 'mean'"):
        LiRA(center="avg")
    assert MinK(k=1).k == 1  # an int where a float is expected, kept as given
    with pytest.raises(ConfigError, match="parameter 'k': expected a number, got '0.5'"):
        MinK(k="0.5")
    with pytest.raises(ConfigError, match=r"parameter 'features'\[1\]: 'logits' is not allowed"):
        create_attack("shokri", features=["probs", "logits"])
    with pytest.raises(ConfigError, match="'features': \\[\\] is not allowed; allowed: a non-empty list"):
        create_attack("shokri", features=[])
    with pytest.raises(ConfigError, match="'layer': expected str | int | null, got True"):
        create_attack("gradient_norm", layer=True)
    with pytest.raises(ConfigError, match="'hidden': \\[8, 0\\] is not allowed"):
        create_attack("encodermi_v", hidden=[8, 0])
    with pytest.raises(ConfigError, match="'max_texts': 0 is not allowed"):
        create_attack("auditmi", max_texts=0)
    with pytest.raises(ConfigError, match="'variant': 'xx' is not allowed"):
        create_attack("acmia", target_kind="llm", variant="xx")
    with pytest.raises(ConfigError, match="'a': 0 is not allowed"):
        create_attack("dc_pdd", target_kind="llm", a=0)
    with pytest.raises(ConfigError, match="has no parameter 'temperature'"):
        create_attack("rmia", temperature=2.0)
    assert create_attack("rmia", offline_a=None).offline_a is None  # null where the type allows it


def test_llm_selection_grids_are_checked_before_the_forward_pass(tmp_path):
    config = llm_config({})
    config["attacks"][1]["params"] = {}
    config["selection"] = {"grids": {"min_k": [0.1, 2.0]}}
    error = _one_line_error(config, tmp_path)
    assert error.startswith("config.selection.grids.min_k: attack 'min_k' parameter 'k': 2.0 is not allowed")
    config["selection"] = {"grids": {"loss": [0.1]}}
    assert "has no hyper-parameter left to choose" in _one_line_error(config, tmp_path)
