"""Tie-aware operating points, cluster bootstrap over groups, boundary-honest intervals (issue 12)."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve as sk_roc_curve

from miaudit.errors import DataError
from miaudit.evaluation import evaluate, exact_interval, operating_point, stratified_bootstrap, tpr_at_fpr
from miaudit.evaluation.report import _curve_stats


def _tied_top(seed=0):
    """1,000 members and 1,000 non-members; 300 members and 100 non-members tie at the top score."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(1000, int), np.zeros(1000, int)]
    scores = np.r_[np.full(300, 10.0), rng.uniform(0, 5, 700), np.full(100, 10.0), rng.uniform(0, 5, 900)]
    return labels, scores


def test_tie_at_the_top_hand_computed():
    labels, scores = _tied_top()
    # the tie block is one ROC step from (0, 0) to (0.1, 0.3): at FPR f < 0.1 a random share f / 0.1 of it is flagged
    assert tpr_at_fpr(labels, scores, fpr=0.01) == pytest.approx(0.10 * 300 / 1000)  # 0.03
    assert tpr_at_fpr(labels, scores, fpr=0.05) == pytest.approx(0.15)
    point = operating_point(labels, scores, fpr=0.01)
    assert (point.tied_members, point.tied_nonmembers, point.score) == (300, 100, 10.0)
    assert (point.tpr_below, point.tpr_above) == (0.0, pytest.approx(0.3))
    assert point.tie_decides


def test_evaluate_reports_and_warns_about_the_deciding_tie():
    labels, scores = _tied_top()
    m = evaluate(labels, scores, n_bootstrap=200)
    assert m["tpr_at_fpr"]["0.01"] == pytest.approx(0.03) and m["tpr_at_fpr"]["0.05"] == pytest.approx(0.15)
    assert m["ties_at_fpr"]["0.01"] == {"members": 300, "nonmembers": 100, "score": 10.0,
                                        "tpr_deterministic": [0.0, pytest.approx(0.3)]}
    tie = [w for w in m["warnings"] if "tie decides" in w]
    assert len(tie) == 1 and "300 members and 100 non-members" in tie[0]
    lo, hi = m["tpr_at_fpr_ci"]["0.01"]
    assert lo < 0.03 < hi  # the bootstrap reads every resample with the same rule


@pytest.mark.parametrize("seed", range(4))
def test_untied_scores_equal_sklearns_full_roc_reading(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(labels * 0.7, 1.0)  # continuous: no ties
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    for f in (0.001, 0.01, 0.05, 0.2, 0.5):
        expected = tpr[fpr <= f].max()  # the deterministic reading: best vertex at or below f
        assert tpr_at_fpr(labels, scores, fpr=f) == pytest.approx(expected, abs=1e-12)
        point = operating_point(labels, scores, fpr=f)
        assert point.tied_members == point.tied_nonmembers == 0 and not point.tie_decides
    m = evaluate(labels, scores, n_bootstrap=0)
    assert m["ties_at_fpr"] == {} and not any("tie" in w for w in m["warnings"])


def test_auc_and_advantage_count_ties_as_before():
    labels, scores = _tied_top()
    from sklearn.metrics import roc_auc_score
    m = evaluate(labels, scores, n_bootstrap=0)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    assert m["advantage"] == pytest.approx((tpr - fpr).max())


def test_decision_threshold_ties_are_reported():
    labels = np.r_[np.ones(100, int), np.zeros(100, int)]
    scores = np.r_[np.zeros(60), -np.arange(1.0, 41.0), np.zeros(30), -np.arange(1.0, 71.0) - 0.5]
    m = evaluate(labels, scores, threshold=0.0, n_bootstrap=0)
    assert m["threshold_ties"] == {"members": 60, "nonmembers": 30}
    assert any("share the decision threshold" in w for w in m["warnings"])


# -- groups --------------------------------------------------------------------------------------

def _grouped_fixture(seed=0, n_groups=60, size=20):
    """Whole groups are members or non-members; a group's records share a random effect (sd 1) on top of
    record noise (sd 0.3), so records of a group are strongly correlated."""
    rng = np.random.default_rng(seed)
    group_labels = np.r_[np.ones(n_groups // 2, int), np.zeros(n_groups - n_groups // 2, int)]
    effects = rng.normal(0.5 * group_labels, 1.0)
    groups = np.repeat(np.arange(n_groups), size)
    labels = np.repeat(group_labels, size)
    scores = effects[groups] + rng.normal(0, 0.3, groups.size)
    return labels, scores, groups


def test_grouped_intervals_are_wider_than_ungrouped():
    labels, scores, groups = _grouped_fixture()
    plain = evaluate(labels, scores, n_bootstrap=300)
    grouped = evaluate(labels, scores, n_bootstrap=300, groups=groups)
    assert grouped["auc"] == plain["auc"]  # groups change the uncertainty, not the figure
    width = lambda ci: ci[1] - ci[0]
    assert width(grouped["auc_ci"]) > 2 * width(plain["auc_ci"])
    assert width(grouped["tpr_at_fpr_ci"]["0.05"]) > width(plain["tpr_at_fpr_ci"]["0.05"])
    assert grouped["grouping"] == {"n_groups": 60, "member_groups": 30, "nonmember_groups": 30}
    assert "cluster bootstrap over 60 groups" in grouped["interval_method"]
    assert "grouping" not in plain


def test_singleton_groups_reproduce_the_plain_bootstrap_distribution():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    labels[:2] = [0, 1]
    scores = rng.normal(labels, 1.0)
    stats = _curve_stats((0.05,))
    plain = stratified_bootstrap(labels, scores, stats, n_resamples=400, seed=1)
    singletons = stratified_bootstrap(labels, scores, stats, n_resamples=400, seed=1, groups=np.arange(300))
    np.testing.assert_allclose(plain, singletons, atol=0.03)  # same procedure, different random draws


def test_mixed_groups_keep_both_classes_in_every_resample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    labels[:2] = [0, 1]
    groups = rng.integers(0, 4, 200)  # four groups, each holding members and non-members
    low, high = stratified_bootstrap(labels, rng.normal(size=200), lambda y, s: np.array([y.mean()]),
                                     n_resamples=100, groups=groups)
    assert 0 < low[0] <= high[0] < 1


def test_bad_groups_are_a_clear_error():
    labels, scores, groups = _grouped_fixture()
    with pytest.raises(DataError, match="one group id per record"):
        evaluate(labels, scores, groups=groups[:-1])


# -- boundary-honest intervals ------------------------------------------------------------------

def test_perfect_separation_is_not_a_zero_width_interval():
    labels = np.r_[np.ones(40, int), np.zeros(40, int)]
    scores = np.r_[np.arange(40.0) + 100, np.arange(40.0)]
    m = evaluate(labels, scores, n_bootstrap=200)
    assert m["auc"] == 1.0 and m["auc_ci"][1] == 1.0
    # 40 disjoint member / non-member pairs, all ordered right: P = AUC^40 >= 0.025 => AUC >= 0.025^(1/40)
    assert m["auc_ci"][0] == pytest.approx(0.025 ** (1 / 40))
    assert 0.0 < m["advantage_ci"][0] < 1.0
    assert "auc" in m["exact_bounds"] and "Clopper-Pearson" in m["interval_method"]


def test_zero_tpr_gets_an_exact_upper_bound():
    labels = np.r_[np.ones(50, int), np.zeros(500, int)]
    scores = np.r_[np.zeros(50), np.linspace(1, 2, 500)]  # every member below every non-member
    m = evaluate(labels, scores, n_bootstrap=100)
    assert m["tpr_at_fpr"]["0.01"] == 0.0
    assert m["tpr_at_fpr_ci"]["0.01"] == [0.0, pytest.approx(1 - 0.025 ** (1 / 50))]


def test_exact_interval_matches_clopper_pearson():
    from scipy.stats import binomtest

    for k, n in ((0, 40), (3, 40), (40, 40), (17, 100)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert exact_interval(k / n, n, 0.95) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert exact_interval(1.0, 40, 0.95) == (pytest.approx(0.025 ** (1 / 40)), 1.0)


def test_interior_intervals_are_unchanged_by_the_boundary_rule():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    scores = rng.normal(labels * 0.8, 1.0)
    m = evaluate(labels, scores, n_bootstrap=200)
    assert m["exact_bounds"] == []
    low, high = stratified_bootstrap(labels, scores, _curve_stats((0.001, 0.01, 0.05)), n_resamples=200)
    assert m["auc_ci"] == [pytest.approx(low[0]), pytest.approx(high[0])]


def test_population_attack_blames_ties_before_the_sample_size():
    from miaudit.classifier.attacks.population import PopulationAttack
    from miaudit.classifier.outputs import ClassifierOutputs
    from miaudit.classifier.reference import AttackReference

    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 0.99, 2000)
    p[:400] = 1.0  # a model that fits 400 population examples exactly: loss 0
    population = ClassifierOutputs(np.zeros(2000, int), probs=np.stack([p, 1 - p], axis=1))
    with pytest.raises(DataError, match=r"400 of the 2000 population examples tie .*the loss 0\b.*will not help"):
        PopulationAttack(alpha=0.05).fit(AttackReference(population=population))
    few = population.subset(np.arange(400, 410))
    with pytest.raises(DataError, match="give at least 20 population examples"):
        PopulationAttack(alpha=0.05).fit(AttackReference(population=few))


def test_heavy_tailed_histograms_are_clipped_and_labelled(tmp_path):
    from miaudit.evaluation import AttackResult
    from miaudit.report.plots import histogram_range, plot_score_histograms

    rng = np.random.default_rng(0)
    normal = rng.normal(size=1000)
    assert histogram_range(normal)[2] == 0  # no clipping of well-behaved scores
    heavy = np.r_[rng.normal(size=996), 1e6, 2e6, 5e5, -3e6]  # four huge likelihood ratios
    lo, hi, outside = histogram_range(heavy)
    assert outside >= 4 and hi - lo < 10
    labels = np.r_[np.ones(500, int), np.zeros(500, int)]
    result = AttackResult("lira", np.arange(1000), labels, heavy)
    plot_score_histograms([result], tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0


def test_too_few_groups_are_warned_about():
    labels, scores, _ = _grouped_fixture()
    m = evaluate(labels, scores, n_bootstrap=50, groups=np.arange(labels.size) % 3)
    assert any("only 3 groups" in w for w in m["warnings"])
