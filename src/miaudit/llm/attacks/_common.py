"""Shared base of the LLM attacks: ``score`` takes a sequence of TokenSignals (one per document).

Each attack family's module holds its per-document formulas (pure functions of
:class:`~miaudit.llm.signals.TokenSignals`, one float each, higher = more likely a member; a
:class:`~miaudit.errors.SignalError` when a signal it needs is absent or makes the score undefined,
never NaN) next to its registered class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.errors import SignalError
from miaudit.llm.signals import TokenSignals


def as_documents(signals: Any) -> list[TokenSignals]:
    """A list of TokenSignals from one record or a sequence of them; a clear error otherwise."""
    docs = [signals] if isinstance(signals, TokenSignals) else list(signals) if isinstance(signals, Sequence) else None
    if not docs or not all(isinstance(d, TokenSignals) for d in docs):
        raise SignalError(f"LLM attacks score a non-empty sequence of TokenSignals (one per document), got "
                          f"{type(signals).__name__}; compute them with miaudit.llm.compute_token_signals")
    return docs


def need(sig: TokenSignals, name: str, attack: str, how: str) -> Any:
    """The optional signal ``name`` of ``sig``; a :class:`SignalError` saying how to supply it when absent."""
    value = getattr(sig, name)
    if value is None:
        raise SignalError(f"attack {attack!r} needs the signal {name!r} ({how}); add it with "
                          f"signals.with_signals({name}=...) or pass {name}=... to score_logits")
    return value


def mean_log_likelihood(sig: TokenSignals) -> float:
    """Mean per-token log-likelihood ``(1/T) sum_t log p(x_t)`` (= minus the usual LM loss)."""
    return float(np.mean(sig.log_prob))


def nonzero_log_likelihood(sig: TokenSignals, attack: str) -> float:
    """:func:`mean_log_likelihood`, or a :class:`SignalError` when it is exactly 0 (an attack divides by it)."""
    ll = mean_log_likelihood(sig)
    if ll == 0.0:
        raise SignalError(f"attack {attack!r} divides by the document's log-likelihood, which is exactly 0 "
                          "(every token predicted with probability 1); the ratio is undefined")
    return ll


class LLMAttack(Attack):
    """Scores each document independently with :meth:`document_score`."""

    target_kind = "llm"

    def _score(self, signals: Any) -> np.ndarray:
        return np.array([self.document_score(doc) for doc in as_documents(signals)], dtype=np.float64)

    def document_score(self, sig: TokenSignals) -> float:
        raise NotImplementedError

    @classmethod
    def grid_scores(cls, param: str, values: np.ndarray, docs: Sequence[TokenSignals], *, fit_data: Any = None,
                    **fixed: Any) -> np.ndarray:
        """``(g, n)`` scores of ``docs`` with tunable ``param`` at each of ``values`` and the other parameters
        ``fixed``; an attack that must be fitted is fitted on ``fit_data`` (its ``fit_input``) at each value."""
        rows = []
        for value in values:
            attack = cls(**fixed, **{param: float(value)})
            if attack.fit_required():
                attack.fit(fit_data)
            rows.append(attack.score(docs))
        return np.asarray(rows)
