"""Datasets as arrays, and loaders for the formats an audit starts from.

Every loader returns an :class:`ArrayDataset`: ``x`` float32 ``(n, ...)`` (images ``(n, C, H, W)``
in ``[0, 1]``, tabular ``(n, d)``), ``y`` int64 ``(n,)`` class indices in ``[0, n_classes)``.
Nothing is standardised silently: tabular features are used as stored unless a loader option
(``standardize=True`` for CSV) asks for it.

Shared real data (MNIST, Location) is found in this order: the ``data_dir`` argument, the
``MIAUDIT_DATA`` environment variable, ``../shared/data`` relative to the working directory, and
``../shared/data`` relative to the repository that holds this package.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: integer labels up to this many classes are used as stored even when some classes never occur
MAX_SPARSE_CLASSES = 1000
BUILTIN = ("digits", "mnist", "location")


@dataclass
class ArrayDataset:
    """``n`` labelled examples held in memory.

    ``x``: float32 ``(n, ...)``; ``y``: int64 ``(n,)`` in ``[0, n_classes)``; ``ids``: ``(n,)`` stable
    example identifiers (row numbers, or file paths for image folders) that survive ``subset``;
    ``groups``: ``(n,)`` optional group ids of examples that are not independent (records of one
    person, crops of one image): evaluation then resamples whole groups (cluster bootstrap).
    """

    x: np.ndarray
    y: np.ndarray
    n_classes: int | None = None
    name: str = "arrays"
    ids: np.ndarray | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float32)
        y = np.asarray(self.y)
        if y.ndim != 1:
            raise DataError(f"{self.name}: labels must be a 1-D array, got shape {y.shape}")
        if self.x.ndim < 2 or self.x.shape[0] != y.shape[0]:
            raise DataError(f"{self.name}: features have shape {self.x.shape} but there are {y.shape[0]} labels; "
                            "give one feature row per label")
        if y.size == 0:
            raise DataError(f"{self.name}: the dataset is empty")
        if not np.issubdtype(y.dtype, np.integer):
            if not (np.issubdtype(y.dtype, np.number) and np.all(np.mod(y, 1) == 0)):
                raise DataError(f"{self.name}: labels must be integer class indices, got dtype {y.dtype}")
        self.y = y.astype(np.int64)
        if self.y.min() < 0:
            raise DataError(f"{self.name}: labels must be >= 0, found {self.y.min()}; map them to 0..n_classes-1")
        if not np.isfinite(self.x).all():
            raise DataError(f"{self.name}: features contain NaN or inf; clean or impute them first")
        inferred = int(self.y.max()) + 1
        if self.n_classes is None:
            self.n_classes = inferred
        elif inferred > self.n_classes:
            raise DataError(f"{self.name}: label {inferred - 1} is out of range for n_classes={self.n_classes}")
        self.ids = np.arange(len(self.y)) if self.ids is None else np.asarray(self.ids)
        if self.ids.shape != self.y.shape:
            raise DataError(f"{self.name}: ids have shape {self.ids.shape}, expected {self.y.shape}")
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
            if self.groups.shape != self.y.shape:
                raise DataError(f"{self.name}: groups have shape {self.groups.shape}, expected {self.y.shape}: one "
                                "group id per example")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 28, 28)`` or ``(446,)``."""
        return tuple(self.x.shape[1:])

    def subset(self, index: np.ndarray) -> ArrayDataset:
        """The examples at ``index`` (integer indices or a boolean mask), keeping ids and metadata."""
        index = np.asarray(index)
        return ArrayDataset(self.x[index], self.y[index], n_classes=self.n_classes, name=self.name,
                            ids=self.ids[index], class_names=self.class_names, feature_names=self.feature_names,
                            groups=None if self.groups is None else self.groups[index])

    def flatten(self) -> ArrayDataset:
        """The same examples with features reshaped to ``(n, prod(input_shape))`` (for scikit-learn)."""
        return ArrayDataset(self.x.reshape(len(self), -1), self.y, n_classes=self.n_classes, name=self.name,
                            ids=self.ids, class_names=self.class_names,
                            feature_names=self.feature_names if self.x.ndim == 2 else None, groups=self.groups)


# -- where the shared data lives --------------------------------------------------------------
def data_dir_candidates(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for shared data, in priority order."""
    if data_dir is not None:
        return [Path(data_dir)]
    candidates = []
    if os.environ.get("MIAUDIT_DATA"):
        candidates.append(Path(os.environ["MIAUDIT_DATA"]))
    candidates.append(Path.cwd().parent / "shared" / "data")
    for ancestor in Path(__file__).resolve().parents:
        if (ancestor / "pyproject.toml").is_file():
            candidates.append(ancestor.parent / "shared" / "data")
            break
    return candidates


def find_data_file(relative: str, data_dir: str | Path | None = None) -> Path:
    """Path of ``relative`` inside the first data folder that has it; :class:`DataError` if none does."""
    candidates = data_dir_candidates(data_dir)
    for folder in candidates:
        if (folder / relative).is_file():
            return folder / relative
    searched = ", ".join(str(c / relative) for c in candidates)
    raise DataError(f"data file {relative} not found (looked at {searched}); pass --data-dir DIR "
                    "or set MIAUDIT_DATA to the folder that contains it")


# -- built-in datasets ------------------------------------------------------------------------
def _load_digits() -> ArrayDataset:
    """scikit-learn's 1797 8x8 handwritten digits (values 0..16), as ``(n, 1, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return ArrayDataset(x, bunch.target, n_classes=10, name="digits")


def _load_mnist(data_dir: str | Path | None, split: str = "all", limit: int | None = None) -> ArrayDataset:
    """MNIST from ``mnist/mnist.npz``: ``split`` "train" (60k), "test" (10k) or "all" (train then test)."""
    if split not in ("train", "test", "all"):
        raise ConfigError(f"mnist split {split!r} is not allowed; choose 'train', 'test' or 'all'")
    path = find_data_file("mnist/mnist.npz", data_dir)
    with np.load(path, allow_pickle=False) as npz:
        _require_keys(npz, ("x_train", "y_train", "x_test", "y_test"), path)
        parts = ("train", "test") if split == "all" else (split,)
        x = np.concatenate([npz[f"x_{p}"] for p in parts])
        y = np.concatenate([npz[f"y_{p}"] for p in parts])
    x, y = _limit(x, y, limit, "mnist")
    images = (x.astype(np.float32) / 255.0)[:, None, :, :]  # (n, 28, 28) u8 -> (n, 1, 28, 28) in [0, 1]
    return ArrayDataset(images, y, n_classes=10, name="mnist")


def _load_location(data_dir: str | Path | None, limit: int | None = None) -> ArrayDataset:
    """Location (Shokri et al. 2017): 446 binary features, labels 1..30 stored, returned as 0..29."""
    path = find_data_file("location/location_bangkok.npz", data_dir)
    arrays = read_npz(path)
    _require_keys(arrays, ("features", "labels"), path)
    x, y = arrays["features"], arrays["labels"].astype(np.int64)
    if y.min() != 1 or y.max() > 30:
        raise DataError(f"{path}: labels should range over 1..30, found {y.min()}..{y.max()}")
    x, y = _limit(x, y - 1, limit, "location")
    return ArrayDataset(x.astype(np.float32), y, n_classes=30, name="location")


def _limit(x: np.ndarray, y: np.ndarray, limit: int | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    if limit is None:
        return x, y
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{name}: limit must be a positive integer, got {limit!r}")
    return x[:limit], y[:limit]


def _require_keys(arrays: Any, keys: tuple[str, ...], path: Path) -> None:
    names = list(arrays.files if hasattr(arrays, "files") else arrays)
    missing = [k for k in keys if k not in names]
    if missing:
        raise DataError(f"{path} lacks array(s) {', '.join(missing)} (it has {', '.join(names) or 'none'}); "
                        f"save it with keys {', '.join(keys)}")


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, never unpickling; one-line :class:`DataError` if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file {path} does not exist; check the path")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npz without pickles ({exc}); save plain numeric arrays "
                        "with numpy.savez") from None


# -- user files -------------------------------------------------------------------------------
def load_npz(path: str | Path, *, x_key: str = "x", y_key: str = "y", n_classes: int | None = None,
             group_key: str = "groups") -> ArrayDataset:
    """A user ``.npz`` with features ``x`` ``(n, ...)`` and integer labels ``y`` ``(n,)``, used as stored;
    an array ``group_key`` ``(n,)``, when present, holds the examples' group ids."""
    arrays = read_npz(path)
    path = Path(path)
    _require_keys(arrays, (x_key, y_key), path)
    x, y = arrays[x_key], arrays[y_key]
    if not np.issubdtype(x.dtype, np.number) and x.dtype != bool or np.iscomplexobj(x):
        raise DataError(f"{path}: array {x_key!r} has dtype {x.dtype}; features must be real numbers")
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y) or y.dtype == bool:
        raise DataError(f"{path}: array {y_key!r} has dtype {y.dtype}; labels must be integer class indices")
    dataset = ArrayDataset(x, y, n_classes=n_classes, name=path.stem, groups=arrays.get(group_key))
    if n_classes is None:
        check_class_labels(dataset.y, f"{path} array {y_key!r}")
    return dataset


def load_csv(path: str | Path, *, label: str = "label", categorical: list[str] | None = None,
             drop: list[str] | None = None, standardize: bool = False, delimiter: str = ",",
             group: str | None = None) -> ArrayDataset:
    """A CSV with a header row: column ``label`` is the class; the other columns are features, except
    ``group`` (if given): the group id of each row (rows of one person, one paper), not a feature.

    Numeric columns are used as stored (z-scored only if ``standardize=True``); columns named in
    ``categorical``, and any column with a non-numeric value, are one-hot encoded (sorted category
    values, feature names ``"column=value"``). Integer labels >= 0 are kept; any other labels are
    mapped to 0..K-1 in sorted order and kept in ``class_names``. Empty cells are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist; check the path")
    rows = list(csv.reader(io.StringIO(read_text(path, "CSV file"), newline=""), delimiter=delimiter))
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if label not in header:
        raise DataError(f"{path} has no label column {label!r} (columns: {', '.join(header)}); pass label=NAME")
    for name in list(categorical or []) + list(drop or []) + ([group] if group else []):
        if name not in header:
            raise DataError(f"{path} has no column {name!r} (columns: {', '.join(header)})")
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path} line {i} has {len(row)} cells, the header has {len(header)}")
    columns = {name: [row[j].strip() for row in body] for j, name in enumerate(header)}
    for name, values in columns.items():
        if name not in (drop or []) and "" in values:
            raise DataError(f"{path}: column {name!r} has an empty cell on line {values.index('') + 2}; "
                            "fill or drop missing values first")

    labels_raw = columns.pop(label)
    groups = np.array(columns.pop(group)) if group else None
    if all(v.lstrip("-").isdigit() for v in labels_raw) and min(int(v) for v in labels_raw) >= 0:
        y, class_names = np.array([int(v) for v in labels_raw], dtype=np.int64), None
    else:
        class_names = sorted(set(labels_raw))
        lookup = {c: i for i, c in enumerate(class_names)}
        y = np.array([lookup[v] for v in labels_raw], dtype=np.int64)
    check_class_labels(y, f"{path} column {label!r}")

    blocks, names = [], []
    for name, values in columns.items():
        if name in (drop or []):
            continue
        numeric = _as_float(values)
        if name in (categorical or []) or numeric is None:
            categories = sorted(set(values))
            one_hot = np.array(values)[:, None] == np.array(categories)[None, :]
            blocks.append(one_hot.astype(np.float32))
            names.extend(f"{name}={c}" for c in categories)
        else:
            if standardize:
                numeric = (numeric - numeric.mean()) / (numeric.std() or 1.0)
            blocks.append(numeric[:, None].astype(np.float32))
            names.append(name)
    if not blocks:
        raise DataError(f"{path} has no feature columns besides the label {label!r}")
    return ArrayDataset(np.concatenate(blocks, axis=1), y, name=path.stem, class_names=class_names,
                        feature_names=names, groups=groups)


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file's content; a one-line :class:`DataError` naming the line of the first bad byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{what} {path} is not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} on line {line}); "
                        "save it with UTF-8 encoding (e.g. iconv -f latin1 -t utf-8)") from None


def check_class_labels(y: np.ndarray, where: str) -> None:
    """Class indices a classifier can be trained and audited on: at least two classes, and no absurd range
    (a largest label far above the number of distinct labels, e.g. {0, 100000}, would make 100,001 classes)."""
    present = np.unique(y)
    if present.size < 2:
        raise DataError(f"{where}: every label is {present[0] if present.size else 'missing'}; a classifier audit "
                        "needs at least two classes")
    n_classes = int(present.max()) + 1
    if n_classes > MAX_SPARSE_CLASSES and n_classes > 2 * present.size:
        raise DataError(f"{where}: labels go up to {n_classes - 1} but only {present.size} distinct values occur, "
                        f"which would make a {n_classes}-class model; number the classes 0..{present.size - 1} "
                        "(or write them as names, which are numbered in sorted order)")


def _as_float(values: list[str]) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return None


def load_image_folder(path: str | Path, *, color: str = "auto", size: tuple[int, int] | None = None) -> ArrayDataset:
    """Images in ``path/<class_name>/*.png|jpg``: ``(n, C, H, W)`` float32 in [0, 1], classes in sorted order.

    ``color``: "L" (grayscale, C=1), "RGB" (C=3) or "auto" (grayscale if every image is, else RGB).
    All images must share one size unless ``size=(height, width)`` asks for a resize.
    """
    from PIL import Image

    if color not in ("auto", "L", "RGB"):
        raise ConfigError(f"image color {color!r} is not allowed; choose 'auto', 'L' or 'RGB'")
    root = Path(path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root} holds no images; expected {root}/<class_name>/*.png or *.jpg")
    images = []
    for file, _ in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as img:
                    img.load()
                    images.append(img.copy())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DataError(f"image {file} declares more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression "
                            "bomb, or a huge image); miaudit does not decode it: remove it or downscale it") from None
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for damaged files
            raise DataError(f"cannot read image {file}: {exc}") from None
    if color == "auto":
        color = "L" if all(img.mode in ("1", "L", "LA", "I", "I;16", "F") for img in images) else "RGB"
    arrays = []
    first_size = images[0].size
    for (file, _), img in zip(files, images):
        img = img.convert(color)
        if size is not None:
            img = img.resize((size[1], size[0]))
        elif img.size != first_size:
            raise DataError(f"image {file} is {img.size[0]}x{img.size[1]} but {files[0][0]} is "
                            f"{first_size[0]}x{first_size[1]} (width x height); resize them or pass size=(H, W)")
        array = np.asarray(img, dtype=np.float32) / 255.0
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))  # -> (C, H, W)
    ids = np.array([str(f.relative_to(root)) for f, _ in files])
    return ArrayDataset(np.stack(arrays), np.array([c for _, c in files]), n_classes=len(classes),
                        name=root.name, ids=ids, class_names=classes)


# -- one entry point --------------------------------------------------------------------------
def load_dataset(source: str | Path, *, data_dir: str | Path | None = None, **options: Any) -> ArrayDataset:
    """Load ``source``: "digits", "mnist", "location", or a path to ``.npz`` / ``.csv`` / an image folder.

    ``options`` go to the matching loader (e.g. ``split="train"``, ``limit=5000`` for MNIST;
    ``label="income"`` for CSV; ``size=(32, 32)`` for image folders); unknown options are an error.
    """
    loaders: dict[str, Callable[..., ArrayDataset]] = {
        "digits": lambda **kw: _load_digits(**kw),
        "mnist": lambda **kw: _load_mnist(data_dir, **kw),
        "location": lambda **kw: _load_location(data_dir, **kw),
    }
    key = str(source)
    if key in loaders:
        loader = loaders[key]
    else:
        path = Path(source)
        if path.is_dir():
            loader = lambda **kw: load_image_folder(path, **kw)
        elif path.suffix.lower() == ".npz":
            loader = lambda **kw: load_npz(path, **kw)
        elif path.suffix.lower() == ".csv":
            loader = lambda **kw: load_csv(path, **kw)
        elif not path.exists():
            raise DataError(f"dataset {key!r} is neither a built-in ({', '.join(BUILTIN)}) nor an existing "
                            "path; give a .npz, .csv or image folder path")
        else:
            raise DataError(f"cannot load {path}: use a .npz (x, y), a .csv with a label column, "
                            "or a folder of class_name/*.png images")
    try:
        return loader(**options)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        bad = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
        raise ConfigError(f"dataset {key!r} does not take option {bad!r}") from None


__all__ = ["ArrayDataset", "check_class_labels", "data_dir_candidates", "find_data_file", "load_csv", "load_dataset",
           "load_image_folder", "load_npz", "read_npz", "read_text"]
