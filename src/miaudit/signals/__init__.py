"""Signals: per-example arrays computed once per (model, data), consumed by attacks."""

from miaudit.signals.classifier import CLASSIFIER_SIGNALS, ClassifierOutputs

__all__ = ["CLASSIFIER_SIGNALS", "ClassifierOutputs"]
