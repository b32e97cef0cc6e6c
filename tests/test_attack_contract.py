"""Every registered attack obeys the same contract (see DESIGN: higher score = member).

Each target kind has a module ``tests/contract/<kind>.py`` with
``make_case(attack_cls, seed) -> (reference, signals, labels)``: data on which members are
clearly separable, so a correctly oriented attack must reach AUC well above 0.5.
"""

import importlib

import numpy as np
import pytest

from miaudit.attacks.registry import get_attack_class, list_attacks
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
