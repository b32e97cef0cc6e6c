"""One-run canary audits (Steinke, Nasr & Jagielski 2023) of DP-SGD on Location, beside the accountant.

    nice -n 10 python benchmarks/dp_one_run_audit.py [--seeds 0 1 2] [--threads 1] [--keep DIR]

Starts from ``examples/dp_canary_audit.yaml`` (MLP, 2000 fixed training examples, 1000 mislabeled
canaries inserted with probability 1/2, k+ = k- = 100 fixed in advance) and trains one model per
setting and seed: no defense, and DP-SGD at accountant epsilon 100, 8 and 1 (plus epsilon 8 with
the initial-weights calibration of the canary score). Writes ``benchmarks/results/dp_one_run_audit.md``
with, per run: the accountant's epsilon, the one-run lower bound at the fixed k, the oracle best over
k, the Clopper-Pearson bound of the same canary scores, the canary attack's AUC and TPR at 5% FPR
with 95% bootstrap CIs, the test accuracy and the wall time.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/dp_canary_audit.yaml"
RESULT = ROOT / "benchmarks" / "results" / "dp_one_run_audit.md"


def settings(base: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, config) of every setting; the recipe is the example's, lr 0.001 without DP."""
    out = []
    none = copy.deepcopy(base)
    none["defense"] = {"name": "none"}
    none["delta"] = 1e-5
    none["training"]["lr"] = 0.001
    out.append(("none", none))
    for eps in (100.0, 8.0, 1.0):
        dp = copy.deepcopy(base)
        dp["defense"]["params"]["target_epsilon"] = eps
        out.append((f"dp_sgd eps {eps:g}", dp))
    calibrated = copy.deepcopy(base)
    calibrated["calibrate"] = "initial"
    out.append(("dp_sgd eps 8, calibrate: initial", calibrated))
    return out


def run_one(config: dict[str, Any], out: Path) -> dict[str, Any]:
    from miaudit.runs import parse_config, run_audit

    start = time.perf_counter()
    # the run's metrics carry the Clopper-Pearson bound of the canary scores, at the run's delta
    metrics = dict(run_audit(parse_config(config), out, overwrite=True, progress=False))
    wall = time.perf_counter() - start
    return {"metrics": metrics, "wall": wall}


def _ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def summary(label: str, results: list[dict[str, Any]]) -> str:
    """Mean over seeds of one setting: accountant epsilon, bound, oracle, canary AUC, test accuracy."""
    ms = [r["metrics"] for r in results]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    eps = [m["dp"]["epsilon"] for m in ms]
    claimed = f"{mean(eps):.2f}" if None not in eps else "-"
    return (f"| {label} | {claimed} | {mean([m['one_run_audit']['epsilon'] for m in ms]):.3f} | "
            f"{mean([m['one_run_audit']['oracle']['oracle_best']['epsilon'] for m in ms]):.3f} | "
            f"{mean([m['attacks'][0]['auc'] for m in ms]):.3f} | "
            f"{mean([m['target']['test_accuracy'] for m in ms]):.3f} |")


def row(label: str, seed: int, result: dict[str, Any]) -> str:
    m = result["metrics"]
    dp, one, attack = m["dp"], m["one_run_audit"], m["attacks"][0]
    oracle = one["oracle"]["oracle_best"]
    claimed = f"{dp['epsilon']:.2f} (σ = {dp['noise_multiplier']:.3g})" if dp["epsilon"] is not None else "-"
    return (f"| {label} | {seed} | {claimed} | **{one['epsilon']:.3f}** ({one['correct']}/{one['guesses']}) | "
            f"{oracle['epsilon']:.3f} (k = {oracle['k_pos']}) | {attack['empirical_epsilon']['epsilon']:.3f} | "
            f"{_ci(attack['auc'], attack['auc_ci'])} | "
            f"{_ci(attack['tpr_at_fpr']['0.05'], attack['tpr_at_fpr_ci']['0.05'])} | "
            f"{m['target']['test_accuracy']:.3f} | {m['target']['train_seconds']:.1f} | {result['wall']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--keep", type=Path, help="folder to keep the run directories in")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    from miaudit.config import load_yaml

    torch.set_num_threads(args.threads)
    base = load_yaml(ROOT / EXAMPLE)
    rows, means, start = [], [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.keep or Path(tmp)
        for i, (label, config) in enumerate(settings(base)):
            results = []
            for seed in args.seeds:
                results.append(run_one({**config, "seed": seed}, out_root / f"{i}-seed{seed}"))
                rows.append(row(label, seed, results[-1]))
                print(rows[-1], flush=True)
            means.append(summary(label, results))
    total = time.perf_counter() - start
    c = base["canaries"]
    lines = [
        "<!-- written by benchmarks/dp_one_run_audit.py; do not edit by hand -->", "",
        "# One-run canary audit of DP-SGD (Steinke, Nasr & Jagielski 2023) vs the accountant's epsilon", "",
        f"Command: `nice -n 10 python benchmarks/dp_one_run_audit.py --seeds {' '.join(map(str, args.seeds))}`, "
        f"{total:.0f} s in total on {platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores visible "
        f"(shared with other jobs: times are indicative), torch threads {torch.get_num_threads()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}.", "",
        f"Setup ({EXAMPLE}): Location, MLP {base['training']['hidden']}, {base['training']['epochs']} epochs, adam, "
        f"batch {base['training']['batch_size']}, lr {base['training']['lr']} with DP-SGD (0.001 without); "
        f"{base['n_train']} fixed training examples, {c['n']} {c['kind']} canaries each inserted independently "
        f"with probability 1/2, {base['n_test']} test examples; DP-SGD through Opacus (Poisson sampling, clipping "
        f"norm {base['defense']['params']['max_grad_norm']}, RDP accountant), delta = 1e-5. Canary score: "
        "`loss` (-cross-entropy on the canary's wrong label) on the final model (rows `calibrate: initial`: minus "
        "the same on the initial weights). One training run per row.", "",
        f"- **one-run bound**: Steinke et al.'s lower bound at k+ = k- = {c['k_pos']} fixed in the config, "
        "95% confidence, delta = 1e-5 (correct guesses / guesses in brackets). The only valid bound of the row.",
        "- **oracle**: the best bound over k in {10, 20, 50, 100, 200, 500} chosen on these scores (not valid at "
        "95%).",
        "- **CP**: the Clopper-Pearson bound (Bonferroni over thresholds) that `miaudit audit` adds to every "
        "attack entry, on the same canary scores.",
        "- **AUC**, **TPR@5%**: the canary attack (inserted vs left-out canaries, ~500 each), 95% stratified "
        "bootstrap CIs (1000 resamples). TPR at lower FPR rests on too few left-out canaries.", "",
        "| setting | seed | accountant ε (noise σ) | one-run bound (v/r) | oracle (best k) | CP | canary AUC | "
        "TPR@5%FPR | test acc | train (s) | run (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows, "", f"Means over the {len(args.seeds)} seeds:", "",
        "| setting | accountant ε | one-run bound | oracle | canary AUC | test acc |", "|---|---|---|---|---|---|",
        *means, "",
    ]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines))
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
