"""Every registered attack obeys the same contract (see DESIGN: higher score = member).

Each target kind has a module ``tests/contract/<kind>.py`` with
``make_case(attack_cls, seed) -> (reference, signals, labels)``: data on which members are
clearly separable, so a correctly oriented attack must reach AUC well above 0.5.
"""

import importlib
import json
import typing

import numpy as np
import pytest

from miaudit.attacks.base import ACCESS_LEVELS, FitInput
from miaudit.attacks.registry import describe, get_attack_class, list_attacks
from miaudit.errors import NotFittedError
from miaudit.evaluation import roc_auc

KEYS = [(row["target_kind"], row["name"]) for row in list_attacks()]  # a name may exist for two kinds


def _case(cls, seed=0):
    module = importlib.import_module(f"contract.{cls.target_kind}")
    return module.make_case(cls, seed)


def test_registry_is_not_empty():
    assert len(KEYS) >= 1


@pytest.mark.parametrize("kind,name", KEYS)
def test_attack_contract(kind, name):
    cls = get_attack_class(name, kind)
    reference, signals, labels = _case(cls)
    attack = cls()
    if cls.requires_fit:
        with pytest.raises(NotFittedError):
            attack.score(signals)
    scores = attack.fit(reference).score(signals)
    assert scores.shape == (len(labels),) and np.isfinite(scores).all()
    assert roc_auc(labels, scores) > 0.6, "higher score must mean member"
    again = cls().fit(reference).score(signals)
    np.testing.assert_array_equal(scores, again)
    params = attack.get_params()
    assert type(attack)(**params).get_params() == params
    for key in ("name", "target_kind", "access", "needs_reference", "citation"):
        assert getattr(cls, key)
    learned = attack.learned_state()
    assert len(json.dumps(learned, allow_nan=False)) < 5000, "learned_state must be small and strict JSON"


@pytest.mark.parametrize("kind,name", KEYS)
def test_attack_declarations_are_consistent(kind, name):
    """Declared parameters, constraints, grids and fit inputs agree with ``__init__`` and with each other."""
    cls = get_attack_class(name, kind)
    names = cls.param_names()
    hints = typing.get_type_hints(cls.__init__) if names else {}
    specs = cls.param_specs()
    assert list(specs) == names
    for param in names:
        assert param in hints, f"{name}.{param} needs a type annotation (Any where any value goes)"
        cls.check_param(param, specs[param].default)  # the default obeys the declaration
    assert set(cls.param_constraints) <= set(names), "constraints for parameters __init__ does not take"
    assert set(cls.tunable) <= set(names), "tunable parameters must be parameters"
    assert len(cls.tunable) <= 1, "held-out selection chooses one hyper-parameter per attack"
    for param in cls.tunable:
        grid = cls.candidates(param)
        assert grid.ndim == 1 and grid.size >= 2 and np.isfinite(grid).all()
        assert np.unique(grid).size == grid.size
        for value in grid:
            cls.check_param(param, float(value))
        assert specs[param].grid == tuple(float(v) for v in grid)
    assert set(cls.fit_input) <= set(typing.get_args(FitInput))
    assert not cls.requires_fit or cls.fit_input, "an attack that must be fitted says what fit receives"
    assert cls.access in ACCESS_LEVELS
    row = json.loads(json.dumps(describe(cls), allow_nan=False))
    assert [p["name"] for p in row["params"]] == names
    attack = cls(**{p: s.default for p, s in specs.items()})
    assert attack.get_params() == {p: s.default for p, s in specs.items()}
