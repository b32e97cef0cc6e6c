"""The user's own torch module from a config: a class to import, its constructor arguments, a state dict.

``{path: weights.pt, class: "pkg.module:ClassName", kwargs: {...}}``: the class is imported under the
rules of :mod:`miaudit.utils.trusted_code` (the config's ``trust_code: true``), built with ``kwargs``,
and the state dict at ``path`` is read with ``torch.load(weights_only=True)`` (no code in the file
runs; whole pickled modules are refused) and loaded strictly. Every problem is a one-line error that
names the config key (``where``) and the fix. Kinds that audit a user's module (classifiers, encoders)
load it here.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from miaudit.errors import ConfigError, DataError, one_line
from miaudit.utils.trusted_code import import_trusted_callable

TORCH_MODULE_KEYS = ("path", "class", "kwargs")
_CLASS_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _few(items: list[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (f" (+{len(items) - k} more)" if len(items) > k else "")


def checked_torch_module_spec(spec: Any, where: str) -> dict[str, Any]:
    """The spec with its keys and types checked without importing anything (when the config is parsed); a
    ``path`` given as a ``pathlib.Path`` (from Python) comes back as a string."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with path, class and kwargs, got {spec!r}")
    if isinstance(spec.get("path"), os.PathLike):
        spec = {**spec, "path": os.fspath(spec["path"])}
    unknown = sorted(set(spec) - set(TORCH_MODULE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(TORCH_MODULE_KEYS)}")
    for key in ("path", "class"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise ConfigError(f"{where}.{key}: required, a string (path: the state dict file; class: "
                              "\"pkg.module:ClassName\")")
    if not _CLASS_SPEC.fullmatch(spec["class"]):
        raise ConfigError(f"{where}.class: {spec['class']!r} must read \"pkg.module:ClassName\" (module path, "
                          "a colon, the class name)")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise ConfigError(f"{where}.kwargs: expected a mapping of constructor arguments, got {spec['kwargs']!r}")
    return spec


def _import_class(spec: str, where: str) -> type[nn.Module]:
    cls = import_trusted_callable(spec, trust_code=True, where=f"{where}.class",
                                  accept=lambda obj: isinstance(obj, type) and issubclass(obj, nn.Module),
                                  expected="a torch.nn.Module subclass")
    assert isinstance(cls, type) and issubclass(cls, nn.Module)  # ``accept`` refused anything else
    return cls


def _read_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    """Tensors saved with ``torch.save(model.state_dict(), path)``, read with ``weights_only=True``."""
    where = f"{where}.path"
    if not path.is_file():
        raise DataError(f"{where}: {path} does not exist; save your weights with torch.save(model.state_dict(), "
                        "path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(f"{where}: {path} holds more than tensors (e.g. a whole pickled model), which miaudit does "
                        "not unpickle; save model.state_dict() instead") from None
    except Exception as exc:  # torch raises RuntimeError, OSError, EOFError... for files it cannot parse
        raise DataError(f"{where}: cannot read {path} with torch.load(weights_only=True) ({one_line(exc)}); save "
                        "model.state_dict() with torch.save") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = f"keys {_few([str(k) for k in state])}" if isinstance(state, Mapping) else type(state).__name__
        raise DataError(f"{where}: {path} is not a state dict of tensors (found {found}); save model.state_dict() "
                        "itself, not a checkpoint around it")
    return {str(k): v for k, v in state.items()}


def load_user_module(spec: dict[str, Any], where: str) -> nn.Module:
    """Build the user's class with ``kwargs`` and load its state dict strictly; the module is in eval mode.

    The config was checked with :func:`checked_torch_module_spec` and its ``trust_code`` when it was parsed."""
    path = Path(spec["path"])
    state = _read_state_dict(path, where)
    cls = _import_class(spec["class"], where)
    try:
        model = cls(**spec.get("kwargs", {}))
    except Exception as exc:  # the user's constructor may raise anything
        raise ConfigError(f"{where}.kwargs: {spec['class']}(**kwargs) failed ({one_line(exc)}); fix the "
                          "constructor arguments") from None
    expected = model.state_dict()
    problems = [f"{what} {_few(keys)}" for what, keys in (
        ("missing keys", [k for k in expected if k not in state]),
        ("unexpected keys", [k for k in state if k not in expected]),
        ("shape mismatch (file vs model)", [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                                            for k, v in expected.items() if k in state and state[k].shape != v.shape]),
    ) if keys]
    if problems:
        raise DataError(f"{where}: the state dict in {path} does not fit {spec['class']}(**kwargs): "
                        f"{'; '.join(problems)}; check class and kwargs")
    model.load_state_dict(state)
    return model.eval()


__all__ = ["TORCH_MODULE_KEYS", "checked_torch_module_spec", "load_user_module"]
