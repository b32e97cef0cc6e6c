"""What does one forward pass with every reference-free LLM signal cost, next to the bare forward pass?

A randomly initialised Pythia-70m-shaped GPT-NeoX (6 layers, width 512, 8 heads, vocabulary 50304;
no weights needed) reads ``--docs`` documents of ``--length`` tokens (WikiText-2 paragraphs in the
Pythia tokenizer, from ``../shared/data`` or ``$MIAUDIT_DATA``). Timed side by side, interleaved,
``--repeats`` times (median):

- ``forward``: ``model(ids).logits``, the bare pass;
- ``forward + signals``: the same, then :func:`compute_token_signals_batch` (fast path) and the scores
  of every reference-free attack (loss, zlib, min_k, min_k_pp, dc_pdd, ac / deriv_ac / norm_ac at
  every one of the 52 grid points via :func:`acmia_grid`);
- ``fused head + signals``: the model body, then :func:`token_signals_from_hidden`, which forms the
  logits chunk by chunk and never holds the (B, T, V) tensor; same scores.

Timed once each, for reference: the exact path (``method="exact"``) and the authors'-style path
(github.com/Salehzz/ACMIA ``com_pro_dis.py``: one document per forward pass, then for each beta a
full (T, V) ``log_softmax(log_probs * beta)`` and its moments). Peak memory: the rise of the
process's resident memory (sampled every millisecond) while it runs each variant once, in a fresh
process. Accuracy: the largest
relative error of the fast path against the exact path on these documents.

Run: ``nice -n 10 python benchmarks/llm_signal_cost.py`` (2 torch threads by default). The table
goes to ``benchmarks/results/llm_signal_cost.md``; the ratio is printed last.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miaudit.attacks.registry import create_attack
from miaudit.llm import (
    acmia_grid,
    compute_token_signals_batch,
    token_frequencies,
    token_signals_from_hidden,
)
from miaudit.llm.signals import DEFAULT_BETAS, TokenSignals

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MIAUDIT_DATA", ROOT.parent / "shared" / "data"))
REFERENCE_FREE = ("loss", "zlib", "min_k", "min_k_pp", "dc_pdd")
SIGNAL_FIELDS = ("log_prob", "entropy", "mean_logp", "var_logp", "beta_log_prob", "beta_mu", "beta_sigma")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--authors-docs", type=int, default=2,
                        help="documents timed on the authors'-style path (slow), scaled to --docs")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory processes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "llm_signal_cost.md")
    return parser.parse_args(argv)


# -- setup ---------------------------------------------------------------------------------------------

def build_model(seed: int) -> torch.nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                           intermediate_size=2048, max_position_embeddings=2048, rotary_pct=0.25,
                           use_parallel_residual=True, tie_word_embeddings=False)
    return GPTNeoXForCausalLM(config).eval()


def load_documents(n_docs: int, length: int) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """``(ids (n_docs, length), texts, token frequencies of the WikiText-2 test split (V,))``."""
    from transformers import PreTrainedTokenizerFast

    tokenizer_file = DATA / "tokenizers" / "pythia" / "20B_tokenizer.json"
    corpus = DATA / "text" / "wikitext2"
    if not tokenizer_file.is_file() or not corpus.is_dir():
        sys.exit(f"shared data not found under {DATA}: set MIAUDIT_DATA to the folder holding tokenizers/ and text/")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    docs = []
    for line in (corpus / "valid.txt").read_text(encoding="utf-8").splitlines():
        ids = tokenizer(line.strip())["input_ids"]
        if len(ids) >= length:
            docs.append(ids[:length])
        if len(docs) == n_docs:
            break
    reference = [tokenizer(line)["input_ids"] for line in (corpus / "test.txt").read_text(encoding="utf-8")
                 .splitlines() if line.strip()]
    return (torch.tensor(docs), [tokenizer.decode(d) for d in docs], token_frequencies(reference, 50304))


# -- the variants ----------------------------------------------------------------------------------------

def score_all(signals: list[TokenSignals], freq: np.ndarray) -> dict[str, Any]:
    """Every reference-free attack's scores, and the three ACMIA variants over the whole grid."""
    out: dict[str, Any] = {}
    for name in REFERENCE_FREE:
        params = {"token_freq": freq} if name == "dc_pdd" else {}
        out[name] = create_attack(name, target_kind="llm", **params).score(signals)
    out.update({f"{k}_grid": v.scores for k, v in acmia_grid(signals).items()})
    return out


def with_texts(signals: list[TokenSignals], texts: list[str]) -> list[TokenSignals]:
    return [s.with_signals(text=t) for s, t in zip(signals, texts)]


def make_variants(model: torch.nn.Module, ids: torch.Tensor, texts: list[str], freq: np.ndarray
                  ) -> dict[str, Callable[[], Any]]:
    inputs, targets = ids, ids[:, 1:]

    @torch.inference_mode()
    def forward() -> Any:
        return model(input_ids=inputs).logits

    @torch.inference_mode()
    def forward_signals() -> Any:
        logits = model(input_ids=inputs).logits
        signals = with_texts(compute_token_signals_batch(logits[:, :-1], targets), texts)
        return signals, score_all(signals, freq)

    @torch.inference_mode()
    def fused() -> Any:
        hidden = model.base_model(input_ids=inputs).last_hidden_state
        head = model.get_output_embeddings()
        signals = token_signals_from_hidden(hidden[:, :-1], head.weight, targets, bias=head.bias)
        signals = with_texts(signals, texts)
        return signals, score_all(signals, freq)

    @torch.inference_mode()
    def exact() -> Any:
        logits = model(input_ids=inputs).logits
        return with_texts(compute_token_signals_batch(logits[:, :-1], targets, method="exact"), texts)

    return {"forward": forward, "forward + signals": forward_signals, "fused head + signals": fused,
            "exact path": exact}


@torch.inference_mode()
def authors_path(model: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """ACMIA's com_pro_dis.py computation, one document at a time: a forward pass, log-softmax,
    Min-K%++'s moments, then per beta a full (T, V) tempered log-softmax, its gather, mean and std."""
    betas = torch.tensor(DEFAULT_BETAS, dtype=torch.float32).view(-1, 1, 1)
    out = []
    for doc in ids:
        logits = model(input_ids=doc[None]).logits[0, :-1].float()
        target = doc[1:]
        probs, log_probs = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
        token_lp = log_probs.gather(-1, target[:, None])[:, 0]
        mu = (probs * log_probs).sum(-1)
        sigma = (probs * log_probs.square()).sum(-1) - mu.square()
        record = {"log_prob": token_lp, "mink_plus": (token_lp - mu) / sigma.sqrt(), "lp": [], "mu": [], "sigma": []}
        for beta in betas:  # the authors split the grid into len(grid) parts: one beta at a time
            tempered = torch.log_softmax(log_probs[None] * beta, -1)
            record["lp"].append(tempered.gather(-1, target[None, :, None])[0, :, 0])
            mean = (tempered.exp() * tempered).sum(-1, keepdim=True)
            record["mu"].append(mean[0, :, 0])
            record["sigma"].append((tempered.exp() * (tempered - mean).square()).sum(-1).sqrt()[0])
        out.append(record)
    return out


# -- measurements ------------------------------------------------------------------------------------------

def time_interleaved(variants: dict[str, Callable[[], Any]], names: list[str], repeats: int
                     ) -> dict[str, list[float]]:
    for name in names:  # warm-up: allocator, tables, lazy imports
        variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate, so no variant always goes first
        for name in order:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


class _RssSampler(threading.Thread):
    """Samples this process's resident set size (/proc/self/statm) every millisecond; ``peak`` in bytes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.read()
        self.done = threading.Event()

    def read(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, self.read())


def _peak_child(name: str, args: argparse.Namespace, queue: Any) -> None:
    torch.set_num_threads(args.threads)
    model = build_model(args.seed)
    ids, texts, freq = load_documents(args.docs, args.length)
    variant = make_variants(model, ids, texts, freq).get(name) or (lambda: authors_path(model, ids[:1]))
    gc.collect()
    sampler = _RssSampler()
    before = sampler.read()
    sampler.start()
    variant()
    sampler.done.set()
    sampler.join()
    queue.put((sampler.peak - before) / 2**20)


def peak_memory_mib(name: str, args: argparse.Namespace) -> float:
    """Rise of a fresh process's resident memory (sampled every ms) while it runs ``name`` once."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_child, args=(name, args, queue))
    process.start()
    value = queue.get()
    process.join()
    return float(value)


def fast_errors(fast: list[TokenSignals], exact: list[TokenSignals], fast_scores: dict[str, Any],
                exact_scores: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """``(signals, scores)``: per signal the largest elementwise ``|fast - exact| / |exact|`` (0 where
    equal); per attack (and ACMIA grid point) the largest ``|fast - exact|`` over documents divided by
    the spread (standard deviation) of the exact scores across documents, the scale that ranks them."""
    def rel(a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.max(np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))))

    signals = {name: max(rel(getattr(f, name), getattr(e, name)) for f, e in zip(fast, exact))
               for name in SIGNAL_FIELDS}
    scores = {}
    for name, value in fast_scores.items():
        f, e = np.asarray(value, np.float64), np.asarray(exact_scores[name], np.float64)
        f, e = f.reshape(f.shape[0], -1), e.reshape(e.shape[0], -1)
        scores[name] = float(np.max(np.abs(f - e).max(0) / np.maximum(e.std(0), 1e-300)))
    return signals, scores


def authors_error(authors: list[dict[str, Any]], exact: list[TokenSignals]) -> float:
    """Largest relative difference of the authors'-style float32 tempered log-probs from the exact path."""
    worst = 0.0
    for record, sig in zip(authors, exact):
        lp = torch.stack(record["lp"]).double().numpy()
        worst = max(worst, float(np.max(np.abs(lp - sig.beta_log_prob) / np.abs(sig.beta_log_prob))))
    return worst


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_model(args.seed)
    ids, texts, freq = load_documents(args.docs, args.length)
    variants = make_variants(model, ids, texts, freq)
    timed = ["forward", "forward + signals", "fused head + signals"]
    load_before = os.getloadavg()
    print(f"timing {timed} x {args.repeats} on {args.docs} x {args.length} tokens, {args.threads} threads",
          flush=True)
    times = time_interleaved(variants, timed, args.repeats)
    start = time.perf_counter()
    exact = variants["exact path"]()
    times["exact path"] = [time.perf_counter() - start]
    n_authors = min(args.authors_docs, args.docs)
    start = time.perf_counter()
    authors = authors_path(model, ids[:n_authors])
    times["authors'-style path"] = [(time.perf_counter() - start) * args.docs / n_authors]
    load_after = os.getloadavg()

    fast_signals, fast_scores = variants["forward + signals"]()
    fused_signals, fused_scores = variants["fused head + signals"]()
    exact_scores = score_all(exact, freq)
    errors, score_errors = fast_errors(fast_signals, exact, fast_scores, exact_scores)
    fused_errors, _ = fast_errors(fused_signals, exact, fused_scores, exact_scores)
    memory = {} if args.no_memory else {name: peak_memory_mib(name, args) for name in timed + ["exact path"]}
    if not args.no_memory:
        memory["authors'-style path"] = peak_memory_mib("authors", args)

    base = statistics.median(times["forward"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        spread = f"{min(ts):.3f} - {max(ts):.3f}" if len(ts) > 1 else "(once)"
        note = f" ({n_authors} docs, scaled)" if name.startswith("authors") and n_authors < args.docs else ""
        mem = f"{memory[name]:.0f}" if name in memory else "-"
        rows.append(f"| {name}{note} | {med:.3f} | {spread} | {med / base:.2f} | {mem} |")
    ratio = statistics.median(times["forward + signals"]) / base
    fused_ratio = statistics.median(times["fused head + signals"]) / base
    # robust to drifting load: each repeat's ratio to the forward pass timed next to it, and the minima
    paired = {name: sorted(a / b for a, b in zip(times[name], times["forward"])) for name in timed[1:]}
    minima = {name: min(times[name]) / min(times["forward"]) for name in timed[1:]}
    worst, worst_fused = max(errors.values()), max(fused_errors.values())
    lines = [
        "# LLM signal cost",
        "",
        f"Randomly initialised Pythia-70m-shaped GPT-NeoX (6 layers, width 512, vocabulary 50304), "
        f"{args.docs} WikiText-2 documents x {args.length} tokens ({args.docs * (args.length - 1)} scored "
        f"positions), every reference-free attack (loss, zlib, min_k, min_k_pp, dc_pdd) and AC / DerivAC / "
        f"NormAC at all {len(DEFAULT_BETAS)} inverse temperatures. Produced by `benchmarks/llm_signal_cost.py`.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {args.threads} torch threads, `nice`; load average before / after "
        f"{load_before[0]:.1f} / {load_after[0]:.1f} (other jobs shared the CPUs). Times: median over "
        f"{args.repeats} interleaved repeats (range shown).",
        "",
        "| variant | median s | range s | ratio to forward | peak memory rise MiB |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Per-repeat ratios (each timed next to its forward pass), median [min, max]: " + "; ".join(
            f"{name} {statistics.median(r):.2f} [{r[0]:.2f}, {r[-1]:.2f}]" for name, r in paired.items())
        + ". Ratio of the fastest runs: " + "; ".join(f"{name} {v:.2f}" for name, v in minima.items()) + ".",
        "",
        "Peak memory: the rise of a fresh process's resident memory (sampled every ms) while it runs the "
        "variant once (the forward pass's own (B, T, V) float32 logits are "
        f"{args.docs * args.length * 50304 * 4 / 2**20:.0f} MiB). Resident memory depends on the C allocator "
        "(freed blocks kept in per-thread arenas), so it can exceed what is allocated at any one time.",
        "",
        f"Accuracy, fast path vs exact (float64) path: largest elementwise relative error over all "
        f"documents, positions and betas **{worst:.2e}** (fused head: {worst_fused:.2e}); per signal: "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) + ". Attack scores, largest error over "
        "documents (and grid points) divided by the spread of the exact scores across documents: "
        + ", ".join(f"{k} {v:.1e}" for k, v in score_errors.items()) + ".",
        "",
        f"The authors'-style float32 path differs from the exact path by up to "
        f"{authors_error(authors, exact[:n_authors]):.1e} (relative, tempered log-probabilities).",
        "",
        f"**forward + signals / forward = {ratio:.2f}** (fused head: {fused_ratio:.2f}; goal <= 1.3).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines[6:-3]))
    print(f"wrote {args.out}")
    print(f"ratio (forward + every reference-free signal incl. the {len(DEFAULT_BETAS)}-beta ACMIA grid) / "
          f"forward: {ratio:.2f}  (fused head: {fused_ratio:.2f}; goal <= 1.3)")


if __name__ == "__main__":
    main()
