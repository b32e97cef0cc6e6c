"""``AttackResult``: an attack's scores and metrics, saved and loaded without the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.errors import DataError
from miaudit.utils.jsonable import json_default


@dataclass
class AttackResult:
    name: str
    ids: np.ndarray  # (n,) example identifiers
    labels: np.ndarray  # (n,) 1 = member
    scores: np.ndarray  # (n,) higher = member
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None  # (n,) group ids of records that are not independent, if any

    def save(self, folder: str | Path) -> Path:
        """Write ``<name>.scores.npz`` (ids, labels, scores, and groups when set) and ``<name>.json`` into
        ``folder``; return the JSON path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # Any, not ndarray: numpy's stub would let a ** mapping of arrays fill savez's ``allow_pickle: bool``
        arrays: dict[str, Any] = {"ids": self.ids, "labels": self.labels, "scores": self.scores}
        if self.groups is not None:
            arrays["groups"] = self.groups
        np.savez(folder / f"{self.name}.scores.npz", **arrays)
        path = folder / f"{self.name}.json"
        path.write_text(json.dumps({"name": self.name, "params": self.params, "metrics": self.metrics},
                                   indent=2, default=json_default))
        return path

    @classmethod
    def load(cls, folder: str | Path, name: str) -> AttackResult:
        folder = Path(folder)
        meta_path, arrays_path = folder / f"{name}.json", folder / f"{name}.scores.npz"
        if not meta_path.is_file() or not arrays_path.is_file():
            raise DataError(f"no saved result for attack {name!r} in {folder}; expected {meta_path.name} "
                            f"and {arrays_path.name}")
        meta = json.loads(meta_path.read_text())
        with np.load(arrays_path, allow_pickle=False) as arrays:
            return cls(name=meta["name"], ids=arrays["ids"], labels=arrays["labels"], scores=arrays["scores"],
                       params=meta.get("params", {}), metrics=meta.get("metrics", {}),
                       groups=arrays["groups"] if "groups" in arrays.files else None)
