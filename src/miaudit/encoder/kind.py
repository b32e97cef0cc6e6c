"""Plug the contrastive image encoders: EncoderMI; audit kind ``encoder`` into the core (see :mod:`miaudit.kinds`)."""

import miaudit.encoder.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.encoder.attacks")
