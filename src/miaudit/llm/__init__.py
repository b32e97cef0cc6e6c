"""Language-model audits: the one-pass signal engine, the attack formulas and ``score_logits``.

``score_logits(logits, token_ids, ...)`` scores one document from its next-token logits (any model
or server); :func:`compute_token_signals` gives the :class:`TokenSignals` record every LLM attack
reads; :func:`acmia_grid` evaluates AC / DerivAC / NormAC over the whole beta grid from it.
"""

from miaudit.llm.attacks.acmia import BetaGrid, acmia_grid
from miaudit.llm.attacks.dc_pdd import token_counts, token_frequencies
from miaudit.llm.scoring import score_logits
from miaudit.llm.selection import LLMCalibration, select_and_evaluate
from miaudit.llm.signals import (
    DEFAULT_BETAS,
    OPTIONAL_SIGNALS,
    TokenSignals,
    compute_token_signals,
    compute_token_signals_batch,
    gradient_norm,
    token_log_probs,
    token_signals_from_hidden,
)

__all__ = [
    "DEFAULT_BETAS", "OPTIONAL_SIGNALS", "BetaGrid", "LLMCalibration", "TokenSignals", "acmia_grid",
    "compute_token_signals",
    "compute_token_signals_batch", "gradient_norm", "score_logits", "select_and_evaluate", "token_counts",
    "token_frequencies", "token_log_probs", "token_signals_from_hidden",
]
