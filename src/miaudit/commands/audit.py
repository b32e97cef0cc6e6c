"""``miaudit audit CONFIG.yaml --out DIR``: run any audit described by a YAML config.

:func:`miaudit.runs.pipeline.run_audit` writes the complete run directory (metrics with empirical
epsilon bounds, ``report.md``, ``report.html``); :func:`miaudit.runs.tracking.finalize_run` then
records the run in the run store and checks ``--fail-if`` gates (exit code 1 when one trips).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from miaudit.errors import ConfigError

if TYPE_CHECKING:
    from miaudit.evaluation.run_result import RunResult


def register(subparsers: argparse._SubParsersAction) -> None:
    from miaudit.runs.tracking import add_common_run_flags

    parser = subparsers.add_parser("audit", help="run a membership audit from a YAML config",
                                   description="Run the audit a YAML config describes (see docs/audit.md and "
                                               "examples/) and write a run directory: metrics.json, per-example "
                                               "scores, ROC figures, report.md and report.html.")
    parser.add_argument("config", help="YAML config file")
    add_run_flags(parser)
    parser.add_argument("--data-dir", help="folder with the shared datasets (overrides dataset.data_dir)")
    add_common_run_flags(parser)
    parser.set_defaults(func=run)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--overwrite``, ``--threads``, ``-q`` (shared by ``audit`` and ``demo``)."""
    parser.add_argument("--out", required=True, help="run directory to create (must be new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest for small models on a busy "
                                                    "machine); default: torch's choice")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (unchanged when ``n`` is None)."""
    if n is None:
        yield
        return
    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_and_finalize(config: Any, args: argparse.Namespace, *, command: str) -> int:
    """Run the parsed ``config`` into ``args.out`` as a tracked run; print the summary table; return the exit code."""
    from miaudit.report import summary_table
    from miaudit.runs import resolved_config, run_audit
    from miaudit.runs.gate import check_run_gate_targets
    from miaudit.runs.tracking import RunOptions, tracked_run
    from miaudit.utils.atomic import check_output_path

    # a gate that could never be checked, or an output folder that may not be written, fails now: before
    # anything is trained, written or stored
    baseline = getattr(config, "blind_baseline", None)  # LLM audits: the model-free baseline can be gated by name
    check_run_gate_targets(args.fail_if, attacks=[spec.key for spec in getattr(config, "attacks", [])],
                           kind=getattr(config, "kind", None),
                           baselines=["blind_baseline"] if getattr(baseline, "enabled", False) else [])
    check_output_path(args.out, overwrite=args.overwrite)
    options = RunOptions.from_args(args)
    with tracked_run(options, command=command, config=resolved_config(config), run_dir=args.out) as tracker:
        with torch_threads(args.threads):
            result = run_audit(config, args.out, overwrite=args.overwrite, progress=not args.quiet,
                               epsilon_delta=options.epsilon_delta)
        # with --json stdout carries only the JSON summary
        print(summary_table(result.metrics), file=sys.stderr if args.json else sys.stdout)
        print(f"markdown report: {args.out}/report.md", file=sys.stderr if args.json else sys.stdout)
        print_warnings(result)
        return tracker.finalize(args.out)


def print_warnings(result: RunResult) -> None:
    """The run's and its attacks' warnings on stderr, one ``warning:`` line each (also with ``-q``)."""
    for warning in result.all_warnings:
        print(f"warning: {warning}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from miaudit.runs import parse_config

    config = parse_config(args.config, data_dir=args.data_dir)
    return run_and_finalize(config, args, command="audit")
