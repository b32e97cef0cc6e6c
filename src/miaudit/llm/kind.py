"""The language-model kind: the one-pass token-signal attacks and the audit kind ``llm``; loaded by
:mod:`miaudit.kinds`."""

import miaudit.llm.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.llm.attacks")
