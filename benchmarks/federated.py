"""Federated audit on Location, and what Flower's simulation engine costs beside the same FedAvg in one process.

    nice -n 10 python benchmarks/federated.py          # writes benchmarks/results/federated_location.md

Two parts, one run:

1. ``examples/federated_location.yaml`` through ``run_audit`` (the example's own ``federated.md``,
   numbers untouched, with a header saying how and where it ran).
2. Overhead: one plain FedAvg federation (the example's clients, recipe and rounds, no defense) run
   (a) by Flower's simulation engine on Ray, twice in one simulation (the second run has warm
   actors), and (b) sequentially in this process with the same client code and FedAvg weights.
   Reported side by side: wall times, the ratios, the largest difference between the two global
   models (they must agree to float32 rounding), and the peak resident memory of the Ray actors
   (``VmHWM`` of this process's ``ray::ClientAppActor`` descendants, sampled every 0.5 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "federated_location.yaml"
RESULT = ROOT / "benchmarks" / "results" / "federated_location.md"


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class ActorMemory:
    """Peak ``VmHWM`` (MiB) of every ``ray::ClientAppActor`` process below this one, sampled in a thread."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for pid in _descendants(os.getpid()):
                try:
                    if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ClientAppActor"):
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peaks[pid] = max(self.peaks.get(pid, 0.0), int(line.split()[1]) / 1024)
                except OSError:
                    continue

    def __enter__(self) -> ActorMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _fedavg_in_process(job, dataset, rounds: int):
    """The job's FedAvg computed here, client after client (Flower's weights, in client order)."""
    import torch

    from miaudit.federated.local import federated_model, state_of
    from miaudit.federated.simulation import ClientJob, local_round

    client_job = ClientJob.of(job)
    state = state_of(federated_model(job.recipe, dataset.input_shape, dataset.n_classes, private=False))
    for round_ in range(1, rounds + 1):
        updates = [local_round(client_job, dataset, k, round_, state) for k in range(job.n_clients)]
        total = sum(r["num-examples"] for _, r in updates)
        state = {key: sum(torch.from_numpy(u[key].numpy() * (r["num-examples"] / total)) for u, r in updates)
                 for key in state}
    return state


def overhead(config) -> list[str]:
    """Flower simulation vs in-process FedAvg on the example's target federation without defense."""
    import torch

    from miaudit.data import load_dataset
    from miaudit.federated.audit import prepare_data
    from miaudit.federated.simulation import FederationJob, SimulationBackend, run_federations
    from miaudit.utils.seed import derive_seed

    ds = config.dataset
    dataset = load_dataset(ds.source, data_dir=ds.data_dir, **ds.options)
    data = prepare_data(config, dataset)
    fed = config.federation
    recipe = dataclasses.replace(config.training, epochs=fed.local_epochs, seed=derive_seed(config.seed, "target"))
    jobs = [FederationJob(key, data.target_parts, recipe, fed.rounds, keep_model=True) for key in ("cold", "warm")]
    torch.set_num_threads(1)
    with ActorMemory() as memory:
        start = time.perf_counter()
        results = run_federations(jobs, dataset, SimulationBackend(client_cpus=fed.client_cpus, num_cpus=fed.num_cpus),
                                  progress=False)
        flower = time.perf_counter() - start
    start = time.perf_counter()
    expected = _fedavg_in_process(jobs[0], dataset, fed.rounds)
    local = time.perf_counter() - start
    diff = max(float((results["cold"].final_state[k] - v).abs().max()) for k, v in expected.items())
    same = all(torch.equal(results["cold"].final_state[k], results["warm"].final_state[k]) for k in expected)
    cold, warm = results["cold"].seconds, results["warm"].seconds
    peaks = sorted(memory.peaks.values())
    return [
        "## Flower's simulation engine beside the same FedAvg in one process", "",
        f"The example's target federation without defense ({fed.n_clients} clients of {sum(data.client_sizes())} "
        f"members, {fed.rounds} rounds x {fed.local_epochs} local epochs, {config.training.model} "
        f"{config.training.hidden}), run twice in one Flower simulation (Ray actors with {fed.client_cpus:g} CPU "
        "each) and once sequentially in this process with the same client code (1 torch thread).", "",
        "| run | wall time (s) | ratio to in-process |", "|---|---|---|",
        f"| in-process, sequential | {local:.1f} | 1.00 |",
        f"| Flower simulation, whole call (Ray start, actors, 2 federations) | {flower:.1f} | {flower / local:.2f} |",
        f"| Flower, first federation (actors starting) | {cold:.1f} | {cold / local:.2f} |",
        f"| Flower, second federation (warm actors) | {warm:.1f} | {warm / local:.2f} |", "",
        f"Largest absolute difference between Flower's global model and the in-process one: {diff:.2e} "
        f"(float32 rounding); the two Flower runs are {'bit-identical' if same else 'NOT identical'}. Peak "
        f"resident memory of the {len(peaks)} Ray actors: "
        f"{', '.join(f'{p:.0f}' for p in peaks) or 'not measured (no /proc)'} MiB.", "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="folder to keep the run directory in")
    parser.add_argument("--data-dir", help="shared data folder (default: $MIAUDIT_DATA or ../shared/data)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import flwr
    import ray
    import torch

    from miaudit.runs import parse_config, run_audit

    config = parse_config(CONFIG, data_dir=args.data_dir)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = (args.keep or Path(tmp)) / "federated_location"
        start = time.perf_counter()
        run_audit(config, out, overwrite=True, progress=False)
        wall = time.perf_counter() - start
        report = (out / "federated.md").read_text()
    tail = overhead(config)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = [
        "<!-- written by benchmarks/federated.py; do not edit by hand -->", "",
        f"Command: `python benchmarks/federated.py` ({CONFIG.relative_to(ROOT)}), audit wall time {wall:.0f} s on "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores visible, Python "
        f"{platform.python_version()}, torch {torch.__version__}, Flower {flwr.__version__}, Ray {ray.__version__}; "
        f"the machine was shared with other jobs (1-minute load average {load:.1f} at the end; times are "
        "indicative, ratios within a table are comparable).", "", "",
    ]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(header) + report + "\n" + "\n".join(tail))
    print(f"wrote {RESULT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
