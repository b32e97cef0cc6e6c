"""Empirical lower bounds on the differential-privacy epsilon of a training run.

Two audits, both turn membership-inference results into a statement "with confidence c, the
training algorithm is *not* (eps, delta)-DP for any eps below this bound":

* :func:`empirical_epsilon` -- from an attack's scores on members / non-members (many models or
  one model with independently chosen members). For every threshold, Clopper-Pearson upper
  bounds on the attack's false positive and false negative rates are plugged into the
  hypothesis-testing characterisation of DP (Kairouz et al. 2015): an (eps, delta)-DP algorithm
  satisfies ``FPR + e^eps * FNR >= 1 - delta`` and ``FNR + e^eps * FPR >= 1 - delta``, so

      eps >= max( log((1 - delta - FNR_up) / FPR_up), log((1 - delta - FPR_up) / FNR_up), 0 ).

  This is the estimator of Jagielski et al. 2020 ("Auditing Differentially Private Machine
  Learning: How Private is Private SGD?") and Nasr et al. 2021 ("Adversary Instantiation"), as in
  TensorFlow Privacy (``privacy_tests/epsilon_lower_bound.py``) and ML Privacy Meter. They take
  the maximum over all thresholds at a per-threshold confidence (``correction="none"`` here), which
  overstates the confidence of the maximum: on random scores (no membership signal, about 1000
  members and 1000 non-members) it reported eps up to 0.32 over 10 draws. The default,
  ``correction="bonferroni"``, divides the error budget by the number of tests tried, so the
  maximum is a valid lower bound at the stated confidence (and is 0 on such scores).

* :func:`one_run_epsilon` -- Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1)
  Training Run" (NeurIPS): m canaries, each inserted independently with probability 1/2 into a
  single training run; the auditor guesses "in" for the k+ highest-scored canaries and "out" for
  the k- lowest, and abstains on the rest. With r = k+ + k- guesses of which v are correct, the
  p-value of "the algorithm is (eps, delta)-DP" is (their Theorem 5.2, code in their Appendix D)

      p(eps) = P[Binomial(r, q) >= v] + 2 m delta * max_{i=1..v} P[v - i <= Binomial(r, q) < v] / i,
      q = e^eps / (1 + e^eps),

  and the lower bound is the largest eps with ``p(eps) < 1 - confidence``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.optimize
import scipy.stats

from miaudit.errors import DataError, MiauditError
from miaudit.evaluation.metrics import check_labels_scores, roc_curve

#: delta of empirical epsilon bounds when neither the user nor a DP accountant gives one
DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class EpsilonBound:
    """Result of :func:`empirical_epsilon`; ``epsilon`` is the lower bound (0 = nothing shown)."""

    epsilon: float
    delta: float
    confidence: float
    correction: str
    threshold: float  # score threshold of the best test (members predicted when score >= threshold)
    direction: str  # "higher-is-member" or "lower-is-member" (the reversed test)
    fpr: float  # observed rates of the best test
    fnr: float
    fpr_upper: float  # their Clopper-Pearson upper bounds
    fnr_upper: float
    epsilon_point: float  # the same maximum on observed rates, without confidence (an estimate, not a bound)
    n_members: int
    n_nonmembers: int
    method: str = "clopper-pearson (Jagielski et al. 2020; Nasr et al. 2021)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields; an infinite point estimate (a rate of 0) becomes None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class OneRunBound:
    """Result of :func:`one_run_epsilon` (Steinke, Nasr & Jagielski 2023)."""

    epsilon: float
    delta: float
    confidence: float
    m: int  # canaries randomised
    k_pos: int
    k_neg: int
    guesses: int  # r = k_pos + k_neg
    correct: int  # v
    p_value_at_zero: float  # p-value of the claim "eps = 0": how surprising the guesses are under no leakage
    method: str = "one-run audit (Steinke, Nasr & Jagielski 2023)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clopper_pearson_upper(successes: np.ndarray, trials: int, error: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound: P[true rate > bound] <= ``error``.

    ``successes`` is an int array ``(k,)`` in ``[0, trials]``; returns floats ``(k,)`` in ``(0, 1]``.
    """
    x = np.asarray(successes, dtype=np.float64)
    safe = np.minimum(x, trials - 1)  # beta's second parameter must stay positive
    upper = scipy.stats.beta.ppf(1.0 - error, safe + 1.0, trials - safe)
    return np.where(x >= trials, 1.0, upper)


def _check_level(confidence: float, delta: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise MiauditError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")
    if not 0.0 <= delta < 1.0:
        raise MiauditError(f"delta must be in [0, 1), e.g. 1e-5; got {delta}")


def empirical_epsilon(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
    correction: Literal["none", "bonferroni"] = "bonferroni",
    two_sided: bool = True,
) -> EpsilonBound:
    """Lower bound on epsilon at ``delta`` from membership scores, with Clopper-Pearson confidence.

    ``labels`` (n,) 1 = member; ``scores`` (n,) higher = member. Every distinct score is a threshold;
    with ``two_sided`` the reversed test (member when score is *below* the threshold) is tried too,
    as TensorFlow Privacy does. The two rates of one test are bounded jointly (error
    ``(1 - confidence) / 2`` each, union bound).
    """
    _check_level(confidence, delta)
    if correction not in ("none", "bonferroni"):
        raise MiauditError(f"correction must be 'none' or 'bonferroni', got {correction!r}")
    labels, scores = check_labels_scores(labels, scores)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    curve = roc_curve(labels, scores)
    fp = np.rint(curve.fpr * n_neg).astype(np.int64)
    fn = n_pos - np.rint(curve.tpr * n_pos).astype(np.int64)
    tests = [(fp, fn, "higher-is-member")]
    if two_sided:
        tests.append((n_neg - fp, n_pos - fn, "lower-is-member"))
    n_tests = len(tests) * fp.size
    error = (1.0 - confidence) / 2.0 / (n_tests if correction == "bonferroni" else 1)

    best: tuple[float, int, int] | None = None  # (eps, test index, threshold index)
    per_test = []
    for t, (fp_t, fn_t, _) in enumerate(tests):
        fpr_up = clopper_pearson_upper(fp_t, n_neg, error)
        fnr_up = clopper_pearson_upper(fn_t, n_pos, error)
        eps = _eps_from_rates(fpr_up, fnr_up, delta)
        per_test.append((fpr_up, fnr_up))
        i = int(np.argmax(eps))
        if best is None or eps[i] > best[0]:
            best = (float(eps[i]), t, i)
    assert best is not None
    eps_value, t, i = best
    fp_t, fn_t, direction = tests[t]
    point = max(float(np.max(_eps_from_rates(f / n_neg, n / n_pos, delta))) for f, n, _ in tests)
    return EpsilonBound(
        epsilon=eps_value, delta=delta, confidence=confidence, correction=correction,
        threshold=float(curve.thresholds[i]), direction=direction,
        fpr=float(fp_t[i] / n_neg), fnr=float(fn_t[i] / n_pos),
        fpr_upper=float(per_test[t][0][i]), fnr_upper=float(per_test[t][1][i]),
        epsilon_point=point, n_members=n_pos, n_nonmembers=n_neg)


def _eps_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """max(log((1-delta-fnr)/fpr), log((1-delta-fpr)/fnr), 0) elementwise; a zero rate gives +inf."""
    fpr, fnr = np.asarray(fpr, np.float64), np.asarray(fnr, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(1 - delta - fnr > 0, np.log(np.maximum(1 - delta - fnr, 1e-300)) - np.log(fpr), 0.0)
        b = np.where(1 - delta - fpr > 0, np.log(np.maximum(1 - delta - fpr, 1e-300)) - np.log(fnr), 0.0)
    return np.maximum(np.maximum(a, b), 0.0)


# -- one-run audit (Steinke, Nasr & Jagielski 2023) --------------------------------------------

def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """p-value of ">= v correct out of r guesses" for an (eps, delta)-DP algorithm, m canaries.

    Theorem 5.2 / Appendix D of Steinke, Nasr & Jagielski 2023.
    """
    if not 0 <= v <= r <= m:
        raise MiauditError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    q = 1.0 / (1.0 + math.exp(-eps))  # accuracy of eps-DP randomised response
    beta = float(scipy.stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    alpha = 0.0
    if delta > 0 and v > 0:
        i = np.arange(1, v + 1)
        partial = np.cumsum(scipy.stats.binom.pmf(v - i, r, q))  # P[v - i <= Binomial(r, q) < v]
        alpha = float(np.max(partial / i))
    return min(beta + alpha * delta * 2 * m, 1.0)


def one_run_epsilon_from_counts(m: int, r: int, v: int, *, delta: float = 1e-5, confidence: float = 0.95
                                ) -> float:
    """Largest eps whose p-value is below ``1 - confidence`` (0 when even eps = 0 is not rejected)."""
    _check_level(confidence, delta)
    p = 1.0 - confidence

    def objective(eps: float) -> float:
        return one_run_p_value(m, r, v, eps, delta) - p  # increasing in eps

    if objective(0.0) >= 0:
        return 0.0
    hi = 1.0
    while objective(hi) < 0:  # ends: the p-value tends to 1 > p as eps grows
        hi *= 2.0
    return float(scipy.optimize.brentq(objective, 0.0, hi, xtol=1e-9))


def one_run_epsilon(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    k_pos: int,
    k_neg: int,
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
) -> OneRunBound:
    """One-run audit from canary scores ``(m,)`` (higher = member) and inclusion flags ``(m,)``.

    Each of the m canaries must have been included in training independently with probability 1/2
    (before training), and ``k_pos`` / ``k_neg`` fixed before looking at the scores; choosing them on
    these scores (see :func:`one_run_epsilon_sweep`) voids the confidence level. Ties in the scores
    are broken at random from ``seed``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included)
    if scores.ndim != 1 or included.shape != scores.shape:
        raise DataError(f"canary scores {scores.shape} and inclusion flags {included.shape} must be 1-D "
                        "arrays of the same length")
    if not np.isfinite(scores).all():
        raise DataError("canary scores contain NaN or infinite values; fix the attack's inputs")
    if included.size and not np.isin(included, (0, 1)).all():
        raise DataError("canary inclusion flags must be 0 (left out) or 1 (inserted)")
    m = scores.size
    if k_pos < 0 or k_neg < 0 or k_pos + k_neg == 0 or k_pos + k_neg > m:
        raise MiauditError(f"need k_pos, k_neg >= 0 with 0 < k_pos + k_neg <= {m} canaries; "
                           f"got k_pos={k_pos}, k_neg={k_neg}")
    tie_break = np.random.default_rng(seed).permutation(m)
    order = np.lexsort((tie_break, -scores))  # highest score first
    guessed_in, guessed_out = order[:k_pos], order[m - k_neg:] if k_neg else order[:0]
    inc = included.astype(bool)
    correct = int(inc[guessed_in].sum() + (~inc[guessed_out]).sum())
    r = k_pos + k_neg
    return OneRunBound(
        epsilon=one_run_epsilon_from_counts(m, r, correct, delta=delta, confidence=confidence),
        delta=delta, confidence=confidence, m=m, k_pos=k_pos, k_neg=k_neg, guesses=r, correct=correct,
        p_value_at_zero=one_run_p_value(m, r, correct, 0.0, delta))


def one_run_epsilon_sweep(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    ks: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000),
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Bounds for symmetric guesses k+ = k- = k over ``ks`` (those that fit) and the largest one.

    The maximum is an **oracle** figure (k chosen on the audited scores), reported beside the
    per-k bounds, each of which is valid only if its k was fixed in advance.
    """
    m = int(np.asarray(scores).size)
    bounds = [one_run_epsilon(scores, included, k_pos=k, k_neg=k, delta=delta, confidence=confidence, seed=seed)
              for k in ks if 0 < 2 * k <= m]
    if not bounds:
        raise MiauditError(f"no k in {ks} fits {m} canaries (need 2k <= m); pass smaller ks")
    best = max(bounds, key=lambda b: b.epsilon)
    return {"bounds": [b.to_dict() for b in bounds], "oracle_best": best.to_dict(), "selection": "oracle"}


__all__ = [
    "EpsilonBound", "OneRunBound", "clopper_pearson_upper", "empirical_epsilon", "one_run_epsilon",
    "one_run_epsilon_from_counts", "one_run_epsilon_sweep", "one_run_p_value",
]
