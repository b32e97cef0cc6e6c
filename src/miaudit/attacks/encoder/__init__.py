"""Attacks on image encoders that expose embeddings (EncoderMI-V, -S, -T)."""
