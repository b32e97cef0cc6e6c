"""Classifier attacks: golden values against naive formulas, thresholds, per-class behaviour, errors,
and an end-to-end check on real data (scikit-learn digits)."""

import warnings

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from contract.classifier import make_case
from miaudit.attacks.registry import create_attack, get_attack_class
from miaudit.classifier.attacks import MLLeaksAttack, PopulationAttack, ShokriAttack, attack_features
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference, ShadowData
from miaudit.classifier.signals.shadow import ShadowSignals
from miaudit.errors import ConfigError, DataError, NotFittedError, SignalError
from miaudit.evaluation import evaluate, roc_auc

METRIC_NAMES = ["correctness", "loss", "confidence", "entropy", "modified_entropy"]


def naive_metric(name, p, y):
    """Oriented metric scores written out row by row (higher = member)."""
    out = []
    for row, label in zip(p, y):
        if name == "correctness":
            out.append(float(np.argmax(row) == label))
        elif name == "loss":
            out.append(np.log(row[label]))
        elif name == "confidence":
            out.append(row[label])
        elif name == "entropy":
            out.append(sum(q * np.log(q) for q in row))
        else:
            out.append((1 - row[label]) * np.log(row[label])
                       + sum(row[j] * np.log(1 - row[j]) for j in range(len(row)) if j != label))
    return np.array(out)


def naive_threshold(values, membership):
    """Song & Mittal's _thre_setting: the value maximising shadow balanced accuracy (highest among ties)."""
    best, best_t = -1.0, None
    for t in np.unique(values):
        acc = 0.5 * ((values[membership] >= t).mean() + (values[~membership] < t).mean())
        if acc > best + 1e-12 or (abs(acc - best) <= 1e-12 and t > best_t):
            best, best_t = acc, t
    return best_t


def shadow_arrays(attack, shadow):
    values = np.concatenate([naive_metric(attack.name, o.probs, o.labels) for o in shadow.outputs])
    labels = np.concatenate([o.labels for o in shadow.outputs])
    return values, labels, np.concatenate(shadow.membership)


@pytest.fixture(scope="module")
def case():
    return make_case(ShokriAttack, 0)


# -- metric attacks ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metric_scores_match_naive_formulas(name, case):
    _, target, _ = case
    scores = create_attack(name).fit(AttackReference()).score(target)
    np.testing.assert_allclose(scores, naive_metric(name, softmax(target.logits, axis=1), target.labels),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_without_shadow_data_there_is_no_threshold(name, case):
    _, target, _ = case
    attack = create_attack(name)
    assert not attack.requires_fit
    assert attack.fit(AttackReference()).decision_threshold is None
    np.testing.assert_array_equal(attack.score(target), create_attack(name).score(target))


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_global_threshold_maximises_shadow_balanced_accuracy(name, case):
    reference, target, _ = case
    attack = create_attack(name).fit(reference)
    values, _, membership = shadow_arrays(attack, reference.shadow)
    assert attack.threshold_ == pytest.approx(naive_threshold(values, membership), rel=1e-9)
    np.testing.assert_array_equal(attack.score(target), create_attack(name).score(target))  # score unchanged


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_class_dependent_thresholds(name, case):
    reference, target, _ = case
    attack = create_attack(name, per_class=True).fit(reference)
    values, labels, membership = shadow_arrays(attack, reference.shadow)
    expected = [naive_threshold(values[labels == c], membership[labels == c]) for c in range(4)]
    np.testing.assert_allclose(attack.class_thresholds_, expected, rtol=1e-9)
    assert attack.threshold_ == 0.0
    raw = naive_metric(name, softmax(target.logits, axis=1), target.labels)
    scores = attack.score(target)
    np.testing.assert_allclose(scores, raw - attack.class_thresholds_[target.labels], rtol=1e-9, atol=1e-12)
    # the decision "score >= threshold_" is Song & Mittal's "value >= threshold of its class"
    np.testing.assert_array_equal(scores >= attack.threshold_, raw >= attack.class_thresholds_[target.labels] - 1e-12)


def test_class_without_shadow_nonmembers_uses_global_threshold(case):
    reference, _, _ = case
    outputs, membership = reference.shadow.outputs, [m.copy() for m in reference.shadow.membership]
    for o, m in zip(outputs, membership):
        m[o.labels == 3] = True  # class 3 has shadow members only
    attack = create_attack("loss", per_class=True).fit(AttackReference(shadow=ShadowData(outputs, membership)))
    values, _, all_membership = shadow_arrays(attack, ShadowData(outputs, membership))
    assert attack.class_thresholds_[3] == pytest.approx(naive_threshold(values, all_membership))


def test_correctness_works_with_label_only_access():
    y = np.array([0, 1, 2, 1])
    labels_only = ClassifierOutputs(y, predictions=np.array([0, 2, 2, 1]))
    np.testing.assert_array_equal(create_attack("correctness").score(labels_only), [1, 0, 1, 1])
    shadow = ShadowData([labels_only], [np.array([True, False, True, False])])
    assert create_attack("correctness").fit(AttackReference(shadow=shadow)).threshold_ == 1.0


@pytest.mark.parametrize("name", ["loss", "confidence", "entropy", "modified_entropy", "population", "shokri"])
def test_probability_attacks_reject_label_only_targets(name, case):
    reference, _, _ = case
    labels_only = ClassifierOutputs(np.array([0, 1]), predictions=np.array([0, 0]))
    attack = create_attack(name, **({"classifier": "lr"} if name == "shokri" else {}))
    if attack.requires_fit:
        attack.fit(reference)
    with pytest.raises(SignalError, match="label-only"):
        attack.score(labels_only)


def test_per_class_metric_needs_shadow_data(case):
    _, target, _ = case
    with pytest.raises(DataError, match="needs shadow data"):
        create_attack("loss", per_class=True).fit(AttackReference())
    with pytest.raises(NotFittedError):
        create_attack("loss", per_class=True).score(target)


# -- population attack ------------------------------------------------------------------------
def test_population_scores_and_threshold_match_naive(case):
    reference, target, _ = case
    attack = PopulationAttack(alpha=0.1).fit(reference)
    pop_loss, loss = reference.population.loss, target.loss
    np.testing.assert_allclose(attack.score(target), [(pop_loss >= v).mean() for v in loss])
    pop_scores = np.array([(pop_loss >= v).mean() for v in pop_loss])
    fpr = lambda t: (pop_scores >= t).mean()
    assert fpr(attack.threshold_) <= 0.1
    assert all(fpr(t) > 0.1 for t in np.unique(pop_scores) if t < attack.threshold_)


def test_population_per_class_compares_within_class(case):
    reference, target, _ = case
    pop = reference.population
    keep = pop.labels != 2  # class 2 absent from the population: falls back to all population losses
    population = pop.subset(keep)
    attack = PopulationAttack(per_class=True, alpha=0.2).fit(AttackReference(population=population))
    expected = [(population.loss[population.labels == c] if c != 2 else population.loss) >= v
                for v, c in zip(target.loss, target.labels)]
    np.testing.assert_allclose(attack.score(target), [e.mean() for e in expected])


def test_population_errors(case):
    reference, _, _ = case
    with pytest.raises(DataError, match="needs population data"):
        PopulationAttack().fit(AttackReference(shadow=reference.shadow))
    with pytest.raises(DataError, match="at least 100 population examples"):
        PopulationAttack(alpha=0.01).fit(reference)  # 50 population examples
    with pytest.raises(DataError, match="at least 20 population examples of each class"):
        PopulationAttack(per_class=True).fit(reference)  # the lowest loss of each of 4 classes scores 1
    with pytest.raises(ConfigError, match="alpha"):
        PopulationAttack(alpha=1.5)


# -- shadow-model attacks ---------------------------------------------------------------------
def test_attack_features_match_naive():
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    out = ClassifierOutputs(np.array([2, 0]), probs=p)
    x = attack_features(out, ["sorted_probs", "top_k", "label", "loss", "probs"], top_k=2)
    np.testing.assert_allclose(x[0], [0.5, 0.3, 0.2, 0.5, 0.3, 0, 0, 1, -np.log(0.3), 0.2, 0.5, 0.3])
    np.testing.assert_allclose(x[1], [0.6, 0.3, 0.1, 0.6, 0.3, 1, 0, 0, -np.log(0.6), 0.6, 0.1, 0.3])
    assert attack_features(out, ["top_k"], top_k=5).shape == (2, 3)  # k capped at the number of classes
    x = attack_features(out, ["entropy", "modified_entropy"])
    np.testing.assert_allclose(x[:, 0], out.entropy)
    np.testing.assert_allclose(x[:, 1], out.modified_entropy)


def test_shokri_trains_one_attack_model_per_class(case):
    reference, target, _ = case
    attack = ShokriAttack(classifier="lr").fit(reference)
    assert sorted(attack.models_) == [0, 1, 2, 3] and attack.global_model_ is None
    scores = attack.score(target)
    for c in range(4):
        rows = target.labels == c
        x = attack_features(target.subset(rows), ("probs",))
        np.testing.assert_allclose(scores[rows], attack.models_[c].predict_proba(x)[:, 1])
    assert attack.threshold_ == 0.5


@pytest.mark.parametrize("classifier", ["lr", "mlp", "rf", "gb"])
def test_shokri_classifiers_separate_members(classifier, case):
    reference, target, labels = case
    attack = ShokriAttack(classifier=classifier, per_class=False, features=["sorted_probs", "label"], seed=3)
    scores = attack.fit(reference).score(target)
    assert roc_auc(labels, scores) > 0.75
    assert ((0 <= scores) & (scores <= 1)).all()


def test_shokri_seed_changes_a_random_attack_model(case):
    reference, target, _ = case
    a = ShokriAttack(classifier="rf", per_class=False, seed=0).fit(reference).score(target)
    b = ShokriAttack(classifier="rf", per_class=False, seed=1).fit(reference).score(target)
    assert not np.array_equal(a, b)


def test_shokri_errors(case):
    reference, target, _ = case
    with pytest.raises(ConfigError, match="classifier"):
        ShokriAttack(classifier="svm")
    with pytest.raises(ConfigError, match="features"):
        ShokriAttack(features=["logits"])
    with pytest.raises(ConfigError, match="features"):
        ShokriAttack(features="loss")
    with pytest.raises(DataError, match="needs shadow data"):
        ShokriAttack().fit(AttackReference(population=reference.population))
    signals = ShadowSignals(reference.shadow.outputs, reference.shadow.membership)  # not ShadowData
    with pytest.raises(DataError, match="needs shadow data as ShadowData, got ShadowSignals"):
        ShokriAttack().fit(AttackReference(shadow=signals))
    with pytest.raises(NotFittedError):
        ShokriAttack().score(target)
    attack = ShokriAttack(classifier="lr").fit(reference)
    with pytest.raises(SignalError, match="3 classes but the shadow models 4"):
        attack.score(ClassifierOutputs(np.array([0, 1]), logits=np.zeros((2, 3))))


def test_ml_leaks_uses_one_shadow_model_and_top3(case):
    reference, target, _ = case
    scores = MLLeaksAttack(classifier="lr").fit(reference).score(target)
    first = ShadowData(reference.shadow.outputs[:1], reference.shadow.membership[:1])
    alone = MLLeaksAttack(classifier="lr").fit(AttackReference(shadow=first)).score(target)
    np.testing.assert_array_equal(scores, alone)  # the other shadow models are ignored
    same = ShokriAttack(classifier="lr", per_class=False, features=["top_k"], top_k=3)
    np.testing.assert_array_equal(scores, same.fit(AttackReference(shadow=first)).score(target))
    with pytest.raises(ConfigError, match="shadow_index=5"):
        MLLeaksAttack(shadow_index=5).fit(reference)
    with pytest.raises(ConfigError, match="classifier"):
        MLLeaksAttack(classifier="rf")


def test_registry_taxonomy():
    for name in METRIC_NAMES + ["population", "shokri", "ml_leaks"]:
        cls = get_attack_class(name)
        assert cls.target_kind == "classifier" and cls.citation
    assert get_attack_class("correctness").access == "label-only"
    assert get_attack_class("shokri").needs_reference == "shadow"
    assert get_attack_class("population").needs_reference == "population"


# -- end to end on real data ------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_audit():
    """An overfit MLP target on 100 digits, 3 shadow MLPs trained the same way on disjoint data."""
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    perm = np.random.default_rng(0).permutation(len(y))
    n = 100
    members, nonmembers, population, shadow_pool = perm[:n], perm[n:2 * n], perm[2 * n:4 * n], perm[4 * n:]

    def train(index, seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return MLPClassifier(hidden_layer_sizes=(64,), alpha=0.0, max_iter=500, random_state=seed).fit(
                x[index], y[index])

    def outputs(model, index):
        return ClassifierOutputs(y[index], probs=model.predict_proba(x[index]))

    target = train(members, 0)
    shadow_outputs, shadow_membership = [], []
    for k in range(3):
        index = shadow_pool[k * 2 * n:(k + 1) * 2 * n]
        shadow_outputs.append(outputs(train(index[:n], k + 1), index))
        shadow_membership.append(np.arange(2 * n) < n)
    reference = AttackReference(shadow=ShadowData(shadow_outputs, shadow_membership),
                                population=outputs(target, population))
    audited = np.r_[members, nonmembers]
    return reference, outputs(target, audited), np.r_[np.ones(n), np.zeros(n)].astype(int)


@pytest.mark.parametrize("name,params", [
    ("loss", {}), ("modified_entropy", {"per_class": True}), ("population", {}), ("ml_leaks", {}),
    ("shokri", {}), ("shokri", {"per_class": False, "features": ["sorted_probs", "loss"]}),
])
def test_attacks_detect_membership_of_an_overfit_digits_mlp(name, params, digits_audit):
    reference, target, labels = digits_audit
    attack = create_attack(name, **params).fit(reference)
    result = evaluate(labels, attack.score(target), threshold=attack.decision_threshold, n_bootstrap=200)
    assert result["auc"] > 0.6 and result["auc_ci"][0] > 0.5, result["auc_ci"]
    assert result["threshold_source"] == "reference"
