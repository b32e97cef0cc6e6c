"""``kind: encoder`` audits (EncoderMI); the runner lives in :mod:`miaudit.encoders.pipeline`."""

from miaudit.encoders.pipeline import register

register()
