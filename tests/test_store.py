"""Run store: transactional rows, statuses on failure / interruption / kill, corruption, compare, CLI."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from miaudit.cli import main
from miaudit.errors import MiauditError
from miaudit.runs import RunStore, StoreError, default_home, default_store_path
from miaudit.runs.tracking import RunOptions, finalize_run, tracked_run
from miaudit.utils.atomic import MARKER
from run_fixtures import make_run_dir


def _args(home, **kw):
    return RunOptions(**{"home": str(home), **kw})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lifecycle_prefix_latest_and_json_roundtrip(tmp_path):
    with RunStore(tmp_path / "runs.sqlite") as store:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        a = store.start_run("audit", config={"seed": 1, "attacks": ["loss"]}, versions={"numpy": "2"},
                            run_dir=tmp_path / "a")
        b = store.start_run("demo", config={"seed": 2})
        assert store.get_run(a)["status"] == "running"
        store.finish_run(a, "completed", metrics={"attacks": [{"name": "loss", "auc": 0.7}]},
                         gates={"tripped": False, "details": []})
        store.finish_run(b, "failed", error="DataError: boom")
        row = store.get_run(a[:-2])  # unique prefix
        assert row["config"] == {"seed": 1, "attacks": ["loss"]} and row["metrics"]["attacks"][0]["auc"] == 0.7
        assert row["run_dir"] == str((tmp_path / "a").resolve()) and row["finished"]
        assert store.get_run("latest")["id"] in (a, b)
        assert [r["id"] for r in store.list_runs(status="failed")] == [b]
        with pytest.raises(StoreError, match="not running"):
            store.finish_run(a, "failed")
        with pytest.raises(StoreError, match="final status"):
            store.finish_run(b, "running")
        with pytest.raises(StoreError, match="no run"):
            store.get_run("nope")
        with pytest.raises(StoreError, match="ambiguous"):
            store.get_run(a[:2])
        store.remove(b)
        assert [r["id"] for r in store.list_runs()] == [a]


def test_default_locations(monkeypatch, tmp_path):
    monkeypatch.setenv("MIAUDIT_HOME", str(tmp_path / "h"))
    assert default_store_path() == tmp_path / "h" / "runs.sqlite"
    assert default_store_path(tmp_path / "x") == tmp_path / "x" / "runs.sqlite"
    monkeypatch.delenv("MIAUDIT_HOME")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert default_home() == tmp_path / "xdg" / "miaudit"


def test_garbage_file_is_reported_and_left_untouched(tmp_path):
    path = tmp_path / "runs.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    before = _digest(path)
    with pytest.raises(StoreError, match="corrupted") as info:
        RunStore(path)
    assert "move it aside" in str(info.value)
    assert _digest(path) == before and not Path(str(path) + "-wal").exists()


def test_damaged_pages_are_reported_and_left_untouched(tmp_path):
    path = tmp_path / "runs.sqlite"
    with RunStore(path) as store:
        for i in range(60):
            store.finish_run(store.start_run("audit", config={"blob": "x" * 500, "i": i}), "completed")
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * 4096
    data[2 * 4096:3 * 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(StoreError, match="corrupted"):
        with RunStore(path) as store:
            store.list_runs()
    assert _digest(path) == before


def test_foreign_database_and_newer_schema_are_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="not a miaudit run store"):
        RunStore(other)
    newer = tmp_path / "newer.sqlite"
    RunStore(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer miaudit"):
        RunStore(newer)


def test_tracked_run_marks_failed_and_interrupted(tmp_path):
    args = _args(tmp_path)
    with pytest.raises(MiauditError):
        with tracked_run(args, command="audit", config={"k": 1}):
            raise MiauditError("bad data")
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(args, command="audit"):
            raise KeyboardInterrupt
    with tracked_run(args, command="audit"):
        pass  # ended without finalize
    rows = store_rows(tmp_path)  # newest first
    assert [r["status"] for r in rows] == ["failed", "interrupted", "failed"]
    assert "without finalizing" in rows[0]["error"] and "KeyboardInterrupt" in rows[1]["error"]
    assert rows[2]["error"] == "MiauditError: bad data" and rows[2]["config"] == {"k": 1}


def store_rows(home):
    with RunStore(default_store_path(home)) as store:
        return store.list_runs()


_CHILD = textwrap.dedent("""
    import sys, time
    from miaudit.runs.tracking import RunOptions, tracked_run
    with tracked_run(RunOptions(home=sys.argv[1]), command=sys.argv[2]):
        print("started", flush=True)
        time.sleep(120)
""")


def test_sigterm_and_sigkill_leave_interrupted_rows(tmp_path):
    children = {how: subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), how], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for how in ("term", "kill")}
    try:
        for child in children.values():
            assert child.stdout.readline().strip() == "started"
        assert {r["status"] for r in store_rows(tmp_path)} == {"running"}
        children["term"].send_signal(signal.SIGTERM)
        children["kill"].send_signal(signal.SIGKILL)
        for child in children.values():
            child.wait(timeout=60)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
    rows = {r["command"]: r for r in store_rows(tmp_path)}
    assert rows["term"]["status"] == "interrupted" and "Terminated" in rows["term"]["error"]
    assert rows["kill"]["status"] == "interrupted" and "ended without finishing" in rows["kill"]["error"]
    assert all(r["finished"] for r in rows.values())


def test_finalize_records_report_gates_and_json(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path / "run")  # with the pipeline's figures, which the report embeds
    args = _args(tmp_path / "home", fail_if=("tpr@0.05 > 0.2", "loss:auc > 0.99"), json=True)
    with tracked_run(args, command="audit", config={"seed": 0}, run_dir=run_dir) as run:
        code = run.finalize(run_dir)
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 == summary["exit_code"] and summary["gates"]["tripped"]
    assert [d["tripped"] for d in summary["gates"]["details"]] == [True, False]
    assert summary["strongest"]["auc"]["attack"] == "rmia" and (run_dir / "report.html").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(a["empirical_epsilon"]["epsilon"] >= 0 for a in metrics["attacks"])
    (row,) = store_rows(tmp_path / "home")
    assert row["status"] == "completed" and row["gates"]["tripped"] and row["versions"]["miaudit"]
    assert row["metrics"]["attacks"][0]["empirical_epsilon"]

    code = finalize_run(run_dir, _args(tmp_path / "home", fail_if=("auc > 0.99",)), command="audit")
    assert code == 0 and "gate holds" in capsys.readouterr().out
    with pytest.raises(MiauditError, match="shokri"):
        finalize_run(run_dir, _args(tmp_path / "home", fail_if=("shokri:auc > 0.5",)))
    latest = store_rows(tmp_path / "home")[0]
    assert latest["status"] == "completed" and "shokri" in latest["gates"]["error"]
    finalize_run(run_dir, _args(tmp_path / "nostore", store=False))
    assert not (tmp_path / "nostore").exists()


def _record(store, run_dir):
    run_id = store.start_run("audit", run_dir=run_dir)
    store.finish_run(run_id, "completed", metrics=json.loads((run_dir / "metrics.json").read_text()))
    return run_id


def test_compare_paired_bootstrap_and_ci_overlap_fallback(tmp_path):
    weak = make_run_dir(tmp_path / "weak", shifts={"loss": 0.3, "rmia": 1.0}, figures=False)
    strong = make_run_dir(tmp_path / "strong", shifts={"loss": 2.0, "rmia": 1.0}, figures=False)
    with RunStore(tmp_path / "runs.sqlite") as store:
        a, b = _record(store, weak), _record(store, strong)
        result = store.compare(a, b, n_bootstrap=300)
        rows = {(r["attack"], r["metric"]): r for r in result["rows"]}
        loss_auc, rmia_auc = rows[("loss", "auc")], rows[("rmia", "auc")]
        assert loss_auc["method"] == "paired-bootstrap" and loss_auc["significant"]
        assert loss_auc["diff"] == pytest.approx(loss_auc["b"] - loss_auc["a"]) and loss_auc["diff"] > 0.2
        assert loss_auc["diff_ci"][0] > 0
        # same seed, same shift: identical scores, a zero difference that is not significant
        assert rmia_auc["diff"] == 0 and rmia_auc["significant"] is False
        assert {("loss", "tpr@0.01"), ("loss", "advantage")} <= set(rows)
        for f in (strong / "scores").iterdir():
            f.unlink()
        rows = {(r["attack"], r["metric"]): r for r in store.compare(a, b)["rows"]}
        assert rows[("loss", "auc")]["method"] == "ci-overlap" and rows[("loss", "auc")]["significant"]
        assert rows[("rmia", "auc")]["significant"] is False


def test_compare_notes_different_data_and_examples_it_could_not_pair(tmp_path, capsys):
    def data(name, n):
        return {"data": {"dataset": name, "n_members": n // 2, "n_nonmembers": n - n // 2}}

    same_a = make_run_dir(tmp_path / "a", n=300, extra=data("digits", 300), figures=False, report=False)
    same_b = make_run_dir(tmp_path / "b", n=300, seed=1, extra=data("digits", 300), figures=False, report=False)
    other = make_run_dir(tmp_path / "c", n=200, extra=data("location", 200), figures=False, report=False)
    with RunStore(default_store_path(tmp_path)) as store:
        a, b, c = _record(store, same_a), _record(store, same_b), _record(store, other)
        assert store.compare(a, b, n_bootstrap=50)["notes"] == []
        notes = store.compare(a, c, n_bootstrap=50)["notes"]
    assert len(notes) == 2
    assert "different data (a: a classifier audit of digits: 150 members, 150 non-members; b: a classifier audit " \
           "of location: 100 members, 100 non-members)" in notes[0]
    assert notes[1].startswith("loss, rmia: the two runs scored different examples")
    assert main(["runs", "compare", a, c, "--home", str(tmp_path)]) == 0
    assert "note: the runs audit different data" in capsys.readouterr().out


def test_compare_notes_config_keys_and_attack_parameters_that_differ(tmp_path):
    """Two runs on the same data whose recipes and LiRA settings differ: the notes say so (a real comparison of an
    HF classifier audited with miaudit's loop and with the user's training function read as one change)."""
    run_a = make_run_dir(tmp_path / "a", figures=False, report=False)
    run_b = make_run_dir(tmp_path / "b", figures=False, report=False)
    metrics = json.loads((run_b / "metrics.json").read_text())
    metrics["attacks"][0]["params"] = {"variance": "global"}
    (run_b / "metrics.json").write_text(json.dumps(metrics))
    configs = [{"seed": 0, "training": {"epochs": 12, "lr": 0.003}, "attacks": [{"name": "loss"}]},
               {"seed": 0, "training": {"epochs": 12, "function": "mine:fit"}, "attacks": [{"name": "loss"}]}]
    with RunStore(tmp_path / "runs.sqlite") as store:
        ids = []
        for folder, config in zip((run_a, run_b), configs):
            run_id = store.start_run("audit", config=config, run_dir=folder)
            store.finish_run(run_id, "completed", metrics=json.loads((folder / "metrics.json").read_text()))
            ids.append(run_id)
        notes = store.compare(*ids, n_bootstrap=50)["notes"]
    name = metrics["attacks"][0]["name"]
    assert notes == ["the runs' configs differ in training.function, training.lr: each difference below may come "
                     "from any of them", f"{name} ran with other parameters (a: defaults; b: variance='global')"]


def test_runs_cli(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path / "run", figures=False)
    with RunStore(default_store_path(tmp_path)) as store:
        first, second = _record(store, run_dir), _record(store, run_dir)
    home = ["--home", str(tmp_path)]
    assert main(["runs", "list", "--json", *home]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} == {first, second}
    assert main(["runs", "list", *home]) == 0
    assert "best AUC" in capsys.readouterr().out
    assert main(["runs", "show", first, *home]) == 0
    out = capsys.readouterr().out
    assert "rmia" in out and "completed" in out
    assert main(["runs", "compare", first, second, "--n-bootstrap", "50", *home]) == 0
    assert "paired-bootstrap" in capsys.readouterr().out
    assert main(["runs", "show", "zzz", *home]) == 2
    assert "no run 'zzz'" in capsys.readouterr().err
    assert main(["runs", "rm", second, "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == second
    assert main(["runs", "rm", first, "--delete-files", *home]) == 2  # no marker: not a folder a run wrote
    assert "no miaudit marker" in capsys.readouterr().err and run_dir.exists()
    (run_dir / MARKER).write_text(json.dumps({"tool": "miaudit", "run_id": first}))
    assert main(["runs", "rm", first, "--delete-files", *home]) == 0
    assert not run_dir.exists()
