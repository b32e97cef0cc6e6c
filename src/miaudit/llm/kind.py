"""Plug the language models: the one-pass token-signal attacks; audit kind ``llm`` into the core (see :mod:`miaudit.kinds`)."""

import miaudit.llm.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.llm.attacks")
