"""The encoder kind: EncoderMI against contrastive image encoders and the audit kind ``encoder``; loaded by
:mod:`miaudit.kinds`."""

import miaudit.encoder.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.encoder.attacks")
