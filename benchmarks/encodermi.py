"""EncoderMI (Liu et al., CCS 2021) against a SimCLR encoder pre-trained here on MNIST.

Data: MNIST (train split) from ``../shared/data``. Four disjoint random sets of ``--n`` images
(seeded): the target encoder's pre-training set (members), audited non-members, and the attacker's
own data, half of which pre-trains the shadow encoder (shadow members) while the other half are
shadow non-members. Target and shadow encoders use the same recipe (MLP encoder 784-512-64,
projection 64-64-32, NT-Xent at temperature 0.2, Adam 3e-3, batch 256, ``--epochs`` epochs) and
are trained in two parallel processes with one torch thread each.

Each audited image gets ``max(--views)`` augmented views (the pre-training augmentations) embedded
once; the features for fewer views are the pairs among the first views. Reports:

1. the three variants (``encodermi_v``, ``encodermi_s``, ``encodermi_t``) at 10 views, cosine:
   AUC, TPR at 1% / 5% FPR with stratified bootstrap 95% CIs, balanced accuracy at the threshold
   learned on the shadow encoder (never on the evaluation labels);
2. ablation: number of augmented views vs AUC (cosine);
3. ablation: similarity measure (cosine, correlation, euclidean) vs AUC (10 views).

Run (about 10 minutes on 2 shared CPU cores)::

    nice -n 10 python benchmarks/encodermi.py
"""

from __future__ import annotations

import argparse
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from miaudit.data import load_dataset, make_split
from miaudit.encoder import (
    AugmentConfig,
    EncoderShadowData,
    EncoderTarget,
    EncoderTrainConfig,
    SimilarityFeatures,
    augmented_views,
    build_encoder,
    pairwise_similarities,
    train_simclr,
)
from miaudit.encoder.attacks.encodermi import EncoderMISet, EncoderMIThreshold, EncoderMIVector
from miaudit.evaluation import evaluate

ATTACKS = (EncoderMIVector, EncoderMISet, EncoderMIThreshold)  # imported directly: no other module is loaded
VARIANTS = tuple(cls.name for cls in ATTACKS)
MEASURES = ("cosine", "correlation", "euclidean")


def pretrain(x: np.ndarray, config: EncoderTrainConfig) -> tuple[dict, list[dict], float]:
    """Worker: pre-train one encoder; returns its state dict, history and seconds."""
    torch.set_num_threads(1)
    result = train_simclr(x, config, progress=False)
    return result.encoder.state_dict(), result.history, result.seconds


def view_embeddings(encoder: torch.nn.Module, x: np.ndarray, n_views: int, augment: AugmentConfig, seed: int
                    ) -> np.ndarray:
    """``(n, n_views, d)`` embeddings of seeded augmented views."""
    views = augmented_views(torch.from_numpy(x), n_views, augment, torch.Generator().manual_seed(seed))
    return EncoderTarget(encoder).embed(views.flatten(0, 1)).reshape(len(x), n_views, -1)


def fmt_ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def run_variants(shadow: SimilarityFeatures, shadow_m: np.ndarray, target: SimilarityFeatures, labels: np.ndarray,
                 n_bootstrap: int) -> dict[str, dict]:
    out = {}
    reference = EncoderShadowData([shadow], [shadow_m])
    for cls in ATTACKS:
        name = cls.name
        start = time.perf_counter()
        attack = cls().fit(reference)
        scores = attack.score(target)
        out[name] = evaluate(labels, scores, threshold=attack.decision_threshold, n_bootstrap=n_bootstrap)
        out[name]["seconds"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images per part (members, non-members, shadow in/out)")
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 3, 5, 10, 20])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "encodermi.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    data = load_dataset("mnist", data_dir=args.data_dir, split="train")
    split = make_split(len(data), n_members=args.n, n_nonmembers=args.n, n_shadow=2 * args.n, seed=args.seed)
    shadow_members, shadow_nonmembers = split.shadow[:args.n], split.shadow[args.n:]
    labels = split.membership
    shadow_idx = np.concatenate([shadow_members, shadow_nonmembers])
    shadow_m = np.arange(2 * args.n) < args.n
    recipe = EncoderTrainConfig(epochs=args.epochs)

    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        jobs = {role: pool.submit(pretrain, data.x[idx], EncoderTrainConfig(epochs=args.epochs, seed=seed))
                for role, idx, seed in (("target", split.target_members, args.seed + 1),
                                        ("shadow", shadow_members, args.seed + 2))}
        trained = {role: job.result() for role, job in jobs.items()}
    encoders = {}
    for role, (state, history, seconds) in trained.items():
        enc = build_encoder(recipe.arch, data.input_shape, recipe.width, recipe.embed_dim)
        enc.load_state_dict(state)
        encoders[role] = (enc.eval(), history, seconds)
    t_train = time.perf_counter() - t0

    k_max = max(args.views)
    emb_target = view_embeddings(encoders["target"][0], data.x[split.audited], k_max, recipe.augment, args.seed + 3)
    emb_shadow = view_embeddings(encoders["shadow"][0], data.x[shadow_idx], k_max, recipe.augment, args.seed + 4)
    feats = {m: (SimilarityFeatures(pairwise_similarities(emb_shadow, m), m, k_max),
                 SimilarityFeatures(pairwise_similarities(emb_target, m), m, k_max)) for m in MEASURES}

    def variants(measure: str, k: int) -> dict[str, dict]:
        shadow, target = (f.with_views(k) for f in feats[measure])
        return run_variants(shadow, shadow_m, target, labels, args.bootstrap)

    main_res = variants("cosine", 10)
    views_res = {k: variants("cosine", k) for k in args.views}
    measure_res = {m: variants(m, 10) for m in MEASURES}
    total = time.perf_counter() - t0

    mean_t = feats["cosine"][1].with_views(10).values.mean(axis=1)
    lines = [
        "# EncoderMI on a SimCLR MNIST encoder", "",
        f"`nice -n 10 python benchmarks/encodermi.py` (seed {args.seed}); {platform.machine()}, torch "
        f"{torch.__version__}, 1 torch thread per process, 2 processes for pre-training; total {total:.0f} s "
        f"(pre-training {t_train:.0f} s).", "",
        "## Setup", "",
        f"- MNIST train split (shared data), four disjoint random sets of {args.n} images: target members, "
        f"audited non-members, shadow members, shadow non-members (the attacker's own data).",
        f"- Encoders: SimCLR, MLP 784-{recipe.width}-{recipe.embed_dim} with projection head "
        f"{recipe.embed_dim}-{recipe.embed_dim}-{recipe.proj_dim}, NT-Xent temperature {recipe.temperature}, "
        f"Adam lr {recipe.lr}, batch {recipe.batch_size}, {args.epochs} epochs. Augmentations: random resized crop "
        f"(scale {recipe.augment.crop_scale}), rotation +-{recipe.augment.rotation} deg, translation "
        f"+-{recipe.augment.translate}, Gaussian noise std {recipe.augment.noise_std}.",
        f"- Final NT-Xent loss: target {encoders['target'][1][-1]['loss']:.3f} ({encoders['target'][2]:.0f} s), "
        f"shadow {encoders['shadow'][1][-1]['loss']:.3f} ({encoders['shadow'][2]:.0f} s).",
        f"- Mean cosine similarity of 10 views: members {mean_t[labels].mean():.4f}, non-members "
        f"{mean_t[~labels].mean():.4f}.",
        "- Attacks fitted on the shadow encoder's features only; the threshold (T) and the classifiers' "
        "decision boundary (V, S: logit 0) come from shadow data. CIs: stratified bootstrap "
        f"({args.bootstrap} resamples), 95%; they cover the sampling of audited images, not training randomness "
        "(one target and one shadow encoder).",
        f"- TPR at 0.1% FPR is not reported: {args.n} non-members allow fewer than one false positive there.", "",
        "## The three variants (10 views, cosine)", "",
        "| attack | AUC [95% CI] | TPR@1% FPR | TPR@5% FPR | balanced acc. (shadow threshold) | fit+score s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in main_res.items():
        tpr = {f: fmt_ci(r["tpr_at_fpr"][f], r["tpr_at_fpr_ci"][f]) for f in ("0.01", "0.05")}
        lines.append(f"| `{name}` | {fmt_ci(r['auc'], r['auc_ci'])} | {tpr['0.01']} | {tpr['0.05']} | "
                     f"{r['balanced_accuracy']:.3f} | {r['seconds']:.1f} |")
    lines += ["", "## Ablation: number of augmented views (cosine), AUC [95% CI]", "",
              "| views | pairs | " + " | ".join(f"`{v}`" for v in VARIANTS) + " |", "|---|---|---|---|---|"]
    for k, res in views_res.items():
        lines.append(f"| {k} | {k * (k - 1) // 2} | " + " | ".join(fmt_ci(res[v]["auc"], res[v]["auc_ci"])
                                                           for v in VARIANTS) + " |")
    lines += ["", "## Ablation: similarity measure (10 views), AUC [95% CI]", "",
              "| similarity | " + " | ".join(f"`{v}`" for v in VARIANTS) + " |", "|---|---|---|---|"]
    for m, res in measure_res.items():
        lines.append(f"| {m} | " + " | ".join(fmt_ci(res[v]["auc"], res[v]["auc_ci"]) for v in VARIANTS) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
