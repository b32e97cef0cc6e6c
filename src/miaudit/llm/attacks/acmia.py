"""ACMIA (AC, DerivAC, NormAC): token probabilities re-calibrated by an inverse temperature beta,
``p_beta ∝ p**beta``; every score is a mean over the first occurrence of each distinct token, as in
the authors' code (github.com/Salehzz/ACMIA). ``acmia`` chooses beta on labelled calibration data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from miaudit.attacks.registry import register
from miaudit.errors import ConfigError, DataError
from miaudit.llm import scoring
from miaudit.llm.attacks._common import LLMAttack, as_documents
from miaudit.llm.signals import TokenSignals

CITATION = ("Zare Zade, Qiang, Zhou, Zhu, Roshani, Khanduri, Zhu. Automatic Calibration for Membership "
            "Inference Attack on Large Language Models. 2025 (arXiv:2505.03392)")
VARIANTS = ("ac", "deriv_ac", "norm_ac")


@register
class AC(LLMAttack):
    """``s * mean_first(log p_beta(x) - log p(x))``, s = -1 for beta <= 1, +1 above. The paper gives
    no default beta (it is tuned; see ``acmia``); 2.0 is a grid point."""

    name = "ac"
    access = "logits"
    signals = ("log_prob", "beta_log_prob")
    citation = CITATION

    def __init__(self, *, beta: float = 2.0):
        self.beta = beta

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.ac_score(sig, self.beta)


@register
class DerivAC(LLMAttack):
    """``mean_first(log p_beta(x) - log p_beta'(x))``, beta' the grid point just below beta."""

    name = "deriv_ac"
    access = "logits"
    signals = ("beta_log_prob",)
    citation = CITATION

    def __init__(self, *, beta: float = 2.0):
        self.beta = beta

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.deriv_ac_score(sig, self.beta)


@register
class NormAC(LLMAttack):
    """``mean_first((log p_beta(x) - mu_beta) / (sigma_beta + 1e-10))``; at beta = 1 this is Min-K%++
    with k = 100% over first occurrences."""

    name = "norm_ac"
    access = "logits"
    signals = ("beta_log_prob", "beta_mu", "beta_sigma")
    citation = CITATION

    def __init__(self, *, beta: float = 2.0):
        self.beta = beta

    def document_score(self, sig: TokenSignals) -> float:
        return scoring.norm_ac_score(sig, self.beta)


@register
class ACMIA(LLMAttack):
    """An ACMIA variant whose beta is chosen on labelled calibration documents, as the paper does.

    ``fit(LLMCalibration(signals, labels))`` keeps the beta of ``betas`` (default: the whole grid of
    the signals) with the largest calibration AUC (``beta_``, ``calibration_aucs_``); scores keep the
    variant's orientation (higher = member) whatever the calibration says. Report the AUC on other
    documents: the calibration documents are spent.
    """

    name = "acmia"
    access = "logits"
    needs_reference = "calibration"
    requires_fit = True
    signals = ("log_prob", "beta_log_prob", "beta_mu", "beta_sigma")
    citation = CITATION

    def __init__(self, *, variant: str = "norm_ac", betas: Sequence[float] | None = None):
        self.variant = variant
        self.betas = betas

    def _fit(self, reference: Any) -> None:
        from miaudit.llm.selection import LLMCalibration, choose

        if self.variant not in VARIANTS:
            raise ConfigError(f"acmia variant {self.variant!r} is not allowed; choose {', '.join(VARIANTS)}")
        if not isinstance(reference, LLMCalibration):
            raise DataError(f"acmia learns beta from labelled documents: pass LLMCalibration(signals, labels), got "
                            f"{type(reference).__name__}")
        docs = as_documents(reference.signals)
        self.beta_, self.grid_, self.calibration_aucs_ = choose(self.variant, docs, reference.labels, self.betas)

    def document_score(self, sig: TokenSignals) -> float:
        return {"ac": scoring.ac_score, "deriv_ac": scoring.deriv_ac_score,
                "norm_ac": scoring.norm_ac_score}[self.variant](sig, self.beta_)
