"""Errors that are one line and exit code 2, before any work: bad encodings, damaged or malicious files,
devices that do not exist, impossible output paths and gates, a busy run store, YAML syntax errors."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_helpers import one_error_line, trained_config, write_yaml

from miaudit.cli import main
from miaudit.runs import RunStore, StoreError, default_store_path


def _audit(config, tmp_path, *flags):
    return main(["audit", str(config), "--out", str(tmp_path / "out"), "-q", *flags])


def _error(capsys) -> str:
    return one_error_line(capsys.readouterr().err)


def _llm_config(shared_data, model_dir, **model):
    return {"kind": "llm", "dataset": {"source": "wikimia", "path": "32", "data_dir": str(shared_data),
                                       "max_documents": 12},
            "model": {"name_or_path": str(model_dir), "local_files_only": True, **model},
            "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 10}}


def test_config_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("seed: 1\n# réglages du modèle\nattacks: [{name: loss}]\n".encode("latin-1"))
    assert _audit(config, tmp_path) == 2
    assert "is not UTF-8 text (byte b'\\xe9' on line 2)" in _error(capsys)


def test_csv_that_is_not_utf8(tmp_path, capsys):
    rows = ["city,size,label"] + [f"Zürich{i % 3},{i},{i % 2}" for i in range(40)]
    (tmp_path / "data.csv").write_bytes("\n".join(rows).encode("latin-1"))
    config = write_yaml(tmp_path / "csv.yaml", trained_config(dataset={"source": str(tmp_path / "data.csv")},
                                                              split={"n_members": 10, "n_nonmembers": 10}))
    assert _audit(config, tmp_path) == 2
    assert "data.csv is not UTF-8 text" in _error(capsys)


def test_precomputed_logits_that_are_not_numbers(tmp_path, capsys):
    outputs = tmp_path / "outputs.npz"
    np.savez(outputs, logits=np.array([["0.1", "high"], ["2", "3"]] * 10), labels=np.zeros(20, int),
             membership=np.arange(20) % 2)
    config = write_yaml(tmp_path / "pre.yaml", {"target": {"precomputed": str(outputs)},
                                                "attacks": [{"name": "loss"}]})
    assert _audit(config, tmp_path) == 2
    assert "logits holds strings; it must hold real numbers" in _error(capsys)


def test_decompression_bomb_image(tmp_path, capsys, monkeypatch):
    for name in ("cats", "dogs"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), color=i * 40).save(tmp_path / "images" / name / f"{i}.png")
    Image.new("L", (60, 60)).save(tmp_path / "images" / "dogs" / "bomb.png")  # small file, "huge" image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a real bomb declares billions of pixels
    config = write_yaml(tmp_path / "img.yaml", trained_config(dataset={"source": str(tmp_path / "images")},
                                                              split={"n_members": 2, "n_nonmembers": 2}))
    assert _audit(config, tmp_path) == 2
    assert "bomb.png declares more than 1,000 pixels (a decompression bomb" in _error(capsys)


def test_damaged_model_safetensors(shared_data, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(shared_data / "models" / "stories260K", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download
    assert _audit(write_yaml(tmp_path / "llm.yaml", _llm_config(shared_data, model)), tmp_path) == 2
    assert "a weights file is damaged or incomplete" in _error(capsys)


class _Payload:
    def __init__(self, canary):
        self.canary = canary

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


def test_malicious_pytorch_model_bin(shared_data, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for f in (shared_data / "models" / "stories260K").iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, model / f.name)
    canary = tmp_path / "pwned"
    torch.save({"model.embed_tokens.weight": _Payload(canary)}, model / "pytorch_model.bin")
    assert _audit(write_yaml(tmp_path / "llm.yaml", _llm_config(shared_data, model)), tmp_path) == 2
    assert "holds pickled code or objects, which miaudit never runs" in _error(capsys)
    assert not canary.exists()


def test_cuda_device_without_cuda(shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same check on machines with a GPU
    llm = _llm_config(shared_data, shared_data / "models" / "stories260K", device="cuda")
    assert _audit(write_yaml(tmp_path / "llm.yaml", llm), tmp_path) == 2
    assert "model.device: 'cuda' asks for a GPU but" in _error(capsys)
    classifier = trained_config(training={"model": "mlp", "hidden": [8], "epochs": 1, "device": "cuda:0"})
    assert _audit(write_yaml(tmp_path / "clf.yaml", classifier), tmp_path) == 2
    assert "training.device: 'cuda:0' asks for a GPU but" in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file(quick_config, tmp_path, capsys):
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    for flags in ((), ("--overwrite",)):
        assert main(["audit", str(quick_config), "--out", str(tmp_path / "report.pdf"), "-q", *flags]) == 2
        assert "is a file, not a folder" in _error(capsys)
    assert (tmp_path / "report.pdf").read_bytes() == b"%PDF"


def test_gate_naming_an_attack_the_run_lacks_fails_before_the_audit(tmp_path, run_store_home, capsys):
    slow = write_yaml(tmp_path / "slow.yaml", trained_config(training={"model": "mlp", "epochs": 10_000}))
    start = time.perf_counter()
    assert _audit(slow, tmp_path, "--fail-if", "rmia:auc > 0.6") == 2
    assert "names attack 'rmia', which is not in this config; its attacks: loss" in _error(capsys)
    assert time.perf_counter() - start < 10 and not (tmp_path / "out").exists()
    with RunStore(default_store_path(run_store_home)) as store:
        assert store.list_runs() == []  # nothing ran, so nothing is recorded as completed (or at all)


def test_busy_run_store_and_run_id_collisions(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    RunStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing for longer than the store waits
    try:
        with RunStore(path, timeout=0.3) as store, pytest.raises(StoreError) as caught:
            store.start_run("audit")
        assert "is busy: another miaudit process has held its lock for over 0.3 s" in str(caught.value)
        assert "corrupted" not in str(caught.value) and "the store is fine" in str(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    import miaudit.runs.store as store_module

    monkeypatch.setattr(store_module, "_now", lambda: "2030-01-01T00:00:00+00:00")  # same second
    draws = iter(["aaaa0000", "aaaa0000", "bbbb1111"])
    monkeypatch.setattr(store_module.secrets, "token_hex", lambda n: next(draws))
    with RunStore(path) as store:
        first, second = store.start_run("audit"), store.start_run("audit")
        assert (first, second) == ("20300101-000000-aaaa0000", "20300101-000000-bbbb1111")
        monkeypatch.setattr(store_module.secrets, "token_hex", lambda n: "aaaa0000")
        with pytest.raises(StoreError, match="could not draw a free run id .* the store is fine"):
            store.start_run("audit")
        assert len(store.list_runs()) == 2


def test_yaml_syntax_error_names_line_and_column(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("seed: 1\nattacks:\n  - {name: loss\n  - {name: rmia}\n")
    assert _audit(config, tmp_path) == 2
    assert ("is not valid YAML: line 4, column 5: expected ',' or '}', but got '{' (while parsing a flow mapping "
            "that starts at line 3, column 5)") in _error(capsys)
