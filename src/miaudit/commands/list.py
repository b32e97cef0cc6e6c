"""``miaudit list attacks [--kind K] [--json]``: the registry with each attack's taxonomy and parameters."""

from __future__ import annotations

import argparse
import json
from typing import Any

from miaudit.attacks.registry import list_attacks
from miaudit.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="list registered attacks, their taxonomy and parameters")
    parser.add_argument("what", choices=["attacks"], help="what to list")
    parser.add_argument("--kind", metavar="KIND",
                        help="only attacks on this kind of target (classifier, llm, encoder, multimodal, ...)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def _grid(values: list[float]) -> str:
    shown = [f"{v:g}" for v in values]
    if len(shown) > 6:
        shown = [*shown[:3], "...", shown[-1]]
    return f"{', '.join(shown)} ({len(values)} values)"


def param_line(param: dict[str, Any]) -> str:
    """``name: type = default; allowed; tuned over grid`` for one row of ``describe(...)["params"]``."""
    default = param["default"]
    shown = repr(default) if isinstance(default, str) else json.dumps(default)
    parts = [f"{param['name']}: {param['type']} = {shown}"]
    if param["allowed"]:
        parts.append(param["allowed"])
    if param["grid"] is not None:
        parts.append(f"unless set, chosen on held-out labelled data among {_grid(param['grid'])}")
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    kinds = sorted({row["target_kind"] for row in list_attacks()})
    if args.kind is not None and args.kind not in kinds:
        raise ConfigError(f"--kind {args.kind!r} is not a kind of target with attacks; choose one of "
                          f"{', '.join(kinds)}")
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
        for param in r["params"]:
            print(f"    {param_line(param)}")
    return 0
