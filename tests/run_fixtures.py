"""Synthetic run directories written with the pipeline's own writer (miaudit.report.rundir), complete as
the pipeline leaves them: every attack entry has its metrics and its empirical epsilon bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from miaudit.evaluation import AttackResult, evaluate
from miaudit.evaluation.epsilon import empirical_epsilon
from miaudit.report.html import build_html_report
from miaudit.report.rundir import RUN_VERSION, write_run_dir


def make_run_dir(folder: Path, *, shifts: dict[str, float] | None = None, n: int = 300, seed: int = 0,
                 extra: dict | None = None, n_bootstrap: int = 100, figures: bool = True,
                 report: bool = True) -> Path:
    """A classifier run whose attack ``name`` scores members ``shifts[name]`` standard deviations higher.

    ``figures=False`` writes only metrics.json, scores/ and (unless ``report=False``) report.html: no PNG
    files, faster.
    """
    shifts = shifts or {"loss": 0.8, "rmia": 1.8}
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    ids = np.array([f"rec{i:04d}" for i in range(n)])
    results, entries = [], []
    for name, shift in shifts.items():
        scores = rng.normal(size=n) + shift * labels
        metrics = evaluate(labels, scores, n_bootstrap=n_bootstrap, seed=seed)
        results.append(AttackResult(name, ids, labels, scores, {}, metrics))
        entries.append({"name": name, "params": {}, "access": "probabilities", "needs_reference": "population",
                        **metrics, "empirical_epsilon": empirical_epsilon(labels, scores).to_dict()})
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"kind": "classifier", "seed": seed, "target": {"train_accuracy": 1.0, "test_accuracy": 0.81},
               "data": {"n_members": int(labels.sum()), "n_nonmembers": int(n - labels.sum())},
               "attacks": entries, **(extra or {})}
    if figures:
        write_run_dir(folder, metrics, results, {"kind": "classifier", "seed": seed})
    else:
        (folder / "metrics.json").write_text(json.dumps({"version": RUN_VERSION, **metrics}))
        for result in results:
            result.save(folder / "scores")
        if report:
            build_html_report(folder)
    return folder
