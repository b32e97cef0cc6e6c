"""The run machinery every audit kind shares: ``run_audit`` and its kind table, tracking, CI gates
and the run store.

``run_audit(config, out_dir)`` dispatches on ``config.kind`` to the runner a kind registered
(:func:`register_kind`; kinds are found by :mod:`miaudit.kinds`) and writes the run directory.
"""

from miaudit.runs.compare import compare_runs
from miaudit.runs.config import AttackSpec, DatasetConfig, EvaluationConfig, check_attack_specs
from miaudit.runs.pipeline import (
                                   AuditOutcome,
                                   ScoredAttack,
                                   audit_kinds,
                                   build_attacks,
                                   parse_config,
                                   register_kind,
                                   resolved_config,
                                   run_audit,
)
from miaudit.runs.store import DB_NAME, STATUSES, RunStore, StoreError, default_home, default_store_path

__all__ = ["DB_NAME", "STATUSES", "AttackSpec", "AuditOutcome", "DatasetConfig", "EvaluationConfig", "RunStore",
           "ScoredAttack", "StoreError", "audit_kinds", "build_attacks", "check_attack_specs", "compare_runs",
           "default_home", "default_store_path", "parse_config", "register_kind", "resolved_config", "run_audit"]
