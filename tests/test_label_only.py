"""Label-only signals and attacks: views, noise, boundary search and its budget, orientation, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from miaudit.attacks.registry import create_attack
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.queried import ShadowModel, compute_signals, run_queried_attacks
from miaudit.classifier.reference import AttackReference, ShadowData
from miaudit.classifier.signals.label_only import (
    AugmentationConfig,
    BoundaryConfig,
    LabelOnlySignals,
    LabelQuery,
    NoiseConfig,
    label_only_signals,
    shift_images,
)
from miaudit.classifier.targets import BlackBoxTarget, TorchClassifierTarget
from miaudit.classifier.training import TrainConfig, build_model_from_config, train_classifier
from miaudit.data import load_dataset, make_split
from miaudit.errors import ConfigError, DataError, NotFittedError, SignalError
from miaudit.evaluation import roc_auc
from miaudit.runs import build_attacks, parse_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "label_only_whitebox.yaml"


def linear_case(n=60, d=10, seed=0):
    """A linear rule on [0, 1]^d with known distances |w.x + b| / ||w|| to its boundary."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    b = -0.5 * w.sum()

    def predict(x):
        return (x.reshape(len(x), -1) @ w + b > 0).astype(np.int64)

    x = rng.uniform(0.2, 0.8, (n, d)).astype(np.float32)
    y = predict(x)
    y[:5] = 1 - y[:5]  # five misclassified examples
    true = np.abs(x.astype(np.float64) @ w + b) / np.linalg.norm(w)
    return predict, x, y, true


class Counting:
    """An independent count of the inputs a label-only query function receives."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, x):
        self.n += len(x)
        return self.fn(x)


@pytest.fixture(scope="module")
def location_case(shared_data):
    """Overfit MLP target on 150 Location records, 150 held-out non-members, one shadow model trained alike."""
    ds = load_dataset("location", data_dir=shared_data)
    split = make_split(len(ds), n_members=150, n_nonmembers=150, n_shadow=300, seed=0)

    def train(index, seed):
        cfg = TrainConfig(model="mlp", hidden=[64], epochs=30, batch_size=32, lr=3e-3, seed=seed)
        return train_classifier(build_model_from_config(cfg, ds.input_shape, ds.n_classes), ds.subset(index), cfg,
                                progress=False).model

    target = train(split.target_members, 0)
    shadow = ShadowModel(train(split.shadow[:150], 1), ds.subset(split.shadow), np.arange(300) < 150)
    return target, ds.subset(split.audited), split.membership, [shadow]


# -- query access -----------------------------------------------------------------------------
def test_label_query_wraps_models_targets_and_callables():
    predict, x, _, _ = linear_case()
    model = torch.nn.Sequential(torch.nn.Linear(10, 3))
    expected = model(torch.from_numpy(x)).argmax(1).numpy()
    for source in (model, TorchClassifierTarget(model)):
        query = LabelQuery(source)
        np.testing.assert_array_equal(query(x), expected)
        assert query.n_queries == len(x)
    blackbox = BlackBoxTarget(predict, output="labels")
    np.testing.assert_array_equal(LabelQuery(blackbox)(x), predict(x))
    with pytest.raises(SignalError, match="one class index per input"):
        LabelQuery(lambda z: np.zeros((len(z), 3)))(x)
    with pytest.raises(ConfigError, match="cannot query"):
        LabelQuery(42)


# -- augmentations ----------------------------------------------------------------------------
def test_shift_repeats_edge_pixels():
    img = np.arange(2 * 1 * 4 * 5, dtype=np.float32).reshape(2, 1, 4, 5)
    padded = np.pad(img, ((0, 0), (0, 0), (1, 1), (2, 2)), mode="edge")
    np.testing.assert_array_equal(shift_images(img, 1, -2), padded[:, :, 0:4, 4:9])
    np.testing.assert_array_equal(shift_images(img, 0, 0), img)


def test_augmentation_views_identity_first_and_counted():
    ds = load_dataset("digits")
    x, y = ds.x[:40], ds.y[:40]
    clean = Counting(lambda z: (z.reshape(len(z), -1).sum(1) > 20).astype(np.int64))
    for shift, flip, k in ((1, False, 5), (2, False, 13), (1, True, 10)):
        s = label_only_signals(clean, x, y, augmentation=AugmentationConfig(max_shift=shift, flip=flip))
        assert s.augmentation.shape == (40, k) and s.augmentation_names[0] == "shift(0,0)"
        np.testing.assert_array_equal(s.augmentation[:, 0], s.correctness)
        np.testing.assert_array_equal(s.queries, np.full(40, k))  # the clean query doubles as view 0
    assert clean.n == 40 * (5 + 13 + 10)


def test_identical_augmentations_are_errors():
    images = np.random.default_rng(0).random((10, 1, 6, 6)).astype(np.float32)
    fn = lambda z: np.zeros(len(z), np.int64)
    y = np.zeros(10, np.int64)
    with pytest.raises(ConfigError, match="identical views"):
        label_only_signals(fn, images, y, augmentation=AugmentationConfig(max_shift=0, flip=False))
    with pytest.raises(ConfigError, match="identical on all"):  # shifting constant images changes nothing
        label_only_signals(fn, np.full((10, 1, 6, 6), 0.5, np.float32), y, augmentation=AugmentationConfig())
    with pytest.raises(ConfigError, match="identical views"):
        label_only_signals(fn, images.reshape(10, -1), y, augmentation=AugmentationConfig(n_features=0))


def test_tabular_views_flip_bits_on_binary_data():
    x = (np.random.default_rng(1).random((30, 20)) < 0.3).astype(np.float32)
    seen = []
    s = label_only_signals(lambda z: seen.append(z.copy()) or np.zeros(len(z), np.int64), x, np.zeros(30, np.int64),
                           augmentation=AugmentationConfig(n_views=4, n_features=3))
    assert s.info["augmentation_perturbation"] == "bitflip" and s.augmentation.shape == (30, 5)
    for view in seen[1:]:
        changed = view != x
        assert set(np.unique(changed.sum(1))) == {3} and np.isin(view, (0, 1)).all()


# -- noise ------------------------------------------------------------------------------------
def test_noise_is_zero_when_misclassified_and_deterministic():
    predict, x, y, _ = linear_case()
    config = NoiseConfig(levels=(0.01, 0.3), n_samples=10)
    a = label_only_signals(predict, x, y, noise=config, seed=3)
    assert a.noise.shape == (60, 2) and (a.noise[:5] == 0).all() and a.info["noise_perturbation"] == "gaussian"
    assert a.noise[5:, 0].mean() > a.noise[5:, 1].mean()  # more noise, fewer correct labels
    np.testing.assert_array_equal(a.queries, np.r_[np.ones(5), np.full(55, 21)])
    b = label_only_signals(predict, x, y, noise=config, seed=3, chunk_size=7)
    np.testing.assert_array_equal(a.noise, b.noise)  # an example's draws do not depend on its batch
    c = label_only_signals(predict, x, y, noise=config, seed=4)
    assert not np.array_equal(a.noise, c.noise)


# -- boundary distance ------------------------------------------------------------------------
def test_boundary_distance_upper_bounds_the_true_distance_and_converges():
    predict, x, y, true = linear_case()
    s = label_only_signals(predict, x, y, boundary=BoundaryConfig(max_queries=600, max_radius=10.0), bounds=None)
    assert (s.boundary_distance[:5] == 0).all() and not s.boundary_censored.any()
    ratio = s.boundary_distance[5:] / true[5:]
    assert ratio.min() >= 1 - 1e-4  # a point the model labelled wrongly: never closer than the boundary
    assert np.median(ratio) < 1.05


@pytest.mark.parametrize("budget", [1, 2, 7, 40, 150])
def test_boundary_query_budget_is_enforced_and_counted(budget):
    predict, x, y, _ = linear_case()
    counter = Counting(predict)
    s = label_only_signals(counter, x, y, boundary=BoundaryConfig(max_queries=budget, n_grad_samples=10))
    assert s.boundary_queries.max() <= budget and s.queries_used == counter.n
    np.testing.assert_array_equal(s.queries, s.boundary_queries)
    assert (s.boundary_queries[:5] == 1).all()  # misclassified: only the clean query
    if budget == 1:
        assert s.boundary_censored[5:].all()
        np.testing.assert_allclose(s.boundary_distance[5:], np.sqrt(10))  # censored at the box diagonal
    cost = s.cost()
    assert cost["queries_total"] == counter.n and cost["seconds"] >= 0
    assert cost["boundary_censored"] == int(s.boundary_censored.sum())


def test_cost_of_signals_without_censoring_flags():
    # boundary distances from elsewhere, with their query counts but no censoring flags: cost() used to fail
    s = LabelOnlySignals(np.array([0, 1]), np.array([0, 1]), np.array([3, 5]), boundary_distance=np.array([0.5, 1.0]),
                         boundary_queries=np.array([3, 5]))
    cost = s.cost()
    assert cost["boundary_queries_per_example_mean"] == 4.0 and "boundary_censored" not in cost


def test_budget_below_one_and_bad_bounds_are_errors():
    with pytest.raises(ConfigError, match="max_queries"):
        BoundaryConfig(max_queries=0)
    with pytest.raises(ConfigError, match="max_queries"):
        create_attack("boundary_distance", max_queries=0)
    with pytest.raises(ConfigError, match="max_radius"):
        create_attack("boundary_distance", bounds=None)
    with pytest.raises(ConfigError, match="bounds"):
        create_attack("noise_robustness", bounds=[1.0, 0.0])
    predict, x, y, _ = linear_case()
    with pytest.raises(DataError, match="outside bounds"):
        label_only_signals(predict, x * 3, y, boundary=BoundaryConfig())


def test_anchors_start_the_search_where_random_directions_fail():
    """A model that labels every noisy input 0: random directions never leave class 0, anchors of class 1 do."""
    rng = np.random.default_rng(5)
    x = np.r_[rng.uniform(0.0, 0.1, (20, 30)), rng.uniform(0.45, 0.55, (20, 30))].astype(np.float32)
    predict = lambda z: (z.reshape(len(z), -1).mean(1) < 0.3).astype(np.int64)
    y = predict(x)
    blind = label_only_signals(predict, x, y, boundary=BoundaryConfig(max_queries=100, n_anchors=0))
    assert blind.boundary_censored[y == 0].all() and not blind.boundary_censored[y == 1].any()
    anchored = label_only_signals(predict, x, y, boundary=BoundaryConfig(max_queries=100))
    assert not anchored.boundary_censored.any() and anchored.boundary_queries.max() <= 100
    true = np.abs(x.mean(1) - 0.3) * np.sqrt(30)  # distance to the hyperplane mean(x) = 0.3
    assert (anchored.boundary_distance >= true - 1e-4).all()


def test_boundary_is_deterministic_per_example():
    predict, x, y, _ = linear_case()
    config = BoundaryConfig(max_queries=80, n_grad_samples=10)
    a = label_only_signals(predict, x, y, boundary=config, seed=1)
    b = label_only_signals(predict, x, y, boundary=config, seed=1, chunk_size=9)
    np.testing.assert_array_equal(a.boundary_distance, b.boundary_distance)
    np.testing.assert_array_equal(a.boundary_queries, b.boundary_queries)


# -- attacks on a real overfit model ----------------------------------------------------------
def test_attacks_orientation_on_overfit_model(location_case):
    target, audited, membership, shadow = location_case
    attacks = [("aug", create_attack("augmentation_robustness")),
               ("aug_mlp", create_attack("augmentation_robustness", attack_model="mlp")),
               ("noise", create_attack("noise_robustness", n_samples=10)),
               ("bd", create_attack("boundary_distance", max_queries=60, n_grad_samples=16))]
    results = {r.key: r for r in run_queried_attacks(attacks, target, audited, shadow=shadow)}
    for key, r in results.items():
        assert r.scores.shape == (300,)
        assert roc_auc(membership, r.scores) > 0.7, key  # measured 0.84-0.97 at seed 0
        assert r.attack.decision_threshold is not None  # learned on the shadow model
    assert results["bd"].cost["target"]["queries_per_example_max"] <= 60
    assert results["aug"].signals is results["aug_mlp"].signals  # same request: computed once


def test_attack_errors():
    attack = create_attack("boundary_distance")
    outputs = ClassifierOutputs(np.array([0, 1]), predictions=np.array([0, 0]))
    with pytest.raises(SignalError, match="LabelOnlySignals"):
        attack.score(outputs)
    with pytest.raises(SignalError, match="holds ShadowData"):
        attack.fit(AttackReference(shadow=ShadowData([outputs], [np.array([True, False])])))
    predict, x, y, _ = linear_case()
    noise_only = label_only_signals(predict, x, y, noise=NoiseConfig(n_samples=2))
    with pytest.raises(SignalError, match="boundary_distance signal"):
        attack.score(noise_only)
    mlp = create_attack("augmentation_robustness", attack_model="mlp")
    with pytest.raises(DataError, match="shadow"):
        mlp.fit(AttackReference())
    with pytest.raises(NotFittedError):
        mlp.score(noise_only)
    with pytest.raises(ConfigError, match="attack_model"):
        create_attack("augmentation_robustness", attack_model="forest")
    with pytest.raises(ConfigError, match="ClassifierOutputs"):
        compute_signals(create_attack("loss"), predict, None)


def test_example_config_parses_and_builds_its_attacks():
    config = parse_config(EXAMPLE)
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    names = {a.name for _, a in attacks}
    assert {"augmentation_robustness", "noise_robustness", "boundary_distance", "gradient_norm",
            "gradient_features", "loss", "correctness"} <= names
