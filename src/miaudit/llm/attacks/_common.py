"""Shared base of the LLM attacks: ``score`` takes a sequence of TokenSignals (one per document)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from miaudit.attacks.base import Attack, access_allows
from miaudit.errors import SignalError
from miaudit.llm.signals import TokenSignals


def as_documents(signals: Any) -> list[TokenSignals]:
    """A list of TokenSignals from one record or a sequence of them; a clear error otherwise."""
    docs = [signals] if isinstance(signals, TokenSignals) else list(signals) if isinstance(signals, Sequence) else None
    if not docs or not all(isinstance(d, TokenSignals) for d in docs):
        raise SignalError(f"LLM attacks score a non-empty sequence of TokenSignals (one per document), got "
                          f"{type(signals).__name__}; compute them with miaudit.llm.compute_token_signals")
    return docs


class LLMAttack(Attack):
    """Scores each document independently with :meth:`document_score`."""

    target_kind = "llm"

    def _score(self, signals: Any) -> np.ndarray:
        docs = as_documents(signals)
        # a record's access covers the model's outputs; white-box signals (gradients) are checked where read
        needed = "logits" if self.access == "white-box" else self.access
        for doc in docs:
            if not access_allows(doc.access, needed):
                raise SignalError(f"attack {self.name!r} needs {self.access} access but these signals come from "
                                  f"{doc.access} (e.g. an API); drop the attack or score a model whose logits you have")
        return np.array([self.document_score(doc) for doc in docs], dtype=np.float64)

    def document_score(self, sig: TokenSignals) -> float:
        raise NotImplementedError
