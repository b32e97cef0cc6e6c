"""The one shadow set of the core (miaudit.attacks.shadow) that every kind's shadow data builds on."""

import numpy as np
import pytest

from miaudit.attacks.shadow import ShadowSet
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import ShadowData
from miaudit.classifier.signals.shadow import ShadowSignals
from miaudit.encoder.features import EncoderShadowData, SimilarityFeatures
from miaudit.errors import DataError
from miaudit.multimodal.signals import MultimodalShadow
from miaudit.text_generator.features import TextShadowData


def _outputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return ClassifierOutputs(rng.integers(0, 3, n), logits=rng.normal(size=(n, 3)))


def test_every_kind_of_shadow_data_is_one_shadow_set():
    for cls in (ShadowData, ShadowSignals, EncoderShadowData, TextShadowData, MultimodalShadow):
        assert issubclass(cls, ShadowSet)
    shadow = ShadowData([_outputs(4), _outputs(6, 1)], [[1, 0, 1, 0], np.arange(6) < 2])
    assert shadow.n_models == 2 and shadow.signal_type is ClassifierOutputs and shadow.outputs is shadow.signals
    values, membership = shadow.pooled(lambda o: o.signal("loss"))
    np.testing.assert_array_equal(values, np.r_[shadow.outputs[0].loss, shadow.outputs[1].loss])
    np.testing.assert_array_equal(membership, [1, 0, 1, 0, 1, 1, 0, 0, 0, 0])
    features = SimilarityFeatures(np.ones((4, 1)), "cosine", 2)
    assert EncoderShadowData([features], [[1, 1, 0, 0]]).features[0] is features


@pytest.mark.parametrize("signals, membership, message", [
    ([], [], "ShadowData is empty"),
    (_outputs(4), [[1, 0, 1, 0]], "one entry per shadow model.*ShadowData\\(\\[signals\\], \\[membership\\]\\)"),
    ([_outputs(4)], np.array([1, 0, 1, 0]), "for one model write ShadowData\\(\\[signals\\], \\[membership\\]\\)"),
    ([_outputs(4)], [], "1 shadow models' signals but 0 membership arrays"),
    ([_outputs(4)], [[1, 0, 1]], "shadow model 0's membership has shape \\(3,\\) but its signals cover 4 examples"),
    ([_outputs(4)], [[1, 1, 1, 1]], "shadow model 0 needs both member and non-member examples \\(all 4"),
    ([_outputs(4), SimilarityFeatures(np.ones((4, 1)), "cosine", 2)], [[1, 0, 1, 0]] * 2, "mix types"),
])
def test_bad_shadow_sets_name_the_problem(signals, membership, message):
    with pytest.raises(DataError, match=message):
        ShadowData(signals, membership)


def test_encoder_shadow_sets_use_one_measure():
    cosine = SimilarityFeatures(np.ones((4, 1)), "cosine", 2)
    euclidean = SimilarityFeatures(-np.ones((4, 1)), "euclidean", 2)
    with pytest.raises(DataError, match="same similarity measure"):
        EncoderShadowData([cosine, euclidean], [[1, 0, 1, 0]] * 2)
