"""Nothing lost: ``--overwrite`` replaces only miaudit run folders, ``runs rm --delete-files`` deletes only the
folder of the run it names, and two runs can never write the same ``--out``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from reliability_helpers import cli_env, one_error_line

from miaudit.cli import main
from miaudit.runs import RunStore, default_store_path
from miaudit.utils.atomic import MARKER, atomic_output_dir, read_marker, save_npz_atomic


def _rows(home):
    with RunStore(default_store_path(home)) as store:
        return store.list_runs()


def _user_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    return folder


def test_overwrite_replaces_only_a_miaudit_run_folder(quick_config, tmp_path, monkeypatch, capsys):
    work = _user_files(tmp_path / "work")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(_user_files(tmp_path / "home")))
    for out in (".", str(work), str(tmp_path), "/", str(tmp_path / "home")):
        assert main(["audit", str(quick_config), "--out", out, "--overwrite", "-q"]) == 2, out
        assert "a run needs a folder of its own" in capsys.readouterr().err
    assert (work / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "home" / "thesis.tex").is_file()

    data = _user_files(tmp_path / "data")  # any other folder: --overwrite is not permission to delete it
    assert main(["audit", str(quick_config), "--out", str(data), "--overwrite", "-q"]) == 2
    assert "not a miaudit run folder" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["thesis.tex"]

    run = tmp_path / "run"
    assert main(["audit", str(quick_config), "--out", str(run), "-q"]) == 0
    first = read_marker(run)
    assert first["tool"] == "miaudit" and first["command"] == "audit" and first["run_id"]
    (run / "notes.txt").write_text("mine")
    assert main(["audit", str(quick_config), "--out", str(run), "-q"]) == 2  # not empty, no --overwrite
    assert (run / "notes.txt").is_file()
    assert main(["audit", str(quick_config), "--out", str(run), "--overwrite", "-q"]) == 0
    assert not (run / "notes.txt").exists() and read_marker(run)["run_id"] != first["run_id"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries, no lock


def test_runs_rm_deletes_only_the_folder_its_marker_names(quick_config, tmp_path, run_store_home, capsys):
    out = tmp_path / "run"
    home = ["--home", str(run_store_home)]
    assert main(["audit", str(quick_config), "--out", str(out), "-q"]) == 0
    first = read_marker(out)["run_id"]
    assert main(["audit", str(quick_config), "--out", str(out), "--overwrite", "-q"]) == 0
    second = read_marker(out)["run_id"]

    # the first run's folder now holds the second run: removing the first deletes neither row nor folder
    assert main(["runs", "rm", first, "--delete-files", *home]) == 2
    assert f"now holds run {second}" in one_error_line(capsys.readouterr().err)
    assert {r["id"] for r in _rows(run_store_home)} == {first, second} and read_marker(out)["run_id"] == second

    # a run refused because the folder exists is not recorded, let alone pointing at that folder
    assert main(["audit", str(quick_config), "--out", str(out), "-q"]) == 2
    assert "is not empty" in one_error_line(capsys.readouterr().err)
    assert {r["id"] for r in _rows(run_store_home)} == {first, second}

    # a row pointing at a symbolic link: refused before anything is removed (one transaction)
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    with RunStore(default_store_path(run_store_home)) as store:
        linked = store.start_run("audit", run_dir=link)
        store.finish_run(linked, "completed")
        store._conn.execute("UPDATE runs SET run_dir = ? WHERE id = ?", (str(link), linked))
    assert main(["runs", "rm", linked, "--delete-files", *home]) == 2
    assert "symbolic link" in one_error_line(capsys.readouterr().err)
    assert linked in {r["id"] for r in _rows(run_store_home)} and link.is_symlink() and (out / MARKER).is_file()

    assert main(["runs", "rm", second, "--delete-files", "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": second, "deleted_files": str(out.resolve())}
    assert not out.exists() and second not in {r["id"] for r in _rows(run_store_home)}
    assert main(["runs", "rm", first, "--delete-files", *home]) == 0  # its folder is gone: only the row goes
    assert [p for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_concurrent_runs_cannot_share_an_output_folder(quick_config, tmp_path, run_store_home, capsys):
    out = tmp_path / "shared"
    # while a run holds the output path, a second run with the same --out is refused
    with atomic_output_dir(out) as folder:
        (folder / "partial.txt").write_text("the first run is writing")
        assert main(["audit", str(quick_config), "--out", str(out), "-q"]) == 2
        assert f"(process {os.getpid()} on " in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "partial.txt"]
    failed = [r for r in _rows(run_store_home) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["run_dir"] is None  # the refused run points at no folder

    # two processes started together: exactly one completes, the other is refused, nothing is replaced
    race = tmp_path / "race"
    processes = [subprocess.Popen([sys.executable, "-m", "miaudit.cli", "audit", str(quick_config), "--out",
                                   str(race), "-q"], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "another miaudit run" in refused or "is not empty" in refused
    completed = [r for r in _rows(run_store_home) if r["status"] == "completed" and r["run_dir"] == str(race.resolve())]
    assert len(completed) == 1 and read_marker(race)["run_id"] == completed[0]["id"]

    # a claim left by a process that was killed is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "stale"
    (tmp_path / ".stale.miaudit-lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    assert main(["audit", str(quick_config), "--out", str(stale), "-q"]) == 0
    assert not (tmp_path / ".stale.miaudit-lock").exists()


def test_npz_writer_keeps_every_name_and_refuses_the_name_of_numpys_option(tmp_path):
    written = save_npz_atomic(tmp_path / "a.npz", {"x": np.arange(3), "ids": np.array(["a", "b", "c"])},
                              compressed=True)
    with np.load(written) as data:
        assert sorted(data.files) == ["ids", "x"] and data["x"].tolist() == [0, 1, 2]
    # numpy.savez would take the array for its ``allow_pickle`` option and drop it from the file
    with pytest.raises(ValueError, match="allow_pickle"):
        save_npz_atomic(tmp_path / "b.npz", {"allow_pickle": np.zeros(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
