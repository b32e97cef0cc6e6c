"""``miaudit demo --out DIR``: a full audit of a deliberately overfit classifier on scikit-learn's digits.

The target is an MLP trained to 100% training accuracy on 150 of the 1,797 digits (real data that
ships with scikit-learn); 150 held-out digits are the audited non-members. Four shadow models are
trained the same way on disjoint data, 16 reference models on paired halves of the audited digits
(when :mod:`miaudit.classifier.reference.pool` is installed), and every registered classifier attack runs with
its default parameters, plus class-dependent and global variants. Runs in under 3 minutes on 2
CPU cores; the config it used is saved as ``config.yaml`` and can be re-run with ``miaudit audit``.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from miaudit.commands.audit import add_run_flags, run_and_finalize

#: extra threshold / attack-model variants shown beside each attack's defaults
VARIANTS = [
    {"name": "loss", "label": "loss_per_class", "params": {"per_class": True}},
    {"name": "modified_entropy", "label": "modified_entropy_per_class", "params": {"per_class": True}},
    {"name": "shokri", "label": "shokri_global", "params": {"per_class": False}},
]


def reference_pool_available() -> bool:
    return importlib.util.find_spec("miaudit.classifier.reference.pool") is not None


def demo_config() -> dict[str, Any]:
    """The demo's audit config (plain data, as it would be written in YAML)."""
    from miaudit.attacks.registry import list_attacks
    from miaudit.classifier.audit import SUPPORTED_REFERENCE

    pool = reference_pool_available()
    usable = [a for a in list_attacks(target_kind="classifier") if a["needs_reference"] in SUPPORTED_REFERENCE
              and (pool or a["needs_reference"] != "reference-pool")]
    attacks: list[dict[str, Any]] = [{"name": a["name"]} for a in usable]
    names = {a["name"] for a in usable}
    attacks += [v for v in VARIANTS if v["name"] in names]
    config = {
        "kind": "classifier",
        "seed": 0,
        "dataset": {"source": "digits"},
        # 1,797 digits: 150 members + 150 non-members audited, 900 for shadow models, the rest population
        "split": {"n_members": 150, "n_nonmembers": 150, "n_shadow": 900, "n_population": 597},
        # no regularisation, many passes over few examples: memorises its training set
        "training": {"model": "mlp", "hidden": [512], "epochs": 100, "batch_size": 16, "lr": 0.001,
                     "optimizer": "adam", "weight_decay": 0.0},
        "shadow": {"n_models": 4},
        "attacks": attacks,
        "evaluation": {"n_bootstrap": 1000, "confidence": 0.95, "fprs": [0.001, 0.01, 0.05]},
    }
    if pool:
        config["reference"] = {"n_models": 16, "executor": "vectorised"}
    return config


def register(subparsers: argparse._SubParsersAction) -> None:
    from miaudit.runs.tracking import add_common_run_flags

    parser = subparsers.add_parser("demo", help="audit a deliberately overfit classifier on scikit-learn digits",
                                   description="Train a deliberately overfit MLP on scikit-learn's digits, its "
                                               "shadow and reference models, run every classifier attack and write "
                                               "the report (under 3 minutes on 2 CPU cores).")
    add_run_flags(parser)
    add_common_run_flags(parser)
    # tiny models: one thread is fastest, and stays fast on a busy 2-core machine
    parser.set_defaults(func=run, threads=1)


def run(args: argparse.Namespace) -> int:
    from miaudit.runs import parse_config

    return run_and_finalize(parse_config(demo_config()), args, command="demo")
