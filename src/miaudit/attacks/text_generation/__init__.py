"""Attacks on text-generation models (user-level audits)."""
