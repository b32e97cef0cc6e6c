"""Tree-ensemble targets: LiRA / RMIA with cloned reference models vs zoo MLP reference models vs the loss attack.

Data: census-like rows in the layout of UCI Adult (``miaudit.data.census``, seed 0, made offline),
preprocessed by the one pipeline fitted on the audited rows' first half of model 0 (numeric
columns standardised, categorical ones one-hot encoded; 79 features). ``--n-audit`` rows are
audited and ``--n-population`` further rows are RMIA's population ``z``, which no model saw.

Protocol (Carlini et al. 2022, Sec. V): ``2 * (m/2 + 2)`` models of the target's family
(``sklearn.base.clone`` of the estimator, each with its own ``random_state``) are trained on
paired halves of the audited rows. Each model of the first two pairs is a target in turn (4
targets); its reference pool is made of ``m/2`` OTHER pairs (``m`` clones). The zoo pool is ``m``
MLPs (miaudit's zoo, ``[128]``, 20 epochs, Adam 1e-3: the recipe a user gets without clones) on
their own paired halves of the same rows. Scores of the 4 targets are pooled (``4 * n_audit``
scores, half members) before AUC and TPR at 1% FPR, with stratified bootstrap 95% CIs
(members and non-members resampled separately).

LiRA: online, per-example variances, median centre (the paper's defaults with 16 models);
probabilities of exactly 0 / 1 mapped one resolution step beyond the most extreme other value
(``miaudit.classifier.attacks.lira.saturation_edges``; docs/audit.md, "Probabilities of exactly 0 or 1"). The row
"LiRA, saturated at +-27.6" is the same attack on the clipped scaled logits (no mapping), to
show what that choice changes here. RMIA: online, gamma 1, 1000 population rows.

    nice -n 10 python benchmarks/sklearn_reference.py    # writes benchmarks/results/sklearn_reference.md
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from miaudit.attacks.registry import create_attack
from miaudit.classifier.attacks.lira import lira_online
from miaudit.classifier.families import EstimatorFamily
from miaudit.classifier.reference import AttackReference
from miaudit.classifier.reference.pool import train_reference_pool
from miaudit.classifier.reference.trained import TrainedReferencePool
from miaudit.classifier.training import TrainConfig
from miaudit.data import ArrayDataset, paired_keep_matrix
from miaudit.data.census import COLUMNS, write_census_files
from miaudit.data.tabular import TabularPreprocessor, read_table
from miaudit.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
ZOO = TrainConfig(model="mlp", hidden=[128], epochs=20, batch_size=64, lr=1e-3)


def estimators() -> dict[str, object]:
    from sklearn.ensemble import RandomForestClassifier
    from xgboost import XGBClassifier

    return {"random forest (100 trees)": RandomForestClassifier(n_estimators=100, n_jobs=1),
            "XGBoost (200 trees, depth 6)": XGBClassifier(n_estimators=200, max_depth=6, n_jobs=1)}


def census_data(n_audit: int, n_population: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Audited rows and population rows, preprocessed by one pipeline fitted on the audited rows' first half."""
    with tempfile.TemporaryDirectory() as folder:
        train, test = write_census_files(folder, n_train=6000, n_test=3000, seed=0)
        table = read_table(train, append=[str(test)], format="csv", header=False, columns=COLUMNS, label="income",
                           comment="|", drop=["fnlwgt"])
    order = np.random.default_rng(0).permutation(len(table))
    rows = order[:n_audit + n_population]
    data = TabularPreprocessor.fit(table, rows[:n_audit // 2]).transform(table.subset(rows))
    return data.subset(np.arange(n_audit)), data.subset(np.arange(n_audit, n_audit + n_population))


def fmt(metrics: dict, key: str) -> str:
    value, ci = (metrics["auc"], metrics["auc_ci"]) if key == "auc" else \
        (metrics["tpr_at_fpr"]["0.01"], metrics["tpr_at_fpr_ci"]["0.01"])
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def pool_of(full: TrainedReferencePool, models: list[int]) -> TrainedReferencePool:
    return full.select_models(np.asarray(models))


def attack_scores(target_out, target_z, pool: TrainedReferencePool) -> dict[str, np.ndarray]:
    reference = AttackReference(pool=pool, population=target_z)
    lira = create_attack("lira", online=True)
    rmia = create_attack("rmia", online=True)
    return {"LiRA": lira.fit(reference).score(target_out), "RMIA": rmia.fit(reference).score(target_out)}


def raw_lira(target_out, pool: TrainedReferencePool) -> np.ndarray:
    """LiRA online on the clipped scaled logits (probabilities of 0 / 1 at -+27.6), without the mapping."""
    values = pool.signal_matrix("scaled_logit")[:, :, None]
    return lira_online(target_out.scaled_logit[:, None], values, pool.keep)


def run(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    audit, population = census_data(args.n_audit, args.n_population)
    m = args.n_models
    n_pairs = m // 2 + 2
    keep = paired_keep_matrix(2 * n_pairs, len(audit), seed=1)
    start = time.perf_counter()
    zoo = train_reference_pool(audit, paired_keep_matrix(m, len(audit), seed=2), ZOO, population=population, seed=3,
                               progress=False)
    zoo_seconds = time.perf_counter() - start
    majority = float(np.mean(audit.y == np.bincount(audit.y).argmax()))
    rows, notes = [], []
    for name, estimator in estimators().items():
        family = EstimatorFamily(estimator, n_classes=audit.n_classes)
        start = time.perf_counter()
        clones = train_reference_pool(audit, keep, ZOO, population=population, seed=4, family=family,
                                      progress=False)
        clone_seconds = time.perf_counter() - start
        scores: dict[str, list[np.ndarray]] = {}
        labels, target_acc, clone_acc, zoo_acc = [], [], [], []
        for t in range(4):  # the models of the first two pairs, each a target in turn
            pair = t // 2
            others = [j for p in range(n_pairs) if p != pair for j in (2 * p, 2 * p + 1)][:m]
            target_out, target_z = clones.outputs[t], clones.population[t]
            member = keep[t]
            labels.append(member)
            target_acc.append(float(target_out.correctness[~member].mean()))
            clone_pool, zoo_pool = pool_of(clones, others), zoo
            clone_acc.append(np.mean([o.correctness[~k].mean() for o, k in zip(clone_pool.outputs, clone_pool.keep)]))
            zoo_acc.append(np.mean([o.correctness[~k].mean() for o, k in zip(zoo_pool.outputs, zoo_pool.keep)]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for kind, pool in (("cloned", clone_pool), ("zoo MLP", zoo_pool)):
                    for attack, values in attack_scores(target_out, target_z, pool).items():
                        scores.setdefault(f"{attack}, {m} {kind} references", []).append(values)
                scores.setdefault(f"LiRA, {m} cloned references, saturated at +-27.6", []).append(
                    raw_lira(target_out, clone_pool))
                scores.setdefault("loss (no references)", []).append(-target_out.loss)
        truth = np.concatenate(labels)
        for label, parts in scores.items():
            metrics = evaluate(truth, np.concatenate(parts), n_bootstrap=args.n_bootstrap, seed=0)
            rows.append(f"| {name} | {label} | {fmt(metrics, 'auc')} | {fmt(metrics, 'tpr')} |")
        saturated = np.mean([np.mean(o.confidence >= 1 - 1e-12) for o in clones.outputs])
        notes.append(f"- {name}: target test accuracy {np.mean(target_acc):.3f} (majority class {majority:.3f}); "
                     f"cloned references' test accuracy {np.mean(clone_acc):.3f}, zoo MLPs' {np.mean(zoo_acc):.3f}; "
                     f"{2 * n_pairs} clones trained in {clone_seconds:.1f} s; {saturated:.1%} of the clones' "
                     "true-class probabilities are exactly 1")
    notes.append(f"- {m} zoo MLPs trained in {zoo_seconds:.1f} s (sequential executor, one torch thread)")
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-audit", type=int, default=2000)
    parser.add_argument("--n-population", type=int, default=1000)
    parser.add_argument("--n-models", type=int, default=16)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sklearn_reference.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows, notes = run(args)
    lines = ["# Tree-ensemble targets: cloned vs zoo MLP reference models", "",
             f"Generated by `benchmarks/sklearn_reference.py` (n_audit={args.n_audit}, population "
             f"{args.n_population}, m={args.n_models} reference models, 4 targets pooled, {args.n_bootstrap} "
             f"bootstrap resamples; {time.perf_counter() - start:.0f} s on {platform.machine()}, "
             f"{platform.python_version()}). Protocol in the script's docstring.", "",
             "| target | attack | AUC [95% CI] | TPR@1% FPR [95% CI] |", "|---|---|---|---|", *rows, "", *notes, ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
