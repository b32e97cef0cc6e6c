"""Run the example configs and save, or compare, every attack's per-example scores.

Used to show that a refactoring keeps behaviour identical: save the scores before moving code,
compare after. Each example runs through the command line (``miaudit audit`` / ``defend`` /
``demo``) with one torch thread, no run store and a fresh cache, so the same code gives the same
scores bit for bit.

    python benchmarks/example_scores.py save --dir /tmp/scores-before      # before the change
    python benchmarks/example_scores.py compare --dir /tmp/scores-before   # after: a table; exit 1 on a difference

Only examples that run in a few minutes on 2 CPU cores are included (the MNIST defense
comparisons and the user-model template are left out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: (name, command, config file or None); commands get --out, --threads 1, --no-store, -q
EXAMPLES = [
    ("demo", "demo", None),
    ("digits_audit", "audit", "examples/digits_audit.yaml"),
    ("location_audit", "audit", "examples/location_audit.yaml"),
    ("location_reference", "audit", "examples/location_reference.yaml"),
    ("label_only_whitebox", "audit", "examples/label_only_whitebox.yaml"),
    ("encodermi", "audit", "examples/encodermi.yaml"),
    ("auditmi", "audit", "examples/auditmi.yaml"),
    ("llm_wikimia", "audit", "examples/llm_wikimia.yaml"),
    ("dp_canary_audit", "audit", "examples/dp_canary_audit.yaml"),
    ("defenses_location", "defend", "examples/defenses_location.yaml"),
]


def _config_without_cache(config: str, folder: Path) -> Path:
    """A copy of ``config`` whose reference-pool cache (if any) lives in ``folder`` (always cold)."""
    data = yaml.safe_load((ROOT / config).read_text(encoding="utf-8"))
    if isinstance(data.get("reference"), dict) and "cache_dir" in data["reference"]:
        data["reference"]["cache_dir"] = str(folder / "cache")
    if "cache_dir" in data:
        data["cache_dir"] = str(folder / "llm-cache")
    path = folder / Path(config).name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run_example(name: str, command: str, config: str | None, work: Path) -> dict[str, np.ndarray]:
    """Run one example; return ``{"<defense>/<attack>" or "<attack>": scores}`` in a stable order."""
    out = work / "run"
    args = [sys.executable, "-m", "miaudit.cli", command]
    if config is not None:
        args.append(str(_config_without_cache(config, work)))
    args += ["--out", str(out), "--threads", "1", "--no-store", "-q"]
    env = {**os.environ, "MIAUDIT_HOME": str(work / "home")}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    scores = {}
    for path in sorted((out / "scores").rglob("*.scores.npz")):
        key = str(path.relative_to(out / "scores")).removesuffix(".scores.npz")
        with np.load(path, allow_pickle=False) as arrays:
            scores[f"{key}:ids"] = arrays["ids"].astype(str)
            scores[key] = arrays["scores"]
    return scores


def _difference(before: np.ndarray, now: np.ndarray) -> str:
    """How far two score arrays are apart: the largest relative change, or why they cannot be compared."""
    if before.shape != now.shape or before.dtype.kind not in "fiu" or now.dtype.kind not in "fiu":
        return f"{before.shape} {before.dtype} vs {now.shape} {now.dtype}"
    a, b = before.astype(np.float64), now.astype(np.float64)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return "finite entries differ"
    finite = np.isfinite(a)
    relative = np.abs(a[finite] - b[finite]) / np.maximum(np.abs(a[finite]), 1e-12)
    return f"max relative change {relative.max():.1e}" if relative.size else "non-finite entries differ"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("save", "compare"))
    parser.add_argument("--dir", required=True, help="folder of the saved scores (one .npz per example)")
    parser.add_argument("--only", nargs="*", help="run only these examples")
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    differences = 0
    print("| example | attacks | seconds | result |\n|---|---|---|---|")
    for name, command, config in EXAMPLES:
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            scores = run_example(name, command, config, Path(tmp))
            seconds = time.perf_counter() - start
        n_attacks = sum(not k.endswith(":ids") for k in scores)
        saved = folder / f"{name}.npz"
        if args.mode == "save":
            np.savez(saved, **scores)
            print(f"| {name} | {n_attacks} | {seconds:.0f} | saved |", flush=True)
            continue
        with np.load(saved, allow_pickle=False) as before:
            old = {k: before[k] for k in before.files}
        problems = [f"{k} (only {'before' if k in old else 'now'})" for k in sorted(set(old) ^ set(scores))]
        problems += [f"{k} ({_difference(old[k], scores[k])})" for k in sorted(set(old) & set(scores))
                     if not np.array_equal(old[k], scores[k])]
        differences += bool(problems)
        verdict = "identical" if not problems else f"DIFFERENT: {', '.join(problems[:8])}"
        print(f"| {name} | {n_attacks} | {seconds:.0f} | {verdict} |", flush=True)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
