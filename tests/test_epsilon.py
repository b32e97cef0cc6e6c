"""Empirical epsilon lower bounds: hand-computed cases, a naive reference, and known properties."""

import math

import numpy as np
import pytest
import scipy.stats

from miaudit.errors import MiauditError
from miaudit.evaluation.epsilon import (
    clopper_pearson_upper,
    empirical_epsilon,
    one_run_epsilon,
    one_run_epsilon_from_counts,
    one_run_epsilon_sweep,
    one_run_p_value,
)


def _separated(n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    return labels, labels + np.linspace(0, 0.5, 2 * n)  # members all above non-members


def _naive_bound(labels, scores, delta, confidence, n_tests_correction=False):
    """Slow reference: every threshold, both directions, scipy's beta quantile directly."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    thresholds = np.r_[np.inf, np.unique(scores)]
    tests = []
    for t in thresholds:
        pred = scores >= t
        fp, fn = int((pred & ~labels).sum()), int((~pred & labels).sum())
        tests += [(fp, fn), (n_neg - fp, n_pos - fn)]
    err = (1 - confidence) / 2 / (len(tests) if n_tests_correction else 1)

    def upper(x, n):
        return 1.0 if x == n else scipy.stats.beta.ppf(1 - err, x + 1, n - x)

    best = 0.0
    for fp, fn in tests:
        fpr_u, fnr_u = upper(fp, n_neg), upper(fn, n_pos)
        for num, den in ((1 - delta - fnr_u, fpr_u), (1 - delta - fpr_u, fnr_u)):
            if num > 0:
                best = max(best, math.log(num / den))
    return best


def test_clopper_pearson_upper_matches_its_definition():
    n, err = 50, 0.025
    x = np.array([0, 1, 7, 25, 49, 50])
    up = clopper_pearson_upper(x, n, err)
    assert up[0] == pytest.approx(1 - err ** (1 / n))  # closed form for 0 successes
    assert up[-1] == 1.0
    # the upper bound p solves P[Binomial(n, p) <= x] = err
    assert scipy.stats.binom.cdf(x[1:-1], n, up[1:-1]) == pytest.approx(np.full(4, err), rel=1e-6)


def test_perfect_separation_hand_computed():
    n, delta, conf = 100, 1e-5, 0.95
    labels, scores = _separated(n)
    u = 1 - ((1 - conf) / 2) ** (1 / n)  # CP upper bound on FPR = FNR = 0 with n trials
    expected = math.log((1 - delta - u) / u)  # = 3.281...
    bound = empirical_epsilon(labels, scores, delta=delta, confidence=conf, correction="none")
    assert bound.epsilon == pytest.approx(expected, rel=1e-9)
    assert bound.fpr == 0 and bound.fnr == 0 and bound.direction == "higher-is-member"
    assert bound.to_dict()["epsilon_point"] is None  # zero rates: infinite point estimate, JSON-safe


def test_perfect_separation_bound_grows_with_n():
    for correction in ("none", "bonferroni"):
        bounds = [empirical_epsilon(*_separated(n), correction=correction).epsilon for n in (30, 100, 1000)]
        assert 0 < bounds[0] < bounds[1] < bounds[2]
    # 10 + 10 records cannot support a claim once the 42 tests are accounted for
    assert empirical_epsilon(*_separated(10)).epsilon == 0.0


@pytest.mark.parametrize("correction", ["none", "bonferroni"])
def test_matches_naive_reference(correction):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 120)
    scores = np.round(rng.normal(size=120) + 1.5 * labels, 1)  # ties on purpose
    fast = empirical_epsilon(labels, scores, delta=1e-3, confidence=0.9, correction=correction).epsilon
    slow = _naive_bound(labels, scores, 1e-3, 0.9, correction == "bonferroni")
    assert fast == pytest.approx(slow, rel=1e-9, abs=1e-12)


def test_random_scores_give_zero_and_bonferroni_is_not_larger():
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 2000), rng.normal(size=2000)
    assert empirical_epsilon(labels, scores).epsilon == 0.0
    assert empirical_epsilon(labels, scores, correction="none").epsilon < 0.4
    labels, scores = rng.integers(0, 2, 400), rng.normal(size=400)
    sep = scores + 2 * labels
    assert (empirical_epsilon(labels, sep, correction="bonferroni").epsilon
            <= empirical_epsilon(labels, sep, correction="none").epsilon)


def test_reversed_scores_are_caught_by_the_two_sided_test():
    labels, scores = _separated(50)
    forward = empirical_epsilon(labels, scores).epsilon
    reversed_ = empirical_epsilon(labels, -scores)
    assert reversed_.epsilon == pytest.approx(forward)
    assert reversed_.direction == "lower-is-member"
    assert empirical_epsilon(labels, -scores, two_sided=False).epsilon < forward


def test_larger_delta_gives_smaller_bound_and_point_is_above_bound():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 600)
    scores = rng.normal(size=600) + 2 * labels
    small, large = (empirical_epsilon(labels, scores, delta=d) for d in (1e-6, 0.1))
    assert large.epsilon <= small.epsilon
    assert small.epsilon_point >= small.epsilon > 0


@pytest.mark.parametrize("kwargs", [{"confidence": 1.0}, {"confidence": 0.0}, {"delta": -0.1}, {"delta": 1.0},
                                    {"correction": "holm"}])
def test_bad_levels_are_clear_errors(kwargs):
    labels, scores = _separated(5)
    with pytest.raises(MiauditError):
        empirical_epsilon(labels, scores, **kwargs)


# -- one-run audit (Steinke, Nasr & Jagielski 2023) ---------------------------------------------

def test_one_run_p_value_pure_dp_is_a_binomial_tail():
    assert one_run_p_value(1000, 10, 10, 0.0, 0.0) == pytest.approx(0.5 ** 10)
    q = 1 / (1 + math.exp(-1.0))
    assert one_run_p_value(500, 40, 30, 1.0, 0.0) == pytest.approx(scipy.stats.binom.sf(29, 40, q))


def test_one_run_all_correct_pure_dp_closed_form():
    # p(eps) = q^r; the bound solves q^r = 1 - confidence: eps = logit(0.05 ** (1/r))
    q = 0.05 ** (1 / 100)
    assert one_run_epsilon_from_counts(1000, 100, 100, delta=0.0) == pytest.approx(math.log(q / (1 - q)), rel=1e-6)


def test_one_run_delta_term_matches_the_definition():
    m, r, v, eps, delta = 200, 30, 22, 0.5, 1e-3
    q = 1 / (1 + math.exp(-eps))
    alpha = max(sum(scipy.stats.binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i for i in range(1, v + 1))
    expected = scipy.stats.binom.sf(v - 1, r, q) + alpha * delta * 2 * m
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(expected, rel=1e-10)


def test_one_run_bound_properties():
    by_correct = [one_run_epsilon_from_counts(1000, 100, v) for v in (50, 70, 90, 100)]
    assert by_correct[0] == 0.0 and by_correct == sorted(by_correct) and by_correct[-1] > 3
    assert one_run_epsilon_from_counts(1000, 100, 100, delta=1e-3) < one_run_epsilon_from_counts(
        1000, 100, 100, delta=0.0)
    # at the bound the p-value equals 1 - confidence
    eps = one_run_epsilon_from_counts(500, 60, 55, delta=1e-5, confidence=0.9)
    assert one_run_p_value(500, 60, 55, eps, 1e-5) == pytest.approx(0.1, abs=1e-6)


def test_one_run_epsilon_counts_guesses_on_top_and_bottom_canaries():
    rng = np.random.default_rng(0)
    included = rng.integers(0, 2, 1000)
    scores = 3.0 * included + rng.normal(size=1000)
    bound = one_run_epsilon(scores, included, k_pos=100, k_neg=50)
    order = np.argsort(-scores)
    correct = int(included[order[:100]].sum() + (1 - included[order[-50:]]).sum())
    assert (bound.guesses, bound.correct, bound.m) == (150, correct, 1000)
    assert bound.epsilon == pytest.approx(one_run_epsilon_from_counts(1000, 150, correct))
    assert bound.epsilon > 2


def test_one_run_random_scores_give_about_zero_and_sweep_is_labelled_oracle():
    rng = np.random.default_rng(1)
    included, scores = rng.integers(0, 2, 1000), rng.normal(size=1000)
    assert one_run_epsilon(scores, included, k_pos=100, k_neg=100).epsilon < 0.3
    sweep = one_run_epsilon_sweep(scores, included, ks=(10, 50, 100, 600))
    assert sweep["selection"] == "oracle" and len(sweep["bounds"]) == 3  # 2 * 600 > 1000 canaries
    assert sweep["oracle_best"]["epsilon"] == max(b["epsilon"] for b in sweep["bounds"])


def test_one_run_ties_are_broken_by_seed_not_by_position():
    included = np.r_[np.ones(50, int), np.zeros(50, int)]  # members first: index order would cheat
    scores = np.zeros(100)
    correct = {one_run_epsilon(scores, included, k_pos=20, k_neg=20, seed=s).correct for s in range(5)}
    assert 40 not in correct and len(correct) > 1


@pytest.mark.parametrize("kwargs", [{"k_pos": 0, "k_neg": 0}, {"k_pos": 80, "k_neg": 30}, {"k_pos": -1, "k_neg": 5}])
def test_one_run_bad_guess_counts(kwargs):
    with pytest.raises(MiauditError):
        one_run_epsilon(np.zeros(100), np.zeros(100, int), **kwargs)


def test_one_run_bad_arrays():
    with pytest.raises(MiauditError):
        one_run_epsilon(np.zeros(10), np.zeros(9, int), k_pos=1, k_neg=1)
    with pytest.raises(MiauditError):
        one_run_epsilon(np.r_[np.nan, np.zeros(9)], np.zeros(10, int), k_pos=1, k_neg=1)
