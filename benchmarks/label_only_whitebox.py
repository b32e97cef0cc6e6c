"""Label-only and white-box attacks beside the loss attack, on the same overfit targets.

For Location (446 binary features, 30 classes) and an MNIST subset, trains an MLP target on
``n`` members (``n`` held-out non-members audited) and ``--shadow`` shadow models like it on
disjoint data, then scores the audited examples with: the loss attack and the gap attack
(``correctness``), the label-only ``augmentation_robustness`` (threshold and attack-MLP variants),
``noise_robustness`` and ``boundary_distance`` (HopSkipJump-style, ``--budget`` queries per
example), and the white-box ``gradient_norm`` and ``gradient_features``. Thresholds come from the
shadow models (never from the evaluation labels). Reports AUC and TPR at 1% FPR with stratified
bootstrap 95% CIs, balanced accuracy at the shadow threshold, and the query / time cost; then AUC
of ``boundary_distance`` against its query budget (threshold-free, target only).

Run (about 10 minutes on 2 shared CPU cores)::

    nice -n 10 python benchmarks/label_only_whitebox.py
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import torch

from miaudit.attacks.registry import create_attack
from miaudit.classifier.queried import ShadowModel, run_queried_attacks
from miaudit.classifier.reference import AttackReference, ShadowData
from miaudit.classifier.targets import TorchClassifierTarget
from miaudit.classifier.training import TrainConfig, build_model_from_config, train_classifier
from miaudit.data import load_dataset, make_split
from miaudit.evaluation import evaluate

DATASETS = {
    "location": {"source": "location", "options": {}, "hidden": [128], "epochs": 30},
    "mnist": {"source": "mnist", "options": {"split": "train", "limit": 10000}, "hidden": [256], "epochs": 30},
}


def train(dataset, index, recipe: TrainConfig):
    model = build_model_from_config(recipe, dataset.input_shape, dataset.n_classes)
    return train_classifier(model, dataset.subset(index), recipe, progress=False).model


def fmt_ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def run_dataset(name: str, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    spec = DATASETS[name]
    ds = load_dataset(spec["source"], data_dir=args.data_dir, **spec["options"])
    n = args.n
    split = make_split(len(ds), n_members=n, n_nonmembers=n, n_shadow=len(ds) - 2 * n, seed=args.seed)
    recipe = TrainConfig(model="mlp", hidden=spec["hidden"], epochs=spec["epochs"], batch_size=64, lr=1e-3,
                         seed=args.seed)
    start = time.perf_counter()
    target = train(ds, split.target_members, recipe)
    audited, membership = ds.subset(split.audited), split.membership
    outputs = TorchClassifierTarget(target).outputs(audited)
    shadow_models, shadow_outputs = [], []
    for k in range(args.shadow):
        draw = np.random.default_rng([args.seed, 7, k]).permutation(split.shadow)[:2 * n]
        model = train(ds, draw[:n], dataclasses.replace(recipe, seed=args.seed + 100 + k))
        truth = np.arange(2 * n) < n
        shadow_models.append(ShadowModel(model, ds.subset(draw), truth))
        shadow_outputs.append((TorchClassifierTarget(model).outputs(ds.subset(draw)), truth))
    train_seconds = time.perf_counter() - start
    train_acc, test_acc = outputs.correctness[membership].mean(), outputs.correctness[~membership].mean()
    print(f"[{name}] trained target + {args.shadow} shadow models in {train_seconds:.1f} s; "
          f"train acc {train_acc:.3f}, test acc {test_acc:.3f}")

    rows = []
    reference = AttackReference(shadow=ShadowData([o for o, _ in shadow_outputs], [m for _, m in shadow_outputs]))
    for key in ("loss", "correctness"):
        t0 = time.perf_counter()
        attack = create_attack(key).fit(reference)
        rows.append((key, attack, attack.score(outputs), time.perf_counter() - t0, {"queries": 1}))
    queried = [("augmentation_robustness", create_attack("augmentation_robustness", seed=args.seed)),
               ("augmentation_robustness (attack MLP)",
                create_attack("augmentation_robustness", attack_model="mlp", seed=args.seed)),
               ("noise_robustness", create_attack("noise_robustness", seed=args.seed)),
               (f"boundary_distance ({args.budget} queries)",
                create_attack("boundary_distance", max_queries=args.budget, seed=args.seed)),
               ("gradient_norm", create_attack("gradient_norm")),
               ("gradient_features (lr)", create_attack("gradient_features"))]
    for r in run_queried_attacks(queried, target, audited, shadow=shadow_models, progress=args.progress):
        t = r.cost["target"]
        cost = {"queries": t.get("queries_per_example_mean"), "target_seconds": t["seconds"],
                "shadow_seconds": r.cost["shadow_seconds"]}
        rows.append((r.key, r.attack, r.scores, r.seconds, cost))
        print(f"[{name}] {r.key}: {r.seconds:.1f} s")

    access = {"loss": "probabilities", "correctness": "label-only"}
    table = [f"### {name}: MLP {spec['hidden']}, {spec['epochs']} epochs, {n} members / {n} non-members, "
             f"{args.shadow} shadow models",
             "",
             f"Target train accuracy {train_acc:.3f}, test accuracy {test_acc:.3f}; training target + shadows "
             f"{train_seconds:.0f} s.",
             "",
             "| attack | access | AUC [95% CI] | TPR@1%FPR [95% CI] | bal. acc. (shadow threshold) | "
             "queries / example | seconds (target signals / shadow signals) |",
             "|---|---|---|---|---|---|---|"]
    for key, attack, scores, seconds, cost in rows:
        m = evaluate(membership, scores, threshold=attack.decision_threshold, n_bootstrap=args.bootstrap,
                     seed=args.seed)
        queries = cost.get("queries")
        seconds_text = (f"{cost['target_seconds']:.1f} / {cost['shadow_seconds']:.1f}" if "target_seconds" in cost
                        else f"{seconds:.3f} (fit + score; one forward pass)")
        table.append(f"| {key} | {access.get(key, attack.access)} | {fmt_ci(m['auc'], m['auc_ci'])} | "
                     f"{fmt_ci(m['tpr_at_fpr']['0.01'], m['tpr_at_fpr_ci']['0.01'])} | "
                     f"{m['balanced_accuracy']:.3f} ({m['threshold_source']}) | "
                     f"{'-' if queries is None else f'{queries:.1f}'} | {seconds_text} |")
    table.append("")

    sweep = [f"### {name}: boundary_distance AUC against the query budget (threshold-free, target only)", "",
             "| max_queries | AUC [95% CI] | TPR@1%FPR | queries / example (mean) | censored | seconds |",
             "|---|---|---|---|---|---|"]
    for budget in args.sweep:
        attack = create_attack("boundary_distance", max_queries=budget, seed=args.seed)
        (r,) = run_queried_attacks([("bd", attack)], target, audited)
        m = evaluate(membership, r.scores, n_bootstrap=args.bootstrap, seed=args.seed)
        t = r.cost["target"]
        sweep.append(f"| {budget} | {fmt_ci(m['auc'], m['auc_ci'])} | {m['tpr_at_fpr']['0.01']:.3f} | "
                     f"{t['queries_per_example_mean']:.1f} | {t['boundary_censored']} | {t['seconds']:.1f} |")
        print(f"[{name}] sweep {budget}: AUC {m['auc']:.3f}, {t['seconds']:.1f} s")
    sweep.append("")
    return table, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--n", type=int, default=1000, help="members (and non-members) audited")
    parser.add_argument("--shadow", type=int, default=2)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--sweep", type=int, nargs="*", default=[10, 50, 100, 200, 400])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "label_only_whitebox.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: more threads only contend

    start = time.perf_counter()
    tables, sweeps = [], []
    for name in args.datasets:
        table, sweep = run_dataset(name, args)
        tables += table
        sweeps += sweep
    total = time.perf_counter() - start
    lines = ["# Label-only and white-box attacks beside the loss attack", "",
             f"`nice -n 10 python benchmarks/label_only_whitebox.py` (seed {args.seed}, "
             f"{args.bootstrap} stratified bootstrap resamples, budget {args.budget}); total {total:.0f} s on "
             f"{platform.machine()} with 1 torch thread, on a machine shared with other jobs (timings are indicative).",
             "",
             "Thresholds for balanced accuracy come from the shadow models (`shadow`), attack MLPs are trained on "
             "them; AUC and TPR@FPR need no threshold. Queries / example: mean label queries sent per audited "
             "example (clean query included); 1 for the one-pass attacks. White-box attacks send no label queries.",
             "", *tables, *sweeps]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out} in {total:.0f} s")


if __name__ == "__main__":
    main()
