"""Plug the text generators: AuditMI user-level audits; audit kind ``text_generator`` into the core (see :mod:`miaudit.kinds`)."""

import miaudit.text_generator.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.text_generator.attacks")
