"""The multimodal kind: membership inference against CLIP-style image-text dual encoders and the audit kind
``multimodal``; loaded by :mod:`miaudit.kinds`."""

import miaudit.multimodal.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.multimodal.attacks")
