"""``miaudit list attacks [--kind K] [--json]`` and ``miaudit list defenses [--json]``: the registries.

Attacks come with their taxonomy (target kind, access, reference data they need) and parameters;
defenses with their kind (training-time or output post-processor), parameters and defaults, and
whether they need the defender's reference data (``split.n_reference`` in ``miaudit defend``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from miaudit.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="list registered attacks or defenses, with their parameters",
                                   description="List the registered attacks (taxonomy and parameters) or defenses "
                                               "(kind, parameters and defaults).")
    parser.add_argument("what", choices=["attacks", "defenses"], help="what to list")
    parser.add_argument("--kind", metavar="KIND",
                        help="attacks only: those on this kind of target (classifier, llm, encoder, multimodal, ...)")
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
    if args.what == "defenses":
        return _defenses(args)
    from miaudit.attacks.registry import list_attacks

    kinds = sorted({row["target_kind"] for row in list_attacks()})
    if args.kind is not None and args.kind not in kinds:
        raise ConfigError(f"--kind {args.kind!r} is not a kind of target with attacks; choose one of "
                          f"{', '.join(kinds)}")
    rows = list_attacks(target_kind=args.kind)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header, *lines = _table(("name", "target_kind", "access", "needs_reference"), rows)
    print(header)
    for r, line in zip(rows, lines):
        print(line)
        for param in r["params"]:
            print(f"    {param_line(param)}")
    return 0


def _defenses(args: argparse.Namespace) -> int:
    from miaudit.defenses.registry import list_defenses

    if args.kind is not None:
        raise ConfigError("--kind selects attacks by kind of target; every defense is for classifiers (miaudit "
                          "defend): drop --kind")
    rows = list_defenses()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    cells = [{**r, "params": ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"} for r in rows]
    for line in _table(("name", "kind", "needs_reference", "params"), cells):
        print(line)
    return 0


def _table(header: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str]:
    """The header line, then one line per row: the ``header`` columns padded to their widest cell, then the
    row's citation."""
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) if rows else len(h) for h in header]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  citation"]
    lines += ["  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths)) + "  " + r["citation"] for r in rows]
    return lines
