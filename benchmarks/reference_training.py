"""Reference-pool training speed: every executor on the same pool, side by side, against the machine's limit.

For each workload the script trains the same reference pool (same models, seeds and data) with
each executor, each run in its own fresh Python process (so start-up, imports and peak memory are
its own), repeated ``--repeats`` times with the executors interleaved (repeat 1 of every executor,
then repeat 2, ...), and reports medians. In every repeat it also measures the machine's sustained
float32 matrix-multiply rate (``--workers`` processes of one thread each multiplying 1024 x 1024
matrices at once, summed), so that each executor's achieved FLOP rate is a fraction of a limit
measured under the same load.

Useful work is counted with ``torch.utils.flop_counter.FlopCounterMode`` on one model's training
step and scoring pass (matrix products and convolutions, forward and backward, as the matmul rate
counts them) times the examples each model trains on and scores.

    nice -n 10 python benchmarks/reference_training.py            # writes benchmarks/results/reference_training.md

Workloads (``--workloads``): ``mlp``: Location (446 binary features, 30 classes), MLP 446-128-30;
``cnn-small``: the zoo's small CNN with 8 and 16 channels and a 64-wide head (the workload of the
issue's first measurement); ``cnn``: the zoo's default small CNN (32 and 64 channels, 128-wide head);
``resnet18``: ResNet-18 with group norm (``--resnet-width``, 16 by default on CPU). Image workloads
use MNIST digits zero-padded to 32 x 32 and replicated to three channels (CIFAR is not available
here; the pixels are real images with real labels). Executors: ``sequential``, ``vectorised``
(in-process, its automatic batching), ``vectorised-stacked`` (conv nets: the stacked grouped
convolution the automatic choice rejects on CPU), ``vectorised-xW`` (``--workers`` processes of one
thread, each training a group), ``process`` (``--workers`` processes of one thread), ``ray``.

The printed last line is the MLP ratio sequential / vectorised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {"source": "location", "n": 1000, "models": 64,
            "recipe": {"model": "mlp", "hidden": [128], "epochs": 20, "batch_size": 64, "lr": 1e-3},
            "executors": ["sequential", "vectorised", "vectorised-xW", "process", "ray"]},
    "cnn-small": {"source": "mnist32", "n": 1000, "models": 16,
                  "recipe": {"model": "cnn", "hidden": [64], "epochs": 4, "batch_size": 64, "lr": 1e-3,
                             "model_options": {"channels": [8, 16]}},
                  "executors": ["sequential", "vectorised", "vectorised-stacked", "vectorised-xW", "process"]},
    "cnn": {"source": "mnist32", "n": 1000, "models": 16,
            "recipe": {"model": "cnn", "hidden": [128], "epochs": 2, "batch_size": 64, "lr": 1e-3,
                       "model_options": {"channels": [32, 64]}},
            "executors": ["sequential", "vectorised", "vectorised-stacked", "vectorised-xW", "process"]},
    "resnet18": {"source": "mnist32", "n": 500, "models": 8,
                 "recipe": {"model": "resnet18", "epochs": 1, "batch_size": 64, "lr": 1e-3,
                            "model_options": {"width": 16, "norm": "group"}},
                 "executors": ["sequential", "vectorised", "vectorised-xW", "process"]},
}

CHILD = r'''
import json, resource, sys, time
spec = json.loads(sys.argv[1])
import torch
torch.set_num_threads(spec["threads"])
import numpy as np

def load(source, n):
    from miaudit.data import ArrayDataset, load_dataset
    if source != "mnist32":
        return load_dataset(source).subset(np.arange(n))
    digits = load_dataset("mnist").subset(np.arange(n))  # (n, 1, 28, 28) in [0, 1]
    x = np.zeros((n, 3, 32, 32), dtype=np.float32)
    x[:, :, 2:30, 2:30] = digits.x  # zero-padded to 32 x 32, grey replicated to three channels
    return ArrayDataset(x, digits.y, ids=digits.ids)

def matmul(seconds, device, dtype):
    n = 1024 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    rates, cpu_rates, end = [], [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(5):
            a @ b
        sync()
        rates.append(5 * 2 * n ** 3 / (time.perf_counter() - start))
        cpu_rates.append(5 * 2 * n ** 3 / max(time.process_time() - cpu, 1e-9))
    return {"gflops": float(np.median(rates)) / 1e9, "cpu_gflops": float(np.median(cpu_rates)) / 1e9}

def flops(spec):
    from torch.utils.flop_counter import FlopCounterMode
    import torch.nn.functional as F
    from miaudit.config import from_dict
    from miaudit.classifier.training import TrainConfig, build_model_from_config
    data = load(spec["source"], spec["n"])
    model = build_model_from_config(from_dict(TrainConfig, spec["recipe"]), data.input_shape, data.n_classes)
    batch = spec["recipe"]["batch_size"]
    x, y = torch.from_numpy(data.x[:batch]), torch.from_numpy(data.y[:batch])
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model.train()(x), y).backward()
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model.eval()(x)
    return {"train_per_example": train.get_total_flops() / batch,
            "score_per_example": forward.get_total_flops() / batch}

def pool(spec):
    from miaudit.config import from_dict
    from miaudit.data import paired_keep_matrix
    from miaudit.classifier.reference.pool import train_reference_pool
    from miaudit.classifier.training import TrainConfig
    data = load(spec["source"], spec["n"])
    keep = paired_keep_matrix(spec["models"], len(data), seed=0)
    recipe = from_dict(TrainConfig, spec["recipe"])
    start, cpu = time.perf_counter(), time.process_time()
    result = train_reference_pool(data, keep, recipe, executor=spec["executor"], n_workers=spec["workers"],
                                  batching=spec["batching"], progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(spec["logits"], np.stack([o.logits for o in result.outputs]))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": seconds, "cpu": cpu + children.ru_utime + children.ru_stime,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "child_peak_mb": children.ru_maxrss / 1024, "numerics": result.info["numerics"]}

if __name__ == "__main__":
    job = {"matmul": lambda s: matmul(s["seconds"], s["device"], s["dtype"]), "flops": flops, "pool": pool}[spec["job"]]
    print(json.dumps(job(spec)))
'''


def _child(script: Path, spec: dict[str, Any]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(script), json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _result(proc: subprocess.Popen, what: str) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def machine_rate(script: Path, workers: int, seconds: float, device: str = "cpu", dtype: str = "float32"
                 ) -> tuple[float, float]:
    """GFLOP/s of ``workers`` one-thread processes multiplying 1024 x 1024 matrices (8192 x 8192 on CUDA) at
    once, summed; and their mean GFLOP per CPU-second (one core's rate while it runs, whatever else shares
    the machine)."""
    procs = [_child(script, {"job": "matmul", "threads": 1, "seconds": seconds, "device": device, "dtype": dtype})
             for _ in range(workers)]
    results = [_result(p, "matmul") for p in procs]
    return sum(r["gflops"] for r in results), statistics.mean(r["cpu_gflops"] for r in results)


def executor_spec(name: str, workers: int) -> dict[str, Any]:
    """``executor``, ``n_workers`` and ``batching`` of an executor label."""
    if name == "vectorised-stacked":
        return {"executor": "vectorised", "workers": None, "batching": "stacked"}
    if name == "vectorised-xW":
        return {"executor": "vectorised", "workers": workers, "batching": "auto"}
    if name in ("process", "ray"):
        return {"executor": name, "workers": workers, "batching": "auto"}
    return {"executor": name, "workers": None, "batching": "auto"}


def label(name: str, workers: int, threads: int) -> str:
    if name == "vectorised-xW":
        return f"vectorised x{workers} processes"
    if name in ("process", "ray"):
        return f"{name} x{workers}"
    return f"{name} ({threads} thread{'s' if threads > 1 else ''})"


def _per_repeat(values: list[float], goal: float, fmt: str) -> str:
    """``values`` of each repeat and how many meet ``goal``."""
    met = sum(v >= goal for v in values)
    return f"per repeat {', '.join(fmt.format(v) for v in values)}: met in {met} of {len(values)}"


def goals(ratios: dict[tuple[str, str], float], runs: dict[tuple[str, str], list[dict[str, Any]]],
          rates: list[float], args: argparse.Namespace) -> list[str]:
    """The issue's goals, checked against this run's medians, and repeat by repeat (each repeat's executors ran
    one after another, so a repeat's ratio pairs runs made minutes apart at most, under that repeat's matmul
    rate)."""
    out = ["Goals (issue 17), from this run's medians; per repeat beside them:"]
    for name, goal in (("mlp", 2.0), ("cnn-small", 1.5), ("cnn", 1.5)):
        if (name, "vectorised") in ratios and (name, "sequential") in runs:
            ratio = ratios[(name, "vectorised")]
            paired = [b["seconds"] / v["seconds"]
                      for b, v in zip(runs[(name, "sequential")], runs[(name, "vectorised")])]
            out.append(f"- {name}: vectorised is {ratio:.2f}x sequential (goal >= {goal}x: "
                       f"{'met' if ratio >= goal else 'not met'}; {_per_repeat(paired, goal, '{:.2f}x')}).")
    if "mlp" in args.workloads:
        rate = statistics.median(rates)
        achieved = {e: WORKLOADS["mlp"]["flop"] / statistics.median(r["seconds"] for r in results) / 1e9
                    for (name, e), results in runs.items() if name == "mlp"}
        best = max(achieved, key=achieved.__getitem__)
        share = achieved[best] / rate
        shares = [WORKLOADS["mlp"]["flop"] / r["seconds"] / 1e9 / repeat_rate
                  for r, repeat_rate in zip(runs[("mlp", best)], rates)]
        out.append(f"- mlp: the best executor ({label(best, args.workers, args.threads)}) reaches {100 * share:.0f}% "
                   f"of the machine's matmul rate (goal >= 40%: {'met' if share >= 0.4 else 'not met'}; "
                   f"{_per_repeat([100 * v for v in shares], 40, '{:.0f}%')}, each against its repeat's matmul rate).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--executors", nargs="+", help="default: each workload's own list")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the single-process executors (default 1, see the results file)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes of the multi-process executors and of the matmul-rate measurement")
    parser.add_argument("--models", type=int, help="override every workload's number of models")
    parser.add_argument("--examples", type=int, help="override every workload's audited examples (each model "
                        "trains on half; MNIST has 70,000, Location 5,010)")
    parser.add_argument("--epochs", type=int, help="override every workload's epochs")
    parser.add_argument("--resnet-width", type=int, default=16, help="64 is the usual ResNet-18 (use it on a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: then only sequential and vectorised run, "
                        "and the matmul rate is the GPU's (float32, or bfloat16 with --precision bfloat16)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--matmul-seconds", type=float, default=3.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_training.md"))
    args = parser.parse_args()

    WORKLOADS["resnet18"]["recipe"]["model_options"]["width"] = args.resnet_width
    gpu = args.device.startswith("cuda")
    for workload in WORKLOADS.values():
        workload["recipe"].update(device=args.device, precision=args.precision)
        if args.models:
            workload["models"] = args.models
        if args.examples:
            workload["n"] = args.examples
        if args.epochs:
            workload["recipe"]["epochs"] = args.epochs
        if gpu:  # one process drives the GPU
            workload["executors"] = [e for e in workload["executors"] if e in ("sequential", "vectorised")]
    if gpu:
        args.workers = 1
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    rates: list[float] = []
    single_rates: list[float] = []
    core_rates: list[float] = []
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        work = {name: _result(_child(script, {"job": "flops", "threads": 1, **WORKLOADS[name]}), "flops")
                for name in args.workloads}
        for repeat in range(args.repeats):
            total, _ = machine_rate(script, args.workers, args.matmul_seconds, args.device, args.precision)
            single, per_core = machine_rate(script, 1, args.matmul_seconds)
            rates.append(total)
            single_rates.append(single)
            core_rates.append(per_core)
            print(f"[repeat {repeat + 1}] matmul: {total:.1f} GFLOP/s ({args.workers} processes), {single:.1f} "
                  f"(1 thread), {per_core:.1f} per CPU-second", flush=True)
            for name in args.workloads:
                for executor in args.executors or WORKLOADS[name]["executors"]:
                    logits = Path(tmp) / f"{name}.{executor}.npy"
                    spec = {"job": "pool", "threads": args.threads, **WORKLOADS[name],
                            **executor_spec(executor, args.workers), "logits": str(logits)}
                    result = _result(_child(script, spec), f"{name} {executor}")
                    if repeat == 0:
                        result["logits"] = np.load(logits)
                    runs.setdefault((name, executor), []).append(result)
                    print(f"  {name} {executor}: {result['seconds']:.1f} s (cpu {result['cpu']:.1f} s)", flush=True)
    load_after = os.getloadavg()
    rate, core_rate = statistics.median(rates), statistics.median(core_rates)

    lines = [
        "# Reference-pool training: executors side by side",
        "",
        f"Device: {args.device} ({args.precision}). "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after ({time.time() - started:.0f} s in all; the benchmark itself runs at most "
        f"{args.workers} busy process(es) at a time, so a load above that means other work shared the machine). "
        f"Each executor in a fresh process; {args.repeats} repeats with the executors interleaved; medians. "
        f"Single-process executors ran with {args.threads} torch thread(s); multi-process ones with {args.workers} "
        f"processes of one thread. Run with `nice -n 10 python benchmarks/reference_training.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
        f"Sustained {args.precision} matmul rate ({'8192 x 8192 on the GPU' if gpu else '1024 x 1024'}, measured in "
        f"every repeat): **{rate:.1f} GFLOP/s** with {args.workers} one-thread process(es) at once (the machine's "
        "limit; repeats: "
        f"{', '.join(f'{r:.1f}' for r in rates)}), {statistics.median(single_rates):.1f} GFLOP/s for one thread; "
        f"**{core_rate:.1f} GFLOP per CPU-second** of one thread (the rate of a core while it runs, which the "
        "other jobs on the machine disturb much less than wall time).",
        "",
    ]
    for name in args.workloads:
        w = WORKLOADS[name]
        n_train = w["n"] // 2
        flop = w["models"] * (w["recipe"]["epochs"] * n_train * work[name]["train_per_example"]
                              + w["n"] * work[name]["score_per_example"])
        lines.append(f"- **{name}**: {w['models']} models, each on {n_train} examples (paired halves of {w['n']} "
                     f"{'Location records' if w['source'] == 'location' else 'MNIST digits as 3 x 32 x 32'}); "
                     f"recipe {json.dumps(w['recipe'])}; useful work {flop / 1e9:.0f} GFLOP "
                     f"({work[name]['train_per_example'] / 1e6:.2f} MFLOP per training example).")
        w["flop"] = flop
    lines += [
        "",
        "| workload | executor | numerics | wall s (median) | wall s (runs) | sequential / this | models per hour "
        "| GFLOP/s | % of machine matmul rate | CPU s | GFLOP per CPU s (% of matmul's) "
        "| peak RSS MB (driver / largest child) | max abs logit diff vs sequential |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[tuple[str, str], float] = {}
    for name in args.workloads:
        base = runs.get((name, "sequential"))
        for executor in args.executors or WORKLOADS[name]["executors"]:
            results = runs[(name, executor)]
            seconds = statistics.median(r["seconds"] for r in results)
            cpu = statistics.median(r["cpu"] for r in results)
            ratio = statistics.median(b["seconds"] for b in base) / seconds if base else float("nan")
            ratios[(name, executor)] = ratio
            diff = float(np.abs(results[0]["logits"] - base[0]["logits"]).max()) if base else float("nan")
            achieved = WORKLOADS[name]["flop"] / seconds / 1e9
            each = ", ".join(f"{r['seconds']:.1f}" for r in results)
            per_cpu = WORKLOADS[name]["flop"] / cpu / 1e9
            lines.append(
                f"| {name} | {label(executor, args.workers, args.threads)} | {results[0]['numerics']} | {seconds:.1f} "
                f"| {each} | {ratio:.2f}x | {3600 * WORKLOADS[name]['models'] / seconds:.0f} | {achieved:.1f} "
                f"| {100 * achieved / rate:.0f}% | {cpu:.1f} "
                f"| {per_cpu:.1f} ({100 * per_cpu / core_rate:.0f}%) "
                f"| {results[0]['peak_mb']:.0f} / {results[0]['child_peak_mb']:.0f} | {diff:.2g} |")
    lines += ["", *goals(ratios, runs, rates, args)]
    lines += [
        "",
        "Wall s: `train_reference_pool` from call to return (start-up of worker processes or the local Ray instance "
        "and the scoring of every model included; imports and data loading excluded). GFLOP/s: useful work / median "
        "wall time, against the machine's matmul rate. CPU s: median user + system time of the driver and its "
        "reaped child processes (Ray's own processes are not children, so Ray's CPU time is undercounted); GFLOP "
        "per CPU s against one thread's matmul GFLOP per CPU-second: how well the cores were used while they "
        "ran (spinning threads and worker start-up count as used). Max abs logit diff: first repeat's logits on "
        "all scored examples against sequential (0 = bit-identical).",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if ("mlp", "vectorised") in ratios:
        print(f"MLP sequential / vectorised: {ratios[('mlp', 'vectorised')]:.2f}x")


if __name__ == "__main__":
    main()
