"""Label-only robustness signals: how firmly a model keeps the right label around an input.

Choquette-Choo, Tramèr, Carlini & Papernot, "Label-Only Membership Inference Attacks" (ICML 2021):
a model is more robust around its training points, so an attacker who sees only predicted labels
can still tell members apart by querying perturbed copies of an input. From a label-only query
function ``x (m, ...) -> predicted labels (m,)`` (:class:`LabelQuery` wraps any model or target)
this module computes, per example:

- **augmentation** ``(n, k)``: 1 where view ``j`` is classified correctly. Images: translations by
  ``(dy, dx)`` with ``|dy| + |dx| <= max_shift`` (edge pixels repeated, as ``scipy.ndimage.shift``
  with ``mode="nearest"`` in the authors' code; ``max_shift=1`` gives their 4d+1 = 5 views),
  optionally each also mirrored. Tabular data: ``n_views`` fixed random perturbations of
  ``n_features`` features each (bits flipped for binary data, Gaussian noise otherwise). View 0 is
  always the unperturbed input.
- **noise** ``(n, s)``: fraction of ``n_samples`` noisy copies classified correctly at each noise
  level: Gaussian noise of standard deviation ``level`` (clipped to ``bounds``), or, for binary
  data, Bernoulli bit flips with probability ``level / d`` (``level`` = expected number of flipped
  features; the authors' ``p = k / d``). 0 where the clean prediction is wrong, as in the paper.
- **boundary distance** ``(n,)``: an L2 distance to the decision boundary found with a bounded
  query budget (:mod:`miaudit.classifier.signals.boundary`); 0 where the clean prediction is wrong. Other
  inputs of ``x`` whose labels the clean queries revealed serve as free starting points
  (``n_anchors``), so an example's distance depends on ``x``, though not on the chunking.

Every input sent to the model is counted per example (``LabelOnlySignals.queries``) and the
wall-clock time is reported (``seconds``). Random choices come from ``seed`` and, per example, from
its index, so an example's signal does not depend on how the examples are split into chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import nn

from miaudit.classifier.training.loop import predict_logits
from miaudit.errors import ConfigError, DataError, SignalError
from miaudit.utils.logs import progress as progress_bar

Perturbation = Literal["auto", "gaussian", "bitflip"]
PERTURBATIONS = ("auto", "gaussian", "bitflip")
#: noise levels used when none are given, per resolved perturbation
DEFAULT_LEVELS = {"gaussian": (0.05, 0.1, 0.2, 0.3), "bitflip": (1.0, 2.0, 5.0, 10.0)}


# -- label-only access ------------------------------------------------------------------------
class LabelQuery:
    """Label-only access to a model: ``query(x (m, ...)) -> predicted labels (m,)`` int64, every input counted.

    ``model``: a ``torch.nn.Module`` (argmax of its logits), a target with ``outputs`` (e.g.
    ``TorchClassifierTarget``, ``SklearnTarget``, ``BlackBoxTarget``; its predicted labels), or a
    callable returning labels ``(m,)``. ``n_queries`` counts the inputs sent so far.
    """

    def __init__(self, model: Any, *, batch_size: int = 4096):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self._predict = _label_function(model)
        self.batch_size = batch_size
        self.n_queries = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        answers = []
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            labels = np.asarray(self._predict(chunk))
            if labels.shape != (len(chunk),):
                raise SignalError(f"label query returned shape {labels.shape} for {len(chunk)} inputs; a label-only "
                                  "query must return one class index per input (wrap scores with BlackBoxTarget)")
            if not np.isfinite(labels).all() or np.any(np.mod(labels, 1) != 0) or np.any(labels < 0):
                raise SignalError("label query returned values that are not class indices >= 0")
            answers.append(labels.astype(np.int64))
        self.n_queries += len(x)
        return np.concatenate(answers) if answers else np.empty(0, np.int64)


def _label_function(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(model, LabelQuery):
        return model._predict
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if isinstance(module, nn.Module):
        return lambda x: predict_logits(module, x).argmax(axis=1)
    if hasattr(model, "outputs"):
        return lambda x: model.outputs(x, np.zeros(len(x), np.int64)).predicted
    if callable(model):
        return model
    raise ConfigError(f"cannot query {type(model).__name__} for labels; give a torch module, a target with "
                      "outputs(), or a callable x -> predicted labels")


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentationConfig:
    """Augmented views (see the module docstring); ``perturbation`` only matters for tabular data."""

    max_shift: int = 1
    flip: bool = False
    n_views: int = 8
    n_features: int = 2
    sigma: float = 0.1
    perturbation: Perturbation = "auto"

    def __post_init__(self) -> None:
        _check_int("max_shift", self.max_shift, 0)
        _check_int("n_views", self.n_views, 0)
        _check_int("n_features", self.n_features, 0)
        if not self.sigma >= 0:
            raise ConfigError(f"augmentation sigma must be >= 0, got {self.sigma}")
        _check_perturbation(self.perturbation)


@dataclass(frozen=True)
class NoiseConfig:
    """``levels``: Gaussian standard deviations, or expected numbers of flipped bits (None: defaults)."""

    levels: tuple[float, ...] | None = None
    n_samples: int = 20
    perturbation: Perturbation = "auto"

    def __post_init__(self) -> None:
        _check_int("n_samples", self.n_samples, 1)
        _check_perturbation(self.perturbation)
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))
            if not self.levels or any(not v > 0 for v in self.levels):
                raise ConfigError(f"noise levels must be a non-empty list of numbers > 0, got {list(self.levels)}")


@dataclass(frozen=True)
class BoundaryConfig:
    """Decision-boundary search (:mod:`miaudit.classifier.signals.boundary`); ``max_queries`` per example, clean
    query included."""

    max_queries: int = 300
    n_directions: int = 10
    n_binary_steps: int = 15
    n_grad_samples: int = 50
    max_halvings: int = 8
    max_radius: float | None = None
    n_anchors: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.max_queries, bool) or not isinstance(self.max_queries, (int, np.integer)) \
                or self.max_queries < 1:
            raise ConfigError(f"boundary max_queries={self.max_queries!r} must be an integer >= 1 (the query budget "
                              "per example, the clean query included)")
        for name, low in (("n_directions", 1), ("n_binary_steps", 1), ("n_grad_samples", 2), ("max_halvings", 0),
                          ("n_anchors", 0)):
            _check_int(name, getattr(self, name), low)
        if self.max_radius is not None and not self.max_radius > 0:
            raise ConfigError(f"boundary max_radius must be > 0, got {self.max_radius}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")


def _check_perturbation(value: str) -> None:
    if value not in PERTURBATIONS:
        raise ConfigError(f"perturbation {value!r} is not allowed; choose {', '.join(PERTURBATIONS)}")


def check_bounds(bounds: Sequence[float] | None) -> tuple[float, float] | None:
    """``(low, high)`` with low < high, or None (unbounded inputs)."""
    if bounds is None:
        return None
    if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
        raise ConfigError(f"bounds must be [low, high] with low < high, or null for unbounded inputs; got {bounds!r}")
    return float(bounds[0]), float(bounds[1])


def resolve_perturbation(x: np.ndarray, perturbation: str) -> str:
    """"auto" -> "bitflip" when every input value is 0 or 1, else "gaussian"."""
    if perturbation != "auto":
        return perturbation
    return "bitflip" if np.isin(x, (0.0, 1.0)).all() else "gaussian"


# -- signals ----------------------------------------------------------------------------------
@dataclass
class LabelOnlySignals:
    """One model's label-only signals on ``n`` examples; parts not requested are None.

    ``labels`` ``(n,)`` true labels; ``predictions`` ``(n,)`` labels predicted on the clean inputs;
    ``augmentation`` ``(n, k)`` 0/1 correctness per view (``augmentation_names``, view 0 = clean);
    ``noise`` ``(n, s)`` fraction correct per level (``noise_levels``); ``boundary_distance`` ``(n,)``
    L2 distance (0 if misclassified) with ``boundary_censored`` ``(n,)`` True where no adversarial
    point was found within the budget (distance = the search radius); ``queries`` ``(n,)`` inputs
    sent per example for all parts; ``boundary_queries`` ``(n,)`` those of the boundary search
    (clean query included); ``seconds`` wall-clock time.
    """

    labels: np.ndarray
    predictions: np.ndarray
    queries: np.ndarray
    seconds: float = 0.0
    augmentation: np.ndarray | None = None
    augmentation_names: tuple[str, ...] = ()
    noise: np.ndarray | None = None
    noise_levels: tuple[float, ...] = ()
    boundary_distance: np.ndarray | None = None
    boundary_censored: np.ndarray | None = None
    boundary_queries: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = self.labels.size
        if self.labels.ndim != 1 or n == 0:
            raise SignalError(f"labels must be a non-empty 1-D array, got shape {self.labels.shape}")
        self.predictions = np.asarray(self.predictions, dtype=np.int64)
        self.queries = np.asarray(self.queries, dtype=np.int64)
        for name in ("predictions", "queries", "boundary_distance", "boundary_censored", "boundary_queries"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise SignalError(f"{name} has shape {np.shape(value)}, expected ({n},)")
        for name, columns in (("augmentation", self.augmentation_names), ("noise", self.noise_levels)):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.ndim != 2 or value.shape[0] != n or value.shape[1] < 1:
                raise SignalError(f"{name} has shape {value.shape}, expected ({n}, k) with k >= 1")
            if columns and len(columns) != value.shape[1]:
                raise SignalError(f"{name} has {value.shape[1]} columns but {len(columns)} names")
            if not np.isfinite(value).all():
                raise SignalError(f"{name} contains NaN or inf")
            setattr(self, name, value)
        if self.boundary_distance is not None:
            self.boundary_distance = np.asarray(self.boundary_distance, dtype=np.float64)
            if not np.isfinite(self.boundary_distance).all() or (self.boundary_distance < 0).any():
                raise SignalError("boundary distances must be finite and >= 0")

    def __len__(self) -> int:
        return self.labels.size

    @property
    def correctness(self) -> np.ndarray:
        """``(n,)`` 1.0 where the clean prediction is right (the gap attack's signal)."""
        return (self.predictions == self.labels).astype(np.float64)

    @property
    def queries_used(self) -> int:
        """Total inputs sent to the model."""
        return int(self.queries.sum())

    def require(self, part: str, attack: str) -> np.ndarray:
        """The array of ``part`` ("augmentation", "noise", "boundary_distance"); SignalError if not computed."""
        value = getattr(self, part)
        if value is None:
            raise SignalError(f"attack {attack!r} needs the {part} signal, which these label-only signals lack; "
                              f"compute them with label_only_signals(..., {part.split('_')[0]}=...)")
        return value

    def cost(self) -> dict[str, float]:
        """Query cost: mean / max queries per example, total, seconds, seconds per example."""
        n = len(self)
        out = {"n_examples": n, "queries_total": self.queries_used,
               "queries_per_example_mean": float(self.queries.mean()),
               "queries_per_example_max": int(self.queries.max()), "seconds": round(self.seconds, 3),
               "seconds_per_example": self.seconds / n}
        if self.boundary_queries is not None:
            out["boundary_queries_per_example_mean"] = float(self.boundary_queries.mean())
        if self.boundary_censored is not None:
            out["boundary_censored"] = int(self.boundary_censored.sum())
        return out


# -- augmentations ----------------------------------------------------------------------------
def shift_images(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate images ``(m, ..., H, W)`` by ``(dy, dx)`` pixels (down / right positive), repeating edge pixels."""
    h, w = x.shape[-2:]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return x[..., rows, :][..., cols]


class Augmenter:
    """The fixed augmented views of an input array; ``views(x) -> list of arrays shaped like x``, view 0 = x."""

    def __init__(self, config: AugmentationConfig, input_shape: tuple[int, ...], perturbation: str, seed: int):
        self.config = config
        self.image = len(input_shape) >= 2
        self.perturbation = perturbation
        if self.image:
            d = config.max_shift
            offsets = [(dy, dx) for dy in range(-d, d + 1) for dx in range(-d, d + 1) if abs(dy) + abs(dx) <= d]
            offsets.sort(key=lambda o: (abs(o[0]) + abs(o[1]), o))  # identity first
            self.specs = [(False, o) for o in offsets] + ([(True, o) for o in offsets] if config.flip else [])
            self.names = tuple(("flip+" if f else "") + f"shift({dy},{dx})" for f, (dy, dx) in self.specs)
            if len(self.specs) < 2:
                raise ConfigError("augmentation settings produce identical views (only the unperturbed image); "
                                  "use max_shift >= 1 or flip=true")
        else:
            n_features = int(np.prod(input_shape))
            if config.n_views < 1 or config.n_features < 1 or (perturbation == "gaussian" and config.sigma == 0):
                raise ConfigError("augmentation settings produce identical views (nothing is perturbed); use "
                                  "n_views >= 1, n_features >= 1 and, for continuous features, sigma > 0")
            if config.n_features > n_features:
                raise ConfigError(f"augmentation n_features={config.n_features} exceeds the {n_features} input "
                                  "features")
            rng = np.random.default_rng([seed, 0])
            self.feature_sets = [rng.choice(n_features, config.n_features, replace=False)
                                 for _ in range(config.n_views)]
            self.offsets = [config.sigma * rng.standard_normal(config.n_features) for _ in range(config.n_views)]
            self.names = ("clean",) + tuple(f"{perturbation}{j}" for j in range(config.n_views))

    def views(self, x: np.ndarray) -> list[np.ndarray]:
        if self.image:
            out = []
            for flip, (dy, dx) in self.specs:
                view = x[..., ::-1] if flip else x
                out.append(shift_images(view, dy, dx) if (dy, dx) != (0, 0) else np.array(view))
            return out
        flat = x.reshape(len(x), -1)
        out = [x]
        for features, offset in zip(self.feature_sets, self.offsets):
            view = flat.copy()
            flipped = 1.0 - view[:, features] if self.perturbation == "bitflip" else view[:, features] + offset
            view[:, features] = flipped
            out.append(view.reshape(x.shape))
        return out

    def check_distinct(self, x: np.ndarray) -> None:
        """ConfigError if a view equals another one on every input of ``x`` (e.g. shifts of constant images)."""
        views = self.views(x)
        for j in range(1, len(views)):
            for i in range(j):
                if np.array_equal(views[i], views[j]):
                    raise ConfigError(f"augmentation views {self.names[i]!r} and {self.names[j]!r} are identical on "
                                      f"all {len(x)} checked inputs; change max_shift / flip / n_features / sigma")


# -- computation ------------------------------------------------------------------------------
def _example_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _noise_correctness(query: LabelQuery, x: np.ndarray, y: np.ndarray, correct: np.ndarray, offset: int,
                       config: NoiseConfig, levels: tuple[float, ...], perturbation: str,
                       bounds: tuple[float, float] | None, seed: int, queries: np.ndarray) -> np.ndarray:
    """``(c, s)`` fraction of noisy copies classified correctly (0 where ``correct`` is False)."""
    flat = x.reshape(len(x), -1)
    d = flat.shape[1]
    out = np.zeros((len(x), len(levels)))
    rows = np.flatnonzero(correct)
    if rows.size == 0:
        return out
    k = config.n_samples
    for j, level in enumerate(levels):
        copies = []
        for i in rows:
            rng = _example_rng(seed, 10 + j, offset + i)
            base = np.broadcast_to(flat[i], (k, d))
            if perturbation == "bitflip":
                flips = rng.random((k, d)) < min(level / d, 1.0)
                noisy = np.where(flips, 1.0 - base, base)
            else:
                noisy = base + level * rng.standard_normal((k, d))
                if bounds is not None:
                    noisy = np.clip(noisy, *bounds)
            copies.append(noisy)
        labels = query(np.concatenate(copies).reshape(rows.size * k, *x.shape[1:])).reshape(rows.size, k)
        out[rows, j] = (labels == y[rows, None]).mean(axis=1)
        queries[rows] += k
    return out


def label_only_signals(model: Any, x: np.ndarray, y: np.ndarray, *,
                       augmentation: AugmentationConfig | None = None, noise: NoiseConfig | None = None,
                       boundary: BoundaryConfig | None = None, bounds: Sequence[float] | None = (0.0, 1.0),
                       seed: int = 0, chunk_size: int = 128, progress: bool = False) -> LabelOnlySignals:
    """Label-only signals of ``model`` on inputs ``x`` ``(n, ...)`` with true labels ``y`` ``(n,)``.

    ``model``: anything :class:`LabelQuery` accepts (only predicted labels are used). Give the
    parts to compute (``augmentation``, ``noise``, ``boundary``); the clean prediction is always
    queried once per example. ``bounds``: the valid input range (noisy and adversarial inputs are
    clipped to it; inputs outside it are an error); None for unbounded inputs. Examples are
    processed ``chunk_size`` at a time.
    """
    from miaudit.classifier.signals.boundary import boundary_search

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim < 2 or y.shape != (len(x),) or len(x) == 0:
        raise DataError(f"inputs of shape {x.shape} and labels of shape {y.shape}: give x (n, ...) and y (n,), n >= 1")
    if not np.isfinite(x).all():
        raise DataError("inputs contain NaN or inf")
    box = check_bounds(bounds)
    if box is not None and (x.min() < box[0] or x.max() > box[1]):
        raise DataError(f"inputs range over [{x.min():.3g}, {x.max():.3g}], outside bounds {list(box)}; set bounds to "
                        "the valid input range, or null for unbounded inputs")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    query = model if isinstance(model, LabelQuery) else LabelQuery(model)
    augmenter: Augmenter | None = None
    if augmentation is not None:
        kind = resolve_perturbation(x, augmentation.perturbation)
        augmenter = Augmenter(augmentation, x.shape[1:], kind, seed)
        augmenter.check_distinct(x[:256])
    levels: tuple[float, ...] = ()
    noise_kind = ""
    if noise is not None:
        noise_kind = resolve_perturbation(x, noise.perturbation)
        levels = noise.levels or DEFAULT_LEVELS[noise_kind]

    n = len(x)
    start = time.perf_counter()
    predictions = np.empty(n, np.int64)
    queries = np.zeros(n, np.int64)
    # every part's arrays (no columns for a part not asked for; such a part is returned as None)
    aug = np.empty((n, len(augmenter.names) if augmenter else 0))
    noisy = np.empty((n, len(levels)))
    distance, censored, b_queries = np.empty(n), np.zeros(n, bool), np.zeros(n, np.int64)
    predictions[:] = query(x)  # the clean query, shared by every part
    queries += 1
    anchors = None
    if boundary is not None and boundary.n_anchors:
        chosen = np.sort(np.random.default_rng([seed, 3]).permutation(n)[:boundary.n_anchors])
        anchors = x[chosen].reshape(len(chosen), -1), predictions[chosen]
    for lo in progress_bar(range(0, n, chunk_size), desc="label-only queries", enabled=progress, unit="chunk"):
        part = slice(lo, min(lo + chunk_size, n))
        xc, yc = x[part], y[part]
        correct = predictions[part] == yc
        if augmenter is not None:
            views = augmenter.views(xc)
            aug[part, 0] = correct
            for j, view in enumerate(views[1:], start=1):
                aug[part, j] = query(view) == yc
            queries[part] += len(views) - 1
        if noise is not None:
            q = np.zeros(len(xc), np.int64)
            noisy[part] = _noise_correctness(query, xc, yc, correct, lo, noise, levels, noise_kind, box, seed, q)
            queries[part] += q
        if boundary is not None:
            result = boundary_search(query, xc, yc, correct, boundary, box, seed=seed, offset=lo, anchors=anchors)
            distance[part], censored[part], b_queries[part] = result
            queries[part] += b_queries[part] - 1  # the clean query is already counted
    seconds = time.perf_counter() - start
    info = {}
    if noise is not None:
        info["noise_perturbation"] = noise_kind
    if augmenter is not None:
        info["augmentation_perturbation"] = "spatial" if augmenter.image else augmenter.perturbation
    searched = boundary is not None
    return LabelOnlySignals(y, predictions, queries, seconds, augmentation=aug if augmenter else None,
                            augmentation_names=augmenter.names if augmenter else (),
                            noise=noisy if noise is not None else None, noise_levels=levels,
                            boundary_distance=distance if searched else None,
                            boundary_censored=censored if searched else None,
                            boundary_queries=b_queries if searched else None, info=info)


__all__ = ["AugmentationConfig", "Augmenter", "BoundaryConfig", "DEFAULT_LEVELS", "LabelOnlySignals", "LabelQuery",
           "NoiseConfig", "check_bounds", "label_only_signals", "resolve_perturbation", "shift_images"]
