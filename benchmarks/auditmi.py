"""AuditMI (Song & Shmatikov, KDD 2019): user-level audit of word-level LSTM language models.

Corpus: WikiText-2 valid + test from ``../shared/data``; each *user* is ``--texts`` consecutive
sentences of one article (contiguous chunks treated as users). Users are split at random (seeded)
into target members, target non-members and the auditor's own users, disjoint. The vocabulary is
the ``--vocab`` most frequent words of the whole corpus, shared by every model, so that words
missing from a model's training data do not turn into easy ``<unk>`` predictions for non-members.

Models: for each value of ``--epochs`` (default 5 and 15: a less and a more over-fitted model), one
target LSTM trained on the member users' texts and ``--shadows`` shadow LSTMs, each trained on a
random half of the auditor's users (the other half are its non-members), all with the same recipe;
trained two at a time in parallel processes (one torch thread each). Each model ranks
the next tokens of its users' texts; the audit classifier (``auditmi``: rank histogram, L2
normalisation, standardisation, linear SVM) is fitted on the shadow models' users only.

Reports user-level AUC with stratified bootstrap 95% CIs, TPR at 5% FPR, and accuracy / precision
/ recall at the classifier's own decision boundary (learned on shadow users), against the number of
texts per user used for the audit (features from each user's first k texts; shadow features alike).

Run (about 10 minutes on 2 shared CPU cores)::

    nice -n 10 python benchmarks/auditmi.py
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from miaudit.data.datasets import find_data_file
from miaudit.evaluation import evaluate
from miaudit.text_generator import (
    LMTrainConfig,
    TextGeneratorTarget,
    TextShadowData,
    UserCorpus,
    UserRanks,
    Vocabulary,
    load_wikitext_users,
    train_language_model,
)
from miaudit.text_generator.attacks.auditmi import AuditMI


def train_and_rank(train: UserCorpus, audited: UserCorpus, vocab: Vocabulary, config: LMTrainConfig
                   ) -> tuple[UserRanks, float, float]:
    """Worker: train one LM on ``train``'s texts, rank ``audited``'s texts; returns ranks, final loss, seconds."""
    torch.set_num_threads(1)
    result = train_language_model(train.all_texts(), config, vocab=vocab, progress=False)
    ranks = TextGeneratorTarget.from_trained(result, max_length=config.max_length).user_ranks(
        audited.texts, audited.user_ids)
    return ranks, result.history[-1]["loss"], result.seconds


def fmt_ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100, help="target member users (as many non-members)")
    parser.add_argument("--texts", type=int, default=16, help="sentences per user")
    parser.add_argument("--shadows", type=int, default=4)
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 15],
                        help="training epochs; one target and its shadows per value")
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "auditmi.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    paths = [find_data_file(f"text/wikitext2/{s}.txt", args.data_dir) for s in ("valid", "test")]
    corpus = load_wikitext_users(paths, texts_per_user=args.texts)
    n = args.users
    order = np.random.default_rng(args.seed).permutation(len(corpus))
    target_users = corpus.subset(order[:2 * n])  # members first, then non-members
    auditor_users = corpus.subset(order[2 * n:4 * n])
    labels = np.arange(2 * n) < n
    vocab = Vocabulary.build(corpus.all_texts(), args.vocab)
    recipe = LMTrainConfig(vocab_size=args.vocab, seed=args.seed)
    shadow_members = [np.random.default_rng(args.seed + 100 + k).permutation(np.arange(2 * n) < n)
                      for k in range(args.shadows)]

    jobs = []  # (epochs, role, training users, ranked users, recipe)
    for epochs in args.epochs:
        cfg = dataclasses.replace(recipe, epochs=epochs)
        jobs.append((epochs, "target", target_users.subset(np.flatnonzero(labels)), target_users, cfg))
        jobs += [(epochs, "shadow", auditor_users.subset(np.flatnonzero(m)), auditor_users,
                  dataclasses.replace(cfg, seed=args.seed + 1 + k)) for k, m in enumerate(shadow_members)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_and_rank, train, audited, vocab, cfg) for _, _, train, audited, cfg in jobs]
        results = [f.result() for f in futures]
    t_train = time.perf_counter() - t0

    rows, models = [], []
    for epochs in args.epochs:
        mine = [(role, r) for (e, role, *_), r in zip(jobs, results) if e == epochs]
        (target_ranks, target_loss, target_s), = [r for role, r in mine if role == "target"]
        shadow_results = [r for role, r in mine if role == "shadow"]
        shadow = TextShadowData([r for r, _, _ in shadow_results], shadow_members)
        top1 = np.array([np.mean(r == 0) for r in target_ranks.flat()])
        models.append(f"| {epochs} | {target_loss:.3f} ({target_s:.0f} s) | "
                      f"{np.mean([loss for _, loss, _ in shadow_results]):.3f} | {top1[labels].mean():.3f} | "
                      f"{top1[~labels].mean():.3f} |")
        for k in sorted({k for k in (1, 2, 4, 8) if k < args.texts} | {args.texts}):
            for binning in ("linear", "log"):
                attack = AuditMI(max_texts=k, binning=binning, seed=args.seed).fit(shadow)
                m = evaluate(labels, attack.score(target_ranks), threshold=attack.decision_threshold,
                             n_bootstrap=args.bootstrap, seed=args.seed)
                tokens = np.mean([r.size for r in target_ranks.flat(k)])
                rows.append((epochs, k, binning, tokens, m))
    total = time.perf_counter() - t0
    lines = [
        "# AuditMI: user-level audit of word LSTM language models on WikiText-2", "",
        f"`nice -n 10 python benchmarks/auditmi.py` (seed {args.seed}); {platform.machine()}, torch "
        f"{torch.__version__}, 1 torch thread per process, 2 processes; total {total:.0f} s (training and "
        f"ranking {t_train:.0f} s).", "",
        "## Setup", "",
        f"- Users: {corpus.source}; {len(corpus)} users in all. Random disjoint draw: {n} target member users, "
        f"{n} target non-member users, {2 * n} auditor users ({target_users.n_tokens} and "
        f"{auditor_users.n_tokens} tokens).",
        f"- Vocabulary: the {args.vocab} most frequent lower-cased words of the whole corpus (+ `<eos>`, `<unk>`), "
        "shared by all models.",
        f"- Models: word LSTM (embedding {recipe.embed_dim}, hidden {recipe.hidden}), Adam lr {recipe.lr}, batch "
        f"{recipe.batch_size} sentences, sentences truncated to {recipe.max_length} tokens; for each number of "
        f"epochs, one target and {args.shadows} shadow models, each shadow on a random half ({n}) of the auditor's "
        "users (the same halves for every number of epochs).", "",
        "| epochs | target final train loss, nats/token (time) | shadows' mean final train loss | target top-1 "
        "rate, member users | target top-1 rate, non-member users |",
        "|---|---|---|---|---|", *models, "",
        "- Audit: `auditmi` with 100 rank bins over the vocabulary, linear bins (the authors' code) and log bins "
        "(finer near rank 0), fitted on the shadow models' users only; accuracy / precision / recall at the SVM's "
        f"decision boundary (score 0). CIs: stratified bootstrap ({args.bootstrap} resamples), 95%, over the "
        "audited users (one target model per number of epochs); a bound the bootstrap cannot see past (AUC or "
        "TPR of 1.000) is the exact Clopper-Pearson bound (100 users: 0.964).",
        f"- TPR at 0.1% and 1% FPR are not reported: {n} non-member users allow at most one false positive there.",
        "",
        "## User-level metrics against the number of a user's texts", "",
        "| epochs | texts per user | tokens per user | bins | AUC [95% CI] | TPR@5% FPR | accuracy | precision | "
        "recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for epochs, k, binning, tokens, m in rows:
        lines.append(f"| {epochs} | {k} | {tokens:.0f} | {binning} | {fmt_ci(m['auc'], m['auc_ci'])} | "
                     f"{fmt_ci(m['tpr_at_fpr']['0.05'], m['tpr_at_fpr_ci']['0.05'])} | {m['accuracy']:.3f} | "
                     f"{m['precision']:.3f} | {m['recall']:.3f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
