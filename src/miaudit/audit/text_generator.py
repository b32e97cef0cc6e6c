"""``kind: text_generator`` audits (AuditMI); the runner lives in :mod:`miaudit.text_generation.pipeline`."""

from miaudit.text_generation.pipeline import register

register()
