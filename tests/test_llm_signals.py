"""The signal engine against a slow, obviously correct dense implementation, and its edge cases."""

import math

import numpy as np
import pytest
import torch

from miaudit.errors import SignalError
from miaudit.llm import histogram
from miaudit.llm import signals as engine
from miaudit.llm.signals import (
    DEFAULT_BETAS,
    compute_token_signals,
    compute_token_signals_batch,
    gradient_norm,
    token_log_probs,
    token_signals_from_hidden,
)

V = 300
T = 12


def _log_softmax(row: np.ndarray) -> np.ndarray:
    """log softmax with log-sum-exp = max + log1p(sum of the others): precise when one token dominates;
    -inf entries (probability 0) stay -inf."""
    top = int(np.argmax(row))
    shifted = row - row[top]
    others = np.exp(np.delete(shifted, top))
    return shifted - np.log1p(others.sum())


def naive(logits: np.ndarray, ids: np.ndarray, betas=DEFAULT_BETAS) -> dict:
    """Every signal from its definition, float64, one position and one beta at a time; the tempered
    distribution is formed over the whole vocabulary (the authors' (n_beta, V) log_softmax). beta = 0 is
    the uniform distribution over the vocabulary."""
    out = {k: [] for k in ("log_prob", "entropy", "mean_logp", "var_logp")}
    lp_b, mu_b, sigma_b = (np.zeros((len(betas), len(ids))) for _ in range(3))
    for t, (row, x) in enumerate(zip(logits.astype(np.float64), ids)):
        logp = _log_softmax(row)
        support = np.isfinite(logp)
        p, lp = np.exp(logp[support]), logp[support]
        mean = np.sum(p * lp)
        out["log_prob"].append(logp[x])
        out["entropy"].append(-mean)
        out["mean_logp"].append(mean)
        out["var_logp"].append(np.sum(p * (lp - mean) ** 2))
        for j, beta in enumerate(betas):
            if beta == 0:
                lp_b[j, t] = mu_b[j, t] = -np.log(row.size)
                continue
            logq = _log_softmax(beta * logp)
            q, lq = np.exp(logq[support]), logq[support]
            mu = np.sum(q * lq)
            lp_b[j, t], mu_b[j, t], sigma_b[j, t] = logq[x], mu, np.sqrt(np.sum(q * (lq - mu) ** 2))
    out = {k: np.array(v) for k, v in out.items()}
    out.update(beta_log_prob=lp_b, beta_mu=mu_b, beta_sigma=sigma_b)
    return out


def _case(scale: float, seed: int = 0, t: int = T, v: int = V):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((t, v)) * scale
    logits[:, 0] += 3 * scale  # a favourite token, as real LMs have
    ids = rng.integers(0, v, size=t)
    ids[0] = 0
    return logits.astype(np.float32), ids


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.abs(b), 1e-30)
    return float(np.max(np.where(a == b, 0.0, np.abs(a - b) / scale)))


FIELDS = ("log_prob", "entropy", "mean_logp", "var_logp", "beta_log_prob", "beta_mu", "beta_sigma")


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def kernel_backend(request, monkeypatch):
    """Every test runs with the fast path's numba kernel and with its torch implementation."""
    if request.param == "compiled":
        assert histogram.AVAILABLE, "numba is part of miaudit[llm]; install it to test the compiled kernel"
    else:
        monkeypatch.setattr(histogram, "AVAILABLE", False)
    return request.param


@pytest.mark.parametrize("scale", [0.45, 3.0, 10.0])
@pytest.mark.parametrize("method,tolerance", [("exact", 1e-10), ("fast", 5e-5)])
def test_engine_matches_dense_definitions(scale, method, tolerance):
    logits, ids = _case(scale)
    sig = compute_token_signals(torch.from_numpy(logits), ids, method=method)
    ref = naive(logits, ids)
    for name in FIELDS:
        # beta = 0 (row 0): exact closed form, sigma exactly 0 in both
        assert _rel(getattr(sig, name), ref[name]) < tolerance, name
    assert sig.beta_log_prob.shape == (len(DEFAULT_BETAS), T) and sig.token_ids.dtype == np.int64


def test_fast_path_error_is_small_against_exact_path():
    """The benchmark's criterion (< 1e-4) with a wide margin, on peaked and flat rows alike."""
    logits, ids = _case(6.0, seed=3, t=40, v=2000)
    logits[::3] *= 0.1  # some nearly flat rows
    fast = compute_token_signals(logits, ids)
    exact = compute_token_signals(logits, ids, method="exact")
    for name in FIELDS:
        assert _rel(getattr(fast, name), getattr(exact, name)) < 1e-5, name


def test_special_temperatures_are_closed_form():
    logits, ids = _case(2.0)
    sig = compute_token_signals(logits, ids)
    zero, one = list(DEFAULT_BETAS).index(0.0), list(DEFAULT_BETAS).index(1.0)
    np.testing.assert_array_equal(sig.beta_log_prob[zero], -math.log(V))
    np.testing.assert_array_equal(sig.beta_sigma[zero], 0.0)
    np.testing.assert_array_equal(sig.beta_log_prob[one], sig.log_prob)
    np.testing.assert_array_equal(sig.beta_mu[one], sig.mean_logp)


def test_deep_tail_and_zero_probability_tokens():
    """Logits 1000 nats apart and -inf logits: the bound sends rows to the exact path where needed."""
    logits, ids = _case(1.0)
    logits[:, 5:50] -= 1000.0
    logits[:, 60] = -np.inf
    betas = (0.0, 1e-3, 0.5, 1.0, 2.0)  # 1e-3 makes the deep tail count
    fast = compute_token_signals(logits, ids, betas=betas)
    ref = naive(logits, ids, betas)
    for name in FIELDS:
        assert _rel(getattr(fast, name), ref[name]) < 1e-5, name
    assert np.isfinite(fast.beta_sigma).all()


def test_fallback_to_exact_rows(monkeypatch):
    logits, ids = _case(3.0)
    monkeypatch.setattr(engine, "FAST_TOLERANCE", 0.0)  # every row fails the certificate
    redone = compute_token_signals(logits, ids)
    exact = compute_token_signals(logits, ids, method="exact")
    for name in FIELDS:
        np.testing.assert_allclose(getattr(redone, name), getattr(exact, name), rtol=1e-6, atol=0)


def test_batch_mask_workers_and_fused_head_agree():
    rng = np.random.default_rng(1)
    hidden = torch.from_numpy(rng.standard_normal((3, 7, 16)).astype(np.float32))
    weight = torch.from_numpy(rng.standard_normal((V, 16)).astype(np.float32))
    bias = torch.from_numpy(rng.standard_normal(V).astype(np.float32))
    ids = torch.from_numpy(rng.integers(0, V, (3, 7)))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2] = False  # not contiguous: rows gathered by index
    logits = hidden @ weight.T + bias
    batch = compute_token_signals_batch(logits, ids, mask, chunk_rows=3, workers=2)
    fused = token_signals_from_hidden(hidden, weight, ids, mask, bias=bias, chunk_rows=5, workers=1)
    for b in range(3):
        n = int(mask[b].sum())
        single = compute_token_signals(logits[b][mask[b]], ids[b][mask[b]])
        assert batch[b].n_tokens == fused[b].n_tokens == n
        for name in FIELDS:
            np.testing.assert_allclose(getattr(batch[b], name), getattr(single, name), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(getattr(fused[b], name), getattr(single, name), rtol=1e-4, atol=1e-4)


def test_one_token_document_is_finite():
    logits, ids = _case(1.0, t=1)
    sig = compute_token_signals(logits, ids)
    assert sig.n_tokens == 1 and np.isfinite(sig.beta_mu).all() and sig.first_occurrence.tolist() == [0]


@pytest.mark.parametrize("bad,match", [
    ("empty", "no scored token"), ("nan", "NaN"), ("posinf", r"\+inf"), ("all_neginf", "all -inf"),
    ("id", "does not match the model's vocabulary"),
    ("target_zero", "probability 0"), ("shape", "do not match"), ("negative_beta", "non-negative"),
])
def test_bad_input_is_a_clear_error(bad, match):
    logits, ids = _case(1.0)
    kwargs = {}
    if bad == "empty":
        logits, ids = logits[:0], ids[:0]
    elif bad == "nan":
        logits[3, 7] = np.nan
    elif bad == "posinf":
        logits[5, 2] = np.inf
    elif bad == "all_neginf":
        logits[6] = -np.inf
    elif bad == "id":
        ids[2] = V
    elif bad == "target_zero":
        logits[4, ids[4]] = -np.inf
    elif bad == "shape":
        ids = ids[:-1]
    else:
        kwargs["betas"] = (-1.0, 1.0)
    with pytest.raises(SignalError, match=match):
        compute_token_signals(logits, ids, **kwargs)


def test_beta_index_and_optional_signals():
    logits, ids = _case(1.0)
    sig = compute_token_signals(logits, ids, betas=(0.5, 1.0))
    assert sig.beta_index(1.0) == 1
    with pytest.raises(SignalError, match="not in the computed grid"):
        sig.beta_index(2.0)
    with pytest.raises(SignalError, match="unknown optional signal"):
        sig.with_signals(reference=1.0)
    assert sig.with_signals(ref_logprob=-2.0).ref_logprob == -2.0


def test_token_log_probs_and_gradient_norm():
    logits, ids = _case(2.0)
    expected = torch.log_softmax(torch.from_numpy(logits).double(), -1)[torch.arange(T), torch.from_numpy(ids)]
    np.testing.assert_allclose(token_log_probs(torch.from_numpy(logits), ids), expected, rtol=1e-6)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)

    def loss():
        return torch.nn.functional.cross_entropy(layer(x), torch.tensor([0, 1, 2, 0, 1]))

    grads = torch.autograd.grad(loss(), [layer.weight, layer.bias])
    for p in (1, 2, math.inf):
        expected_norm = float(np.mean([torch.linalg.vector_norm(g, ord=p) for g in grads]))
        assert gradient_norm(loss(), layer.parameters(), p=p) == pytest.approx(expected_norm, rel=1e-6)


def test_compiled_kernel_without_a_writable_cache(monkeypatch):
    """A read-only install: numba cannot cache on disk, so the kernel is compiled per process instead."""
    real = histogram.numba.njit

    def njit(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function '_accumulate': no locator available")
        return real(**options)

    monkeypatch.setattr(histogram.numba, "njit", njit)
    kernel = histogram._compile(histogram._accumulate)
    out = np.zeros((1, 3, 4))
    kernel(np.array([[0.0, -1.0, -np.inf]], np.float32), np.array([0.0]), 1.0, 2, out)
    # u = 0 -> bin 0; u = 1 -> bin 1 (delta 0); u = +inf -> the deep-tail bin 2
    np.testing.assert_array_equal(out[0, :, 0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(out[0, :2, 1:], 0.0)
