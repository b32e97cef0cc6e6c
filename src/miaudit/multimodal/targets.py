"""Dual-encoder targets: image and text embeddings (access = "embeddings") and the logit scale.

:class:`DualEncoderTarget` batches and validates; subclasses embed one batch:

- :class:`TrainedDualEncoder`: the small dual encoder miaudit trains (:mod:`miaudit.multimodal.train`);
- :class:`HFCLIPTarget`: a Hugging Face ``CLIPModel`` (any CLIP-like model whose class has
  ``get_image_features`` / ``get_text_features``) with its tokenizer, from a local folder or a hub id;
- :class:`OpenCLIPTarget`: an open_clip model (``open_clip.create_model_and_transforms``) by
  architecture name and pretrained tag or checkpoint file, or an ``hf-hub:org/name`` id.

Images come as float ``(n, 3, s, s)`` in [0, 1] at the dataset's size; loaded models resize them
(bilinear, antialiased) to their own input size and normalise them with their own mean and std.
Every embedding is L2-normalised here, so ``a . b`` is the cosine similarity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from miaudit.errors import ConfigError, SignalError, model_load_error
from miaudit.multimodal.model import DualEncoder, WordTokenizer
from miaudit.utils.device import resolve_device

#: OpenAI CLIP's image normalisation (used when a model folder does not say otherwise)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class DualEncoderTarget:
    """Normalised embeddings of images and captions, computed in batches and checked."""

    access = "embeddings"

    def __init__(self, *, batch_size: int = 256, description: str = ""):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.description = description

    @property
    def logit_scale(self) -> float:
        """``exp(s)`` of ``logits = exp(s) * cos``: the inverse temperature of the contrastive loss."""
        raise NotImplementedError

    def _image_batch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, emb: Any, n: int, what: str, start: int) -> np.ndarray:
        out = emb.detach().cpu().double().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb, np.float64)
        if out.ndim != 2 or out.shape[0] != n:
            raise SignalError(f"the model returned {what} embeddings of shape {out.shape} for {n} inputs; it must "
                              "return (n, d)")
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).any(axis=1).sum())
            raise SignalError(f"the model returned NaN or inf {what} embeddings for {bad} of {n} inputs (batch "
                              f"starting at {start}); check the model's weights and input scaling")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if (norms == 0).any():
            raise SignalError(f"the model returned an all-zero {what} embedding (batch starting at {start}); a cosine "
                              "similarity needs a non-zero vector")
        return out / norms

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """``(n, 3, s, s)`` floats in [0, 1] -> ``(n, d)`` unit vectors."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise SignalError(f"images must have shape (n >= 1, 3, H, W), got {x.shape}")
        chunks = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                xb = torch.from_numpy(x[i:i + self.batch_size])
                chunks.append(self._check(self._image_batch(xb), xb.shape[0], "image", i))
        return self._same_width(chunks, "image")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Captions -> ``(n, d)`` unit vectors."""
        texts = list(texts)
        if not texts:
            raise SignalError("no captions to embed")
        chunks = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = texts[i:i + self.batch_size]
                chunks.append(self._check(self._text_batch(batch), len(batch), "text", i))
        return self._same_width(chunks, "text")

    @staticmethod
    def _same_width(chunks: list[np.ndarray], what: str) -> np.ndarray:
        if len({c.shape[1] for c in chunks}) != 1:
            raise SignalError(f"the model's {what} embedding size changed between batches; it must be fixed")
        return np.concatenate(chunks)


class TrainedDualEncoder(DualEncoderTarget):
    """The dual encoder miaudit trains, with the word tokenizer it was trained with."""

    def __init__(self, model: DualEncoder, tokenizer: WordTokenizer, *, batch_size: int = 256, description: str = ""):
        super().__init__(batch_size=batch_size, description=description)
        self.model = model.eval()
        self.tokenizer = tokenizer

    @property
    def logit_scale(self) -> float:
        return self.model.logit_scale

    def _image_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.image_tower(x)

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.text_tower(torch.from_numpy(self.tokenizer.encode(texts)))


def _resize_normalise(x: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class HFCLIPTarget(DualEncoderTarget):
    """A Hugging Face CLIP model (``CLIPModel`` or a class with ``get_image_features`` /
    ``get_text_features`` and ``logit_scale``) and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, *, image_size: int, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, max_length: int | None = None, device: str = "cpu",
                 batch_size: int = 64, description: str = ""):
        super().__init__(batch_size=batch_size, description=description)
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                raise SignalError(f"{type(model).__name__} has no {method}(); load a CLIP-like dual encoder")
        self.device = resolve_device(device, where="target.device")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.max_length = max_length or int(getattr(getattr(model.config, "text_config", None),
                                                    "max_position_embeddings", 77))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, revision: str | None = None, local_files_only: bool = False,
                        device: str = "cpu", dtype: str = "float32", batch_size: int = 64) -> HFCLIPTarget:
        """``AutoModel`` + ``AutoTokenizer`` from a folder or hub id; image size from the model config, mean /
        std from ``preprocessor_config.json`` when the folder has one (else OpenAI CLIP's)."""
        try:
            import transformers
        except ImportError:
            raise ConfigError("Hugging Face CLIP targets need transformers; install miaudit[llm]") from None
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise ConfigError(f"target.dtype {dtype!r} is not allowed; choose {', '.join(dtypes)}")
        try:
            model = transformers.AutoModel.from_pretrained(name_or_path, revision=revision, dtype=dtypes[dtype],
                                                           local_files_only=local_files_only)
            tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, revision=revision,
                                                                   local_files_only=local_files_only)
        except Exception as exc:  # transformers, safetensors and torch raise many types for files they cannot load
            raise model_load_error("CLIP model", name_or_path, exc) from None
        vision = getattr(model.config, "vision_config", None)
        if vision is None or not hasattr(vision, "image_size"):
            raise ConfigError(f"{name_or_path!r} is a {type(model).__name__}, not a CLIP-like dual encoder (its config "
                              "has no vision_config.image_size)")
        mean, std = _processor_stats(name_or_path, revision, local_files_only)
        return cls(model, tokenizer, image_size=int(vision.image_size), mean=mean, std=std, device=device,
                   batch_size=batch_size, description=f"Hugging Face {type(model).__name__} {name_or_path}")

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().clamp(max=100.0))

    def _image_batch(self, x: torch.Tensor) -> torch.Tensor:
        pixels = _resize_normalise(x, self.image_size, self.mean, self.std)
        dtype = next(self.model.parameters()).dtype
        return _features(self.model.get_image_features(pixel_values=pixels.to(self.device, dtype)))

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**inputs))


def _features(out: Any) -> torch.Tensor:
    """Transformers 5 may return a model output object instead of a tensor; take its pooled embedding."""
    if isinstance(out, torch.Tensor):
        return out.float()
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value.float()
    raise SignalError(f"the CLIP model returned {type(out).__name__} without embeddings")


def _processor_stats(name_or_path: str, revision: str | None, local_files_only: bool
                     ) -> tuple[Sequence[float], Sequence[float]]:
    folder = Path(name_or_path)
    config_file = folder / "preprocessor_config.json"
    if not folder.is_dir():
        try:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(name_or_path, "preprocessor_config.json", revision=revision,
                                               local_files_only=local_files_only))
        except Exception:  # any hub failure: the model simply has no processor file
            return CLIP_MEAN, CLIP_STD
    if not config_file.is_file():
        return CLIP_MEAN, CLIP_STD
    stats = json.loads(config_file.read_text(encoding="utf-8"))
    return stats.get("image_mean", CLIP_MEAN), stats.get("image_std", CLIP_STD)


class OpenCLIPTarget(DualEncoderTarget):
    """An open_clip model (``encode_image`` / ``encode_text`` / ``logit_scale``) and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, *, image_size: int, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, device: str = "cpu", batch_size: int = 64, description: str = ""):
        super().__init__(batch_size=batch_size, description=description)
        self.device = resolve_device(device, where="target.device")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)

    @classmethod
    def from_pretrained(cls, model_name: str, *, pretrained: str | None = None, device: str = "cpu",
                        batch_size: int = 64) -> OpenCLIPTarget:
        """``open_clip.create_model_and_transforms(model_name, pretrained=...)``; ``model_name`` may be
        ``hf-hub:org/name`` (weights and config from the hub), ``pretrained`` a tag or a checkpoint file."""
        try:
            import open_clip
        except ImportError:
            raise ConfigError("open_clip targets need the open_clip_torch package; install "
                              "miaudit[multimodal]") from None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot load open_clip model {model_name!r} (pretrained={pretrained!r}): "
                              f"{str(exc).splitlines()[0]}; check the architecture name, tag or checkpoint "
                              "path") from None
        size = model.visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        normalise = [t for t in getattr(preprocess, "transforms", []) if type(t).__name__ == "Normalize"]
        mean, std = (normalise[0].mean, normalise[0].std) if normalise else (CLIP_MEAN, CLIP_STD)
        return cls(model, tokenizer, image_size=size, mean=mean, std=std, device=device, batch_size=batch_size,
                   description=f"open_clip {model_name}" + (f" ({pretrained})" if pretrained else ""))

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().clamp(max=100.0))

    def _image_batch(self, x: torch.Tensor) -> torch.Tensor:
        pixels = _resize_normalise(x, self.image_size, self.mean, self.std).to(self.device)
        return self.model.encode_image(pixels).float()

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float()


__all__ = ["CLIP_MEAN", "CLIP_STD", "DualEncoderTarget", "HFCLIPTarget", "OpenCLIPTarget", "TrainedDualEncoder"]
