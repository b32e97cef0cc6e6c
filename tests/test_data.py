import numpy as np
import pytest
from PIL import Image

from miaudit.data import ArrayDataset, find_data_file, load_dataset, make_split, paired_keep_matrix
from miaudit.errors import ConfigError, DataError


def test_digits_are_images_in_unit_range():
    d = load_dataset("digits")
    assert d.x.shape == (1797, 1, 8, 8) and d.x.dtype == np.float32
    assert d.x.min() == 0.0 and d.x.max() == 1.0
    assert d.y.dtype == np.int64 and d.n_classes == 10 and set(np.unique(d.y)) == set(range(10))


def test_mnist_from_shared_data(shared_data):
    d = load_dataset("mnist", data_dir=shared_data, split="test", limit=300)
    assert d.x.shape == (300, 1, 28, 28) and d.x.dtype == np.float32
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0 and d.x.max() > 0.9
    assert d.n_classes == 10 and d.y.max() <= 9
    raw = np.load(shared_data / "mnist" / "mnist.npz")
    np.testing.assert_array_equal(d.y, raw["y_test"][:300])
    np.testing.assert_allclose(d.x[5, 0], raw["x_test"][5] / 255.0, atol=1e-7)


def test_location_labels_are_shifted_to_zero(shared_data):
    d = load_dataset("location", data_dir=shared_data)
    raw = np.load(shared_data / "location" / "location_bangkok.npz")
    assert d.x.shape == (5010, 446) and d.n_classes == 30
    assert d.y.min() == 0 and d.y.max() == 29
    np.testing.assert_array_equal(d.y, raw["labels"] - 1)


def test_data_dir_resolution(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MIAUDIT_DATA", str(shared_data))
    assert find_data_file("mnist/mnist.npz") == shared_data / "mnist" / "mnist.npz"
    monkeypatch.setenv("MIAUDIT_DATA", str(tmp_path))  # env var without the file: falls back to ../shared/data
    assert find_data_file("location/location_bangkok.npz").is_file()
    with pytest.raises(DataError, match=r"mnist/mnist.npz.*--data-dir.*MIAUDIT_DATA"):
        load_dataset("mnist", data_dir=tmp_path)  # an explicit folder is the only one searched
    assert find_data_file("flickr8k", shared_data, folder=True) == shared_data / "flickr8k"
    with pytest.raises(DataError, match=r"data file flickr8k not found"):
        find_data_file("flickr8k", shared_data)  # a folder is not a file
    with pytest.raises(DataError, match=r"data folder flickr8k not found \(looked at .*nowhere/flickr8k\)"):
        find_data_file("flickr8k", tmp_path / "nowhere", folder=True)


def test_npz_loader_and_subset(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "arr.npz", x=rng.normal(size=(20, 3)), y=np.arange(20) % 4)
    d = load_dataset(tmp_path / "arr.npz")
    assert d.x.shape == (20, 3) and d.n_classes == 4 and d.name == "arr"
    sub = d.subset(np.array([3, 7]))
    np.testing.assert_array_equal(sub.ids, [3, 7])
    np.testing.assert_array_equal(sub.y, [3, 3])
    assert sub.input_shape == (3,) and sub.n_classes == 4
    np.savez(tmp_path / "bad.npz", features=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(DataError, match="lacks array"):
        load_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", x=np.array([[np.nan], [1.0]]), y=np.array([0, 1]))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(tmp_path / "nan.npz")
    np.savez(tmp_path / "rows.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(DataError, match="one feature row per label"):
        load_dataset(tmp_path / "rows.npz")


def _write_image(path, size, mode, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_image_folder_grayscale_and_rgb(tmp_path):
    for i in range(3):
        _write_image(tmp_path / "gray" / "cat" / f"{i}.png", (6, 4), "L", 255)
        _write_image(tmp_path / "gray" / "dog" / f"{i}.png", (6, 4), "L", 0)
    d = load_dataset(tmp_path / "gray")
    assert d.x.shape == (6, 1, 4, 6) and d.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(d.y, [0, 0, 0, 1, 1, 1])
    assert d.x[0].min() == 1.0 and d.x[-1].max() == 0.0 and d.ids[0] == "cat/0.png"
    _write_image(tmp_path / "gray" / "dog" / "red.png", (6, 4), "RGB", (255, 0, 0))
    rgb = load_dataset(tmp_path / "gray")
    assert rgb.x.shape == (7, 3, 4, 6)
    np.testing.assert_allclose(rgb.x[-1, :, 0, 0], [1.0, 0.0, 0.0])
    _write_image(tmp_path / "gray" / "dog" / "big.jpg", (8, 8), "L", 0)
    with pytest.raises(DataError, match="big.jpg is 8x8.*size=\\(H, W\\)"):
        load_dataset(tmp_path / "gray")
    assert load_dataset(tmp_path / "gray", size=(5, 5), color="L").x.shape == (8, 1, 5, 5)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(tmp_path / "empty")


def test_unknown_source_and_single_class():
    with pytest.raises(DataError, match="neither a built-in"):
        load_dataset("cifar1000")
    with pytest.raises(DataError, match="labels must be >= 0"):
        ArrayDataset(np.zeros((2, 2)), np.array([-1, 0]))


def test_make_split_is_disjoint_and_seeded():
    s = make_split(100, n_members=30, n_nonmembers=20, n_shadow=25, n_population=10, seed=3)
    parts = [s.target_members, s.target_nonmembers, s.shadow, s.population]
    assert [p.size for p in parts] == [30, 20, 25, 10]
    assert np.unique(np.concatenate(parts)).size == 85
    again = make_split(100, n_members=30, n_nonmembers=20, n_shadow=25, n_population=10, seed=3)
    np.testing.assert_array_equal(s.target_members, again.target_members)
    other = make_split(100, n_members=30, n_nonmembers=20, n_shadow=25, n_population=10, seed=4)
    assert not np.array_equal(s.target_members, other.target_members)
    assert s.membership.sum() == 30 and s.audited.size == 50
    with pytest.raises(DataError, match="asks for 101 examples"):
        make_split(100, n_members=50, n_nonmembers=51)
    with pytest.raises(DataError, match="at least one member"):
        make_split(100, n_members=0, n_nonmembers=10)


@pytest.mark.parametrize("n_examples", [10, 11])
def test_paired_keep_matrix(n_examples):
    keep = paired_keep_matrix(8, n_examples, seed=0)
    assert keep.shape == (8, n_examples) and keep.dtype == bool
    assert (keep.sum(axis=0) == 4).all()  # every example IN for exactly half the models
    assert (keep[0::2] ^ keep[1::2]).all()  # pairs are complementary
    assert np.abs(keep.sum(axis=1) - n_examples / 2).max() <= 0.5
    assert len({row.tobytes() for row in keep[0::2]}) > 1  # pairs differ from each other
    np.testing.assert_array_equal(keep, paired_keep_matrix(8, n_examples, seed=0))
    with pytest.raises(DataError, match="even"):
        paired_keep_matrix(3, 10, seed=0)


def test_image_folder_subsampling(tmp_path):
    for label, value in (("cat", 255), ("dog", 0), ("eel", 128)):
        for i in range(5):
            _write_image(tmp_path / "pets" / label / f"{i}.png", (4, 4), "L", value)
    every = load_dataset(tmp_path / "pets")
    assert len(every) == 15
    two_each = load_dataset(tmp_path / "pets", per_class=2)
    assert np.bincount(two_each.y).tolist() == [2, 2, 2] and two_each.n_classes == 3
    assert set(two_each.ids) < set(every.ids)
    some = load_dataset(tmp_path / "pets", limit=4, sample_seed=1)
    assert len(some) == 4 and list(some.ids) == sorted(some.ids, key=list(every.ids).index)  # in file order
    np.testing.assert_array_equal(load_dataset(tmp_path / "pets", limit=4, sample_seed=1).ids, some.ids)
    assert len(load_dataset(tmp_path / "pets", per_class=3, limit=5)) == 5
    # the run's seed reaches the draw unless the config fixes sample_seed
    by_seed = {s: tuple(load_dataset(tmp_path / "pets", limit=4, seed=s).ids) for s in range(6)}
    assert len(set(by_seed.values())) > 1
    assert tuple(load_dataset(tmp_path / "pets", limit=4, seed=3).ids) == by_seed[3]
    np.testing.assert_array_equal(load_dataset(tmp_path / "pets", limit=4, seed=3, sample_seed=1).ids, some.ids)
    with pytest.raises(ConfigError, match="does not take option 'limt'; its options are: color, size, limit, "
                                          "per_class, sample_seed"):
        load_dataset(tmp_path / "pets", limt=3)
    with pytest.raises(ConfigError, match="'per_class': expected a positive integer"):
        load_dataset(tmp_path / "pets", per_class=0)
    with pytest.raises(ConfigError, match="does not take option 'size'; its options are: split, limit"):
        load_dataset("mnist", size=3)
