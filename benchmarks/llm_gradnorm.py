"""GradNorm in batches vs one backward pass per document.

``--docs`` ArxivMIA abstracts (from ``../shared/data`` or ``$MIAUDIT_DATA``) on the real stories260K
weights. Timed side by side, interleaved, ``--repeats`` times (median):

- per document: the definition, one forward and backward pass per document through all its windows
  (right-padded with an attention mask), :func:`miaudit.llm.signals.gradient_norm`;
- batched: :meth:`HFCausalLM.gradient_norms`, ``torch.func.vmap`` of ``grad`` over the windows of
  ``--batch-size`` windows at a time.

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

from miaudit.llm.datasets import load_arxivmia
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
    texts = load_arxivmia("all", data_dir=DATA).texts[:args.docs]
    target = HFCausalLM.from_pretrained(str(DATA / "models" / "stories260K"), local_files_only=True, progress=False,
                                        batch_size=args.batch_size)
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
    lines = ["# GradNorm: batched per-document gradients vs one backward pass per document", "",
             f"{len(texts)} ArxivMIA abstracts on stories260K ({np.mean(n_tokens):.0f} scored tokens per document on "
             f"average, {n_windows} windows of at most {target.max_length} positions), batch of {args.batch_size} "
             f"windows, {args.threads} torch thread(s), {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores (shared); median of {args.repeats} interleaved repeats.", "",
             "| path | seconds | seconds / document | documents / s |", "|---|---|---|---|"]
    for name, seconds in median.items():
        lines.append(f"| {name} | {seconds:.2f} | {seconds / len(texts):.3f} | {len(texts) / seconds:.1f} |")
    lines += ["", f"Speed-up: **{median['per document'] / median['batched']:.2f}x**; largest relative difference "
              f"of the signal: {error:.1e}."]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
