"""Discovery of the model-kind packages (classifier, llm, encoder, ...) that plug into the core.

The core (attacks registry, evaluation, run machinery, reports, config, data, utils) never imports
a kind. A kind is a sub-package of ``miaudit`` with a ``kind.py`` module; importing that module
registers the kind's attacks (:func:`miaudit.attacks.registry.register`) and its audit runner
(:func:`miaudit.runs.pipeline.register_kind`). Packages outside miaudit add kinds through the
entry-point group ``miaudit.kinds`` (each entry point names a module to import).

A kind whose optional dependencies are not installed (e.g. ``transformers`` for language models)
is skipped; its attacks and audit kind are simply absent.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

#: top-level packages of optional extras; a kind that needs a missing one is skipped
OPTIONAL_PACKAGES = frozenset({"transformers", "tokenizers", "opacus", "ray", "safetensors", "numba", "flwr",
                               "pyarrow", "peft", "llama_cpp", "xgboost", "lightgbm"})
_LOADED: list[str] | None = None


def kind_modules() -> list[str]:
    """Modules that register a kind: every ``miaudit.<package>.kind`` here, then the entry points."""
    root = Path(__file__).parent
    modules = [f"miaudit.{p.parent.name}.kind" for p in sorted(root.glob("*/kind.py"))]
    modules += [ep.value for ep in metadata.entry_points(group="miaudit.kinds")]
    return modules


def load_kinds() -> list[str]:
    """Import every kind module once (idempotent); return the modules that loaded."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    loaded = []
    for module in kind_modules():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing = (getattr(exc, "name", None) or "").split(".")[0]
            if missing not in OPTIONAL_PACKAGES:
                raise
            log.debug("kind %s skipped: optional dependency %s is not installed", module, missing)
            continue
        loaded.append(module)
    _LOADED = loaded
    return loaded


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (e.g. a kind's ``attacks``), so that their classes register."""
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)


__all__ = ["OPTIONAL_PACKAGES", "import_submodules", "kind_modules", "load_kinds"]
