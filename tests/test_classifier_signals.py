import numpy as np
import pytest
from scipy.special import softmax

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.errors import SignalError


def _logits(n=50, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)) * 3, rng.integers(0, c, n)


def test_signals_from_logits_match_naive_formulas():
    z, y = _logits()
    out = ClassifierOutputs(y, logits=z)
    p = softmax(z, axis=1)
    rows = np.arange(len(y))
    np.testing.assert_allclose(out.loss, -np.log(p[rows, y]))
    np.testing.assert_allclose(out.confidence, p[rows, y])
    np.testing.assert_allclose(out.entropy, -(p * np.log(p)).sum(1))
    np.testing.assert_allclose(out.scaled_logit, np.log(p[rows, y]) - np.log(1 - p[rows, y]), rtol=1e-8)
    naive_mentr = [-(1 - p[i, y[i]]) * np.log(p[i, y[i]])
                   - sum(p[i, j] * np.log(1 - p[i, j]) for j in range(4) if j != y[i]) for i in rows]
    np.testing.assert_allclose(out.modified_entropy, naive_mentr)
    np.testing.assert_array_equal(out.correctness, (p.argmax(1) == y).astype(float))


def test_probabilities_and_logits_agree():
    z, y = _logits()
    a, b = ClassifierOutputs(y, logits=z), ClassifierOutputs(y, probs=softmax(z, axis=1))
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
    np.testing.assert_allclose(a.scaled_logit, b.scaled_logit, rtol=1e-5)


def test_scaled_logit_is_stable_for_confident_predictions():
    z = np.array([[60.0, 0.0, 0.0]])
    out = ClassifierOutputs(np.array([0]), logits=z)
    assert out.scaled_logit[0] == pytest.approx(60 - np.log(2))


@pytest.mark.parametrize("kwargs,msg", [
    ({"probs": np.full((3, 2), 0.4)}, "sum to 1"),
    ({"logits": np.full((3, 2), np.nan)}, "NaN"),
    ({"logits": np.zeros((2, 2))}, "expected"),
    ({"logits": np.zeros((3, 1))}, "at least 2 classes"),
    ({}, "exactly one"),
    ({"logits": np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])}, "look like probabilities.*\\[0.269, 0.731\\]"),
])
def test_bad_outputs(kwargs, msg):
    with pytest.raises(SignalError, match=msg):
        ClassifierOutputs(np.array([0, 1, 0]), **kwargs)


def test_log_probabilities_are_logits():
    probs = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    out = ClassifierOutputs(np.array([0, 1, 0]), logits=np.log(probs))  # a log-softmax head: valid logits
    assert np.allclose(out.probs, probs) and out.access == "logits"


def test_label_only_access_refuses_probability_signals():
    out = ClassifierOutputs(np.array([0, 1, 1]), predictions=np.array([0, 1, 0]))
    np.testing.assert_array_equal(out.signal("correctness"), [1, 1, 0])
    with pytest.raises(SignalError, match="needs probabilities access"):
        out.signal("loss")
