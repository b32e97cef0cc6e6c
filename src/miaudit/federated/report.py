"""``federated.md`` and ``federated_rounds.png``: the privacy-utility table per defense and round.

Both read the ``federated`` section of ``metrics.json`` (built by :mod:`miaudit.federated.audit`).
"The strongest attack" of a round is the one with the highest AUC among those run that round.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _ci(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _eps(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def strongest(attacks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The attack with the highest AUC (``None`` when the round ran none)."""
    return max(attacks, key=lambda a: a["auc"]) if attacks else None


def low_fpr_key(fprs: Sequence[float]) -> str:
    """The FPR the tables report TPR at: 1% when evaluated, else the lowest one."""
    keys = [f"{f:g}" for f in fprs]
    return "0.01" if "0.01" in keys else keys[0]


def _sia(si: dict[str, Any] | None) -> str:
    return "-" if not si else f"{_ci(si['accuracy'], si['accuracy_ci'])} (chance {si['chance']:.3f})"


def render_federated(section: dict[str, Any], target: dict[str, Any], data: dict[str, Any],
                     fprs: Sequence[float]) -> str:
    """The markdown of ``federated.md``."""
    fpr = low_fpr_key(fprs)
    pct = f"{float(fpr) * 100:g}%"
    sizes = section["client_sizes"]
    classes = [sum(1 for c in row if c) for row in section["client_label_counts"]]
    lines = [
        f"# Federated learning audit: {data['dataset']}, {target['model']}", "",
        f"{target['description']}. {data['n_members']} members are the union of the clients' data (sizes "
        f"{', '.join(map(str, sizes))}; classes per client {', '.join(map(str, classes))}); {data['n_nonmembers']} "
        f"held-out non-members. {section['n_federations']} federations (target, shadow and reference, for every "
        f"defense) ran in one Flower simulation in {section['simulation_seconds']:.0f} s.", "",
        "## Privacy-utility of the final global model", "",
        f"Record-level epsilon of the released global models (the smaller of the client-side DP and DP-FedAvg bounds "
        f"where both apply); against the server, which sees the raw updates, only client-side DP holds. Strongest "
        f"attack by AUC, TPR at {pct} FPR; brackets: bootstrap CIs (attacks) and Clopper-Pearson intervals (source "
        "inference).", "",
        "| defense | test acc | train acc | epsilon | epsilon vs server | client-level epsilon (DP-FedAvg) | "
        f"strongest attack | AUC | TPR@{pct}FPR | source inference acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in section["defenses"]:
        final = d["rounds"][-1]
        s = strongest(final["attacks"])
        p = d["privacy"]
        attack = (f"{s['name']} | {_ci(s['auc'], s['auc_ci'])} | {_ci(s['tpr_at_fpr'][fpr], s['tpr_at_fpr_ci'][fpr])}"
                  if s else "- | - | -")
        lines.append(f"| {d['label']} | {d['test_accuracy']:.4f} | {d['train_accuracy']:.4f} | {_eps(p['epsilon'])} | "
                     f"{_eps(p['epsilon_against_server'])} | {_eps(p.get('dp_fedavg_client_level_epsilon'))} | "
                     f"{attack} | {_sia(d['source_inference'])} |")
    lines += ["", "## Per round", "",
              "Every attack after every round is fitted on the shadow / reference federations' global models of the "
              "same round. Epsilon: spent by the end of the round.", "",
              f"| defense | round | test acc | epsilon | strongest attack | AUC | TPR@{pct}FPR | source inference "
              "acc |",
              "|---|---|---|---|---|---|---|---|"]
    for d in section["defenses"]:
        for r in d["rounds"]:
            s = strongest(r.get("attacks", []))
            attack = (f"{s['name']} | {_ci(s['auc'], s['auc_ci'])} | "
                      f"{_ci(s['tpr_at_fpr'][fpr], s['tpr_at_fpr_ci'][fpr])}" if s else "- | - | -")
            acc = f"{r['test_accuracy']:.4f}" if "test_accuracy" in r else "-"
            lines.append(f"| {d['label']} | {r['round']} | {acc} | {_eps(r['privacy']['epsilon'])} | {attack} | "
                         f"{_sia(r.get('source_inference'))} |")
    si_meta = section.get("source_inference")
    if si_meta:
        lines += ["", "## Source inference", "",
                  f"{si_meta['citation']}. The server names, for each of {si_meta['n_records']} members, the client "
                  "whose returned model has the smallest loss on it. Baselines that never look at the updates (both "
                  "use the true partition): the largest client, and the client with the most examples of the "
                  "record's label.",
                  "", "| defense | accuracy (final round) | chance | largest client | label baseline | p-value vs "
                  "chance | p-value vs label baseline | best round (oracle) |", "|---|---|---|---|---|---|---|---|"]
        for d in section["defenses"]:
            si = d["source_inference"]
            best = max((r for r in d["rounds"] if r.get("source_inference")),
                       key=lambda r: r["source_inference"]["accuracy"])
            lines.append(f"| {d['label']} | {_ci(si['accuracy'], si['accuracy_ci'])} | {si['chance']:.3f} | "
                         f"{si['largest_client_baseline']:.3f} | {si['label_baseline']:.3f} | "
                         f"{si['p_value_vs_chance']:.2g} | {si['p_value_vs_label_baseline']:.2g} | "
                         f"round {best['round']}: {best['source_inference']['accuracy']:.3f} |")
    notes = [f"- {n}" for d in section["defenses"] for n in d["notes"]]
    if any(a.get("final_only") for d in section["defenses"] for a in d["rounds"][-1]["attacks"]):
        notes.append("- attacks that query the model itself (label-only robustness, white-box) ran on the final global "
                     "model only")
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "Everything, with every attack of every round: `metrics.json` (`federated`); plot: "
              "`federated_rounds.png`.", ""]
    return "\n".join(lines)


def plot_rounds(section: dict[str, Any], path: str | Path) -> Path:
    """Per round and defense: test accuracy, the strongest attack's AUC (CI band) and source inference accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14.0, 4.2))
    for d in section["defenses"]:
        audited = [r for r in d["rounds"] if r.get("attacks")]
        x = [r["round"] for r in audited]
        axes[0].plot(x, [r["test_accuracy"] for r in audited], marker="o", label=d["label"])
        best = [b for b in (strongest(r["attacks"]) for r in audited) if b is not None]
        line, = axes[1].plot(x, [b["auc"] for b in best], marker="o", label=d["label"])
        axes[1].fill_between(x, [b["auc_ci"][0] for b in best], [b["auc_ci"][1] for b in best],
                             color=line.get_color(), alpha=0.2)
        si = [r for r in d["rounds"] if r.get("source_inference")]
        if si:
            line, = axes[2].plot([r["round"] for r in si], [r["source_inference"]["accuracy"] for r in si], marker="o",
                                 label=d["label"])
            axes[2].fill_between([r["round"] for r in si], [r["source_inference"]["accuracy_ci"][0] for r in si],
                                 [r["source_inference"]["accuracy_ci"][1] for r in si], color=line.get_color(),
                                 alpha=0.2)
    axes[0].set(xlabel="round", ylabel="test accuracy", title="Global model utility")
    axes[1].axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes[1].set(xlabel="round", ylabel="AUC of the strongest attack", title="Membership leakage per round")
    axes[2].axhline(1.0 / section["n_clients"], color="grey", linestyle="--", linewidth=1, label="chance 1/n")
    label_baseline = next((d["source_inference"]["label_baseline"] for d in section["defenses"]
                           if d.get("source_inference")), None)
    if label_baseline is not None:
        axes[2].axhline(label_baseline, color="grey", linestyle=":", linewidth=1, label="label baseline (oracle)")
    axes[2].set(xlabel="round", ylabel="source inference accuracy", title="Source inference (Hu et al. 2021)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


__all__ = ["low_fpr_key", "plot_rounds", "render_federated", "strongest"]
