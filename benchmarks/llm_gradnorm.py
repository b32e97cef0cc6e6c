"""GradNorm in batches vs one backward pass per document.

Two document sets on the real stories260K weights (from ``../shared/data`` or ``$MIAUDIT_DATA``):
``--docs`` ArxivMIA abstracts (long: several windows of 512 positions each, compute-bound) and
``--docs`` WikiMIA-32 excerpts (short). Timed side by side, interleaved, ``--repeats`` times (median):

- per document: the definition, one forward and backward pass per document through all its windows
  (right-padded with an attention mask), :func:`miaudit.llm.signals.gradient_norm`;
- batched: :meth:`HFCausalLM.gradient_norms`, per-row gradients of ``--batch-size`` windows at a time
  from one batched forward and backward pass (:func:`miaudit.llm.target.per_row_gradients`).

Both give MIMIR's signal (mean over parameter tensors of the inf-norm of the gradient of the mean
token loss); the table reports their largest relative difference. Run:
``nice -n 10 python benchmarks/llm_gradnorm.py``; the table goes to ``benchmarks/results/llm_gradnorm.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from miaudit.llm.datasets import load_arxivmia, load_wikimia
from miaudit.llm.signals import gradient_norm
from miaudit.llm.target import HFCausalLM, _pad

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIAUDIT_DATA", ROOT.parent / "shared" / "data"))


def per_document(target: HFCausalLM, texts: list[str]) -> np.ndarray:
    """One backward pass per document (all of its windows in one graph)."""
    params = [q for q in target.model.parameters() if q.requires_grad]
    values = []
    for text in texts:
        segments = target._segments([target._document(text)], 0)
        ids, mask = _pad([s.ids for s in segments], target._pad_id, target.device)
        logits = target.model(input_ids=ids, attention_mask=mask).logits
        rows = torch.cat([logits[r, s.first - 1:len(s.ids) - 1] for r, s in enumerate(segments)])
        targets = torch.cat([ids[r, s.first:len(s.ids)] for r, s in enumerate(segments)])
        values.append(gradient_norm(torch.nn.functional.cross_entropy(rows.float(), targets), params, p=math.inf))
    return np.array(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm_gradnorm.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = HFCausalLM.from_pretrained(str(DATA / "models" / "stories260K"), local_files_only=True, progress=False,
                                        batch_size=args.batch_size)
    sets = {"ArxivMIA abstracts": load_arxivmia("all", data_dir=DATA).texts[:args.docs],
            "WikiMIA-32 excerpts": load_wikimia(32, data_dir=DATA).texts[:args.docs]}
    lines = ["# GradNorm: batched per-document gradients vs one backward pass per document", "",
             f"stories260K, batches of {args.batch_size} windows, {args.threads} torch thread(s), "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared); median of "
             f"{args.repeats} interleaved repeats.", "",
             "| documents | tokens / document | windows | per document (s) | batched (s) | speed-up | "
             "largest relative difference |", "|---|---|---|---|---|---|---|"]
    for name, texts in sets.items():
        n_tokens = [len(target.encode(t)) - 1 for t in texts]
        n_windows = sum(len(target._segments([target._document(t)], 0)) for t in texts)
        times: dict[str, list[float]] = {"per document": [], "batched": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            reference = per_document(target, texts)
            times["per document"].append(time.perf_counter() - start)
            start = time.perf_counter()
            batched = target.gradient_norms(texts)
            times["batched"].append(time.perf_counter() - start)
        error = float(np.max(np.abs(batched - reference) / np.abs(reference)))
        median = {k: statistics.median(v) for k, v in times.items()}
        lines.append(f"| {len(texts)} {name} | {np.mean(n_tokens):.0f} | {n_windows} | {median['per document']:.2f} | "
                     f"{median['batched']:.2f} | **{median['per document'] / median['batched']:.2f}x** | "
                     f"{error:.1e} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
