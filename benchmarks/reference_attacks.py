"""Reference-model attacks side by side on Location and MNIST, with m = 16 and m = 64 reference models.

Protocol (Carlini et al. 2022, Sec. V): 2 * (64/2 + 1) = 66 models are trained with one overfitting
recipe on paired halves of ``n_audit`` examples (vectorised executor). Each of ``--targets``
models in turn is the target; its own pair is dropped and the reference pool is made of the other
pairs (the first 8 pairs for m = 16, all 32 for m = 64). Scores of all targets are pooled before
evaluation (AUC, TPR at 0.1% / 1% FPR, bootstrap 95% CIs that resample members and non-members).
RMIA's population ``z`` is ``n_population`` further examples no model trained on. The shadow-model
attack (Shokri et al. 2017) learns from 4 shadow models trained with the same recipe on separate
shadow data (paired halves, so each trains on as many examples as a target).

    nice -n 10 python benchmarks/reference_attacks.py        # writes benchmarks/results/reference_attacks.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from miaudit.attacks.registry import attack_names, create_attack
from miaudit.classifier.reference import AttackReference, ShadowData
from miaudit.classifier.reference.pool import train_reference_pool
from miaudit.classifier.training import TrainConfig
from miaudit.data import load_dataset, paired_keep_matrix
from miaudit.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "location": {"source": "location", "options": {},
                 "recipe": TrainConfig(model="mlp", hidden=[128], epochs=20, batch_size=64, lr=1e-3)},
    "mnist": {"source": "mnist", "options": {"split": "train", "limit": 6000},
              "recipe": TrainConfig(model="mlp", hidden=[128], epochs=20, batch_size=64, lr=1e-3)},
}
#: (label, registry name, params, uses the reference pool)
ATTACKS = [
    ("loss", "loss", {}, False),
    ("shadow (shokri)", "shokri", {}, False),
    ("difficulty calibration", "difficulty_calibration", {}, True),
    ("reference threshold (Ye R)", "reference_threshold", {}, True),
    ("LiRA offline", "lira", {"online": False}, True),
    ("LiRA offline, global var.", "lira", {"online": False, "variance": "global"}, True),
    ("LiRA online", "lira", {"online": True}, True),
    ("LiRA online, global var.", "lira", {"online": True, "variance": "global"}, True),
    ("RMIA offline (a tuned)", "rmia", {"online": False}, True),
    ("RMIA online", "rmia", {"online": True}, True),
]


def run_dataset(name: str, args: argparse.Namespace) -> tuple[list[dict], dict]:
    spec = DATASETS[name]
    recipe = spec["recipe"] if args.epochs is None else TrainConfig(**{**vars(spec["recipe"]), "epochs": args.epochs})
    data = load_dataset(spec["source"], **spec["options"])
    order = np.random.default_rng(0).permutation(len(data))
    n_a, n_s, n_p = args.n_audit, args.n_shadow, args.n_population
    audit, shadow_data, population = (data.subset(np.sort(order[a:b])) for a, b in
                                      ((0, n_a), (n_a, n_a + n_s), (n_a + n_s, n_a + n_s + n_p)))
    m_max = max(args.models)
    n_pool = 2 * (m_max // 2 + 1)
    start = time.perf_counter()
    pool = train_reference_pool(audit, paired_keep_matrix(n_pool, n_a, seed=1), recipe, population=population,
                                executor="vectorised", group_size=args.group_size, seed=11,
                                cache_dir=args.cache_dir, progress=not args.quiet)
    shadow = train_reference_pool(shadow_data, paired_keep_matrix(4, n_s, seed=2), recipe, executor="vectorised",
                                  seed=12, cache_dir=args.cache_dir, progress=not args.quiet)
    train_seconds = time.perf_counter() - start
    shadow_ref = ShadowData(shadow.outputs, list(shadow.keep))

    pooled: dict[tuple[str, int | None], list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    train_acc, test_acc = [], []
    for t in range(args.targets):
        target_j = 2 * t
        others = np.array([j for j in range(n_pool) if j // 2 != t])
        target, member = pool.outputs[target_j], pool.keep[target_j]
        labels.append(member.astype(int))
        train_acc.append(target.correctness[member].mean())
        test_acc.append(target.correctness[~member].mean())
        for label, attack, params, uses_pool in ATTACKS:
            if attack not in attack_names():
                continue
            for m in (args.models if uses_pool else [None]):
                ref = AttackReference(shadow=shadow_ref, population=pool.population[target_j],
                                      pool=pool.select_models(others[:m]) if uses_pool else None)
                scores = create_attack(attack, **params).fit(ref).score(target)
                pooled.setdefault((label, m), []).append(scores)
    y = np.concatenate(labels)
    rows = []
    for (label, m), parts in pooled.items():
        metrics = evaluate(y, np.concatenate(parts), fprs=(0.001, 0.01), n_bootstrap=args.bootstrap, seed=0)
        rows.append({"dataset": name, "m": m, "attack": label, **metrics})
    info = {"dataset": name, "recipe": recipe, "n_audit": n_a, "n_targets": args.targets, "n_pool": n_pool,
            "train_seconds": train_seconds, "train_accuracy": float(np.mean(train_acc)),
            "test_accuracy": float(np.mean(test_acc)), "n_scores": int(y.size), "n_nonmembers": int((y == 0).sum())}
    return rows, info


def fmt(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--n-audit", type=int, default=1000)
    parser.add_argument("--n-shadow", type=int, default=1000)
    parser.add_argument("--n-population", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    parser.add_argument("--group-size", type=int, default=33)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cache-dir", default=None, help="reuse trained models between runs")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_attacks.md"))
    args = parser.parse_args()

    all_rows, infos = [], []
    for name in args.datasets:
        rows, info = run_dataset(name, args)
        all_rows += rows
        infos.append(info)
        print(f"{name}: {info}", flush=True)

    lines = ["# Reference-model attacks: Location and MNIST, m = 16 and 64", "",
             f"Protocol: see `benchmarks/reference_attacks.py` (one model of a {infos[0]['n_pool']}-model pool is the "
             "target, the other pairs are its reference models; scores of several targets pooled). "
             f"Machine: {platform.machine()}, 2 shared CPU cores. CIs: {args.bootstrap} stratified bootstrap "
             "resamples, 95%.", ""]
    for info in infos:
        r = info["recipe"]
        lines.append(f"- **{info['dataset']}**: {info['n_audit']} audited examples (each model trains on half), "
                     f"{info['n_targets']} targets -> {info['n_scores']} scores ({info['n_nonmembers']} non-members); "
                     f"{r.model} {r.hidden}, {r.epochs} epochs, {r.optimizer} lr {r.lr:g}, batch {r.batch_size}; "
                     f"target train accuracy {info['train_accuracy']:.3f}, test accuracy {info['test_accuracy']:.3f}; "
                     f"{info['n_pool']} + 4 shadow models trained in {info['train_seconds']:.0f} s (vectorised).")
    lines += ["", "| dataset | m | attack | AUC [95% CI] | TPR@0.1% FPR [CI] | TPR@1% FPR [CI] |",
              "|---|---|---|---|---|---|"]
    for row in all_rows:
        tpr, ci = row["tpr_at_fpr"], row["tpr_at_fpr_ci"]
        lines.append(f"| {row['dataset']} | {row['m'] if row['m'] is not None else '-'} | {row['attack']} | "
                     f"{fmt(row['auc'], row['auc_ci'])} | {fmt(tpr['0.001'], ci['0.001'])} | "
                     f"{fmt(tpr['0.01'], ci['0.01'])} |")
    warnings = sorted({w for row in all_rows for w in row["warnings"]})
    if warnings:
        lines += ["", "Caveats from the evaluation: " + "; ".join(warnings) + "."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
