"""Reference-model attacks: vectorised scores against naive per-example loops (scipy.stats), and errors."""

import numpy as np
import pytest
import scipy.stats

from miaudit.attacks.registry import create_attack
from miaudit.classifier.attacks.calibration import difficulty_calibration, reference_threshold
from miaudit.classifier.attacks.lira import MIN_STD, lira_offline, lira_online
from miaudit.classifier.attacks.rmia import OFFLINE_A_GRID
from miaudit.classifier.attacks.rmia import rmia as rmia_score
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference, ReferencePool
from miaudit.classifier.reference.trained import TrainedReferencePool
from miaudit.errors import DataError
from miaudit.evaluation import roc_auc

N, M, C, NZ = 60, 8, 5, 40


def _paired_keep(m, n, rng):
    keep = np.zeros((m, n), bool)
    for i in range(0, m, 2):
        half = rng.permutation(n)[: n // 2]
        keep[i, half] = True
        keep[i + 1] = ~keep[i]
    return keep


def _logits(labels, boost, rng):
    z = rng.normal(size=(labels.size, C))
    z[np.arange(labels.size), labels] += boost
    return z


def _world(seed=0, m=M, views=1):
    """Target + paired pool + population, where training on an example raises its true-class logit."""
    rng = np.random.default_rng(seed)
    labels, z_labels = rng.integers(0, C, N), rng.integers(0, C, NZ)
    keep = _paired_keep(m, N, rng)
    member = rng.random(N) < 0.5
    difficulty = rng.normal(size=N)

    def model(trained, k):
        return [ClassifierOutputs(labels, logits=_logits(labels, difficulty + 2.0 * trained + 0.3 * k, rng))
                for k in range(views)]

    pool_views = [model(keep[j], 0) for j in range(m)]
    population = [ClassifierOutputs(z_labels, logits=_logits(z_labels, 0.5, rng)) for _ in range(m)]
    pool = TrainedReferencePool(outputs=[v[0] for v in pool_views], keep=keep, population=population,
                                views=pool_views if views > 1 else None)
    target = model(member, 0)
    target_z = ClassifierOutputs(z_labels, logits=_logits(z_labels, 0.5, rng))
    return pool, target, target_z, member


# -- naive references ---------------------------------------------------------------------------
def _naive_lira(target, values, keep, online, variance):
    n, k = target.shape
    resid = {True: [], False: []}
    params = {}
    for inside in (True, False):
        for i in range(n):
            for v in range(k):
                vals = values[keep[:, i] == inside, i, v]
                params[inside, i, v] = (np.median(vals), np.std(vals))
                resid[inside].extend(vals - np.median(vals))
    scores = np.zeros(n)
    for i in range(n):
        per_view = []
        for v in range(k):
            def sd(inside, i=i, v=v):
                s = np.std(resid[inside]) if variance == "global" else params[inside, i, v][1]
                return max(s, MIN_STD)
            mu_in, mu_out = params[True, i, v][0], params[False, i, v][0]
            if online:
                per_view.append(scipy.stats.norm.logpdf(target[i, v], mu_in, sd(True))
                                - scipy.stats.norm.logpdf(target[i, v], mu_out, sd(False)))
            else:
                per_view.append(-scipy.stats.norm.logsf(target[i, v], mu_out, sd(False)))
        scores[i] = np.mean(per_view)
    return scores


def _naive_rmia(t_p, ref_p, keep, t_pz, ref_pz, online, a, gamma):
    def marginal(p_out, p_in=None):
        if online:
            return 0.5 * (np.mean(p_in) + np.mean(p_out)) if p_in is not None else np.mean(p_out)
        return 0.5 * ((1 + a) * np.mean(p_out) + (1 - a))

    pz = np.array([marginal(ref_pz[:, j]) for j in range(ref_pz.shape[1])])
    scores = []
    for i in range(t_p.size):
        px = marginal(ref_p[~keep[:, i], i], ref_p[keep[:, i], i])
        scores.append(np.mean([(t_p[i] / px) / (t_pz[j] / pz[j]) > gamma for j in range(pz.size)]))
    return np.array(scores)


# -- cross-checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("variance", ["per_example", "global"])
@pytest.mark.parametrize("views", [1, 3])
def test_lira_matches_naive_loop(online, variance, views):
    rng = np.random.default_rng(views)
    keep = _paired_keep(M, 30, rng)
    values = rng.normal(size=(M, 30, views)) + 2 * keep[:, :, None]
    target = rng.normal(size=(30, views)) + 1
    fast = (lira_online if online else lira_offline)(target, values, keep, variance=variance)
    np.testing.assert_allclose(fast, _naive_lira(target, values, keep, online, variance), rtol=0, atol=1e-9)


@pytest.mark.parametrize("online,a,gamma", [(True, 0.3, 1.0), (False, 0.3, 1.0), (False, 0.7, 2.0),
                                            (False, 1.0, 0.5), (True, 0.3, 1.5)])
def test_rmia_matches_naive_loop(online, a, gamma):
    rng = np.random.default_rng(1)
    keep = _paired_keep(M, 50, rng)
    ref_p, ref_pz = rng.uniform(0.05, 1, (M, 50)), rng.uniform(0.05, 1, (M, 35))
    t_p, t_pz = rng.uniform(0.05, 1, 50), rng.uniform(0.05, 1, 35)
    fast = rmia_score(np.log(t_p), np.log(ref_p), keep, np.log(t_pz), np.log(ref_pz), online=online, offline_a=a,
                      gamma=gamma)
    np.testing.assert_allclose(fast, _naive_rmia(t_p, ref_p, keep, t_pz, ref_pz, online, a, gamma), atol=1e-9)


def test_difficulty_calibration_and_reference_threshold_match_naive():
    rng = np.random.default_rng(2)
    keep = _paired_keep(M, 40, rng)
    ref_loss, target_loss = rng.exponential(size=(M, 40)), rng.exponential(size=40)
    naive = [-(target_loss[i] - ref_loss[~keep[:, i], i].mean()) for i in range(40)]
    np.testing.assert_allclose(difficulty_calibration(target_loss, ref_loss, ~keep), naive, atol=1e-12)
    scores = reference_threshold(target_loss, ref_loss, ~keep, loss_max=50.0)
    for alpha in (0.01, 0.1, 0.25, 0.5, 0.9):
        thresholds = [np.quantile(np.r_[ref_loss[~keep[:, i], i], 0.0, 50.0], alpha, method="linear")
                      for i in range(40)]
        np.testing.assert_array_equal(scores >= -alpha, target_loss <= np.array(thresholds))


def test_attack_classes_equal_functional_scores():
    pool, target, target_z, _ = _world(views=3)
    values = np.array([[o.scaled_logit for o in vs] for vs in pool.views]).transpose(0, 2, 1)  # (m, n, k)
    t = np.stack([o.scaled_logit for o in target], axis=1)
    ref = AttackReference(pool=pool, population=target_z)
    lira = create_attack("lira", online=True).fit(ref).score(target)
    np.testing.assert_allclose(lira, lira_online(t, values, pool.keep), atol=1e-12)
    rmia = create_attack("rmia", online=False, offline_a=0.4, gamma=1.0).fit(ref).score(target[0])
    ref_lp = -np.stack([o.loss for o in pool.outputs])
    ref_lpz = -np.stack([o.loss for o in pool.population])
    expect = rmia_score(-target[0].loss, ref_lp, pool.keep, -target_z.loss, ref_lpz, online=False, offline_a=0.4)
    np.testing.assert_array_equal(rmia, expect)


def test_attacks_separate_members():
    pool, target, target_z, member = _world(seed=3, m=16)
    ref = AttackReference(pool=pool, population=target_z)
    for name, params in [("lira", {}), ("lira", {"online": False}), ("lira", {"variance": "global"}),
                         ("rmia", {}), ("rmia", {"online": False}), ("difficulty_calibration", {}),
                         ("reference_threshold", {})]:
        scores = create_attack(name, **params).fit(ref).score(target[0])
        assert roc_auc(member.astype(int), scores) > 0.75, (name, params)


def test_offline_a_is_tuned_on_reference_models_only():
    pool, target, target_z, member = _world(seed=4, m=8)
    ref = AttackReference(pool=pool, population=target_z)
    attack = create_attack("rmia", online=False).fit(ref)
    assert attack.offline_a_ in OFFLINE_A_GRID and attack.tuning_auc_.shape == (len(OFFLINE_A_GRID),)
    # the choice does not depend on the target's outputs on the audited examples (never seen in fit)
    other_z = ClassifierOutputs(target_z.labels, logits=target_z.logits + 1.0)
    again = create_attack("rmia", online=False).fit(AttackReference(pool=pool, population=other_z))
    assert again.offline_a_ == attack.offline_a_
    # leave-one-out AUC of the chosen a, recomputed by hand: each model attacked by the others
    ref_lp = -pool.signal_matrix("loss")
    ref_lpz = -np.stack([o.loss for o in pool.population])
    aucs = []
    for j in range(8):
        rest = np.arange(8) != j
        scores = rmia_score(ref_lp[j], ref_lp[rest], pool.keep[rest], ref_lpz[j], ref_lpz[rest], online=False,
                        offline_a=attack.offline_a_)
        aucs.append(roc_auc(pool.keep[j].astype(int), scores))
    assert np.mean(aucs) == pytest.approx(attack.tuning_auc_.max(), abs=1e-12)


# -- errors ---------------------------------------------------------------------------------------
def test_too_few_in_models_for_per_example_variance():
    pool, target, target_z, _ = _world(m=6)  # 3 IN models per example
    ref = AttackReference(pool=pool)
    with pytest.raises(DataError, match="at least 4 IN"):
        create_attack("lira").fit(ref)
    create_attack("lira", variance="global").fit(ref).score(target[0])  # the fix works


def test_pool_and_target_mismatch():
    pool, target, target_z, _ = _world()
    ref = AttackReference(pool=pool, population=target_z)
    short = target[0].subset(np.arange(N - 1))
    for name in ("lira", "rmia", "difficulty_calibration", "reference_threshold"):
        with pytest.raises(DataError, match="scored on"):
            create_attack(name).fit(ref).score(short)
    relabelled = ClassifierOutputs((target[0].labels + 1) % C, logits=target[0].logits)
    with pytest.raises(DataError, match="labels of"):
        create_attack("lira").fit(ref).score(relabelled)
    wider = ClassifierOutputs(target[0].labels, logits=np.c_[target[0].logits, np.zeros(N)])
    with pytest.raises(DataError, match="classes"):
        create_attack("lira").fit(ref).score(wider)


def test_rmia_needs_population_on_both_sides():
    pool, target, target_z, _ = _world()
    with pytest.raises(DataError, match="population"):
        create_attack("rmia").fit(AttackReference(pool=pool))
    bare = ReferencePool(outputs=pool.outputs, keep=pool.keep)
    with pytest.raises(DataError, match="population z"):
        create_attack("rmia").fit(AttackReference(pool=bare, population=target_z))
    with pytest.raises(DataError, match="population examples z"):
        create_attack("rmia").fit(AttackReference(pool=pool, population=target_z.subset(np.arange(NZ - 2))))


def test_query_views_must_match():
    pool, target, target_z, _ = _world(views=3)
    ref = AttackReference(pool=pool)
    with pytest.raises(DataError, match="query views"):
        create_attack("lira").fit(ref).score(target[:2])
    with pytest.warns(UserWarning, match="plain query"):
        create_attack("lira").fit(ref).score(target[0])


def test_pool_that_never_saw_the_examples_is_refused():
    pool, target, _, _ = _world()
    all_out = ReferencePool(outputs=pool.outputs, keep=np.zeros_like(pool.keep))
    with pytest.raises(DataError, match="IN reference models"):
        create_attack("lira").fit(AttackReference(pool=all_out))
    create_attack("lira", online=False).fit(AttackReference(pool=all_out)).score(target[0])


# -- alignment by example ids --------------------------------------------------------------------
POOL_ATTACKS = ("lira", "rmia", "difficulty_calibration", "reference_threshold")


def _with_ids(pool, target, target_z):
    """The same world with ids on every output: audited examples ``x<i>``, population ``z<i>``."""
    ids, z_ids = np.array([f"x{i}" for i in range(N)]), np.array([f"z{i}" for i in range(NZ)])
    named = TrainedReferencePool(outputs=[o.with_ids(ids) for o in pool.outputs], keep=pool.keep,
                                 population=[o.with_ids(z_ids) for o in pool.population])
    return named, target[0].with_ids(ids), target_z.with_ids(z_ids)


@pytest.mark.parametrize("name", POOL_ATTACKS)
def test_pool_attacks_line_up_target_and_pool_by_ids(name):
    pool, target, target_z, _ = _world(seed=4)
    plain = create_attack(name).fit(AttackReference(pool=pool, population=target_z)).score(target[0])
    pool, target, target_z = _with_ids(pool, target, target_z)
    attack = create_attack(name).fit(AttackReference(pool=pool, population=target_z))
    np.testing.assert_array_equal(attack.score(target), plain)  # same order: same scores, bit for bit
    order = np.random.default_rng(1).permutation(N)  # shuffled: aligned by ids (sums may round differently)
    np.testing.assert_allclose(attack.score(target.subset(order)), plain[order], rtol=1e-12, atol=1e-12)
    part = order[:N // 3]  # a subset of the pool's examples
    np.testing.assert_allclose(attack.score(target.subset(part)), plain[part], rtol=1e-12, atol=1e-12)
    if name == "rmia":  # the target's population z lines up with the pool's by ids too
        z_order = np.random.default_rng(2).permutation(NZ)
        shuffled_z = create_attack(name).fit(AttackReference(pool=pool, population=target_z.subset(z_order)))
        np.testing.assert_allclose(shuffled_z.score(target), plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", POOL_ATTACKS)
def test_ids_the_pool_lacks_are_named(name):
    pool, target, target_z = _with_ids(*_world()[:3])
    renamed = target.with_ids(np.r_[target.ids[:-2], ["stranger", "x999"]])
    attack = create_attack(name).fit(AttackReference(pool=pool, population=target_z))
    with pytest.raises(DataError, match=r"2 of the target's 60 audited examples are not among .*'stranger', 'x999'"):
        attack.score(renamed)


def test_ids_on_one_side_only_fall_back_to_position_and_repeats_are_refused():
    pool, target, target_z, _ = _world()
    named_pool, named_target, _ = _with_ids(pool, target, target_z)
    expected = create_attack("lira").fit(AttackReference(pool=pool)).score(target[0])
    np.testing.assert_array_equal(create_attack("lira").fit(AttackReference(pool=named_pool)).score(target[0]),
                                  expected)
    np.testing.assert_array_equal(create_attack("lira").fit(AttackReference(pool=pool)).score(named_target), expected)
    attack = create_attack("lira").fit(AttackReference(pool=named_pool))
    with pytest.raises(DataError, match="ids of the target's audited examples repeat \\('x0'\\)"):
        attack.score(named_target.with_ids(np.r_[named_target.ids[:1], named_target.ids[:-1]]))
    with pytest.raises(DataError, match="reference model 1 was scored on other audited examples"):
        ReferencePool(outputs=[named_pool.outputs[0], pool.outputs[1]], keep=pool.keep[:2])
