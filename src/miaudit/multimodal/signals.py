"""What a dual encoder reveals about audited records, computed once per model and shared by every attack.

:class:`PairSignals` holds one model's unit-norm embeddings of the audited records (their images
and captions), of the attacker's gallery pairs, the model's logit scale, the caption texts, and,
when the attacker has one, the embeddings of a separate multimodal feature extractor (MFE,
M4I's feature-based attack). Attacks derive from it:

- :func:`pair_cosine`: ``cos(f(x_r), g(t_j))`` for every caption ``j`` of record ``r`` (Ko et al.);
- :func:`pair_contrastive_loss`: the symmetric InfoNCE loss of the pair against the gallery as
  negatives, ``(-log softmax_t + -log softmax_x) / 2`` at ``exp(s) * cos`` (Radford et al.);
- :func:`retrieve`: the captions the model ranks highest for each image among the record's own
  captions and the gallery's (the model's "output text" in M4I's sense).

:class:`MultimodalReference` is what the shadow-based attacks ``fit`` on: the shadow model's
signals on its own members and non-members, and a reference model's signals on the target's
audited records (for calibration).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miaudit.attacks.shadow import ShadowSet
from miaudit.errors import DataError, SignalError
from miaudit.multimodal.data import ImageTextDataset
from miaudit.multimodal.split import Records
from miaudit.multimodal.targets import DualEncoderTarget
from miaudit.utils.logs import progress as progress_bar


def _unit_rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise SignalError(f"{what} must be a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise SignalError(f"{what} contains NaN or inf; check the model's embeddings")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise SignalError(f"{what} has an all-zero row; a cosine similarity needs non-zero embeddings")
    return x / norms


@dataclass
class MFEEmbeddings:
    """The attacker's feature extractor on the same records: images ``(n, e)``, their captions ``(m, e)``,
    gallery captions ``(g, e)``."""

    image: np.ndarray
    text: np.ndarray
    gallery_text: np.ndarray

    def __post_init__(self) -> None:
        self.image = _unit_rows(self.image, "MFE image embeddings")
        self.text = _unit_rows(self.text, "MFE text embeddings")
        self.gallery_text = _unit_rows(self.gallery_text, "MFE gallery text embeddings")
        if not self.image.shape[1] == self.text.shape[1] == self.gallery_text.shape[1]:
            raise SignalError("MFE image and text embeddings must have the same width")


@dataclass
class PairSignals:
    """One model's view of ``n`` audited records with ``m`` captions and of ``g`` gallery pairs.

    ``ids`` ``(n,)``; ``image_emb`` ``(n, d)``; ``text_emb`` ``(m, d)`` with ``owner`` ``(m,)`` (record
    of each caption, every record has >= 1); ``captions`` (m texts); ``gallery_image_emb`` /
    ``gallery_text_emb`` ``(g, d)`` with ``gallery_captions`` (g texts); ``logit_scale`` > 0.
    Embeddings are normalised on construction.
    """

    ids: np.ndarray
    image_emb: np.ndarray
    text_emb: np.ndarray
    owner: np.ndarray
    captions: list[str]
    gallery_image_emb: np.ndarray
    gallery_text_emb: np.ndarray
    gallery_captions: list[str]
    logit_scale: float
    mfe: MFEEmbeddings | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids).astype(str)
        self.image_emb = _unit_rows(self.image_emb, "image embeddings")
        self.text_emb = _unit_rows(self.text_emb, "text embeddings")
        self.gallery_image_emb = _unit_rows(self.gallery_image_emb, "gallery image embeddings")
        self.gallery_text_emb = _unit_rows(self.gallery_text_emb, "gallery text embeddings")
        self.owner = np.asarray(self.owner, dtype=np.int64)
        n, m, g = self.image_emb.shape[0], self.text_emb.shape[0], self.gallery_text_emb.shape[0]
        if self.ids.shape != (n,):
            raise SignalError(f"{self.ids.size} record ids for {n} image embeddings")
        if self.owner.shape != (m,) or len(self.captions) != m:
            raise SignalError(f"{m} caption embeddings need {m} owners and {m} caption texts, got "
                              f"{self.owner.size} and {len(self.captions)}")
        if m and (self.owner.min() < 0 or self.owner.max() >= n or np.bincount(self.owner, minlength=n).min() == 0):
            raise SignalError("every record needs at least one caption and every caption a record in [0, n)")
        if self.gallery_image_emb.shape[0] != g or len(self.gallery_captions) != g:
            raise SignalError(f"the gallery needs as many images, caption embeddings and texts; got "
                              f"{self.gallery_image_emb.shape[0]}, {g} and {len(self.gallery_captions)}")
        widths = {self.image_emb.shape[1], self.text_emb.shape[1], self.gallery_image_emb.shape[1],
                  self.gallery_text_emb.shape[1]}
        if len(widths) != 1:
            raise SignalError(f"image and text embeddings must share one width, got widths {sorted(widths)}")
        if not np.isfinite(self.logit_scale) or self.logit_scale <= 0:
            raise SignalError(f"logit_scale must be a positive number, got {self.logit_scale}")
        if self.mfe is not None and (self.mfe.image.shape[0] != n or self.mfe.text.shape[0] != m
                                     or self.mfe.gallery_text.shape[0] != g):
            raise SignalError("the MFE embeddings must cover the same records, captions and gallery")

    def __len__(self) -> int:
        return int(self.image_emb.shape[0])


def per_record(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Mean of per-caption ``values`` ``(m,)`` over each record's captions -> ``(n,)``."""
    return np.bincount(owner, weights=values, minlength=n) / np.bincount(owner, minlength=n)


def pair_cosine(signals: PairSignals) -> np.ndarray:
    """``(m,)`` cosine similarity of each caption with its record's image."""
    return np.einsum("md,md->m", signals.image_emb[signals.owner], signals.text_emb)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def pair_contrastive_loss(signals: PairSignals) -> np.ndarray:
    """``(m,)`` symmetric InfoNCE loss of each (image, caption) pair with the gallery as negatives.

    Image -> text: the caption competes with the ``g`` gallery captions; text -> image: the image
    competes with the ``g`` gallery images; logits are ``logit_scale * cos``.
    """
    s = signals.logit_scale
    img = signals.image_emb[signals.owner]  # (m, d)
    positive = s * np.einsum("md,md->m", img, signals.text_emb)
    to_texts = np.concatenate([positive[:, None], s * img @ signals.gallery_text_emb.T], axis=1)
    to_images = np.concatenate([positive[:, None], s * signals.text_emb @ signals.gallery_image_emb.T], axis=1)
    return 0.5 * ((_logsumexp(to_texts, 1) - positive) + (_logsumexp(to_images, 1) - positive))


def retrieve(signals: PairSignals, top_k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The model's ``top_k`` captions for each record's image among its own captions and the gallery's.

    Returns ``(own, index)``, both ``(n, top_k)``: ``own`` True means ``index`` is a caption row of
    ``signals`` (one of the record's own captions), False a gallery row. Ties keep own captions first.
    """
    n, g = len(signals), signals.gallery_text_emb.shape[0]
    if not 1 <= top_k <= g:
        raise SignalError(f"top_k must be in [1, {g}] (the gallery size), got {top_k}")
    gallery_sim = signals.image_emb @ signals.gallery_text_emb.T  # (n, g)
    own_sim = pair_cosine(signals)
    own_idx, index = np.zeros((n, top_k), bool), np.zeros((n, top_k), np.int64)
    order_caps = np.argsort(signals.owner, kind="stable")
    bounds = np.searchsorted(signals.owner[order_caps], np.arange(n + 1))
    gallery_top = np.argsort(-gallery_sim, axis=1, kind="stable")[:, :top_k]
    for r in range(n):
        rows = order_caps[bounds[r]:bounds[r + 1]]
        sims = np.concatenate([own_sim[rows], gallery_sim[r, gallery_top[r]]])
        best = np.argsort(-sims, kind="stable")[:top_k]
        is_own = best < rows.size
        own_idx[r] = is_own
        from_gallery = gallery_top[r][np.maximum(best - rows.size, 0)]
        index[r] = np.where(is_own, rows[np.minimum(best, rows.size - 1)], from_gallery)
    return own_idx, index


def compute_pair_signals(target: DualEncoderTarget, dataset: ImageTextDataset, records: Records, gallery: Records,
                         *, mfe: DualEncoderTarget | None = None, progress: bool = False,
                         desc: str = "signals") -> PairSignals:
    """Embed the records' images and captions and the gallery with ``target`` (and ``mfe`` if given)."""
    if len(records) == 0 or len(gallery) == 0:
        raise DataError("signals need at least one audited record and one gallery pair")
    captions = [dataset.captions[j] for j in records.captions]
    gallery_captions = [dataset.captions[j] for j in gallery.captions]
    steps = [target, mfe] if mfe is not None else [target]
    out = []
    for model in progress_bar(steps, desc=desc, enabled=progress, leave=False):
        out.append((model.embed_images(dataset.pixels(records.image)), model.embed_texts(captions),
                    model.embed_images(dataset.pixels(gallery.image)), model.embed_texts(gallery_captions)))
    mfe_emb = MFEEmbeddings(out[1][0], out[1][1], out[1][3]) if mfe is not None else None
    image, text, gallery_image, gallery_text = out[0]
    return PairSignals(records.ids, image, text, records.owner, captions, gallery_image, gallery_text,
                       gallery_captions, target.logit_scale, mfe_emb)


class MultimodalShadow(ShadowSet[PairSignals]):
    """Shadow dual encoders' signals on their own records, with membership (True = trained on the pair)."""

    examples = "records"


@dataclass
class MultimodalReference:
    """What shadow-based attacks learn from.

    ``shadow``: shadow models' signals on their own audited records, with ``shadow_membership``
    (one bool array per shadow model); ``calibration``: a reference model that never trained on the
    target's audited records, evaluated on those same records (ids must match the target's).
    """

    shadow: list[PairSignals]
    shadow_membership: list[np.ndarray]
    calibration: PairSignals | None = None

    def __post_init__(self) -> None:
        if self.shadow or self.shadow_membership:  # checked as every kind's shadow data is
            self.shadow_membership = MultimodalShadow(self.shadow, self.shadow_membership).membership


__all__ = ["MFEEmbeddings", "MultimodalReference", "MultimodalShadow", "PairSignals", "compute_pair_signals",
           "pair_contrastive_loss", "pair_cosine", "per_record", "retrieve"]
