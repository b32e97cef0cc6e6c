"""The text-generator kind: AuditMI user-level audits and the audit kind ``text_generator``; loaded by
:mod:`miaudit.kinds`."""

import miaudit.text_generator.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.text_generator.attacks")
