"""Signals derived from probabilities are computed in log space from logits (issue 12)."""

import numpy as np
import pytest
from scipy.special import softmax

from miaudit.classifier.outputs import ClassifierOutputs


def song_mittal_mentr(probs, labels, small_value=1e-30):
    """Song & Mittal's own expression (privacy_risk_score / membership_inference_attacks.py, ``_m_entr_comp``)."""
    def log_value(p):
        return -np.log(np.maximum(p, small_value))

    log_probs = log_value(probs)
    reverse_probs = 1 - probs
    log_reverse_probs = log_value(reverse_probs)
    rows = range(labels.size)
    modified_probs = np.copy(probs)
    modified_probs[rows, labels] = reverse_probs[rows, labels]
    modified_log_probs = np.copy(log_reverse_probs)
    modified_log_probs[rows, labels] = log_probs[rows, labels]
    return np.sum(np.multiply(modified_probs, modified_log_probs), axis=1)


def test_modified_entropy_equals_song_and_mittal_at_normal_confidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10)) * 3
    labels = rng.integers(0, 10, 500)
    ours = ClassifierOutputs(labels, logits=logits).modified_entropy
    np.testing.assert_allclose(ours, song_mittal_mentr(softmax(logits, axis=1), labels), rtol=1e-9, atol=1e-13)
    from_probs = ClassifierOutputs(labels, probs=softmax(logits, axis=1)).modified_entropy
    np.testing.assert_allclose(from_probs, song_mittal_mentr(softmax(logits, axis=1), labels), rtol=1e-9)


def test_extreme_confidence_keeps_the_order_of_scores():
    margins = np.array([20.0, 30, 40, 50, 60, 80, 100, 150, 200])  # p_y rounds to 1.0 from margin ~37 on
    logits = np.stack([margins, np.zeros_like(margins), np.full_like(margins, -1.0)], axis=1)
    labels = np.zeros(margins.size, int)
    out = ClassifierOutputs(labels, logits=logits)
    for signal in ("modified_entropy", "loss", "entropy"):
        values = out.signal(signal)
        assert np.all(values > 0) and np.all(np.diff(values) < 0), signal  # strictly falling with the margin
    # the old clipped computation (and Song & Mittal's own, on rounded probabilities) ties most of them
    tied = song_mittal_mentr(softmax(logits, axis=1), labels)
    assert np.unique(tied).size < margins.size
    # exact value: Mentr ~ (1 - p_y)(-log p_y) + sum p_i^2 ~ e^-2m + ..., checked at margin 50 against the series
    rest = np.exp(-50.0) + np.exp(-51.0)
    assert out.modified_entropy[3] == pytest.approx(rest * rest + np.exp(-100.0) + np.exp(-102.0), rel=1e-6)
    assert out.loss[3] == pytest.approx(rest, rel=1e-9)


def test_wrong_confident_prediction_is_finite():
    logits = np.array([[0.0, 200.0, -5.0]])
    out = ClassifierOutputs(np.array([0]), logits=logits)
    assert out.loss[0] == pytest.approx(200.0)
    assert np.isfinite(out.modified_entropy[0]) and out.modified_entropy[0] > 100
