"""Per-target-kind fixtures for the attack contract test."""
