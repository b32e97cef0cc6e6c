"""Does an LLM audit's memory stay constant in the number of documents?

Peak resident memory (``ru_maxrss``) of a whole ``kind: llm`` audit (``run_llm_audit``: load, one
forward pass per document, the attacks with honest hyper-parameter selection, evaluation with
bootstrap CIs, run directory) on the real stories260K weights, at ``--sizes`` documents (default
1,000 / 10,000 / 50,000), each size in a fresh process. The documents are short TinyStories-like
sentences (about 20-45 tokens) drawn from templates with a fixed seed, half labelled members (the
labels are arbitrary: only memory and time are measured). Attacks: loss, zlib, min_k (k chosen on
the calibration split), min_k_pp (k chosen), norm_ac (beta chosen over the 52-value grid); the blind
baseline and the token view are on, as by default. ``--no-baseline`` turns the blind baseline off
(its TF-IDF matrix grows with the documents).

Goal: the largest run within 1.2x of the smallest. Run:
``nice -n 10 python benchmarks/llm_memory.py`` (about 4 minutes on 2 quiet cores); the table goes to
``benchmarks/results/llm_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIAUDIT_DATA", ROOT.parent / "shared" / "data"))
MODEL = DATA / "models" / "stories260K"
NAMES = ["Tom", "Lily", "Ben", "Sue", "Max", "Mia", "Sam", "Anna", "Tim", "Lucy", "Jack", "Zoe"]
THINGS = ["ball", "cat", "dog", "tree", "box", "kite", "car", "bird", "cake", "hat", "boat", "flower"]
ADJECTIVES = ["big", "red", "little", "happy", "shiny", "old", "soft", "funny", "blue", "tall"]
PLACES = ["park", "garden", "house", "forest", "school", "beach", "shop", "room"]
VERBS = ["found", "saw", "liked", "wanted", "made", "lost", "played with", "looked at"]
FEELINGS = ["happy", "sad", "surprised", "excited", "scared", "proud"]


def documents(n: int, seed: int = 0) -> list[str]:
    """``n`` short stories of one or two sentences (distinct: each carries its index)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pick = lambda xs: xs[int(rng.integers(len(xs)))]
        text = f"{pick(NAMES)} {pick(VERBS)} a {pick(ADJECTIVES)} {pick(THINGS)} in the {pick(PLACES)}."
        if rng.random() < 0.6:
            text += f" {pick(NAMES)} was {pick(FEELINGS)} and gave it {i % 97} {pick(THINGS)}s."
        out.append(text)
    return out


def config(path: Path, baseline: bool) -> dict:
    return {"kind": "llm", "seed": 0,
            "dataset": {"source": "table", "path": str(path)},
            "model": {"name_or_path": str(MODEL), "local_files_only": True, "batch_size": 32},
            "attacks": [{"name": "loss"}, {"name": "zlib"}, {"name": "min_k"}, {"name": "min_k_pp"},
                        {"name": "norm_ac"}],
            "blind_baseline": {"enabled": baseline}, "evaluation": {"n_bootstrap": 200}}


def child(n: int, baseline: bool, work: Path) -> None:
    """One audit in this process; prints a JSON line with its peak resident memory."""
    import torch

    from miaudit.llm.audit import run_llm_audit

    torch.set_num_threads(1)
    path = work / f"docs{n}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i, text in enumerate(documents(n)):
            f.write(json.dumps({"text": text, "label": i % 2}) + "\n")
    start = time.perf_counter()
    metrics = run_llm_audit(config(path, baseline), work / f"run{n}", progress=False)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "peak_mib": peak_kib / 1024, "seconds": seconds,
                      "tokens_mean": metrics["data"]["tokens_per_document_mean"],
                      "auc_loss": next(a["auc"] for a in metrics["attacks"] if a["name"] == "loss")}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--jobs", type=int, default=1, help="audits run at the same time (their seconds then "
                                                                "include the contention)")
    parser.add_argument("--no-baseline", action="store_true", help="turn the blind bag-of-words baseline off")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm_memory.md"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, not args.no_baseline, Path(args.work))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as work:
        running = []
        for n in args.sizes:  # --jobs audits at a time, each in its own process (its own ru_maxrss)
            command = [sys.executable, __file__, "--child", str(n), "--work", work]
            command += ["--no-baseline"] if args.no_baseline else []
            running.append((n, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                env={**os.environ, "TQDM_DISABLE": "1"})))
            if len(running) == args.jobs or n == args.sizes[-1]:
                for size, process in running:
                    out, err = process.communicate()
                    if process.returncode != 0:
                        raise SystemExit(f"the audit of {size} documents failed:\n{err[-3000:]}")
                    rows.append(json.loads(out.strip().splitlines()[-1]))
                    print(rows[-1], flush=True)
                running = []
    smallest = rows[0]["peak_mib"]
    lines = [f"# LLM audit peak memory against the number of documents ({'without' if args.no_baseline else 'with'} "
             "the blind baseline)", "",
             f"stories260K, short TinyStories-like documents, attacks loss / zlib / min_k / min_k_pp / norm_ac with "
             f"held-out selection, 200 bootstrap resamples; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores (shared), 1 torch thread. Each size in a fresh process (`ru_maxrss`), "
             f"{args.jobs} at a time.", "",
             "| documents | tokens / doc | peak RSS (MiB) | ratio to the smallest | seconds | documents / s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['tokens_mean']:.1f} | {r['peak_mib']:.0f} | {r['peak_mib'] / smallest:.3f} | "
                     f"{r['seconds']:.0f} | {r['n'] / r['seconds']:.0f} |")
    ratio = rows[-1]["peak_mib"] / smallest
    lines += ["", f"Largest / smallest: **{ratio:.3f}** (goal <= 1.2)."]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    if args.no_baseline:
        out = out.with_name(out.stem + "_no_baseline.md")
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
