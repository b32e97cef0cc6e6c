"""PNG figures of a run: ROC curves (linear and log-log, all attacks on one plot) and score histograms.

Curves come from :func:`miaudit.evaluation.roc_curve`, which keeps every operating point, so the
low-FPR corner of the log-log plot shows what the attack really achieves there (Carlini et al. 2022,
"Membership Inference Attacks From First Principles", argue for this view).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from miaudit.evaluation import AttackResult, roc_auc, roc_curve


def _legend_label(result: AttackResult) -> str:
    auc = result.metrics.get("auc")
    if auc is None:
        auc = roc_auc(result.labels, result.scores)
    return f"{result.name} (AUC {auc:.3f})"


def plot_roc(results: Sequence[AttackResult], path: str | Path, *, log_scale: bool = False,
             title: str | None = None) -> Path:
    """One ROC figure with every attack and the chance diagonal; log-log axes when ``log_scale``.

    On log axes the x range starts at ``1 / n_nonmembers`` (the smallest non-zero FPR the data can
    show), and points with FPR or TPR equal to 0 are left out, as they cannot be drawn.
    """
    path = Path(path)
    many = len(results) > 8
    fig, ax = plt.subplots(figsize=(9.0 if many else 6.0, 5.5))
    min_fpr = 1.0
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ordered = sorted(results, key=lambda r: -(r.metrics.get("auc") or roc_auc(r.labels, r.scores)))
    for i, result in enumerate(ordered):  # legend strongest first; colour x line style keeps 30 curves apart
        style = {"color": colors[i % len(colors)], "linestyle": ("-", "--", ":")[(i // len(colors)) % 3]}
        curve = roc_curve(result.labels, result.scores)
        n_nonmembers = int((~np.asarray(result.labels, bool)).sum())
        min_fpr = min(min_fpr, 1.0 / max(n_nonmembers, 1))
        fpr, tpr = curve.fpr, curve.tpr
        if log_scale:
            keep = (fpr > 0) & (tpr > 0)
            fpr, tpr = fpr[keep], tpr[keep]
        ax.plot(fpr, tpr, lw=1.4, label=_legend_label(result), **style)
    lo = min_fpr / 2 if log_scale else 0.0
    chance = np.logspace(math.log10(lo), 0, 50) if log_scale else np.array([0.0, 1.0])
    ax.plot(chance, chance, "k--", lw=0.9, label="chance")
    if log_scale:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, 1.0)
        ax.set_ylim(lo, 1.05)
    else:
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false positive rate (non-members flagged)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title(title or ("ROC, log-log (low-FPR regime)" if log_scale else "ROC"))
    ax.grid(True, which="both", alpha=0.3)
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: quantiles that bound a heavy-tailed panel, and how much wider than them the full range must be to clip
CLIP_QUANTILES = (0.005, 0.995)
HEAVY_TAIL_RATIO = 3.0


def histogram_range(scores: np.ndarray) -> tuple[float, float, int]:
    """``(low, high, n_outside)``: the full score range, or the 0.5%-99.5% quantile range when the scores have
    heavy tails (the full range more than :data:`HEAVY_TAIL_RATIO` times wider, as LiRA's likelihood ratios
    or gradient norms can be), with the number of scores outside it."""
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = float(scores.min()), float(scores.max())
    q_lo, q_hi = (float(q) for q in np.quantile(scores, CLIP_QUANTILES))
    if q_hi > q_lo and hi - lo > HEAVY_TAIL_RATIO * (q_hi - q_lo):
        return q_lo, q_hi, int(((scores < q_lo) | (scores > q_hi)).sum())
    return lo, hi, 0


def plot_score_histograms(results: Sequence[AttackResult], path: str | Path, *, bins: int = 40) -> Path:
    """Grid of histograms, one panel per attack: scores of members vs non-members (densities).

    A panel whose scores have heavy tails shows the 0.5%-99.5% quantile range (:func:`histogram_range`),
    the scores outside it piled into the end bins, and says so in its title and axis label.
    """
    path = Path(path)
    n = max(len(results), 1)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, result in zip(axes.flat, results):
        labels = np.asarray(result.labels, bool)
        scores = np.asarray(result.scores, dtype=np.float64)
        lo, hi, outside = histogram_range(scores)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        shown = np.clip(scores, edges[0], edges[-1])
        ax.hist(shown[~labels], bins=edges, density=True, alpha=0.55, label="non-members")
        ax.hist(shown[labels], bins=edges, density=True, alpha=0.55, label="members")
        if outside:
            ax.set_title(f"{result.name}\n(clipped to the 0.5-99.5% quantiles: {outside} scores in the end bins)",
                         fontsize=8)
            ax.set_xlabel("score (higher = member), quantile-clipped view", fontsize=8)
        else:
            ax.set_title(result.name, fontsize=9)
            ax.set_xlabel("score (higher = member)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
