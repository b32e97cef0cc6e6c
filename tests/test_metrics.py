import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from miaudit.errors import DataError
from miaudit.evaluation import (
    decision_metrics,
    evaluate,
    membership_advantage,
    roc_auc,
    roc_curve,
    stratified_bootstrap,
    tpr_at_fpr,
)


def _random_case(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(labels * 0.8, 1.0)
    if ties:
        scores = np.round(scores, 1)
    return labels, scores


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_roc_matches_sklearn_without_dropping_points(seed, ties):
    labels, scores = _random_case(seed, ties=ties)
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    ours = roc_curve(labels, scores)
    np.testing.assert_allclose(ours.fpr, fpr)
    np.testing.assert_allclose(ours.tpr, tpr)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_tpr_at_fpr_hand_computed_ties():
    # members 1,1,1,0 ; non-members: scores 3(m) 3(nm) 2(m) 1(m) 1(nm) 0(nm) 0(nm) 0(nm) 0(nm) 0(nm)
    labels = np.array([1, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([3, 3, 2, 1, 1, 0, 0, 0, 0, 0], dtype=float)
    # threshold 3: TPR 1/3, FPR 1/7 ; threshold 2: 2/3, 1/7 ; threshold 1: 1, 2/7
    # the tie at 3 (one member, one non-member) straddles FPR 0.1: split at random, 0.7 of it is flagged
    assert tpr_at_fpr(labels, scores, fpr=0.1) == pytest.approx(0.7 / 3)
    assert tpr_at_fpr(labels, scores, fpr=1 / 7) == pytest.approx(2 / 3)
    assert tpr_at_fpr(labels, scores, fpr=0.3) == pytest.approx(1.0)
    assert membership_advantage(labels, scores) == pytest.approx(1 - 2 / 7)


def test_decision_metrics_against_sklearn():
    from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(1)
    labels, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    ours = decision_metrics(labels, pred)
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, pred, average=avg)
        assert ours[f"precision_{avg}"] == pytest.approx(p)
        assert ours[f"recall_{avg}"] == pytest.approx(r)
        assert ours[f"f1_{avg}"] == pytest.approx(f)
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))


def test_evaluate_reports_intervals_and_oracle_threshold():
    labels, scores = _random_case(0, n=400)
    m = evaluate(labels, scores, n_bootstrap=200)
    assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
    assert set(m["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"}
    assert m["threshold_source"] == "oracle"
    assert any("0.001" in w for w in m["warnings"])  # ~200 non-members cannot support 0.1% FPR
    m2 = evaluate(labels, scores, threshold=0.0, n_bootstrap=0)
    assert m2["threshold_source"] == "reference" and m2["threshold"] == 0.0


def test_bootstrap_keeps_class_sizes():
    labels = np.r_[np.ones(30), np.zeros(70)].astype(int)
    scores = np.arange(100.0)
    low, high = stratified_bootstrap(labels, scores, lambda y, s: y.mean(), n_resamples=50)
    assert low[0] == high[0] == pytest.approx(0.3)


@pytest.mark.parametrize("labels,scores,msg", [
    (np.ones(5), np.arange(5.0), "both members and non-members"),
    (np.array([0, 1]), np.array([np.nan, 1.0]), "NaN"),
    (np.array([0, 1, 1]), np.array([0.0, 1.0]), "same length"),
])
def test_bad_input_is_a_clear_error(labels, scores, msg):
    with pytest.raises(DataError, match=msg):
        roc_auc(labels, scores)


label_score_lists = st.integers(4, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda bits: 0 < sum(bits) < len(bits)),
    st.lists(st.integers(-500, 500).map(lambda v: v / 100), min_size=n, max_size=n)))


@settings(max_examples=60, deadline=None)
@given(label_score_lists)
def test_auc_invariant_under_monotone_transform(case):
    labels, scores = np.array(case[0]), np.array(case[1])
    assert roc_auc(labels, scores) == pytest.approx(roc_auc(labels, np.exp(scores) * 3 + 1), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(label_score_lists)
def test_tpr_at_fpr_non_decreasing(case):
    labels, scores = np.array(case[0]), np.array(case[1])
    values = [tpr_at_fpr(labels, scores, fpr=f) for f in (0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[-1] == 1.0
