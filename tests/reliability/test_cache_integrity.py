"""Nothing stale, nothing damaged: cache keys cover what models were trained on, damaged or edited cache files
are reported and recomputed, and a killed run leaves neither temporary folders nor worker processes behind."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch
from reliability_helpers import cli_env, write_yaml

from miaudit.classifier.reference.pool import train_reference_pool
from miaudit.classifier.signals.cache import SignalCache
from miaudit.classifier.training import TrainConfig
from miaudit.cli import main
from miaudit.data import load_dataset, paired_keep_matrix
from miaudit.defenses.base import DefenseContext
from miaudit.defenses.registry import build_chain
from miaudit.utils.atomic import temp_prefix
from miaudit.utils.cache import HASH_KEY

RECIPE = TrainConfig(model="mlp", hidden=[8], epochs=2, batch_size=16, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _pool(data, cache, **kwargs):
    keep = paired_keep_matrix(2, len(data), seed=1)
    return train_reference_pool(data, keep, RECIPE, cache_dir=cache, progress=False, **kwargs)


def _logits(pool):
    return np.stack([o.logits for o in pool.outputs])


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_defend_retrains_the_reference_pool_when_split_n_reference_changes(tmp_path, digits):
    # the distillation defense trains on the defender's reference data: it belongs to the models' identity
    recipe = dataclasses.replace(RECIPE, epochs=1)
    contexts = [DefenseContext(recipe, digits.input_shape, 10, (20,), reference=digits.subset(np.arange(n)))
                for n in (40, 60)]
    chains = [build_chain([("distillation", {})], context) for context in contexts]
    assert chains[0].training_key() != chains[1].training_key()
    assert build_chain([("dropout", {})], contexts[0]).training_key() == \
        build_chain([("dropout", {})], contexts[1]).training_key()  # a defense without reference data: shared

    cache = tmp_path / "pool-cache"
    config = {"seed": 0, "dataset": {"source": "digits"},
              "split": {"n_members": 40, "n_nonmembers": 40, "n_reference": 40},
              "training": {"model": "mlp", "hidden": [16], "epochs": 2, "batch_size": 16},
              "defenses": [{"name": "distillation"}], "reference": {"n_models": 2, "cache_dir": str(cache)},
              "attacks": [{"name": "lira", "params": {"variance": "global"}}], "evaluation": {"n_bootstrap": 10},
              "isolate_training": False}

    def defend(n_reference, out):
        config["split"]["n_reference"] = n_reference
        path = write_yaml(tmp_path / f"defend{n_reference}.yaml", config)
        assert main(["defend", str(path), "--out", str(tmp_path / out), "-q", "--no-store"]) == 0
        return sorted(p.name for p in cache.glob("*.pt"))

    first = defend(40, "a")
    assert len(first) == 2
    second = defend(60, "b")  # another transfer set: new models, none reused
    assert len(second) == 4 and set(first) < set(second)
    assert defend(60, "c") == second  # the same setup again: all reused


def test_truncated_or_empty_cache_files_are_reported_and_recomputed(tmp_path, digits, shared_data, caplog,
                                                                    monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    data, cache = digits.subset(np.arange(60)), tmp_path / "pool"
    fresh = _pool(data, cache)
    assert len(synced) >= 6  # every weights, logits and metadata file is synced before its rename
    truncated, empty = sorted(cache.glob("*.npz"))
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty.write_bytes(b"")
    caplog.set_level(logging.WARNING)
    again = _pool(data, cache)
    messages = _warnings(caplog)
    assert any(str(truncated) in m and "unreadable" in m for m in messages), messages
    assert any(str(empty) in m and "unreadable" in m for m in messages), messages
    np.testing.assert_array_equal(_logits(again), _logits(fresh))
    assert again.info["from_cache"] == 2  # rescored from the verified weights, and the files rewritten
    caplog.clear()
    _pool(data, cache)
    assert _warnings(caplog) == []

    # an LLM signal shard
    from miaudit.llm.target import HFCausalLM

    texts = ["Once upon a time there was a cat.", "The dog ran to the park and back home."]
    target = HFCausalLM.from_pretrained(str(shared_data / "models" / "stories260K"), local_files_only=True,
                                        cache_dir=tmp_path / "llm", progress=False)
    first = target.token_signals(texts)
    (shard,) = (tmp_path / "llm").rglob("token_signals-*.npz")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    caplog.clear()
    second = target.token_signals(texts)
    assert any(str(shard) in m for m in _warnings(caplog))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.log_prob, b.log_prob)

    # a classifier output cache entry of zero bytes
    signal_cache = SignalCache(tmp_path / "signals")
    outputs = signal_cache.get_or_compute("model", "data", lambda: fresh.outputs[0])
    signal_cache.path("model", "data").write_bytes(b"")
    caplog.clear()
    again_outputs = signal_cache.get_or_compute("model", "data", lambda: fresh.outputs[0])
    assert signal_cache.misses == 2 and any("model-data.npz" in m for m in _warnings(caplog))
    np.testing.assert_array_equal(again_outputs.logits, outputs.logits)


def test_edited_cached_logits_are_detected_by_their_content_hash(tmp_path, digits, caplog):
    data, cache = digits.subset(np.arange(60)), tmp_path / "pool"
    fresh = _pool(data, cache)
    edited = sorted(cache.glob("*.npz"))[0]
    with np.load(edited) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert HASH_KEY in arrays
    arrays["view0"] = arrays["view0"] + 0.25  # what a careless edit (or a flipped bit) does
    np.savez(edited, **arrays)
    caplog.set_level(logging.WARNING)
    again = _pool(data, cache)
    assert any(str(edited) in m and "modified" in m for m in _warnings(caplog))
    np.testing.assert_array_equal(_logits(again), _logits(fresh))

    # edited weights (with their logits gone) are not used either: the model is trained again
    weights = sorted(cache.glob("*.pt"))[0]
    state = torch.load(weights, weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, weights)
    for logits in cache.glob("*.npz"):
        logits.unlink()
    caplog.clear()
    retrained = _pool(data, cache)
    assert any(str(weights) in m and "modified" in m for m in _warnings(caplog))
    assert retrained.info["trained"] == 1 and retrained.info["from_cache"] == 1
    np.testing.assert_array_equal(_logits(retrained), _logits(fresh))


_KILLED_WRITER = """
import sys, tempfile, time
from pathlib import Path
from miaudit.utils.atomic import atomic_output_dir, temp_prefix
with atomic_output_dir(sys.argv[1]) as folder:
    (folder / "half-written.json").write_text("{")
    cache = Path(sys.argv[2])
    tempfile.mkstemp(prefix=temp_prefix(cache / "model.pt"), dir=cache)
    print("writing", flush=True)
    time.sleep(300)
"""


def test_orphans_of_a_killed_run_are_swept(tmp_path, quick_config):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    runs.mkdir()
    cache.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(runs / "run"), str(cache)], env=cli_env(),
                              stdout=subprocess.PIPE, text=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        assert writer.stdout.readline().strip() == "writing"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        orphans = [p for p in [*runs.iterdir(), *cache.iterdir()] if p.name.startswith(".")]
        assert len(orphans) == 3  # the run's temporary folder, its claim on runs/run, a cache temporary file
        live = cache / (temp_prefix(cache / "other.npz").replace(f"-{os.getpid()}-", f"-{alive.pid}-") + "x")
        live.write_bytes(b"a live process is writing this")

        # the next run in that folder sweeps what the dead process left, and takes over its claim
        assert main(["audit", str(quick_config), "--out", str(runs / "run"), "-q"]) == 0
        assert [p.name for p in runs.iterdir()] == ["run"]
        _pool(load_dataset("digits").subset(np.arange(40)), cache)  # a cache sweeps its folder when opened
        assert [p for p in cache.iterdir() if p.name.startswith(".")] == [live]  # a live process's file stays
    finally:
        for process in (writer, alive):
            if process.poll() is None:
                process.kill()


_POOL_DRIVER = """
import numpy as np
from miaudit.classifier.reference import executors
from miaudit.classifier.training import TrainConfig
from miaudit.data import load_dataset
data = load_dataset("digits").subset(np.arange(200))
recipe = TrainConfig(model="mlp", hidden=[64], epochs=100000, batch_size=8)
context = executors.PoolContext(data, {"view0": data.x})
tasks = [executors.ModelTask(j, recipe, np.arange(100)) for j in range(2)]
for result in executors.run("process", context, tasks, n_workers=2):
    pass
"""


def _children(pid: int) -> list[int]:
    """Worker processes spawned by ``pid`` (multiprocessing's spawn workers)."""
    return [child.pid for child in psutil.Process(pid).children()
            if "spawn_main" in " ".join(child.cmdline())]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_process_workers_exit_when_their_parent_is_killed():
    driver = subprocess.Popen([sys.executable, "-c", _POOL_DRIVER], env=cli_env())
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
            workers = _children(driver.pid)
        assert len(workers) == 2, "the pool did not start its workers"
        time.sleep(3)  # let them start training
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(_alive(w) for w in workers), "workers outlived their killed parent"
    finally:
        if driver.poll() is None:
            driver.kill()
        for worker in workers:
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)
