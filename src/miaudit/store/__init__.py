"""The run store: an SQLite index of every audit run (``miaudit runs list|show|compare|rm``)."""

from miaudit.store.compare import compare_runs
from miaudit.store.runs import DB_NAME, STATUSES, RunStore, StoreError, default_home, default_store_path

__all__ = ["DB_NAME", "STATUSES", "RunStore", "StoreError", "compare_runs", "default_home", "default_store_path"]
