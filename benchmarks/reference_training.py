"""Reference-pool training speed: the same pool by the sequential, vectorised, process and Ray executors.

Each executor runs in its own fresh Python process (so its peak memory is its own) on the same
models, seeds and data, one after another; the script reports wall time, the ratio sequential /
vectorised (the goal: at least 2x), peak resident memory, and how far the vectorised models' logits
are from the sequential ones (process and Ray must be identical to sequential).

    nice -n 10 python benchmarks/reference_training.py            # writes benchmarks/results/reference_training.md

Workloads (modest, for 2 shared CPU cores), 16 models each on 500 examples (paired halves of
1,000): Location MLP 446-128-30, 8 epochs (all four executors); MNIST small CNN (8 and 16
channels, head 64), 2 epochs (sequential and vectorised).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "location-mlp": {"source": "location", "n": 1000,
                     "recipe": {"model": "mlp", "hidden": [128], "epochs": 8, "batch_size": 64, "lr": 1e-3},
                     "executors": ["sequential", "vectorised", "process", "ray"]},
    "mnist-cnn": {"source": "mnist", "n": 1000,
                  "recipe": {"model": "cnn", "hidden": [64], "epochs": 2, "batch_size": 64, "lr": 1e-3,
                             "model_options": {"channels": [8, 16]}},
                  "executors": ["sequential", "vectorised"]},
}

CHILD = """
import json, resource, sys, time
import numpy as np
from miaudit.config import from_dict
from miaudit.data import load_dataset, paired_keep_matrix
from miaudit.classifier.reference.pool import train_reference_pool
from miaudit.classifier.training import TrainConfig

def main():
    spec = json.loads(sys.argv[1])
    data = load_dataset(spec["source"]).subset(np.arange(spec["n"]))
    keep = paired_keep_matrix(spec["m"], len(data), seed=0)
    recipe = from_dict(TrainConfig, spec["recipe"])
    start = time.perf_counter()
    pool = train_reference_pool(data, keep, recipe, executor=spec["executor"], n_workers=spec["workers"],
                                progress=False)
    seconds = time.perf_counter() - start
    np.save(spec["logits"], np.stack([o.logits for o in pool.outputs]))
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": self_kib / 1024, "child_peak_mb": child_kib / 1024}))

if __name__ == "__main__":
    main()
"""


def run_executor(workload: dict, executor: str, m: int, workers: int, folder: Path) -> dict:
    spec = {"source": workload["source"], "n": workload["n"], "recipe": workload["recipe"], "executor": executor,
            "m": m, "workers": workers, "logits": str(folder / f"{executor}.npy")}
    script = folder / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), json.dumps(spec)], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{executor} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    result["logits"] = np.load(spec["logits"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="processes / Ray CPUs")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--executors", nargs="+", help="default: each workload's own list")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_training.md"))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads:
            results = {}
            for executor in args.executors or WORKLOADS[name]["executors"]:
                print(f"[{name}] {executor} ...", flush=True)
                results[executor] = run_executor(WORKLOADS[name], executor, args.models, args.workers, Path(tmp))
                r = results[executor]
                print(f"  {r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB", flush=True)
            base = results.get("sequential")
            for executor, r in results.items():
                diff = float(np.abs(r["logits"] - base["logits"]).max()) if base is not None else float("nan")
                speedup = base["seconds"] / r["seconds"] if base is not None else float("nan")
                rows.append((name, executor, r["seconds"], speedup, r["peak_mb"], r["child_peak_mb"], diff))

    cores = os.cpu_count()
    lines = [
        "# Reference-pool training: executors side by side",
        "",
        *[f"- {name}: {WORKLOADS[name]['recipe']}" for name in args.workloads],
        "",
        f"{args.models} reference models per workload, each on 500 examples (paired halves of 1,000); every executor "
        f"in a fresh process, one after another, on the same seeds. Machine: {platform.machine()}, {cores} CPU cores "
        f"(shared with other jobs while measured: wall times are noisy; ratios come from one run). "
        f"process / Ray: {args.workers} workers. `python benchmarks/reference_training.py`.",
        "",
        "| workload | executor | train seconds | sequential / this | peak RSS driver (MB) "
        "| peak RSS largest child (MB) | max abs logit diff vs sequential |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, executor, seconds, speedup, peak, child, diff in rows:
        lines.append(f"| {name} | {executor} | {seconds:.1f} | {speedup:.2f}x | {peak:.0f} | {child:.0f} "
                     f"| {diff:.2g} |")
    lines += [
        "",
        "Train seconds: wall time of `train_reference_pool` (includes starting worker processes / the local Ray "
        "instance, and scoring). Peak RSS: `ru_maxrss` of the driver process, and the largest of the child "
        "processes the driver reaped (process workers; for Ray, the local instance's processes). Vectorised "
        "logits differ from sequential ones only by floating-point summation order.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
