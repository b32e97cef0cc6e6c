"""Auditing through an API vs with the weights: speed and agreement on the same model.

The same weights twice: stories260K as a Hugging Face folder (the HF path, :class:`HFCausalLM`) and as
GGUF served by llama.cpp's OpenAI-compatible server (llama-cpp-python, started here on 127.0.0.1 with a
float32 KV cache; the API path, :class:`APICausalLM`, cold cache). ``--docs`` WikiMIA-64 documents
(from ``../shared/data`` or ``$MIAUDIT_DATA``) go through each path, side by side in one run:

- HF, every signal (the default 52-value ACMIA grid, what a ``kind: llm`` audit computes);
- HF, the top-k attacks' signals only (``betas=()``);
- API, ``concurrency`` 1 and 4 (llama-cpp-python's server answers one request at a time).

Agreement: the largest |log p| difference per token (the server does not score a prompt's first
token, so the HF records drop theirs), and per attack (loss, zlib, min_k, dc_pdd, lowercase) the largest
score difference and both AUCs on WikiMIA's labels. Run: ``nice -n 10 python benchmarks/llm_api.py``
(needs ``pip install 'miaudit[server]'``); the table goes to ``benchmarks/results/llm_api.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from miaudit.attacks.registry import create_attack
from miaudit.evaluation import roc_auc
from miaudit.llm.api import APICausalLM, APITargetConfig
from miaudit.llm.datasets import load_wikimia
from miaudit.llm.llama_server import llama_server
from miaudit.llm.target import HFCausalLM

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIAUDIT_DATA", ROOT.parent / "shared" / "data"))
ATTACKS = {"loss": {}, "zlib": {}, "min_k": {"k": 0.2}, "dc_pdd": {"a": 0.01}, "lowercase": {}}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads and llama.cpp threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm_api.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_wikimia(64, data_dir=DATA)
    pick = np.sort(np.random.default_rng(0).choice(len(data), size=min(args.docs, len(data)), replace=False))
    data = data.subset(pick)
    texts, labels, corpus = data.texts, data.labels, load_wikimia(32, data_dir=DATA).texts[:200]
    model = DATA / "models" / "stories260K"
    full = HFCausalLM.from_pretrained(str(model), local_files_only=True, progress=False)
    light = HFCausalLM(full.model, full.tokenizer, progress=False, signal_params={"betas": ()})
    rows = []
    full.token_signals(texts[:8])  # warm-up (numba kernel, allocator)
    _, seconds = timed(lambda: full.token_signals(texts))
    rows.append(("HF path, every signal (52 betas)", seconds))
    hf_docs, seconds = timed(lambda: light.token_signals(texts))
    rows.append(("HF path, top-k attacks' signals", seconds))
    with llama_server(DATA / "models" / "stories260K-gguf" / "stories260K.gguf", n_threads=args.threads) as url:
        for concurrency in (1, 4):
            api = APICausalLM(APITargetConfig(endpoint=url, model="stories260K", top_k=5, vocab_size=512,
                                              concurrency=concurrency), progress=False)
            api.token_signals(texts[:8])
            api_docs, seconds = timed(lambda api=api: api.token_signals(texts))
            rows.append((f"API path (llama.cpp server), concurrency {concurrency}", seconds))
        lower_api = api.lowercase_log_likelihoods(texts)
        counts_api = api.token_counts(corpus)
    lower_hf = np.array([r.without_first(1).log_prob.mean() for r in light.token_signals([t.lower() for t in texts])])
    counts_hf = light.token_counts(corpus)
    hf_docs = [r.without_first(1).with_signals(lowercase_logprob=v) for r, v in zip(hf_docs, lower_hf)]
    api_docs = [r.with_signals(lowercase_logprob=v) for r, v in zip(api_docs, lower_api)]
    same = [i for i, (a, h) in enumerate(zip(api_docs, hf_docs)) if a.token_ids.size == h.token_ids.size]
    token_error = max(float(np.abs(api_docs[i].log_prob - hf_docs[i].log_prob).max()) for i in same)
    n_tokens = sum(api_docs[i].n_tokens for i in same)

    hf_rate = len(texts) / rows[1][1]
    lines = ["# Auditing through an API vs with the weights (stories260K)", "",
             f"{len(texts)} WikiMIA-64 documents ({n_tokens} scored tokens), {args.threads} torch / llama.cpp "
             f"thread(s), {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared); API "
             "cache cold; the server runs on the same machine.", "",
             "| path | seconds | documents / s | vs HF (top-k signals) |", "|---|---|---|---|"]
    for name, seconds in rows:
        lines.append(f"| {name} | {seconds:.2f} | {len(texts) / seconds:.1f} | {len(texts) / seconds / hf_rate:.2f} |")
    lines += ["", f"Token log-probabilities: largest |API - HF| = **{token_error:.2e}** over the {n_tokens} tokens of "
              f"the {len(same)} documents that llama.cpp and the HF tokenizer split into the same number of tokens "
              f"({len(texts) - len(same)} others differ; the server's first prompt token is unscored, the HF records "
              "drop theirs).", "",
              f"| attack | largest score difference ({len(same)} documents) | same, all {len(texts)} | AUC (API) | "
              "AUC (HF) |", "|---|---|---|---|---|"]
    for name, params in ATTACKS.items():
        a, h = create_attack(name, target_kind="llm", **params), create_attack(name, target_kind="llm", **params)
        if name == "dc_pdd":
            a.fit(counts_api)
            h.fit(counts_hf)
        sa, sh = a.score(api_docs), h.score(hf_docs)
        lines.append(f"| {name} | {np.abs(sa - sh)[same].max():.2e} | {np.abs(sa - sh).max():.2e} | "
                     f"{roc_auc(labels, sa):.4f} | {roc_auc(labels, sh):.4f} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
