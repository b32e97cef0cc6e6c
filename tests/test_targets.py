import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.targets import BlackBoxTarget, PrecomputedTarget, SklearnTarget, TorchClassifierTarget
from miaudit.classifier.training import build_model
from miaudit.data import ArrayDataset, load_dataset
from miaudit.errors import ConfigError, DataError, SignalError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(np.arange(200))


def test_torch_target_gives_logits(digits):
    model = build_model("mlp", digits.input_shape, 10, hidden=(16,), seed=0)
    target = TorchClassifierTarget(model, batch_size=64)
    out = target.outputs(digits)
    assert target.access == "logits" and out.access == "logits" and len(out) == 200
    with torch.no_grad():
        expected = model(torch.from_numpy(digits.x)).numpy()
    np.testing.assert_allclose(out.logits, expected, rtol=1e-5, atol=1e-6)
    same = target.outputs(digits.x, digits.y)
    np.testing.assert_array_equal(same.logits, out.logits)
    assert target.fingerprint() == TorchClassifierTarget(model).fingerprint()
    with pytest.raises(DataError, match="labels are needed"):
        target.outputs(digits.x)


def test_sklearn_target_probabilities_labels_and_missing_classes(digits):
    flat = digits.flatten()
    est = LogisticRegression(max_iter=200).fit(flat.x, flat.y)
    out = SklearnTarget(est).outputs(digits)  # image inputs are flattened
    np.testing.assert_allclose(out.probs, est.predict_proba(flat.x))
    labels = SklearnTarget(est, output="labels").outputs(digits)
    assert labels.access == "label-only"
    np.testing.assert_array_equal(labels.predictions, est.predict(flat.x))
    partial = LogisticRegression(max_iter=200).fit(flat.x[flat.y >= 2], flat.y[flat.y >= 2])
    probs = SklearnTarget(partial, n_classes=10).outputs(digits).probs
    assert probs.shape == (200, 10) and (probs[:, :2] == 0).all()
    np.testing.assert_allclose(probs[:, 2:], partial.predict_proba(flat.x))
    assert SklearnTarget(SVC()).access == "label-only"
    with pytest.raises(SignalError, match="not fitted"):
        SklearnTarget(LogisticRegression()).outputs(digits)
    with pytest.raises(ConfigError, match="no predict_proba"):
        SklearnTarget(SVC(), output="probabilities")


def test_blackbox_validates_outputs():
    x, y = np.zeros((6, 3)), np.array([0, 1, 2, 0, 1, 2])
    good = BlackBoxTarget(lambda q: np.full((len(q), 3), 1 / 3), batch_size=4)
    assert good.outputs(x, y).probs.shape == (6, 3)
    with pytest.raises(SignalError, match="shape \\(4, 2\\) for 5 queries"):
        BlackBoxTarget(lambda q: np.full((4, 2), 0.5)).outputs(x[:5], y[:5])
    with pytest.raises(SignalError, match="sum to 1"):
        BlackBoxTarget(lambda q: np.ones((len(q), 3))).outputs(x, y)
    with pytest.raises(SignalError, match="NaN or inf in 6 rows"):
        BlackBoxTarget(lambda q: np.full((len(q), 3), np.nan)).outputs(x, y)
    with pytest.raises(SignalError, match="negative"):
        BlackBoxTarget(lambda q: np.tile([1.5, -0.5, 0.0], (len(q), 1))).outputs(x, y)
    logits = BlackBoxTarget(lambda q: np.ones((len(q), 3)) * 7, output="logits").outputs(x, y)
    np.testing.assert_allclose(logits.probs, 1 / 3)


def test_blackbox_labels_only():
    x, y = np.arange(8.0)[:, None], np.array([0, 1] * 4)
    target = BlackBoxTarget(lambda q: (q[:, 0] % 2).astype(int), output="labels")
    out = target.outputs(x, y)
    assert target.access == "label-only" and out.access == "label-only"
    np.testing.assert_array_equal(out.correctness, np.ones(8))
    with pytest.raises(SignalError, match="needs probabilities access"):
        out.signal("loss")
    with pytest.raises(SignalError, match="whole numbers"):
        BlackBoxTarget(lambda q: q[:, 0] + 0.5, output="labels").outputs(x, y)
    with pytest.raises(SignalError, match="expected \\(8,\\) labels"):
        BlackBoxTarget(lambda q: np.zeros((8, 2)), output="labels").outputs(x, y)
    with pytest.raises(ConfigError, match="not allowed"):
        BlackBoxTarget(lambda q: q, output="embeddings")


def test_precomputed_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 4))
    labels, membership = rng.integers(0, 4, 10), np.arange(10) < 5
    path = tmp_path / "out.npz"
    PrecomputedTarget.save_npz(path, ClassifierOutputs(labels, logits=logits), membership, ids=np.arange(10) + 100)
    target = PrecomputedTarget.from_npz(path)
    np.testing.assert_array_equal(target.outputs().logits, logits)
    np.testing.assert_array_equal(target.membership, membership)
    np.testing.assert_array_equal(target.ids, np.arange(10) + 100)
    assert target.access == "logits"
    np.testing.assert_array_equal(target.outputs(np.array([1, 3])).labels, labels[[1, 3]])
    np.savez(tmp_path / "probs.npz", probs=softmax(logits, axis=1), labels=labels, membership=membership.astype(int))
    assert PrecomputedTarget.from_npz(tmp_path / "probs.npz").access == "probabilities"
    with pytest.raises(DataError, match="cannot run on new inputs"):
        target.outputs(ArrayDataset(np.zeros((10, 2)), labels))


@pytest.mark.parametrize("arrays,message", [
    ({"labels": [0, 1], "membership": [1, 0]}, "exactly one of logits, probs, predictions"),
    ({"logits": np.zeros((2, 2)), "labels": [0, 1]}, "lacks membership"),
    ({"logits": np.zeros((3, 2)), "labels": [0, 1], "membership": [1, 0]}, "logits has shape \\(3, 2\\)"),
    ({"logits": np.zeros((2, 2)), "labels": [0, 1], "membership": [1, 0, 1]}, "membership has shape"),
    ({"logits": [[np.nan, 0], [0, 0]], "labels": [0, 1], "membership": [1, 0]}, "NaN or inf in 1 rows"),
    ({"probs": [[0.9, 0.3], [0.5, 0.5]], "labels": [0, 1], "membership": [1, 0]}, "sum to 1"),
    ({"logits": np.zeros((2, 2)), "labels": [0, 1], "membership": [1, 1]}, "no non-member"),
    ({"logits": np.zeros((2, 2)), "labels": [0, 1], "membership": [2, 0]}, "boolean or 0/1"),
])
def test_precomputed_bad_files(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(DataError, match=message):
        PrecomputedTarget.from_npz(path)


def test_precomputed_missing_and_pickled_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        PrecomputedTarget.from_npz(tmp_path / "nope.npz")
    np.savez(tmp_path / "obj.npz", logits=np.array([object()], dtype=object), labels=[0], membership=[1])
    with pytest.raises(DataError, match="without pickles"):
        PrecomputedTarget.from_npz(tmp_path / "obj.npz")


def test_precomputed_save_refuses_what_it_could_not_read_back(tmp_path):
    outputs, membership = ClassifierOutputs(np.array([0, 1]), logits=np.zeros((2, 2))), np.array([True, False])
    path = tmp_path / "out.npz"
    with pytest.raises(DataError, match="ids hold Python objects"):  # from_npz never unpickles
        PrecomputedTarget.save_npz(path, outputs, membership, ids=np.array([1, None], dtype=object))
    assert not path.exists()  # nothing half-written
    PrecomputedTarget.save_npz(path, outputs, membership, ids=np.array(["a", "b"]))
    np.testing.assert_array_equal(PrecomputedTarget.from_npz(path).ids, ["a", "b"])


def test_signal_cache_computes_once_and_round_trips(tmp_path, digits):
    from miaudit.classifier.signals.cache import SignalCache
    from miaudit.utils.fingerprint import fingerprint

    model = build_model("mlp", digits.input_shape, 10, hidden=(8,), seed=0)
    target = TorchClassifierTarget(model)
    cache = SignalCache(tmp_path / "cache")
    data_fp = fingerprint(digits.x, digits.y)
    calls = []

    def compute():
        calls.append(1)
        return target.outputs(digits)

    first = cache.get_or_compute(target.fingerprint(), data_fp, compute)
    second = SignalCache(tmp_path / "cache").get_or_compute(target.fingerprint(), data_fp, compute)
    assert len(calls) == 1 and cache.misses == 1
    np.testing.assert_array_equal(first.logits, second.logits)
    np.testing.assert_array_equal(first.scaled_logit, second.scaled_logit)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{target.fingerprint()}-{data_fp}.npz"]
    labels_only = ClassifierOutputs(np.array([0, 1]), predictions=np.array([1, 1]))
    got = cache.get_or_compute("m2", "d2", lambda: labels_only)
    again = cache.get_or_compute("m2", "d2", lambda: pytest.fail("should be cached"))
    assert got.access == again.access == "label-only" and cache.hits == 1
    np.testing.assert_array_equal(again.predictions, [1, 1])


def test_signal_cache_recovers_from_corrupt_entry_and_rejects_bad_keys(tmp_path):
    from miaudit.classifier.signals.cache import SignalCache

    cache = SignalCache(tmp_path)
    cache.path("m", "d").write_bytes(b"not a zip")
    probs = ClassifierOutputs(np.array([0, 1]), probs=np.array([[0.7, 0.3], [0.2, 0.8]]))
    assert cache.get_or_compute("m", "d", lambda: probs).access == "probabilities" and cache.misses == 1
    np.testing.assert_allclose(SignalCache(tmp_path).get_or_compute("m", "d", lambda: None).probs, probs.probs)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ConfigError, match="fingerprint string"):
        cache.get_or_compute("../evil", "d", lambda: probs)
    with pytest.raises(ConfigError, match="must return ClassifierOutputs"):
        cache.get_or_compute("m3", "d", lambda: np.zeros(2))
