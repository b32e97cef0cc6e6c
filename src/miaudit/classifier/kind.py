"""The classifier kind: metric, shadow-model, reference-model (LiRA, RMIA, ...), label-only and white-box
attacks, and the audit kind ``classifier``; loaded by :mod:`miaudit.kinds`."""

import miaudit.classifier.audit  # noqa: F401  (registers the audit kind)
from miaudit.kinds import import_submodules

import_submodules("miaudit.classifier.attacks")
