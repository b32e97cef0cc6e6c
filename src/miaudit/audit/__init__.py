"""End-to-end audits: a config in, a run directory (metrics, scores, figures, report) out.

``run_audit(config, out_dir)`` dispatches on ``config.kind`` through a table that other kinds
register into (:func:`register_kind`); ``kind: classifier`` lives in :mod:`miaudit.audit.classifier`.
"""

from miaudit.audit.config import (AttackSpec, AuditConfig, DatasetConfig, EvaluationConfig, ReferenceConfig,
                                  ShadowConfig, SplitConfig, TargetConfig, derive_seed)
from miaudit.audit.pipeline import (AuditOutcome, ScoredAttack, audit_kinds, build_attacks, parse_config,
                                    register_kind, resolved_config, run_audit)

__all__ = ["AttackSpec", "AuditConfig", "AuditOutcome", "DatasetConfig", "EvaluationConfig", "ReferenceConfig",
           "ScoredAttack", "ShadowConfig", "SplitConfig", "TargetConfig", "audit_kinds", "build_attacks",
           "derive_seed", "parse_config", "register_kind", "resolved_config", "run_audit"]
