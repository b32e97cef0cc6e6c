"""``miaudit demo --out DIR``: a full audit of a deliberately overfit classifier on scikit-learn's digits.

The targets are MLPs trained to 100% training accuracy on 150 of 300 audited digits (real data that
ships with scikit-learn). Seven of them, each on its own random half (``evaluation.n_targets: 7``), are
attacked in turn and their scores pooled (Carlini et al. 2022's evaluation), so the 1,050 non-member
scores support TPR at 1% FPR (10.5 expected false positives; one target's 150 would give 1.5). Four
shadow models are trained the same way on disjoint data; each target's 16 reference models are
models of the same pool trained on other halves (when :mod:`miaudit.classifier.reference.pool` is
installed); every registered classifier attack runs with its default parameters, plus
class-dependent and global variants. Runs in about 1 to 2 minutes on 2 CPU cores; the config it used is
saved as ``config.yaml`` and can be re-run with ``miaudit audit``.
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


#: targets pooled (evaluation.n_targets): 7 x 150 = 1,050 non-member scores, so TPR at 1% FPR rests on
#: 10.5 expected false positives
N_TARGETS = 7


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
        "evaluation": {"n_bootstrap": 1000, "confidence": 0.95, "fprs": [0.001, 0.01, 0.05],
                       "n_targets": N_TARGETS},
    }
    if pool:
        config["reference"] = {"n_models": 16, "executor": "vectorised"}
    return config


def register(subparsers: argparse._SubParsersAction) -> None:
    from miaudit.runs.tracking import add_common_run_flags

    parser = subparsers.add_parser("demo", help="audit a deliberately overfit classifier on scikit-learn digits",
                                   description="Train 7 deliberately overfit MLPs on random halves of 300 of "
                                               "scikit-learn's digits, their shadow and reference models, attack "
                                               "each in turn with every classifier attack, pool the scores and "
                                               "write the report (about 1 to 2 minutes on 2 CPU cores).")
    add_run_flags(parser)
    add_common_run_flags(parser)
    # tiny models: one thread is fastest, and stays fast on a busy 2-core machine
    parser.set_defaults(func=run, threads=1)


def run(args: argparse.Namespace) -> int:
    from miaudit.runs import parse_config

    return run_and_finalize(parse_config(demo_config()), args, command="demo")
