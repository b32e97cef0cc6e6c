"""Datasets as arrays, and loaders for the formats an audit starts from.

Every loader returns an :class:`ArrayDataset`: ``x`` float32 ``(n, ...)`` (images ``(n, C, H, W)``
in ``[0, 1]``, tabular ``(n, d)``), ``y`` int64 ``(n,)`` class indices in ``[0, n_classes)``.
Tabular files (CSV, Parquet) go through :mod:`miaudit.data.tabular`: missing cells imputed,
categorical columns one-hot encoded and numeric ones standardised by one fitted pipeline.

Shared real data (MNIST, Location) is found in this order: the ``data_dir`` argument, the
``MIAUDIT_DATA`` environment variable, ``../shared/data`` relative to the working directory, and
``../shared/data`` relative to the repository that holds this package.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.errors import ConfigError, DataError
from miaudit.utils.seed import derive_seed

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
        assert self.ids is not None  # __post_init__ gives every dataset ids
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


def first_repeated_id(ids: Iterable[Any]) -> tuple[int, int, str] | None:
    """``(first row, repeating row, id)`` of the first id (as stripped text) that two rows share, else ``None``;
    missing ids (``None`` or empty) are skipped: callers report them with their own message."""
    first_row: dict[str, int] = {}
    for row, value in enumerate(ids):
        rid = "" if value is None else str(value).strip()
        if not rid:
            continue
        if rid in first_row:
            return first_row[rid], row, rid
        first_row[rid] = row
    return None


def find_data_file(relative: str, data_dir: str | Path | None = None, *, folder: bool = False) -> Path:
    """Path of ``relative`` (a file, or a folder with ``folder=True``) inside the first data folder that has
    it; :class:`DataError` naming every place looked at if none does."""
    candidates = data_dir_candidates(data_dir)
    for root in candidates:
        if (root / relative).is_dir() if folder else (root / relative).is_file():
            return root / relative
    searched = ", ".join(str(c / relative) for c in candidates)
    raise DataError(f"data {'folder' if folder else 'file'} {relative} not found (looked at {searched}); pass "
                    "--data-dir DIR or set MIAUDIT_DATA to the folder that contains it")


# -- built-in datasets ------------------------------------------------------------------------
def _load_digits() -> ArrayDataset:
    """scikit-learn's 1797 8x8 handwritten digits (values 0..16), as ``(n, 1, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return ArrayDataset(x, bunch.target, n_classes=10, name="digits")


def _load_mnist(data_dir: str | Path | None, *, split: str = "all", limit: int | None = None) -> ArrayDataset:
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


def _load_location(data_dir: str | Path | None, *, limit: int | None = None) -> ArrayDataset:
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
def read_user_arrays(path_str: str | Path, where: str, required: tuple[str, ...], holds: str
                     ) -> tuple[Path, dict[str, np.ndarray]]:
    """``(path, arrays)`` of the user's ``.npz`` that config key ``where`` names, with the ``required`` arrays
    present and a numeric ``x``; ``holds`` says what the file should hold (e.g. "x (n, ...) and y (n,)")."""
    path = Path(path_str)
    if not path.is_file():
        raise DataError(f"{where}: {path} does not exist; give an .npz with {holds}")
    arrays = read_npz(path)
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{where}: {path} has no {missing[0]!r} array (keys: {', '.join(arrays) or 'none'}); save "
                        f"it with numpy.savez(path, {', '.join(f'{k}=...' for k in required)})")
    if "x" in arrays and not np.issubdtype(arrays["x"].dtype, np.number) and arrays["x"].dtype != bool:
        raise DataError(f"{where}: x in {path} has dtype {arrays['x'].dtype}; x must be numeric")
    return path, arrays


def user_row_ids(arrays: dict[str, np.ndarray], n: int, role: str) -> np.ndarray:
    """The file's ``ids`` as strings, or ``"<role>/<row>"`` for a file without them."""
    return arrays["ids"].astype(str) if "ids" in arrays else np.array([f"{role}/{i}" for i in range(n)])


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


def _positive_int(value: Any, key: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"image folder option {key!r}: expected a positive integer, got {value!r}")
    return value


def _subsample(files: list[tuple[Path, int]], *, limit: int | None, per_class: int | None,
               sample_seed: int) -> list[tuple[Path, int]]:
    """At most ``per_class`` files of each class, then at most ``limit`` in all: seeded random draws, in file order."""
    rng = np.random.default_rng(sample_seed)
    keep = np.arange(len(files))
    if per_class is not None:
        classes = np.array([c for _, c in files])
        keep = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(classes == c))[:per_class] for c in np.unique(classes)]))
    if limit is not None and limit < keep.size:
        keep = np.sort(rng.permutation(keep)[:limit])
    return [files[i] for i in keep]


def load_image_folder(path: str | Path, *, color: str = "auto", size: tuple[int, int] | None = None,
                      limit: int | None = None, per_class: int | None = None, sample_seed: int = 0) -> ArrayDataset:
    """Images in ``path/<class_name>/*.png|jpg``: ``(n, C, H, W)`` float32 in [0, 1], classes in sorted order.

    ``color``: "L" (grayscale, C=1), "RGB" (C=3) or "auto" (grayscale if every image is, else RGB).
    All images must share one size unless ``size=(height, width)`` asks for a resize.
    ``per_class``: keep at most this many images of each class; ``limit``: at most this many in
    all (after ``per_class``); both draw at random with ``sample_seed``, and only the kept files
    are decoded. Every class folder stays a class (``n_classes``), even if no image of it is kept.
    """
    from PIL import Image

    if color not in ("auto", "L", "RGB"):
        raise ConfigError(f"image color {color!r} is not allowed; choose 'auto', 'L' or 'RGB'")
    limit, per_class = _positive_int(limit, "limit"), _positive_int(per_class, "per_class")
    if isinstance(sample_seed, bool) or not isinstance(sample_seed, int):
        raise ConfigError(f"image folder option 'sample_seed': expected an integer, got {sample_seed!r}")
    root = Path(path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root} holds no images; expected {root}/<class_name>/*.png or *.jpg")
    files = _subsample(files, limit=limit, per_class=per_class, sample_seed=sample_seed)
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
def _option_names(loader: Callable[..., Any]) -> list[str]:
    """The keyword options ``loader`` takes (its keyword-only parameters)."""
    return [p.name for p in inspect.signature(loader).parameters.values() if p.kind == p.KEYWORD_ONLY]


def load_dataset(source: str | Path, *, data_dir: str | Path | None = None, seed: int | None = None,
                 **options: Any) -> ArrayDataset:
    """Load ``source``: "digits", "mnist", "location", or a path to ``.npz``, ``.csv`` / ``.parquet``, an image folder.

    ``seed``: the run's seed; an image folder subsampled without its own ``sample_seed`` draws its files
    with a seed derived from it (so the run's seed reaches that choice too).

    ``options`` go to the matching loader (e.g. ``split="train"``, ``limit=5000`` for MNIST;
    ``label="income"`` for CSV; ``size=(32, 32)``, ``per_class=100`` for image folders); an unknown
    option is an error that lists the valid ones. A tabular file is preprocessed by a pipeline
    fitted on all its rows here; an audit fits it on the target's training rows
    (:mod:`miaudit.data.tabular`).
    """
    from miaudit.data.tabular import load_tabular, tabular_format, tabular_options

    key = str(source)
    loader: Callable[..., ArrayDataset]
    valid: list[str]
    if key in BUILTIN:
        builtins: dict[str, Callable[..., ArrayDataset]] = {"digits": _load_digits, "mnist": _load_mnist,
                                                            "location": _load_location}
        builtin = builtins[key]
        valid = _option_names(builtin)
        loader = builtin if key == "digits" else lambda **kw: builtin(data_dir, **kw)
    else:
        path = Path(source)
        if path.is_dir():
            loader, valid = lambda **kw: load_image_folder(path, **kw), _option_names(load_image_folder)
            if seed is not None and "sample_seed" not in options:
                options = {**options, "sample_seed": derive_seed(seed, "image folder sample")}
        elif path.suffix.lower() == ".npz":
            loader, valid = lambda **kw: load_npz(path, **kw), _option_names(load_npz)
        elif tabular_format(path, options.get("format")) is not None:
            loader, valid = lambda **kw: load_tabular(path, **kw), tabular_options()
        elif not path.exists():
            raise DataError(f"dataset {key!r} is neither a built-in ({', '.join(BUILTIN)}) nor an existing "
                            "path; give a .npz, .csv, .parquet or image folder path")
        else:
            raise DataError(f"cannot load {path}: use a .npz (x, y), a .csv / .parquet with a label column (or "
                            "option format: csv for another suffix), or a folder of class_name/*.png images")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise ConfigError(f"dataset {key!r} does not take option {unknown[0]!r}; its options are: {allowed}")
    return loader(**options)


__all__ = ["ArrayDataset", "check_class_labels", "data_dir_candidates", "find_data_file", "load_dataset",
           "load_image_folder", "load_npz", "read_npz", "read_text"]
