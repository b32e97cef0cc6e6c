"""Image-caption datasets: Flickr8k from the shared data folder and the user's own pair files.

An :class:`ImageTextDataset` holds ``n_images`` images and ``n_captions`` captions; caption ``j``
describes image ``caption_image[j]`` (Flickr8k: 5 human captions per image). Images are kept as
``uint8`` ``(n, 3, s, s)`` (a quarter of the float memory) and converted on demand by
:meth:`ImageTextDataset.pixels`.

Sources (:func:`load_image_text`):

- ``flickr8k``: the folder ``flickr8k/`` of the shared data (``flickr8k_96px_jpeg.npz``: JPEG bytes
  ``jpeg`` cut by ``offsets``, ``image_ids``; ``captions.jsonl``: one ``{"image_index", "caption"}``
  per line). Research use only: it is read in place, never copied.
- a folder with the same two files (any names: one ``.npz`` and ``captions.jsonl``);
- a ``.npz`` of pairs: ``images`` ``(n, H, W, 3)`` uint8 (or ``(n, 3, H, W)``, or floats in
  [0, 1]) and ``captions`` ``(n,)`` strings, row ``i`` of one describing row ``i`` of the other;
  optional ``image_ids`` ``(n,)``.

Either file format may carry ``membership`` ``(n_images,)`` bool: which images a model the user
brings was trained on (the ground truth of an audit of a loaded CLIP model). Decoded images are
cached in memory (per file, modification time and size), never on disk.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from miaudit.data.datasets import find_data_file, read_npz
from miaudit.errors import ConfigError, DataError

FLICKR8K_DIR = "flickr8k"
FLICKR8K_IMAGES = "flickr8k_96px_jpeg.npz"
CAPTIONS_FILE = "captions.jsonl"


@dataclass
class ImageTextDataset:
    """Images ``(n_images, 3, s, s)`` uint8 and captions; ``caption_image`` ``(n_captions,)`` maps each
    caption to its image. ``membership`` ``(n_images,)`` bool or None: known training membership."""

    images: np.ndarray
    captions: list[str]
    caption_image: np.ndarray
    image_ids: np.ndarray
    name: str
    membership: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{self.name}: images must be uint8 of shape (n, 3, H, W), got {self.images.dtype} "
                            f"{self.images.shape}")
        n = self.images.shape[0]
        self.image_ids = np.asarray(self.image_ids).astype(str)
        if n == 0:
            raise DataError(f"{self.name}: the dataset has no images; point the config at a non-empty dataset")
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)
        if self.caption_image.shape != (len(self.captions),):
            raise DataError(f"{self.name}: {len(self.captions)} captions but {self.caption_image.size} image indices; "
                            "give one image index per caption")
        if self.caption_image.size and (self.caption_image.min() < 0 or self.caption_image.max() >= n):
            bad = int(self.caption_image[(self.caption_image < 0) | (self.caption_image >= n)][0])
            raise DataError(f"{self.name}: a caption refers to image {bad} but there are only {n} images; the caption "
                            "file belongs to a different (larger) image file")
        counts = np.bincount(self.caption_image, minlength=n)
        if (counts == 0).any():
            missing = np.flatnonzero(counts == 0)
            raise DataError(f"{self.name}: {missing.size} of {n} images have no caption (first: "
                            f"{self.image_ids[missing[0]]}); add their captions or remove those images")
        empty = [j for j, c in enumerate(self.captions) if not c.strip()]
        if empty:
            image = self.image_ids[self.caption_image[empty[0]]]
            raise DataError(f"{self.name}: caption {empty[0]} (of image {image}) is empty ({len(empty)} empty in "
                            "all); remove or fill them")
        if self.image_ids.shape != (n,):
            raise DataError(f"{self.name}: {self.image_ids.size} image ids for {n} images; give one id per image")
        if self.membership is not None:
            self.membership = np.asarray(self.membership)
            if self.membership.dtype.kind in "iu" and np.isin(self.membership, (0, 1)).all():
                self.membership = self.membership.astype(bool)
            if self.membership.shape != (n,) or self.membership.dtype != bool:
                raise DataError(f"{self.name}: 'membership' must hold one bool (or 0/1) per image ({n}), got "
                                f"{self.membership.dtype} {self.membership.shape}")

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def pixels(self, index: np.ndarray) -> np.ndarray:
        """Images ``index`` as float32 ``(k, 3, s, s)`` in [0, 1]."""
        return self.images[np.asarray(index, dtype=np.int64)].astype(np.float32) / 255.0

    def captions_of(self) -> list[np.ndarray]:
        """For each image, the indices of its captions (in file order)."""
        order = np.argsort(self.caption_image, kind="stable")
        bounds = np.searchsorted(self.caption_image[order], np.arange(self.n_images + 1))
        return [order[bounds[i]:bounds[i + 1]] for i in range(self.n_images)]


# -- decoding ---------------------------------------------------------------------------------
def _resize(image: object, size: int) -> np.ndarray:
    from PIL import Image

    assert isinstance(image, Image.Image)
    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_jpegs(jpeg: np.ndarray, offsets: np.ndarray, size: int, *, where: str = "images") -> np.ndarray:
    """JPEG files concatenated in ``jpeg`` (uint8), cut by ``offsets`` ``(n + 1,)`` -> ``(n, 3, size, size)`` uint8."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((offsets.size - 1, 3, size, size), dtype=np.uint8)
    for i in range(offsets.size - 1):
        try:
            with Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale >= size (faster)
                out[i] = _resize(image, size)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{where}: image {i} does not decode ({exc}); re-encode it as JPEG or PNG") from None
    return out


def _check_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 1024:
        raise ConfigError(f"dataset.image_size must be an integer in [8, 1024], got {image_size!r}")


@lru_cache(maxsize=4)
def _decoded(path: str, mtime_ns: int, n_bytes: int, image_size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decoded images of a JPEG-bytes ``.npz``, its image ids and membership if any (memoised on path, mtime
    and size)."""
    arrays = read_npz(path)
    missing = [k for k in ("jpeg", "offsets") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks array(s) {', '.join(missing)} (it has {', '.join(arrays)}); an image file "
                        "needs 'jpeg' (concatenated JPEG bytes) and 'offsets' (n + 1 boundaries)")
    jpeg, offsets = arrays["jpeg"], np.asarray(arrays["offsets"], dtype=np.int64)
    if jpeg.dtype != np.uint8 or jpeg.ndim != 1 or offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 \
            or offsets[-1] != jpeg.size or (np.diff(offsets) <= 0).any():
        raise DataError(f"{path}: 'offsets' must rise strictly from 0 to len(jpeg) = {jpeg.size} and 'jpeg' be 1-D "
                        "uint8; rebuild the file")
    n = offsets.size - 1
    ids = arrays.get("image_ids", np.array([f"image_{i}" for i in range(n)]))
    if ids.shape != (n,):
        raise DataError(f"{path}: {ids.size} image_ids for {n} images (offsets); the pair counts do not match, "
                        "give one id per image")
    return decode_jpegs(jpeg, offsets, image_size, where=str(path)), ids.astype(str), arrays.get("membership")


def _cached_decode(path: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    stat = path.stat()
    return _decoded(str(path), stat.st_mtime_ns, stat.st_size, image_size)


def read_captions(path: Path) -> tuple[list[str], np.ndarray]:
    """``captions.jsonl``: ``(captions, image_index)``; a one-line error naming the first bad line."""
    captions, index = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                captions.append(str(row["caption"]).strip())
                index.append(int(row["image_index"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise DataError(f"{path}:{line_no}: expected a JSON object with 'image_index' (int) and 'caption' "
                                "(string)") from None
    if not captions:
        raise DataError(f"{path} has no captions; write one JSON line per caption")
    return captions, np.asarray(index, dtype=np.int64)


def _load_folder(folder: Path, name: str, image_size: int) -> ImageTextDataset:
    npz_files = sorted(folder.glob("*.npz"))
    captions_path = folder / CAPTIONS_FILE
    if not captions_path.is_file():
        what = f"images ({npz_files[0].name})" if npz_files else "no images either"
        raise DataError(f"{folder} has {what} but no {CAPTIONS_FILE}; images without captions cannot be paired: "
                        "add one JSON line per caption")
    if not npz_files:
        raise DataError(f"{folder} has a caption file ({CAPTIONS_FILE}) but no images (.npz of JPEG bytes); put the "
                        "image file beside it or fix --data-dir")
    if len(npz_files) > 1 and (folder / FLICKR8K_IMAGES).is_file():
        npz_files = [folder / FLICKR8K_IMAGES]
    if len(npz_files) > 1:
        raise DataError(f"{folder} has {len(npz_files)} .npz files; keep exactly one image file beside {CAPTIONS_FILE}")
    images, ids, membership = _cached_decode(npz_files[0], image_size)
    captions, index = read_captions(captions_path)
    return ImageTextDataset(images, captions, index, ids, name, membership)


def _as_uint8_chw(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim != 4:
        raise DataError(f"{path}: 'images' must be 4-D (n, H, W, 3) or (n, 3, H, W), got shape {images.shape}")
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.transpose(0, 3, 1, 2)
    if images.shape[1] != 3:
        raise DataError(f"{path}: 'images' must have 3 colour channels, got shape {images.shape}")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    values = np.asarray(images, dtype=np.float64)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise DataError(f"{path}: float 'images' must be finite and in [0, 1]; or save uint8 pixels")
    return np.round(values * 255).astype(np.uint8)


def _resize_array(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return np.stack([_resize(Image.fromarray(im.transpose(1, 2, 0)), size) for im in images])


def load_pair_npz(path: str | Path, *, image_size: int = 32) -> ImageTextDataset:
    """A ``.npz`` of pairs: ``images`` and ``captions`` row by row (module doc)."""
    path = Path(path)
    arrays = read_npz(path)
    if "captions" not in arrays:
        raise DataError(f"{path} has no 'captions' array (it has {', '.join(arrays)}); images without captions "
                        "cannot be audited as pairs: save captions=<(n,) strings>")
    if "images" not in arrays:
        raise DataError(f"{path} has captions but no 'images' array (it has {', '.join(arrays)}); save "
                        "images=<(n, H, W, 3) uint8> beside them")
    images, captions = _as_uint8_chw(arrays["images"], path), arrays["captions"]
    if captions.ndim != 1 or captions.dtype.kind not in "US":
        raise DataError(f"{path}: 'captions' must be a 1-D array of strings, got {captions.dtype} {captions.shape}")
    if captions.size != images.shape[0]:
        raise DataError(f"{path}: mismatched pair counts, {images.shape[0]} images but {captions.size} captions; "
                        "row i of 'captions' must describe row i of 'images'")
    n = images.shape[0]
    ids = arrays.get("image_ids", np.array([f"{path.stem}_{i}" for i in range(n)]))
    if ids.shape != (n,):
        raise DataError(f"{path}: mismatched pair counts, {n} images but {ids.size} image_ids")
    return ImageTextDataset(_resize_array(images, image_size), [str(c).strip() for c in captions],
                            np.arange(n), ids, path.stem, arrays.get("membership"))




def load_image_text(source: str | Path, *, data_dir: str | Path | None = None, image_size: int = 32,
                    limit: int | None = None) -> ImageTextDataset:
    """Load ``source`` ("flickr8k", a folder, or a pair ``.npz``) with images resized to ``image_size``;
    ``limit`` keeps the first ``limit`` images and their captions."""
    _check_size(image_size)
    if str(source) == "flickr8k":
        folder = find_data_file(FLICKR8K_DIR, data_dir, folder=True)
        if not (folder / FLICKR8K_IMAGES).is_file():
            caption_note = f"a caption file ({CAPTIONS_FILE})" if (folder / CAPTIONS_FILE).is_file() else "no captions"
            raise DataError(f"{folder} has {caption_note} but not the images {FLICKR8K_IMAGES}; restore the image "
                            "file or point --data-dir at a complete copy")
        dataset = _load_folder(folder, "flickr8k", image_size)
    else:
        path = Path(source)
        if data_dir is not None and not path.is_absolute() and not path.exists():
            path = Path(data_dir) / path
        if path.is_dir():
            dataset = _load_folder(path, path.name, image_size)
        elif path.suffix == ".npz" and path.is_file():
            dataset = load_pair_npz(path, image_size=image_size)
        else:
            raise ConfigError(f"dataset.source {str(source)!r} is neither 'flickr8k', a folder with an image .npz and "
                              f"{CAPTIONS_FILE}, nor a .npz of image-caption pairs that exists")
    return _limit(dataset, limit)


def _limit(dataset: ImageTextDataset, limit: int | None) -> ImageTextDataset:
    if limit is None:
        return dataset
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"dataset.limit must be a positive integer, got {limit!r}")
    if limit >= dataset.n_images:
        return dataset
    keep = dataset.caption_image < limit
    return ImageTextDataset(dataset.images[:limit], [c for c, k in zip(dataset.captions, keep) if k],
                            dataset.caption_image[keep], dataset.image_ids[:limit], dataset.name,
                            None if dataset.membership is None else dataset.membership[:limit])


__all__ = ["ImageTextDataset", "decode_jpegs", "load_image_text", "load_pair_npz", "read_captions"]
