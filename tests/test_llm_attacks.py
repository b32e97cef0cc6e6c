"""LLM attack formulas against slow, obviously correct implementations; invariants; selection."""

import math
import zlib

import numpy as np
import pytest
import torch

from contract.llm import make_documents
from miaudit.attacks.registry import create_attack
from miaudit.errors import ConfigError, DataError, NotFittedError, SignalError
from miaudit.evaluation import roc_auc
from miaudit.llm import acmia_grid, compute_token_signals, score_logits, token_counts, token_frequencies
from miaudit.llm.api import topk_signals
from miaudit.llm.attacks.acmia import norm_ac_score
from miaudit.llm.attacks.mink import min_k_pp_score, min_k_pp_values
from miaudit.llm.selection import LLMCalibration, choose, grid_scores, select_and_evaluate
from miaudit.llm.signals import DEFAULT_BETAS

V, T = 400, 15


def _doc(seed=0, scale=2.5):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((T, V)) * scale).astype(np.float32)
    ids = rng.integers(0, 40, size=T)  # a small id range: repeated tokens, so first occurrences matter
    return logits, ids


# -- slow reference implementations, one token at a time in float64 ------------------------------------

def _log_softmax(row):
    row = np.asarray(row, np.float64)
    return row - row.max() - math.log(sum(math.exp(v - row.max()) for v in row))


def _first_positions(ids):
    seen, first = set(), []
    for t, x in enumerate(ids):
        if x not in seen:
            seen.add(x)
            first.append(t)
    return first


def _token_logps(logits, ids):
    return [float(_log_softmax(row)[x]) for row, x in zip(logits, ids)]


def _tempered(logp, beta):
    return _log_softmax(beta * logp)


def naive_scores(logits, ids, *, text, k, a, beta, freq, lower, ref, prefix, grad, neighbours):
    lps = _token_logps(logits, ids)
    ll = sum(lps) / len(lps)
    n = max(1, int(len(lps) * k))
    zs = []
    for row, x in zip(logits, ids):
        logp = _log_softmax(row)
        p = np.exp(logp)
        mu = sum(p * logp)
        var = sum(p * logp ** 2) - mu ** 2  # the Min-K%++ authors' formula
        zs.append((logp[x] - mu) / math.sqrt(var))
    first = _first_positions(ids)
    grid = list(DEFAULT_BETAS)
    j = grid.index(beta)
    ac, deriv, norm = [], [], []
    for t in first:
        logp = _log_softmax(logits[t])
        now, below = _tempered(logp, beta), _tempered(logp, grid[j - 1])
        ac.append((1 if beta > 1 else -1) * (now[ids[t]] - logp[ids[t]]))
        deriv.append(now[ids[t]] - below[ids[t]])
        q = np.exp(now)
        mu = sum(q * now)
        sigma = math.sqrt(sum(q * (now - mu) ** 2))
        norm.append((now[ids[t]] - mu) / (sigma + 1e-10))
    return {
        "loss": ll,
        "zlib": ll / len(zlib.compress(bytes(text, "utf-8"))),
        "lowercase": lower / ll,
        "ref": ll - ref,
        "min_k": sum(sorted(lps)[:n]) / n,
        "min_k_pp": sum(sorted(zs)[:n]) / n,
        "dc_pdd": sum(min(math.exp(lps[t]) * math.log(1 / freq[ids[t]]), a) for t in first) / len(first),
        "ac": sum(ac) / len(ac), "deriv_ac": sum(deriv) / len(deriv), "norm_ac": sum(norm) / len(norm),
        "recall": prefix / ll,
        "gradnorm": -grad,
        "neighbourhood": ll - sum(neighbours) / len(neighbours),
    }


@pytest.mark.parametrize("method", ["fast", "exact"])
@pytest.mark.parametrize("beta,k,a", [(2.0, 0.2, 0.01), (2 ** -0.5, 0.05, 0.5), (2 ** 2.5, 1.0, 10.0)])
def test_score_logits_matches_naive_formulas(method, beta, k, a):
    logits, ids = _doc()
    freq = token_frequencies([np.random.default_rng(1).integers(0, V, 500)], V)
    extra = dict(lowercase_logprob=-7.5, ref_logprob=-6.0, prefix_logprob=-8.0, grad_norm=3.25,
                 neighbour_logprobs=[-6.0, -6.5, -7.25])
    got = score_logits(logits, ids, text="The quick brown fox.", k=k, a=a, beta=beta, token_freq=freq,
                       method=method, **extra)
    want = naive_scores(logits, ids, text="The quick brown fox.", k=k, a=a, beta=beta, freq=freq,
                        lower=extra["lowercase_logprob"], ref=extra["ref_logprob"], prefix=extra["prefix_logprob"],
                        grad=extra["grad_norm"], neighbours=extra["neighbour_logprobs"])
    assert set(got) == set(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=2e-5, abs=1e-9), name


def test_score_logits_default_attacks_and_errors():
    logits, ids = _doc()
    plain = score_logits(torch.from_numpy(logits), torch.from_numpy(ids))
    assert set(plain) == {"loss", "min_k", "min_k_pp", "ac", "deriv_ac", "norm_ac"}
    assert all(np.isfinite(v) for v in plain.values())
    with pytest.raises(SignalError, match="ref_logprob"):
        score_logits(logits, ids, attacks=["ref"])
    with pytest.raises(ConfigError, match="no parameter 'temperature'"):
        score_logits(logits, ids, temperature=2.0)
    with pytest.raises(ConfigError, match="cannot compute attack 'lira'"):
        score_logits(logits, ids, attacks=["lira"])
    with pytest.raises(SignalError, match="not in the computed grid"):
        score_logits(logits, ids, attacks=["ac"], beta=1.5)


def test_acmia_invariants():
    logits, ids = _doc(seed=4)
    sig = compute_token_signals(logits, ids)
    assert score_logits(logits, ids, attacks=["ac"], beta=1.0)["ac"] == 0.0
    first = sig.first_occurrence
    # NormAC at beta = 1 is Min-K%++ with k = 100% over the first occurrences
    restricted = sig.__class__(**{**{f: getattr(sig, f) for f in sig.__dataclass_fields__},
                                  "token_ids": sig.token_ids[first], "log_prob": sig.log_prob[first],
                                  "entropy": sig.entropy[first], "mean_logp": sig.mean_logp[first],
                                  "var_logp": sig.var_logp[first], "beta_log_prob": sig.beta_log_prob[:, first],
                                  "beta_mu": sig.beta_mu[:, first], "beta_sigma": sig.beta_sigma[:, first]})
    assert norm_ac_score(sig, 1.0) == pytest.approx(min_k_pp_score(restricted, 1.0), rel=1e-6)


def test_acmia_grid_matches_single_beta_attacks():
    docs, _ = make_documents(0, n_docs=6)
    grid = acmia_grid(docs)
    assert grid["ac"].scores.shape == (6, 52) and grid["deriv_ac"].scores.shape == (6, 51)
    assert grid["norm_ac"].betas[0] > 0 and grid["norm_ac"].scores.shape == (6, 51)
    for name in ("ac", "deriv_ac", "norm_ac"):
        for j in (0, 17, len(grid[name].betas) - 1):
            beta = float(grid[name].betas[j])
            np.testing.assert_allclose(grid[name].scores[:, j], create_attack(name, target_kind="llm", beta=beta)
                                       .score(docs), rtol=1e-12)


def test_min_k_keeps_a_token_and_one_token_documents_score():
    logits, ids = _doc()
    sig = compute_token_signals(logits[:1], ids[:1])
    for name in ("loss", "min_k", "min_k_pp", "ac", "norm_ac"):
        assert np.isfinite(create_attack(name, target_kind="llm", **({"k": 0.01} if "min_k" in name else {}))
                           .score([sig])).all()
    assert create_attack("min_k", target_kind="llm", k=0.01).score([sig])[0] == pytest.approx(sig.log_prob[0])
    with pytest.raises(ConfigError, match="fraction"):
        create_attack("min_k", target_kind="llm", k=0.0).score([sig])


def test_min_k_pp_on_top_k_signals_is_a_clear_error():
    """API records carry no moments of the distribution: Min-K%++'s formula refuses them by name."""
    sig = topk_signals(np.array([3, 1, 4]), np.log([0.5, 0.25, 0.125]), vocab_size=8)
    with pytest.raises(SignalError, match="Min-K%\\+\\+ needs the mean and variance"):
        min_k_pp_values(sig)


def test_ratios_undefined_at_zero_likelihood_are_errors():
    logits = np.full((3, 5), -1e9, dtype=np.float32)
    ids = np.array([1, 2, 3])
    logits[np.arange(3), ids] = 0.0  # every token predicted with probability 1
    with pytest.raises(SignalError, match="exactly 0"):
        score_logits(logits, ids, attacks=["lowercase"], lowercase_logprob=-1.0)
    with pytest.raises(SignalError, match="exactly 0"):
        score_logits(logits, ids, attacks=["recall"], prefix_logprob=-1.0)


def test_dc_pdd_fit_on_counts_equals_given_frequencies():
    docs, labels = make_documents(2, n_docs=10)
    corpus = [np.random.default_rng(3).integers(0, 1000, 300)]
    counts = token_counts(corpus, 1000)
    with pytest.raises(NotFittedError):
        create_attack("dc_pdd", target_kind="llm").score(docs)
    fitted = create_attack("dc_pdd", target_kind="llm", a=0.05).fit(counts).score(docs)
    given = create_attack("dc_pdd", target_kind="llm", a=0.05, token_freq=token_frequencies(corpus, 1000)).score(docs)
    np.testing.assert_allclose(fitted, given)
    with pytest.raises(SignalError, match="one frequency per vocabulary id"):
        create_attack("dc_pdd", target_kind="llm", token_freq=np.full(10, 0.1)).score(docs)


def test_attacks_reject_other_inputs():
    with pytest.raises(SignalError, match="sequence of TokenSignals"):
        create_attack("loss", target_kind="llm").score(np.zeros(3))


def test_selection_reports_held_out_and_oracle():
    docs, labels = make_documents(5, n_docs=40)
    for attack in ("norm_ac", "min_k"):
        held = select_and_evaluate(attack, docs, labels, n_bootstrap=50)
        assert held.oracle["auc"] >= held.result["auc"] - 1e-12  # best on the test labels by construction
        assert held.summary()["oracle"]["note"].startswith("chosen on the test labels")
        assert held.result["n_members"] + held.result["n_nonmembers"] < len(docs)  # evaluated on the test part
    folds = select_and_evaluate("deriv_ac", docs, labels, method="kfold", n_folds=4, n_bootstrap=20)
    assert len(folds.chosen) == 4 and len(folds.result["folds"]) == 4
    values, scores = grid_scores("min_k_pp", docs, [0.1, 0.5])
    assert scores.shape == (2, 40)
    best, grid, aucs = choose("ac", docs, labels)
    assert best in grid and aucs.max() == aucs[list(grid).index(best)]
    with pytest.raises(ConfigError, match="no hyper-parameter"):
        select_and_evaluate("loss", docs, labels)


def test_acmia_chooses_beta_on_calibration_only():
    docs, labels = make_documents(6, n_docs=30)
    cal, cal_labels = make_documents(7, n_docs=20)
    attack = create_attack("acmia", target_kind="llm", variant="ac")
    with pytest.raises(NotFittedError):
        attack.score(docs)
    attack.fit(LLMCalibration(cal, cal_labels))
    _, grid, aucs = choose("ac", cal, cal_labels)
    assert attack.beta_ == grid[int(np.argmax(aucs))]
    np.testing.assert_allclose(attack.score(docs), create_attack("ac", target_kind="llm", beta=attack.beta_)
                               .score(docs))
    assert roc_auc(labels, attack.score(docs)) > 0.6
    with pytest.raises(DataError, match="LLMCalibration"):
        create_attack("acmia", target_kind="llm").fit(docs)
    with pytest.raises(ConfigError, match="variant"):
        create_attack("acmia", target_kind="llm", variant="xx").fit(LLMCalibration(cal, cal_labels))


def test_ac_selection_grid_excludes_the_constant_beta_one():
    from miaudit.llm.selection import default_grid
    from miaudit.llm.signals import compute_token_signals

    rng = np.random.default_rng(0)
    doc = compute_token_signals(torch.tensor(rng.normal(size=(6, 11)), dtype=torch.float32),
                                torch.tensor(rng.integers(0, 11, 6)))
    ac_grid, norm_grid = default_grid("ac", [doc]), default_grid("norm_ac", [doc])
    assert not np.isclose(ac_grid, 1.0).any() and np.isclose(norm_grid, 1.0).any()
    assert len(ac_grid) == len(acmia_grid([doc])["ac"].betas) - 1
