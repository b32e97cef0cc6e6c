"""Your own pre-trained image encoder as the audited target (``target:`` of a ``kind: encoder`` config).

The encoder is your torch class rebuilt from its state dict (:mod:`miaudit.utils.user_module`: the
class is imported only with ``trust_code: true``, the weights are read with ``weights_only``); it is
audited on your images: ``members`` (what it was pre-trained on) and ``nonmembers`` (the same
distribution, never seen), ``.npz`` files with ``x`` ``(n, C, H, W)`` in the form of the dataset's
images and optional ``ids``. The dataset then is the attacker's data: the shadow encoder is
pre-trained on part of it with the ``encoder`` recipe, which should mimic how yours was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.data.datasets import read_user_arrays, user_row_ids
from miaudit.encoder.target import EncoderTarget
from miaudit.errors import DataError
from miaudit.utils.fingerprint import module_fingerprint
from miaudit.utils.trusted_code import check_callable_spec
from miaudit.utils.user_module import checked_torch_module_spec, load_user_module

_WHERE = "config.target.torch_module"


@dataclass
class EncoderTargetConfig:
    """``torch_module: {path, class, kwargs}`` (images ``(n, C, H, W)`` -> embeddings ``(n, d)``), the
    opt-in ``trust_code: true``, and the ``members`` / ``nonmembers`` image files."""

    torch_module: dict[str, Any]
    members: str
    nonmembers: str
    trust_code: bool = False

    def __post_init__(self) -> None:
        self.torch_module = checked_torch_module_spec(self.torch_module, _WHERE)
        check_callable_spec(self.torch_module["class"], trust_code=self.trust_code, where=f"{_WHERE}.class",
                            trust_key="config.target.trust_code")

    @property
    def audited_files(self) -> str:
        return f"{Path(self.members).name} + {Path(self.nonmembers).name}"


@dataclass
class AuditedEncoder:
    """An audited encoder (yours, or one the tool pre-trained) and its audited images: ``x`` ``(n, C, H, W)``
    members first, ``membership`` and ``ids`` ``(n,)``, and what the report says about the encoder (``info``)."""

    target: EncoderTarget
    x: np.ndarray
    membership: np.ndarray
    ids: np.ndarray
    info: dict[str, Any]


def _read_images(path_str: str, key: str, image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(x, ids)`` of ``target.<key>``: finite numeric images shaped like the dataset's."""
    path, arrays = read_user_arrays(path_str, f"config.target.{key}", ("x",), "x (n, C, H, W) images")
    x = arrays["x"]
    if x.ndim != 4 or x.shape[1:] != tuple(image_shape) or len(x) == 0:
        raise DataError(f"config.target.{key}: x in {path} has shape {x.shape}, but the audit needs images "
                        f"(n, {', '.join(map(str, image_shape))}) like the dataset's, the shadow encoder's data")
    if not np.isfinite(x).all():
        raise DataError(f"config.target.{key}: x in {path} holds NaN or inf; clean the images first")
    ids = user_row_ids(arrays, len(x), key)
    if ids.shape != (len(x),):
        raise DataError(f"config.target.{key}: ids in {path} have shape {ids.shape}, expected ({len(x)},)")
    return x.astype(np.float32), ids


def load_user_encoder(config: EncoderTargetConfig, image_shape: tuple[int, ...]) -> AuditedEncoder:
    """Your encoder and its member and non-member images (one-line errors for every problem)."""
    members, member_ids = _read_images(config.members, "members", image_shape)
    nonmembers, nonmember_ids = _read_images(config.nonmembers, "nonmembers", image_shape)
    ids = np.concatenate([member_ids, nonmember_ids])
    if np.unique(ids).size != ids.size:
        raise DataError("config.target: image ids repeat across members and nonmembers; give unique 'ids' in the "
                        ".npz files (or none)")
    module = load_user_module(config.torch_module, _WHERE)
    spec = config.torch_module
    info = {"source": "torch_module", "model": spec["class"], "access": "embeddings", "path": spec["path"],
            "description": f"your encoder {spec['class']} from {Path(spec['path']).name}, audited on {len(members)} "
                           f"members ({Path(config.members).name}) and {len(nonmembers)} non-members "
                           f"({Path(config.nonmembers).name})",
            "n_parameters": int(sum(p.numel() for p in module.parameters())),
            "fingerprint": module_fingerprint(module)}
    return AuditedEncoder(EncoderTarget(module), np.concatenate([members, nonmembers]),
                       np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)], ids, info)


__all__ = ["AuditedEncoder", "EncoderTargetConfig", "load_user_encoder"]
