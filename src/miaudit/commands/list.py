"""``miaudit list attacks [--kind K] [--json]``: the registry with each attack's taxonomy."""

from __future__ import annotations

import argparse
import json

from miaudit.attacks.registry import list_attacks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="list registered attacks and their taxonomy")
    parser.add_argument("what", choices=["attacks"], help="what to list")
    parser.add_argument("--kind", choices=["classifier", "llm", "encoder", "text_generator"],
                        help="only attacks on this kind of target")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = list_attacks(target_kind=args.kind)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "target_kind", "access", "needs_reference", "citation")
    widths = [max(len(header[i]), *(len(str(r[h])) for r in rows)) if rows else len(header[i])
              for i, h in enumerate(header[:-1])]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  citation")
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths)) + "  " + r["citation"])
    return 0
