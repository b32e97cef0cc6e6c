"""``miaudit defend CONFIG.yaml --out DIR``: compare defenses by utility, cost and adaptive attack success."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "defend", help="compare membership-inference defenses (privacy-utility table and plot)",
        description="Train one architecture on one dataset with each listed defense, run every listed attack "
                    "adaptively (shadow / reference models trained with the same defense) and write defenses.md, "
                    "defenses.json and privacy_utility.png (see docs/defenses.md and examples/defenses_*.yaml).")
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--out", required=True, help="output folder to create (must be new or empty)")
    parser.add_argument("--data-dir", help="folder with the shared datasets (overrides dataset.data_dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--threads", type=int, help="torch CPU threads; default: torch's choice")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miaudit.commands.audit import torch_threads
    from miaudit.defenses.compare import parse_defend_config, run_defense_comparison, strongest_attack

    config = parse_defend_config(args.config, data_dir=args.data_dir)
    with torch_threads(args.threads):
        result = run_defense_comparison(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"{'defense':<24} {'test acc':>8} {'epsilon':>8}  strongest attack (TPR@1%FPR, AUC)")
    for entry in result["defenses"]:
        s = strongest_attack(entry)
        eps = f"{entry['epsilon']:.2f}" if entry["epsilon"] is not None else "-"
        strong = f"{s['name']} ({s['tpr_at_fpr'].get('0.01', float('nan')):.3f}, {s['auc']:.3f})" if s else "-"
        print(f"{entry['label']:<24} {entry['target']['test_accuracy']:>8.4f} {eps:>8}  {strong}")
    print(f"\nreport: {args.out}/defenses.md   data: {args.out}/defenses.json   plot: {args.out}/privacy_utility.png")
    return 0
