"""Per-document LLM attack formulas (pure functions of :class:`~miaudit.llm.signals.TokenSignals`) and
:func:`score_logits`, the public entry point for anyone holding next-token logits.

Every function returns one float, **higher = more likely a member**, and raises
:class:`~miaudit.errors.SignalError` when a signal it needs is absent or makes the score undefined
(never NaN). The registered attacks in :mod:`miaudit.llm.attacks` call these functions; their
docstrings give the paper and the authors' code each formula follows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from miaudit.errors import ConfigError, SignalError
from miaudit.llm.signals import DEFAULT_BETAS, TokenSignals, compute_token_signals

#: NormAC's guard in the authors' code: sigma + 1e-10, NaN -> 0, clipped to the float32 range
NORM_EPS = 1e-10
_F32 = np.finfo(np.float32)


def _need(sig: TokenSignals, name: str, attack: str, how: str) -> Any:
    value = getattr(sig, name)
    if value is None:
        raise SignalError(f"attack {attack!r} needs the signal {name!r} ({how}); add it with "
                          f"signals.with_signals({name}=...) or pass {name}=... to score_logits")
    return value


def mean_log_likelihood(sig: TokenSignals) -> float:
    """Mean per-token log-likelihood ``(1/T) sum_t log p(x_t)`` (= minus the usual LM loss)."""
    return float(np.mean(sig.log_prob))


def _nonzero_ll(sig: TokenSignals, attack: str) -> float:
    ll = mean_log_likelihood(sig)
    if ll == 0.0:
        raise SignalError(f"attack {attack!r} divides by the document's log-likelihood, which is exactly 0 "
                          "(every token predicted with probability 1); the ratio is undefined")
    return ll


def loss_score(sig: TokenSignals) -> float:
    """LOSS (Yeom et al. 2018): the mean log-likelihood."""
    return mean_log_likelihood(sig)


def zlib_length(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (Carlini et al.'s "zlib entropy")."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(sig: TokenSignals) -> float:
    """Zlib (Carlini et al. 2021): mean log-likelihood / zlib-compressed length in bytes.

    Carlini et al. rank by log-perplexity / zlib entropy (low = memorised); the mean log-likelihood is
    minus the log-perplexity, so this ratio is higher for members, exactly as in MIMIR, Min-K%++'s and
    ACMIA's code (``ll / len(zlib.compress(bytes(text, 'utf-8')))``)."""
    text = _need(sig, "text", "zlib", "the document's text")
    return mean_log_likelihood(sig) / zlib_length(text)


def lowercase_score(sig: TokenSignals) -> float:
    """Lowercase (Carlini et al. 2021): ``ll(lowercased text) / ll(text)`` with mean log-likelihoods,
    i.e. their ratio of log-perplexities; lowercasing hurts a memorised text more, so higher = member
    (ACMIA's code: ``lower_loss / ll``)."""
    lower = _need(sig, "lowercase_logprob", "lowercase",
                  "mean per-token log-likelihood of the lowercased text, from a second forward pass")
    return float(lower) / _nonzero_ll(sig, "lowercase")


def ref_score(sig: TokenSignals) -> float:
    """Reference model (Carlini et al. 2021; MIMIR): ``ll_target - ll_reference`` (mean log-likelihoods)."""
    ref = _need(sig, "ref_logprob", "ref", "mean per-token log-likelihood under a reference model")
    return mean_log_likelihood(sig) - float(ref)


def _lowest_mean(values: np.ndarray, k: float, attack: str) -> float:
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"attack {attack!r}: k must be a fraction in (0, 1], got {k!r}")
    n = max(1, int(values.size * k))  # at least one token (the authors' int(T*k) can be 0 -> NaN)
    return float(np.mean(np.partition(values, n - 1)[:n]))


def min_k_score(sig: TokenSignals, k: float = 0.2) -> float:
    """Min-K% (Shi et al. 2024): mean of the ``max(1, int(T k))`` lowest token log-probabilities."""
    return _lowest_mean(sig.log_prob, k, "min_k")


def min_k_pp_values(sig: TokenSignals) -> np.ndarray:
    """Min-K%++'s per-token ``(log p(x_t) - mu_t) / sigma_t`` with ``mu, sigma**2`` the mean and
    variance of ``log p`` under ``p``; 0 where ``sigma = 0`` (a one-point distribution), (T,)."""
    sigma = np.sqrt(sig.var_logp)
    centred = sig.log_prob - sig.mean_logp
    return np.divide(centred, sigma, out=np.zeros_like(centred), where=sigma > 0)


def min_k_pp_score(sig: TokenSignals, k: float = 0.2) -> float:
    """Min-K%++ (Zhang et al. 2025): mean of the lowest k fraction of :func:`min_k_pp_values`."""
    return _lowest_mean(min_k_pp_values(sig), k, "min_k_pp")


def token_frequencies(sequences: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Laplace-smoothed token frequencies ``(count + 1) / (total + V)`` of a reference corpus, (V,)."""
    return smooth_counts(token_counts(sequences, vocab_size))


def token_counts(sequences: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Occurrences of each vocabulary id in token-id sequences, (V,) int64."""
    counts = np.zeros(int(vocab_size), dtype=np.int64)
    for seq in sequences:
        ids = np.asarray(seq, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise SignalError(f"reference corpus token ids range over [{ids.min()}, {ids.max()}] outside the "
                              f"vocabulary of {vocab_size}; tokenise it with the target's tokenizer")
        counts += np.bincount(ids, minlength=vocab_size)
    return counts


def smooth_counts(counts: np.ndarray) -> np.ndarray:
    """DC-PDD's Laplace smoothing of token counts: ``(c + 1) / (sum(c) + V)``, (V,) float64."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any() or not np.isfinite(counts).all():
        raise SignalError("token counts must be a 1-D array of non-negative counts, one per vocabulary id")
    return (counts + 1.0) / (counts.sum() + counts.size)


def _check_freq(token_freq: Any, sig: TokenSignals) -> np.ndarray:
    freq = np.asarray(token_freq, dtype=np.float64)
    if freq.ndim != 1 or freq.size <= int(sig.token_ids.max()):
        raise SignalError(f"token_freq must be a 1-D array with one frequency per vocabulary id (got shape "
                          f"{freq.shape}, the document uses id {int(sig.token_ids.max())})")
    if not (np.isfinite(freq).all() and (freq > 0).all() and (freq <= 1).all()):
        raise SignalError("token_freq must hold frequencies in (0, 1] (Laplace-smoothed, see token_frequencies)")
    return freq


def dc_pdd_score(sig: TokenSignals, token_freq: Any, a: float = 0.01) -> float:
    """DC-PDD (Zhang et al. 2024): mean over the first occurrence of each token of
    ``min(p(x_t) log(1 / f(x_t)), a)``, ``f`` the reference-corpus frequency (authors' default a = 0.01)."""
    if not a > 0:
        raise ConfigError(f"attack 'dc_pdd': a must be > 0, got {a!r}")
    freq = _check_freq(token_freq, sig)
    first = sig.first_occurrence
    cross = np.exp(sig.log_prob[first]) * -np.log(freq[sig.token_ids[first]])
    return float(np.mean(np.minimum(cross, a)))


# -- ACMIA ---------------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class BetaGrid:
    """One ACMIA variant over a grid: ``scores[i, j]`` of document i at ``betas[j]``."""

    betas: np.ndarray  # (n_b,)
    scores: np.ndarray  # (n_docs, n_b)


def acmia_grid(signals: TokenSignals | Sequence[TokenSignals]) -> dict[str, BetaGrid]:
    """AC, DerivAC and NormAC at every grid point from the same signals: ``{"ac", "deriv_ac",
    "norm_ac"} -> BetaGrid``. DerivAC starts at the second grid point; NormAC skips beta = 0 (a
    uniform distribution, sigma = 0), as in the authors' code. All documents must share one grid."""
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
        "ac": BetaGrid(betas.copy(), np.asarray(ac)),
        "deriv_ac": BetaGrid(betas[1:].copy(), np.asarray(deriv).reshape(len(docs), -1)),
        "norm_ac": BetaGrid(betas[keep].copy(), np.asarray(norm)[:, keep]),
    }


# -- attacks that need another pass -----------------------------------------------------------------------

def recall_score(sig: TokenSignals) -> float:
    """ReCaLL (Xie et al. 2024): ``ll(x | non-member prefix) / ll(x)`` with mean log-likelihoods over
    the same tokens; a member's likelihood drops more with the prefix, so higher = member."""
    prefix = _need(sig, "prefix_logprob", "recall",
                   "mean log-likelihood of the document's tokens after a non-member prefix")
    return float(prefix) / _nonzero_ll(sig, "recall")


def gradnorm_score(sig: TokenSignals) -> float:
    """GradNorm (white-box; MIMIR): minus the gradient norm of the document's loss (members sit in
    flatter regions: smaller gradients)."""
    norm = _need(sig, "grad_norm", "gradnorm", "gradient norm of the loss, white-box, see signals.gradient_norm")
    return -float(norm)


def neighbourhood_score(sig: TokenSignals) -> float:
    """Neighbourhood attack (Mattern et al. 2023): ``ll(x) - mean_n ll(neighbour_n)`` (mean
    log-likelihoods); the neighbours come from a perturbation model the user supplies."""
    neighbours = _need(sig, "neighbour_logprobs", "neighbourhood",
                       "mean log-likelihoods of perturbed neighbours of the text")
    if neighbours.size == 0 or not np.isfinite(neighbours).all():
        raise SignalError("neighbour_logprobs must be a non-empty array of finite log-likelihoods")
    return mean_log_likelihood(sig) - float(np.mean(neighbours))


# -- the public entry point ----------------------------------------------------------------------------

#: score_logits parameters that are signals from other passes (stored on TokenSignals)
SIGNAL_PARAMS = ("lowercase_logprob", "ref_logprob", "prefix_logprob", "grad_norm", "neighbour_logprobs")
#: score_logits hyper-parameters and the attacks they go to
HYPER_PARAMS = {"k": ("min_k", "min_k_pp"), "a": ("dc_pdd",), "token_freq": ("dc_pdd",),
                "beta": ("ac", "deriv_ac", "norm_ac")}
#: attack -> the optional signal (or hyper-parameter) without which it does not apply
_NEEDS = {"zlib": "text", "lowercase": "lowercase_logprob", "ref": "ref_logprob", "dc_pdd": "token_freq",
          "recall": "prefix_logprob", "gradnorm": "grad_norm", "neighbourhood": "neighbour_logprobs"}


def score_logits(logits: Any, token_ids: Any, *, text: str | None = None, attacks: Sequence[str] | None = None,
                 betas: Iterable[float] = DEFAULT_BETAS, method: str = "fast", **params: Any) -> dict[str, float]:
    """Membership scores of one document from its next-token logits (higher = member).

    ``logits`` (T, V): row t predicts ``token_ids[t]`` (T,) (numpy or torch, any float dtype).
    ``text`` enables ``zlib``. ``params``: hyper-parameters (``k`` for min_k / min_k_pp, ``a`` and
    ``token_freq`` for dc_pdd, ``beta`` for ac / deriv_ac / norm_ac) and signals from other passes
    (``lowercase_logprob``, ``ref_logprob``, ``prefix_logprob``, ``grad_norm``, ``neighbour_logprobs``).
    ``attacks``: names to compute (default: every LLM attack whose inputs are present; a named attack
    whose input is missing is an error). ``betas`` / ``method``: the signal engine's grid and path.
    """
    from miaudit.attacks.registry import attack_names, create_attack

    unknown = sorted(set(params) - set(SIGNAL_PARAMS) - set(HYPER_PARAMS))
    if unknown:
        raise ConfigError(f"score_logits has no parameter {unknown[0]!r}; allowed: "
                          f"{', '.join(SIGNAL_PARAMS + tuple(HYPER_PARAMS))}")
    available = [n for n in attack_names(target_kind="llm") if n in _SCORERS]
    if attacks is None:
        given = {k for k, v in params.items() if v is not None} | ({"text"} if text is not None else set())
        chosen = [n for n in available if _NEEDS.get(n) is None or _NEEDS[n] in given]
    else:
        chosen = list(attacks)
        bad = [n for n in chosen if n not in available]
        if bad:
            raise ConfigError(f"score_logits cannot compute attack {bad[0]!r}; choose from {', '.join(available)}")
    signals = {k: params[k] for k in SIGNAL_PARAMS if params.get(k) is not None}
    sig = compute_token_signals(logits, token_ids, betas=betas, method=method, text=text, **signals)
    scores = {}
    for name in chosen:
        hyper = {k: v for k, v in params.items() if k in HYPER_PARAMS and name in HYPER_PARAMS[k] and v is not None}
        scores[name] = float(create_attack(name, target_kind="llm", **hyper).score([sig])[0])
    return scores


_SCORERS = ("loss", "zlib", "lowercase", "ref", "min_k", "min_k_pp", "dc_pdd", "ac", "deriv_ac", "norm_ac",
            "recall", "gradnorm", "neighbourhood")
