"""``RunStore``: an SQLite index of every run (config, versions, metrics, run directory).

One table, ``runs``; each write is one transaction, so a row is either absent or complete. A run
is inserted as ``running`` and moved once to ``completed``, ``failed`` or ``interrupted``. A run
whose process died without finishing (SIGKILL, power loss) is shown as ``interrupted`` the next
time the store is read. The database runs in WAL mode; a file that is not a readable miaudit
store is reported and never overwritten.

Ids (``YYYYmmdd-HHMMSS-`` + 8 random hex digits) are drawn again on the rare collision. A store
another process keeps locked for longer than ``timeout`` seconds (30) is reported as busy, not as
damaged. A row's ``run_dir`` is set only when its run completes (the folder it created);
:meth:`RunStore.remove` with ``delete_files`` deletes that folder only while its marker
(:data:`miaudit.utils.atomic.MARKER`) still names the run, and does row and folder together.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
import socket
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miaudit.errors import MiauditError
from miaudit.utils.atomic import read_marker, temp_prefix
from miaudit.utils.processes import pid_alive

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "failed", "interrupted")
DB_NAME = "runs.sqlite"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id        TEXT PRIMARY KEY,
    created   TEXT NOT NULL,
    finished  TEXT,
    command   TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    config    TEXT NOT NULL,
    versions  TEXT NOT NULL,
    metrics   TEXT,
    gates     TEXT,
    run_dir   TEXT,
    error     TEXT,
    pid       INTEGER,
    host      TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
"""
_JSON_COLUMNS = ("config", "versions", "metrics", "gates")
_ID_ATTEMPTS = 8


class StoreError(MiauditError):
    """The run store cannot be opened or read, or a run reference does not resolve."""


def default_home() -> Path:
    """``$MIAUDIT_HOME``, else the platform's user data folder + ``miaudit``."""
    if os.environ.get("MIAUDIT_HOME"):
        return Path(os.environ["MIAUDIT_HOME"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "miaudit"


def default_store_path(home: str | Path | None = None) -> Path:
    """The database file inside ``home`` (default :func:`default_home`)."""
    return Path(home).expanduser() / DB_NAME if home else default_home() / DB_NAME


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


class RunStore:
    """The run index at ``path`` (an SQLite file, created with its folder when missing)."""

    def __init__(self, path: str | Path | None = None, *, timeout: float = 30.0):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = float(timeout)
        self._check_file()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._check_integrity()
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc) from None
        except OSError as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}; set MIAUDIT_HOME or --home "
                             "to a writable folder") from None

    # -- opening ------------------------------------------------------------------------------
    def _database_error(self, exc: sqlite3.DatabaseError) -> StoreError:
        """What an SQLite error means for the user: a busy store, a rejected write, or a damaged file."""
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return StoreError(f"the run store {self.path} is busy: another miaudit process has held its lock for over "
                              f"{self.timeout:g} s ({exc}); the store is fine: retry when that process finishes, or "
                              "use --no-store / another --home for this run")
        if isinstance(exc, sqlite3.IntegrityError):
            return StoreError(f"the run store {self.path} refused a write ({exc}); the store is fine and unchanged")
        return self._corrupted(exc)

    def _corrupted(self, exc: Exception) -> StoreError:
        return StoreError(f"the run store {self.path} is corrupted or not a miaudit database ({exc}); it was "
                          f"left untouched: move it aside (e.g. mv {self.path} {self.path}.bad) and miaudit "
                          "will start a new one, or point MIAUDIT_HOME / --home elsewhere")

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"the run store path {self.path} is a folder; pass a file path or use --home DIR")
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                header = fh.read(len(_SQLITE_MAGIC))
            if header != _SQLITE_MAGIC:
                raise self._corrupted(ValueError("not an SQLite file"))

    def _check_integrity(self) -> None:
        try:
            rows = self._conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.OperationalError as exc:
            raise self._database_error(exc) from None
        if [tuple(r) for r in rows] != [("ok",)]:
            raise self._corrupted(ValueError("; ".join(str(r[0]) for r in rows[:3])))

    def _init_schema(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"the run store {self.path} was written by a newer miaudit (schema {version}, this "
                             f"version reads {SCHEMA_VERSION}); upgrade miaudit or use another --home")
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and tables - {"runs"}:
            raise StoreError(f"{self.path} is an SQLite database but not a miaudit run store (tables: "
                             f"{', '.join(sorted(tables))}); point MIAUDIT_HOME / --home elsewhere")
        if version < SCHEMA_VERSION:
            with self._transaction() as conn:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    class _Tx:
        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self) -> RunStore._Tx:
        return RunStore._Tx(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def start_run(self, command: str, *, config: dict[str, Any] | None = None,
                  versions: dict[str, Any] | None = None, run_dir: str | Path | None = None) -> str:
        """Insert a complete row with status ``running``; return its id (``YYYYmmdd-HHMMSS-xxxxxxxx``).

        ``run_dir`` is for recording a folder that already exists and belongs to this run; a run that
        is about to write its folder passes it to :meth:`finish_run` instead, once the folder exists.
        """
        created = _now()
        stamp = created[:19].replace("-", "").replace(":", "").replace("T", "-")
        values = (created, command, "running", json.dumps(config or {}, default=str),
                  json.dumps(versions or {}, default=str), str(Path(run_dir).resolve()) if run_dir else None,
                  os.getpid(), socket.gethostname())
        for attempt in range(_ID_ATTEMPTS):
            run_id = f"{stamp}-{secrets.token_hex(4)}"
            try:
                with self._transaction() as conn:
                    conn.execute("INSERT INTO runs (id, created, command, status, config, versions, run_dir, pid, "
                                 "host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (run_id, *values))
                return run_id
            except sqlite3.IntegrityError:
                if attempt + 1 == _ID_ATTEMPTS:
                    raise StoreError(f"could not draw a free run id in {self.path} after {_ID_ATTEMPTS} attempts; "
                                     "the store is fine: retry") from None
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None
        raise AssertionError("unreachable")

    def finish_run(self, run_id: str, status: str, *, metrics: dict[str, Any] | None = None,
                   gates: dict[str, Any] | None = None, error: str | None = None,
                   run_dir: str | Path | None = None) -> None:
        """Move a ``running`` run to its final status, with its metrics, gate results or error."""
        if status not in STATUSES[1:]:
            raise StoreError(f"final status must be one of {', '.join(STATUSES[1:])}, got {status!r}")
        try:
            with self._transaction() as conn:
                cur = conn.execute(
                    "UPDATE runs SET status = ?, finished = ?, metrics = ?, gates = ?, error = ?, "
                    "run_dir = COALESCE(?, run_dir) WHERE id = ? AND status = 'running'",
                    (status, _now(), None if metrics is None else json.dumps(metrics, default=str),
                     None if gates is None else json.dumps(gates, default=str), error,
                     str(Path(run_dir).resolve()) if run_dir else None, run_id))
                if cur.rowcount != 1:
                    raise StoreError(f"run {run_id} is not running in {self.path} (already finished or removed)")
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc) from None

    def remove(self, run: str, *, delete_files: bool = False) -> dict[str, Any]:
        """Delete a run's row and, with ``delete_files``, its run directory, both or neither; return the row.

        The row of a running run is refused. The folder is deleted only while it is this run's: a
        real folder (not a symbolic link) whose marker names the run's id; a folder that a later run
        replaced (``--overwrite``), or that miaudit did not write, is refused and nothing is removed.
        A folder that no longer exists is not an error. The returned row has ``deleted_files``: the
        deleted folder, or None.
        """
        row = self.get_run(run)
        if row["status"] == "running":
            raise StoreError(f"run {row['id']} is still running (process {row.get('pid')}); stop it first")
        folder = self._own_folder(row) if delete_files else None
        aside = folder.parent / (temp_prefix(folder) + "removed") if folder is not None else None
        if folder is not None and aside is not None:
            folder.rename(aside)  # reversible until the row is gone
        try:
            self._write("DELETE FROM runs WHERE id = ?", (row["id"],))
        except BaseException:
            if folder is not None and aside is not None:
                aside.rename(folder)
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        return {**row, "deleted_files": str(folder) if folder is not None else None}

    def _own_folder(self, row: dict[str, Any]) -> Path | None:
        """The run's folder when it may be deleted, None when it is gone; a StoreError when it is not the run's."""
        if not row.get("run_dir"):
            return None
        folder = Path(row["run_dir"])
        keep = "; nothing was removed (without --delete-files only the store row is removed)"
        if folder.is_symlink():
            raise StoreError(f"the run directory {folder} is a symbolic link; miaudit deletes only a folder it wrote "
                             f"itself, so remove the link and its target yourself{keep}")
        if not folder.exists():
            return None
        if not folder.is_dir():
            raise StoreError(f"the run directory {folder} is not a folder{keep}")
        marker = read_marker(folder)
        if marker is None:
            raise StoreError(f"{folder} has no miaudit marker (it was not written by a miaudit run, or by an older "
                             f"version), so it is not deleted{keep}")
        if marker.get("run_id") != row["id"]:
            raise StoreError(f"{folder} now holds run {marker.get('run_id') or 'unrecorded'} (it was written again "
                             f"with --overwrite), not run {row['id']}, so it is not deleted{keep}")
        return folder

    def _write(self, sql: str, params: tuple) -> None:
        try:
            with self._transaction() as conn:
                conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc) from None

    # -- reading ------------------------------------------------------------------------------
    def _rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        try:
            rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc) from None
        return [self._decode(dict(r)) for r in rows]

    @staticmethod
    def _decode(row: dict[str, Any]) -> dict[str, Any]:
        for column in _JSON_COLUMNS:
            if row.get(column) is not None:
                row[column] = json.loads(row[column])
        return row

    def _reap_dead_runs(self) -> None:
        """Mark ``running`` rows of this host whose process is gone as ``interrupted``."""
        host = socket.gethostname()
        for row in self._rows("SELECT id, pid FROM runs WHERE status = 'running' AND host = ?", (host,)):
            if row["pid"] is not None and not pid_alive(int(row["pid"])):
                self._write("UPDATE runs SET status = 'interrupted', finished = ?, error = ? WHERE id = ? "
                            "AND status = 'running'",
                            (_now(), f"process {row['pid']} ended without finishing (killed?)", row["id"]))

    def list_runs(self, *, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs, newest first (all columns, JSON decoded)."""
        self._reap_dead_runs()
        sql = "SELECT * FROM runs"
        params: tuple[str, ...] = ()
        if status is not None:
            if status not in STATUSES:
                raise StoreError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
            sql, params = sql + " WHERE status = ?", (status,)
        sql += " ORDER BY created DESC, rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._rows(sql, params)

    def get_run(self, run: str) -> dict[str, Any]:
        """A run by id, unique id prefix, or ``latest``."""
        self._reap_dead_runs()
        if run == "latest":
            rows = self._rows("SELECT * FROM runs ORDER BY created DESC, rowid DESC LIMIT 1")
        else:
            escaped = run.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._rows("SELECT * FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' ORDER BY created",
                              (run, escaped + "%"))
            exact = [r for r in rows if r["id"] == run]
            rows = exact or rows
        if not rows:
            raise StoreError(f"no run {run!r} in {self.path}; `miaudit runs list` shows the ids")
        if len(rows) > 1:
            raise StoreError(f"run {run!r} is ambiguous: {', '.join(r['id'] for r in rows[:5])}; give more characters")
        return rows[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.list_runs())

    def compare(self, run_a: str, run_b: str, **kwargs: Any) -> dict[str, Any]:
        """Metric differences per attack between two runs; see :func:`miaudit.runs.compare.compare_runs`."""
        from miaudit.runs.compare import compare_runs

        return compare_runs(self.get_run(run_a), self.get_run(run_b), **kwargs)


__all__ = ["DB_NAME", "RunStore", "STATUSES", "StoreError", "default_home", "default_store_path"]
