"""Nothing run that was not asked: code named in a config needs ``trust_code: true`` and is never from the
standard library; a YAML alias bomb is refused at once."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest
from reliability_helpers import one_error_line, write_yaml

from miaudit.cli import main
from miaudit.config import load_yaml
from miaudit.errors import ConfigError
from miaudit.runs import parse_config
from miaudit.utils.trusted_code import import_trusted_callable


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """An importable module of the user's, with a real perturbation function and three disguised shell calls."""
    (tmp_path / "user_perturb.py").write_text(textwrap.dedent("""
        import functools, os, subprocess
        from os import system as shell

        def swap(text):
            words = text.split()
            return [" ".join(words[1:] + words[:1])]

        wrapped = functools.partial(os.system)
        runner = subprocess.Popen
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("user_perturb", None)


def _llm_config(shared_data, **neighbourhood):
    return {"kind": "llm", "dataset": {"source": "wikimia", "path": "32", "data_dir": str(shared_data),
                                       "max_documents": 12},
            "model": {"name_or_path": str(shared_data / "models" / "stories260K"), "local_files_only": True},
            "attacks": [{"name": "neighbourhood"}], "neighbourhood": neighbourhood,
            "evaluation": {"n_bootstrap": 10}}


def test_config_named_callables_need_trust_code_and_never_run_the_standard_library(
        shared_data, user_package, tmp_path, capsys):
    # the reported attack: documents fed to os.system. Refused before anything is loaded, with or without opt-in
    for neighbourhood, message in [({"perturb": "os:system"}, "neighbourhood.trust_code: true"),
                                   ({"perturb": "os:system", "trust_code": True}, "standard library"),
                                   ({"perturb": "builtins:eval", "trust_code": True}, "standard library"),
                                   ({"perturb": "user_perturb:swap"}, "neighbourhood.trust_code: true")]:
        config = write_yaml(tmp_path / "llm.yaml", _llm_config(shared_data, **neighbourhood))
        start = time.perf_counter()
        assert main(["audit", str(config), "--out", str(tmp_path / "out"), "-q"]) == 2
        assert message in one_error_line(capsys.readouterr().err)
        assert time.perf_counter() - start < 10 and not (tmp_path / "out").exists()

    # a user module that re-exports or wraps a standard-library callable is refused too
    for name in ("shell", "wrapped", "runner"):
        with pytest.raises(ConfigError, match="standard library"):
            import_trusted_callable(f"user_perturb:{name}", trust_code=True, where="neighbourhood.perturb")
    swap = import_trusted_callable("user_perturb:swap", trust_code=True, where="neighbourhood.perturb")
    assert swap("a b c") == ["b c a"]
    config = parse_config(_llm_config(shared_data, perturb="user_perturb:swap", trust_code=True))
    assert config.neighbourhood.trust_code

    # the same rule for a torch module class named in a classifier config
    target = {"torch_module": {"path": "model.pt", "class": "user_perturb:swap"}, "members": "m.npz",
              "nonmembers": "n.npz"}
    with pytest.raises(ConfigError, match="target.trust_code: true"):
        parse_config({"target": target, "training": {"model": "mlp"}, "attacks": [{"name": "loss"}]})
    with pytest.raises(ConfigError, match="standard library"):
        parse_config({"target": {**target, "torch_module": {"path": "model.pt", "class": "subprocess:Popen"},
                                 "trust_code": True}, "attacks": [{"name": "loss"}]})


_BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                  + [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
                  + ["kind: classifier", "attacks: *i"]) + "\n"


def test_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_BOMB)
    assert bomb.stat().st_size < 1000  # under a kilobyte, a billion values once expanded
    start = time.perf_counter()
    assert main(["audit", str(bomb), "--out", str(tmp_path / "out")]) == 2
    assert "expands to more than" in one_error_line(capsys.readouterr().err)
    assert time.perf_counter() - start < 5 and not (tmp_path / "out").exists()
    (tmp_path / "loop.yaml").write_text("seed: 1\nattacks: &x [*x]\n")  # a list that contains itself
    with pytest.raises(ConfigError, match="refers to itself"):
        load_yaml(tmp_path / "loop.yaml")
    # anchors and merge keys used the ordinary way still work
    (tmp_path / "ok.yaml").write_text("base: &b {epochs: 3, lr: 0.01}\ntraining: {<<: *b, model: mlp}\n")
    assert load_yaml(tmp_path / "ok.yaml")["training"] == {"epochs": 3, "lr": 0.01, "model": "mlp"}
