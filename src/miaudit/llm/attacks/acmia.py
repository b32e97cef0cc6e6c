"""ACMIA (AC, DerivAC, NormAC): token probabilities re-calibrated by an inverse temperature beta,
``p_beta ∝ p**beta``; every score is a mean over the first occurrence of each distinct token, as in
the authors' code (github.com/Salehzz/ACMIA). ``acmia`` chooses beta on labelled calibration data with
the same selection (:func:`miaudit.llm.selection.choose`) as an audit's held-out choice of ``ac`` /
``deriv_ac`` / ``norm_ac``'s beta."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from miaudit.attacks.base import Check, Interval
from miaudit.attacks.registry import register
from miaudit.errors import ConfigError, DataError, SignalError
from miaudit.llm.attacks._common import LLMAttack, as_documents
from miaudit.llm.selection import LLMCalibration, choose
from miaudit.llm.signals import DEFAULT_BETAS, TokenSignals

CITATION = ("Zare Zade, Qiang, Zhou, Zhu, Roshani, Khanduri, Zhu. Automatic Calibration for Membership "
            "Inference Attack on Large Language Models. 2025 (arXiv:2505.03392)")
Variant = Literal["ac", "deriv_ac", "norm_ac"]
#: NormAC's guard in the authors' code: sigma + 1e-10, NaN -> 0, clipped to the float32 range
NORM_EPS = 1e-10
_F32 = np.finfo(np.float32)
BETA_RANGE = Interval(0.0, None, what="an inverse temperature")


# -- formulas ----------------------------------------------------------------------------------------

def _first_mean(values: np.ndarray, sig: TokenSignals) -> np.ndarray:
    """Mean over the first occurrences of each distinct token; ``values`` (..., T) -> (...)."""
    return values[..., sig.first_occurrence].astype(np.float64).mean(axis=-1)


def _ac_sign(betas: np.ndarray) -> np.ndarray:
    return np.where(betas <= 1.0, -1.0, 1.0)


def _ac_shift(sig: TokenSignals, rows: slice | int) -> np.ndarray:
    """``log p_beta(x) - log p(x)``, both in the tempered arrays' float32 storage precision, so that
    the difference is exactly 0 at beta = 1."""
    base = sig.log_prob.astype(sig.beta_log_prob.dtype).astype(np.float64)
    return sig.beta_log_prob[rows].astype(np.float64) - base


def ac_score(sig: TokenSignals, beta: float = 2.0) -> float:
    """AC (Zare Zade et al. 2025): ``s * mean_first(log p_beta(x_t) - log p(x_t))``, s = -1 for
    beta <= 1 and +1 above (0 at beta = 1)."""
    j = sig.beta_index(beta)
    return float(_ac_sign(sig.betas[j]) * _first_mean(_ac_shift(sig, j), sig))


def deriv_ac_score(sig: TokenSignals, beta: float = 2.0) -> float:
    """DerivAC: ``mean_first(log p_beta_j(x_t) - log p_beta_(j-1)(x_t))``, the grid point just below."""
    j = sig.beta_index(beta)
    if j == 0:
        raise SignalError(f"deriv_ac at beta={beta!r} needs a grid point below it; pick a larger beta")
    return float(_first_mean(sig.beta_log_prob[j].astype(np.float64) - sig.beta_log_prob[j - 1], sig))


def _norm_values(sig: TokenSignals, rows: slice | int) -> np.ndarray:
    lp = sig.beta_log_prob[rows].astype(np.float64)
    z = (lp - sig.beta_mu[rows]) / (sig.beta_sigma[rows].astype(np.float64) + NORM_EPS)
    return np.clip(np.nan_to_num(z, nan=0.0), _F32.min, _F32.max)


def norm_ac_score(sig: TokenSignals, beta: float = 2.0) -> float:
    """NormAC: ``mean_first((log p_beta(x_t) - mu_beta) / (sigma_beta + 1e-10))``, mu and sigma the
    mean and standard deviation of ``log p_beta`` under ``p_beta`` (NaN -> 0, as in the authors' code)."""
    return float(_first_mean(_norm_values(sig, sig.beta_index(beta)), sig))


#: each variant's score of one document at one beta
FORMULAS: dict[str, Callable[[TokenSignals, float], float]] = {"ac": ac_score, "deriv_ac": deriv_ac_score,
                                                             "norm_ac": norm_ac_score}


def variant_betas(variant: str, betas: np.ndarray) -> np.ndarray:
    """The grid points at which ``variant`` is defined: DerivAC starts at the second point; NormAC skips
    beta = 0 (a uniform distribution, sigma = 0), as in the authors' code."""
    if variant == "deriv_ac":
        return betas[1:]
    if variant == "norm_ac":
        return betas[betas != 0.0]
    return betas


@dataclass(frozen=True)
class BetaGrid:
    """One ACMIA variant over a grid: ``scores[i, j]`` of document i at ``betas[j]``."""

    betas: np.ndarray  # (n_b,)
    scores: np.ndarray  # (n_docs, n_b)


def acmia_grid(signals: TokenSignals | Sequence[TokenSignals]) -> dict[str, BetaGrid]:
    """AC, DerivAC and NormAC at every grid point (:func:`variant_betas`) from the same signals:
    ``{"ac", "deriv_ac", "norm_ac"} -> BetaGrid``. All documents must share one grid."""
    docs = [signals] if isinstance(signals, TokenSignals) else list(signals)
    if not docs:
        raise SignalError("acmia_grid needs at least one document")
    betas = docs[0].betas
    if any(d.betas.shape != betas.shape or not np.allclose(d.betas, betas, rtol=1e-12, atol=0) for d in docs):
        raise SignalError("documents were computed with different beta grids; recompute them with one grid")
    ac, deriv, norm = [], [], []
    for sig in docs:
        lp = sig.beta_log_prob.astype(np.float64)
        ac.append(_ac_sign(betas) * _first_mean(_ac_shift(sig, slice(None)), sig))
        deriv.append(_first_mean(lp[1:] - lp[:-1], sig))
        norm.append(_first_mean(_norm_values(sig, slice(None)), sig))
    keep = betas != 0.0
    return {
        "ac": BetaGrid(variant_betas("ac", betas).copy(), np.asarray(ac)),
        "deriv_ac": BetaGrid(variant_betas("deriv_ac", betas).copy(), np.asarray(deriv).reshape(len(docs), -1)),
        "norm_ac": BetaGrid(variant_betas("norm_ac", betas).copy(), np.asarray(norm)[:, keep]),
    }


# -- attacks -----------------------------------------------------------------------------------------

class _TemperedAttack(LLMAttack):
    """An ACMIA variant at one ``beta`` of the signals' grid; an audit chooses beta on held-out documents
    among the grid points the variant defines (:meth:`candidates`)."""

    citation = CITATION
    access = "logits"
    param_constraints = {"beta": BETA_RANGE}
    tunable = {"beta": DEFAULT_BETAS}

    def __init__(self, *, beta: float = 2.0):
        self.beta = beta

    @classmethod
    def candidates(cls, param: str, signals: Any = None) -> np.ndarray:
        """The grid points of the signals (without signals: the engine's default grid) where the variant is
        defined (:func:`variant_betas`)."""
        grid = super().candidates(param) if signals is None else as_documents(signals)[0].betas
        return variant_betas(cls.name, np.asarray(grid, dtype=np.float64))

    @classmethod
    def grid_scores(cls, param: str, values: np.ndarray, docs: Sequence[TokenSignals], *, fit_data: Any = None,
                    **fixed: Any) -> np.ndarray:
        """Every grid point's scores from one :func:`acmia_grid` call, ``(g, n)``."""
        table = acmia_grid(docs)[cls.name]
        columns = []
        for b in values:
            hits = np.flatnonzero(np.isclose(table.betas, b, rtol=1e-9, atol=0))
            if hits.size == 0:
                raise ConfigError(f"{cls.name}: beta {b!r} is not on the signals' grid for this variant")
            columns.append(int(hits[0]))
        return table.scores[:, columns].T.copy()

    def document_score(self, sig: TokenSignals) -> float:
        return FORMULAS[self.name](sig, self.beta)


@register
class AC(_TemperedAttack):
    """``s * mean_first(log p_beta(x) - log p(x))``, s = -1 for beta <= 1, +1 above. The paper gives
    no default beta (it is tuned; see ``acmia``); 2.0 is a grid point."""

    name = "ac"
    signals = ("log_prob", "beta_log_prob")

    @classmethod
    def candidates(cls, param: str, signals: Any = None) -> np.ndarray:
        """As the other variants, without beta = 1, where AC is identically 0 (never a useful scorer)."""
        betas = super().candidates(param, signals)
        return betas[~np.isclose(betas, 1.0)]


@register
class DerivAC(_TemperedAttack):
    """``mean_first(log p_beta(x) - log p_beta'(x))``, beta' the grid point just below beta."""

    name = "deriv_ac"
    signals = ("beta_log_prob",)


@register
class NormAC(_TemperedAttack):
    """``mean_first((log p_beta(x) - mu_beta) / (sigma_beta + 1e-10))``; at beta = 1 this is Min-K%++
    with k = 100% over first occurrences."""

    name = "norm_ac"
    signals = ("beta_log_prob", "beta_mu", "beta_sigma")


@register
class ACMIA(LLMAttack):
    """An ACMIA variant whose beta is chosen on labelled calibration documents, as the paper does.

    ``fit(LLMCalibration(signals, labels))`` keeps the beta of ``betas`` (default: the variant's
    candidates on the signals' grid) with the largest calibration AUC (``beta_``,
    ``calibration_aucs_``), by the same :func:`~miaudit.llm.selection.choose` an audit uses to pick the
    variant's beta on its calibration split; scores keep the variant's orientation (higher = member)
    whatever the calibration says. Report the AUC on other documents: the calibration documents are spent.
    """

    name = "acmia"
    access = "logits"
    needs_reference = "calibration"
    requires_fit = True
    fit_input = ("calibration",)
    signals = ("log_prob", "beta_log_prob", "beta_mu", "beta_sigma")
    citation = CITATION
    param_constraints = {"betas": Check(lambda betas: all(b >= 0 for b in betas),
                                        "inverse temperatures >= 0 (null: the variant's candidates on the grid)")}

    def __init__(self, *, variant: Variant = "norm_ac", betas: Sequence[float] | None = None):
        self.variant = variant
        self.betas = betas

    def _fit(self, reference: Any) -> None:
        if not isinstance(reference, LLMCalibration):
            raise DataError(f"acmia learns beta from labelled documents: pass LLMCalibration(signals, labels), got "
                            f"{type(reference).__name__}")
        docs = as_documents(reference.signals)
        self.beta_, self.grid_, self.calibration_aucs_ = choose(self.variant, docs, reference.labels, self.betas)

    def _learned_state(self) -> dict[str, Any]:
        """The chosen ``beta_`` and the calibration AUC of every candidate (``calibration_auc_``)."""
        return {"beta_": self.beta_,
                "calibration_auc_": {f"{b:g}": float(auc) for b, auc in zip(self.grid_, self.calibration_aucs_)}}

    def document_score(self, sig: TokenSignals) -> float:
        return FORMULAS[self.variant](sig, self.beta_)
