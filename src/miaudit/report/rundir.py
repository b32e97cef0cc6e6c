"""The run directory: what an audit leaves behind, and how to read it back.

::

    <out>/
      metrics.json          every number (schema version RUN_VERSION; see docs/audit.md)
      config.yaml           the resolved config: re-running it reproduces the run
      report.md             readable report
      report.html           self-contained page (summary, tables, figures, most exposed records)
      roc_linear.png        ROC of every attack, linear axes
      roc_loglog.png        ROC of every attack, log-log axes (low-FPR regime)
      score_histograms.png  members vs non-members, one panel per attack
      scores/<name>.scores.npz, scores/<name>.json   per-example ids, labels, scores (AttackResult)
      log.txt               what the run printed

The pipeline writes into a temporary folder (``miaudit.utils.atomic.atomic_output_dir``), so a run
folder is complete or absent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from miaudit.errors import DataError
from miaudit.evaluation import AttackResult
from miaudit.report.markdown import render_report
from miaudit.report.plots import plot_roc, plot_score_histograms
from miaudit.utils.jsonable import jsonable

RUN_VERSION = 1
FIGURES = {"ROC (linear)": "roc_linear.png", "ROC (log-log)": "roc_loglog.png",
           "Score histograms": "score_histograms.png"}


def write_run_dir(folder: str | Path, metrics: dict[str, Any], results: Sequence[AttackResult],
                  config: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json, config.yaml, scores/, figures, report.md and report.html into ``folder``.

    ``metrics`` must hold ``"attacks"`` (one entry per result, same ``name``s) and gets
    ``"version": RUN_VERSION``. Names must be unique: they become file names under ``scores/``.
    Returns the metrics exactly as written (plain JSON values).
    """
    folder = Path(folder)
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise DataError(f"attack result names must be unique in a run, got {names}")
    metrics = jsonable({"version": RUN_VERSION, **metrics})
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump(jsonable(config), sort_keys=False), encoding="utf-8")
    for result in results:
        result.save(folder / "scores")
    figures = {}
    if results:
        plot_roc(results, folder / FIGURES["ROC (linear)"])
        plot_roc(results, folder / FIGURES["ROC (log-log)"], log_scale=True)
        plot_score_histograms(results, folder / FIGURES["Score histograms"])
        figures = FIGURES
    (folder / "report.md").write_text(render_report(metrics, figures=figures), encoding="utf-8")
    from miaudit.report.html import build_html_report  # the page reads the folder back (html imports this module)

    build_html_report(folder)
    return metrics


@dataclass
class Run:
    """A finished run read back from disk (scores are loaded on demand)."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]

    @property
    def attack_names(self) -> list[str]:
        return [a["name"] for a in self.metrics["attacks"]]

    def attack(self, name: str) -> dict[str, Any]:
        """The ``metrics.json`` entry of one attack."""
        for entry in self.metrics["attacks"]:
            if entry["name"] == name:
                return entry
        raise DataError(f"run {self.path} has no attack {name!r}; it has {', '.join(self.attack_names)}")

    def result(self, name: str) -> AttackResult:
        """Per-example ids, labels and scores of one attack."""
        self.attack(name)
        return AttackResult.load(self.path / "scores", name)


def load_run(folder: str | Path) -> Run:
    """Read a run directory; a clear error if it is missing, incomplete, or from another format version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"run folder {folder} does not exist; pass the --out folder of a finished "
                        "'miaudit audit' or 'miaudit demo' run")
    path = folder / "metrics.json"
    if not path.is_file():
        raise DataError(f"{folder} is not a miaudit run folder (no metrics.json); pass the --out folder of a "
                        "finished run")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}); re-run the audit") from None
    version = metrics.get("version") if isinstance(metrics, dict) else None
    if version != RUN_VERSION:
        raise DataError(f"{folder} was written in run format version {version!r}, this miaudit reads version "
                        f"{RUN_VERSION}; re-run the audit with this version")
    if not isinstance(metrics.get("attacks"), list):
        raise DataError(f"{path} has no 'attacks' list; the run folder is damaged, re-run the audit")
    config_path = folder / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return Run(path=folder, metrics=metrics, config=config or {})
