"""``miaudit defend CONFIG.yaml --out DIR``: compare defenses by utility, cost and adaptive attack success.

A tracked run like ``miaudit audit`` (:mod:`miaudit.runs.tracking`): recorded in the run store
(``running`` -> ``completed`` / ``failed`` / ``interrupted``), every scored attack of
``defenses.json`` gets an empirical epsilon lower bound, ``--fail-if`` gates are checked on every
defense row (or on the rows named with ``--gate-defense``) by
:func:`miaudit.runs.gate.check_defense_gates` (exit code 1 when one trips), and ``--json`` prints a
summary on stdout. Gates and ``--gate-defense`` labels are checked before any training. The folder
gets a self-contained ``report.html`` (:func:`miaudit.report.html.build_html_report`: the
defense-comparison page) once the bounds are added.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from miaudit.evaluation.verdict import defense_verdict
from miaudit.runs.gate import GateResult, check_defense_gate_targets, check_defense_gates
from miaudit.runs.tracking import attack_summaries, complete_with_gates, gate_exit_code, strongest_by_metric

#: attack fields kept in the ``--json`` summary

def register(subparsers: argparse._SubParsersAction) -> None:
    from miaudit.runs.tracking import add_common_run_flags

    parser = subparsers.add_parser(
        "defend", help="compare membership-inference defenses (privacy-utility table and plot)",
        description="Train one architecture on one dataset with each listed defense, run every listed attack "
                    "adaptively (shadow / reference models trained with the same defense) and write defenses.md, "
                    "defenses.json and privacy_utility.png (see docs/defenses.md and examples/defenses_*.yaml). "
                    "--fail-if gates are checked on every defense row (see docs/reports-and-ci-gate.md).")
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--out", required=True, help="output folder to create (must be new or empty)")
    parser.add_argument("--data-dir", help="folder with the shared datasets (overrides dataset.data_dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--threads", type=int, help="torch CPU threads; default: torch's choice")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--gate-defense", action="append", default=[], metavar="LABEL",
                        help="check the --fail-if gates on this defense row only (its label in the config; "
                             "repeatable; default: every row)")
    add_common_run_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miaudit.commands.audit import torch_threads
    from miaudit.config import resolved_without_seed
    from miaudit.defenses.compare import parse_defend_config, run_defense_comparison
    from miaudit.runs.tracking import RunOptions, tracked_run
    from miaudit.utils.atomic import check_output_path

    config = parse_defend_config(args.config, data_dir=args.data_dir)
    # bad gates and unknown labels fail here, before anything is trained or written
    check_defense_gate_targets(args.fail_if, attacks=[a.key for a in config.attacks],
                               defenses=[d.key for d in config.defenses], selected=args.gate_defense)
    check_output_path(args.out, overwrite=args.overwrite)
    out = Path(args.out)
    options = RunOptions.from_args(args)
    stream = sys.stderr if args.json else sys.stdout  # with --json stdout carries only the JSON summary
    with tracked_run(options, command="defend", config=resolved_without_seed(config, "training"),
                     run_dir=out) as tracker:
        with torch_threads(args.threads):
            result = run_defense_comparison(config, out, overwrite=args.overwrite, progress=not args.quiet,
                                            epsilon_delta=options.epsilon_delta)
        report = out / "report.html"
        print_table(result, out, report, file=stream)
        gates, gate_error = complete_with_gates(
            tracker, result, out,
            lambda: check_defense_gates(result, args.fail_if, run_dir=out, defenses=args.gate_defense))
    return gate_exit_code(
        options, gates, gate_error,
        json_summary=lambda: summary(result, gates, run_id=tracker.run_id, run_dir=out, report=report,
                                     gate_defenses=args.gate_defense),
        headline=f"run {tracker.run_id}" if tracker.run_id else None)


def summary(result: dict[str, Any], gates: GateResult, *, run_id: str | None, run_dir: Path, report: Path,
            gate_defenses: list[str]) -> dict[str, Any]:
    """The JSON summary printed with ``--json``: one entry per defense, the gates and the exit code."""
    defenses = []
    for row in result["defenses"]:
        defenses.append({
            "label": row["label"], "components": row.get("components"),
            "test_accuracy": row["target"]["test_accuracy"], "train_accuracy": row["target"].get("train_accuracy"),
            "dp_accountant": {"epsilon": row.get("epsilon"), "delta": row.get("delta")},
            "gated": not gate_defenses or row["label"] in gate_defenses,
            "verdict": defense_verdict(result, row), "strongest": strongest_by_metric(row["attacks"]),
            "gates": [d for d in gates.details if d.get("defense") == row["label"]],
            "attacks": attack_summaries(row["attacks"])})
    return {"run_id": run_id, "run_dir": str(run_dir), "report": str(report), "status": "completed",
            "kind": "defenses", "seed": result.get("seed"), "dataset": result.get("data", {}).get("dataset"),
            "model": result.get("config", {}).get("training", {}).get("model"),
            "files": {name: str(run_dir / name)
                      for name in ("report.html", "defenses.md", "defenses.json", "privacy_utility.png")},
            "gate_defenses": list(gate_defenses) or None, "gates": gates.to_dict(),
            "exit_code": 1 if gates.tripped else 0, "defenses": defenses}


def print_table(result: dict[str, Any], out: Path, report: Path, *, file: TextIO) -> None:
    """The human table: per defense, test accuracy, accountant epsilon and the strongest attack at 1% FPR."""
    from miaudit.defenses.compare import strongest_attack

    print(f"{'defense':<24} {'test acc':>8} {'epsilon':>8}  {'risk':<17} strongest attack (TPR@1%FPR, AUC)",
          file=file)
    for entry in result["defenses"]:
        s = strongest_attack(entry)
        eps = f"{entry['epsilon']:.2f}" if entry["epsilon"] is not None else "-"
        strong = f"{s['name']} ({s['tpr_at_fpr'].get('0.01', float('nan')):.3f}, {s['auc']:.3f})" if s else "-"
        risk = defense_verdict(result, entry)["level"]
        print(f"{entry['label']:<24} {entry['target']['test_accuracy']:>8.4f} {eps:>8}  {risk:<17} {strong}",
              file=file)
    print(f"\nreport: {report}   tables: {out}/defenses.md   data: {out}/defenses.json   plot: "
          f"{out}/privacy_utility.png", file=file)
