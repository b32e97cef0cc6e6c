"""Run the defense comparisons of ``examples/`` and write ``benchmarks/results/defenses_<name>.md``.

    nice -n 10 python benchmarks/defenses.py location mnist_cnn [--threads 1] [--keep DIR]

Each result file is the comparison's own ``defenses.md`` (numbers from that run, nothing edited)
with a header saying how and where it ran. The run folders go to a temporary directory unless
``--keep`` names one.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"location": "examples/defenses_location.yaml", "mnist_cnn": "examples/defenses_mnist_cnn.yaml",
           "mnist_resnet18": "examples/defenses_mnist_resnet18.yaml"}


def run(name: str, out_root: Path, threads: int | None) -> Path:
    import torch

    from miaudit.defenses.compare import parse_defend_config, run_defense_comparison

    if threads:
        torch.set_num_threads(threads)
    config = parse_defend_config(ROOT / CONFIGS[name])
    out = out_root / name
    start = time.perf_counter()
    result = run_defense_comparison(config, out, overwrite=True, progress=False)
    wall = time.perf_counter() - start
    header = [
        f"<!-- written by benchmarks/defenses.py from a run of {CONFIGS[name]}; do not edit by hand -->", "",
        f"Command: `python benchmarks/defenses.py {name}` ({CONFIGS[name]}), wall time {wall:.0f} s on "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores visible, torch threads "
        f"{torch.get_num_threads()}, Python {platform.python_version()}, torch {torch.__version__}; the machine was "
        f"shared with other jobs (times are indicative, ratios within a table are comparable). Peak memory: "
        f"{result['defenses'][0]['target']['memory_source']}.", "", "",
    ]
    path = ROOT / "benchmarks" / "results" / f"defenses_{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + (out / "defenses.md").read_text())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--keep", type=Path, help="folder to keep the run directories in")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.keep or Path(tmp)
        for name in args.names:
            print(f"{name}: wrote {run(name, out_root, args.threads)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
