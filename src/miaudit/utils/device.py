"""Compute devices named in configs, checked before anything is moved onto them.

``resolve_device("cuda", where="model.device")`` returns a ``torch.device`` or raises a one-line
:class:`~miaudit.errors.ConfigError` that names the config key: an unknown device string, CUDA
without a CUDA build or GPU, a GPU index past the last GPU, or Apple MPS where it is unavailable.
``"auto"`` picks the first GPU when there is one, else the CPU.
"""

from __future__ import annotations

from typing import Any


def resolve_device(device: str, *, where: str = "device") -> Any:
    """The ``torch.device`` ``device`` names ("cpu", "cuda", "cuda:N", "mps" or "auto"), checked to exist."""
    import torch

    from miaudit.errors import ConfigError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{where}: {device!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"{where}: {device!r} asks for a GPU but {build}; use 'cpu' (or 'auto'), or install "
                              "a CUDA build of PyTorch on a machine with a GPU")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"{where}: {device!r} but this machine has {count} CUDA GPU(s) (cuda:0..cuda:"
                              f"{count - 1})")
    elif resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{where}: {device!r} but Apple MPS is not available here; use 'cpu'")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{where}: {device!r} is not supported; use cpu, cuda, cuda:N, mps or auto")
    return resolved


__all__ = ["resolve_device"]
