"""``miaudit runs list|show RUN|compare RUN RUN|rm RUN [--json] [--home DIR]``: the run store.

RUN is a run id, a unique prefix of one, or ``latest``. Runs of ``miaudit defend`` store their
``defenses.json``: ``list`` shows the range over defenses of the strongest attack, ``show`` one
table row per (defense, attack), ``compare`` pairs (defense, attack) between two such runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from miaudit.errors import MiauditError
from miaudit.evaluation.run_result import RunResult, ranked, strongest
from miaudit.evaluation.verdict import verdict_of
from miaudit.runs import STATUSES, RunStore, default_store_path
from miaudit.runs.compare import is_defense_comparison


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("runs", help="list, show, compare and remove recorded runs")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--home", metavar="DIR", help="folder of the run store (default: $MIAUDIT_HOME, else "
                                                      "the user data folder)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", parents=[common], help="recorded runs, newest first")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--limit", type=int, default=None, help="at most this many runs")
    p = actions.add_parser("show", parents=[common], help="one run: config, versions, metrics, gates")
    p.add_argument("run", metavar="RUN")
    p = actions.add_parser("compare", parents=[common], help="metric differences between two runs, with "
                                                             "significance")
    p.add_argument("run_a", metavar="RUN")
    p.add_argument("run_b", metavar="RUN")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (paired comparison)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the difference intervals")
    p = actions.add_parser("rm", parents=[common], help="remove a run from the store")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--delete-files", action="store_true",
                   help="also delete its run directory (only while the folder's marker names this run)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with RunStore(default_store_path(args.home)) as store:
        return {"list": _list, "show": _show, "compare": _compare, "rm": _rm}[args.action](store, args)


def _strongest(attacks: list[dict[str, Any]], metric: str) -> float | None:
    """The value of ``metric`` (``auc`` or an FPR key such as ``0.01``) of the strongest attack, by the one
    rule of :func:`miaudit.evaluation.run_result.strongest`."""
    name = metric if metric == "auc" else f"tpr@{metric}"
    best = strongest(attacks, name)
    return best.value(name) if best is not None else None


def _best(row: dict[str, Any], metric: str) -> str:
    """The strongest attack's value; for a defense comparison its range over the defenses ("lo-hi")."""
    metrics = row.get("metrics") or {}
    if is_defense_comparison(metrics):
        values = [v for d in metrics["defenses"] if (v := _strongest(d.get("attacks", []), metric)) is not None]
        if not values:
            return "-"
        return f"{min(values):.3f}-{max(values):.3f}" if max(values) > min(values) else f"{values[0]:.3f}"
    value = _strongest(metrics.get("attacks", []), metric)
    return f"{value:.3f}" if value is not None else "-"


def _print_table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _list(store: RunStore, args: argparse.Namespace) -> int:
    rows = store.list_runs(status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no runs recorded in {store.path}")
        return 0
    _print_table(["id", "created", "command", "status", "risk", "best AUC", "best TPR@1%FPR", "blind baseline AUC",
                  "run dir"],
                 [[r["id"], r["created"][:19], r["command"], r["status"], _risk(r), _best(r, "auc"), _best(r, "0.01"),
                   _baseline_auc(r), r.get("run_dir") or "-"] for r in rows])
    return 0


def _audit_metrics(row: dict[str, Any]) -> dict[str, Any] | None:
    metrics = row.get("metrics") or {}
    return metrics if metrics.get("attacks") and not is_defense_comparison(metrics) else None


def _risk(row: dict[str, Any]) -> str:
    """The run's risk level (audits only; ``-`` for defense comparisons and runs without results)."""
    metrics = _audit_metrics(row)
    return verdict_of(metrics)["level"] if metrics is not None else "-"


def _baseline_auc(row: dict[str, Any]) -> str:
    metrics = _audit_metrics(row)
    baseline = RunResult(metrics).baseline if metrics is not None else None
    if baseline is None or baseline.auc is None:
        return "-"
    shift = (baseline.fields.get("verdict") or {}).get("shift")
    return f"{baseline.auc:.3f}" + (" (shift)" if shift else "")


def _show(store: RunStore, args: argparse.Namespace) -> int:
    row = store.get_run(args.run)
    if args.json:
        print(json.dumps(row, indent=2, default=str))
        return 0
    for key in ("id", "command", "status", "created", "finished", "run_dir", "error"):
        if row.get(key):
            print(f"{key:9} {row[key]}")
    for name in ("report.html", "defenses.md"):
        report = Path(row["run_dir"]) / name if row.get("run_dir") else None
        if report is not None and report.is_file():
            print(f"report    {report}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in (row.get("versions") or {}).items()))
    metrics = row.get("metrics") or {}
    if is_defense_comparison(metrics):
        rows = [(d, a) for d in metrics["defenses"] for a in d.get("attacks", [])]
    else:
        rows = [(None, a.fields) for a in ranked(metrics.get("attacks", []))]  # held-out, then oracle entries
        if metrics.get("attacks"):
            verdict = verdict_of(metrics)
            print(f"risk      {verdict['level']}: {verdict['summary']}")
        baseline = RunResult(metrics).baseline
        if baseline is not None and baseline.auc is not None:
            text = (baseline.fields.get("verdict") or {}).get("text") or f"AUC {baseline.auc:.3f}"
            print(f"baseline  blind baseline: {text}")
    if rows:
        keys = sorted({k for _, a in rows for k in a.get("tpr_at_fpr", {})}, key=float)
        head = ["attack", "AUC", "AUC CI"] + [f"TPR@{k}" for k in keys] + ["advantage", "emp. eps"]
        if is_defense_comparison(metrics):
            head = ["defense", "test acc", "DP eps"] + head
        print()
        _print_table(head, [_attack_cells(d, a, keys) for d, a in rows])
        for d, a in rows:
            if "auc" not in a:
                why = a.get("reason") or (f"error: {a['error']}" if a.get("error") else "no result")
                print(f"n/a: {d['label'] + '/' if d else ''}{a.get('name', '?')}: {why}")
    gates = row.get("gates") or {}
    if gates.get("error"):
        print(f"gates     not checked: {gates['error']}")
    for detail in gates.get("details", []):
        where = f" [{detail['defense']}]" if detail.get("defense") else ""
        value = f"{detail['value']:.4g}" if detail.get("value") is not None else "not applicable"
        word = "TRIPPED " if detail["tripped"] else "holds   " if detail.get("value") is not None else "n/a     "
        print(word + f"{detail['expression']}{where}  ({detail['attack']}: {value})")
    return 0


def _attack_cells(defense: dict[str, Any] | None, a: dict[str, Any], keys: list[str]) -> list[str]:
    """One row of ``runs show``'s attack table (prefixed by the defense's columns for a defense comparison)."""
    first = []
    if defense is not None:
        target = defense.get("target") or {}
        first = [defense["label"], f"{target['test_accuracy']:.4f}" if "test_accuracy" in target else "-",
                 f"{defense['epsilon']:.2f}" if defense.get("epsilon") is not None else "-"]
    if "auc" not in a:
        return first + [a.get("name", "?"), "n/a", "-"] + ["-"] * len(keys) + ["-", "-"]
    name = f"{a['name']} (oracle)" if a.get("selection") == "oracle" or a["name"].endswith(".oracle") else a["name"]
    return (first + [name, f"{a['auc']:.3f}",
                     "[{:.3f}, {:.3f}]".format(*a["auc_ci"]) if a.get("auc_ci") else "-"]
            + [f"{a['tpr_at_fpr'][k]:.3f}" if k in a.get("tpr_at_fpr", {}) else "-" for k in keys]
            + [f"{a.get('advantage', float('nan')):.3f}",
               f"{a['empirical_epsilon']['epsilon']:.2f}" if a.get("empirical_epsilon") else "-"])


def _compare(store: RunStore, args: argparse.Namespace) -> int:
    if args.n_bootstrap < 1:
        raise MiauditError(f"--n-bootstrap must be at least 1, got {args.n_bootstrap}")
    result = store.compare(args.run_a, args.run_b, n_bootstrap=args.n_bootstrap, confidence=args.confidence)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"a = {result['run_a']}   b = {result['run_b']}   diff = b - a, {result['confidence']:.0%} intervals")
    rows = []
    for r in result["rows"]:
        ci = "[{:+.3f}, {:+.3f}]".format(*r["diff_ci"]) if r.get("diff_ci") else "-"
        sig = {True: "yes", False: "no", None: "-"}[r["significant"]]
        attack = f"{r['attack']} (oracle)" if r["attack"].endswith(".oracle") else r["attack"]
        rows.append([attack, r["metric"], f"{r['a']:.3f}", f"{r['b']:.3f}", f"{r['diff']:+.3f}", ci, sig,
                     r["method"]])
    _print_table(["attack", "metric", "a", "b", "diff", "diff CI", "significant", "method"], rows)
    for side in ("a", "b"):
        if result[f"only_in_{side}"]:
            print(f"only in {side}: {', '.join(result[f'only_in_{side}'])}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


def _rm(store: RunStore, args: argparse.Namespace) -> int:
    removed = store.remove(args.run, delete_files=args.delete_files)
    folder = removed["deleted_files"]
    if args.json:
        print(json.dumps({"removed": removed["id"], "deleted_files": folder}))
    else:
        print(f"removed run {removed['id']}" + (f" and deleted {folder}" if folder else ""))
    return 0
