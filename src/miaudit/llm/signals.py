"""The one-pass signal engine: everything the reference-free LLM attacks need, from next-token logits.

For each scored position ``t`` of a document (``logits[t]`` predicts ``token_ids[t]``) the engine
returns, in a :class:`TokenSignals` record:

- ``log_prob[t] = log p(x_t)``, the ``entropy`` of ``p``, ``mean_logp = E_p[log p]`` and
  ``var_logp = Var_p[log p]`` (Min-K%++'s moments);
- for every inverse temperature ``beta`` of a grid (ACMIA), with ``p_beta ∝ p**beta``:
  ``beta_log_prob[j, t] = log p_beta(x_t) = beta log p(x_t) - log sum_v p(v)**beta``,
  ``beta_mu[j, t] = E_{p_beta}[log p_beta]`` and ``beta_sigma[j, t] = std_{p_beta}[log p_beta]``.

Never a ``(n_beta, T, V)`` tensor: rows are processed in chunks of ``chunk_rows`` positions.
With ``u_v = max(logits) - logits_v >= 0`` the tempered quantities only need three sums per row
and ``beta``: ``S_k(beta) = sum_v u_v**k exp(-beta u_v)``, ``k = 0, 1, 2``; then
``log p_beta(x) = -beta u_x - log S_0``, ``mu_beta = -beta S_1/S_0 - log S_0`` and
``sigma_beta = beta sqrt(S_2/S_0 - (S_1/S_0)**2)``.

Two ways to get the sums (``method``):

- ``"exact"``: one float64 pass over the vocabulary per ``beta`` (the reference; slow).
- ``"fast"`` (default): ONE pass builds, per row, a histogram of ``u`` in bins of equal
  width in ``sqrt(u)`` (``BIN_WIDTH``; bin ``k`` is expanded around ``c_k = (k * BIN_WIDTH)**2``, so
  the top token sits exactly on the first point) holding the moments ``A_j = sum (u - c_k)**j``,
  ``j <= 3``: with numba installed (``miaudit[llm]``) a compiled kernel
  (:mod:`miaudit.llm.histogram`, ``u`` in float64), else torch in float32 (two complex scatters, of
  ``1 + i delta`` and its cube), about twice as slow. A third-order Taylor expansion of
  ``u**k exp(-beta u)`` around each point turns every ``S_k(beta)`` of the whole grid, ``beta = 1``
  included, into one small matrix product; no exponential is evaluated per vocabulary entry. The
  truncation error of ``S_0`` is bounded per row and ``beta`` (``|R| <= A_0 exp(-beta lo_k)
  (beta w_k / 2)**4 / 24``); rows whose bound exceeds ``FAST_TOLERANCE`` are recomputed exactly.
  Against the exact path the largest relative error of any signal is about 1e-7 on flat
  distributions and 1e-5 on very peaked ones (float32 rounding of ``u`` dominates; tests check it).

The top token's term of ``S_0`` (exactly 1) is kept apart, so ``log S_0 = log1p(S_0 - 1)`` stays
precise when it dominates (large beta). The ``beta = 1`` row equals the base signals (so ACMIA's AC
is exactly 0 there) and ``beta = 0`` is the uniform distribution over the vocabulary
(``log p_0 = mu_0 = -log V``, ``sigma_0 = 0``) in closed form. All arrays are float64. Logits equal
to ``-inf`` mean probability 0; NaN or ``+inf`` logits, or a target of probability 0, are a
:class:`~miaudit.errors.SignalError`. Work is spread over ``workers`` threads (one chunk each,
single-threaded torch inside), which keeps many small kernels efficient on a busy machine.

Signals from extra passes (lowercased text, a reference model, a non-member prefix, gradients,
neighbours) are optional fields of :class:`TokenSignals`; the attacks that need them say so.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import Any, Literal

import numpy as np
import torch

from miaudit.errors import SignalError
from miaudit.llm import histogram

#: ACMIA's inverse-temperature grid: 0 and 2**(0.1 i) for i = -25..25 (52 values, 1.0 included).
DEFAULT_BETAS: tuple[float, ...] = (0.0,) + tuple(2.0 ** (0.1 * i) for i in range(-25, 26))
#: width of the fast path's bins in sqrt(u) (u = max logit - logit, in nats); a power of 2, so that
#: scaling u by 1 / BIN_WIDTH**2 is exact in floating point
BIN_WIDTH = 2.0 ** -7
#: order of the per-bin Taylor expansion (the moments 0..3 of each bin are accumulated)
TAYLOR_ORDER = 3
#: tokens more than this many nats below the top token are left out of the fast path's bins
#: (their weight is bounded and checked like the truncation error)
DEEP_TAIL = 400.0
#: a row whose certified relative error bound on S_0 exceeds this is recomputed exactly
FAST_TOLERANCE = 1e-6
#: the torch fast path and the exact path work on chunks of about this many logits, so that a
#: (chunk_rows, V) block stays in cache and small vocabularies are not overhead-bound
CHUNK_LOGITS = 131072
#: positions per block: one Taylor matrix product per block, and with the fused head one output-layer
#: product (the weight is read once per block); blocks are the unit of parallel work
BLOCK_ROWS = 128
_U_CLAMP = 1e30  # exact path: u of a -inf logit (probability 0) after clamping, keeps 0 * u finite
_SCALE = BIN_WIDTH ** -2  # u in units of BIN_WIDTH**2

Method = Literal["fast", "exact"]

#: names of the optional signals of :class:`TokenSignals` (set by other passes, ``None`` when absent)
OPTIONAL_SIGNALS = ("text", "lowercase_logprob", "ref_logprob", "prefix_logprob", "grad_norm", "neighbour_logprobs")


@dataclass(frozen=True, eq=False)
class TokenSignals:
    """Per-position signals of one document (``T`` scored tokens, ``n_beta`` inverse temperatures).

    Core arrays (from the engine): ``token_ids`` (T,) int64; ``log_prob``, ``entropy``, ``mean_logp``,
    ``var_logp`` (T,) float64; ``betas`` (n_beta,) sorted ascending; ``beta_log_prob``, ``beta_mu``,
    ``beta_sigma`` (n_beta, T) float64.

    ``access``: what produced the record. ``"logits"`` (the engine, from full next-token logits) fills
    every core array; ``"top-k log-probs"`` (an API target, :mod:`miaudit.llm.api`) has ``entropy``,
    ``mean_logp`` and ``var_logp`` set to None and an empty beta grid: only the observed tokens'
    log-probabilities are known, and attacks that need more refuse such records.

    Optional signals (from other passes, ``None`` when absent; add them with :meth:`with_signals`):
    ``text`` (the document, for zlib); ``lowercase_logprob`` (mean per-token log-likelihood of the
    lowercased text); ``ref_logprob`` (mean per-token log-likelihood under a reference model);
    ``prefix_logprob`` (mean log-likelihood of the same scored tokens when the document follows a
    non-member prefix, ReCaLL); ``grad_norm`` (norm of the gradient of the document's mean loss with
    respect to the model parameters, see :func:`gradient_norm`); ``neighbour_logprobs``
    ((n_neighbours,) mean per-token log-likelihoods of perturbed neighbours of the text).
    """

    token_ids: np.ndarray
    log_prob: np.ndarray
    entropy: np.ndarray | None
    mean_logp: np.ndarray | None
    var_logp: np.ndarray | None
    betas: np.ndarray
    beta_log_prob: np.ndarray
    beta_mu: np.ndarray
    beta_sigma: np.ndarray
    vocab_size: int
    text: str | None = None
    lowercase_logprob: float | None = None
    ref_logprob: float | None = None
    prefix_logprob: float | None = None
    grad_norm: float | None = None
    neighbour_logprobs: np.ndarray | None = field(default=None)
    access: str = "logits"

    def __post_init__(self) -> None:
        t = self.token_ids.shape[0] if self.token_ids.ndim == 1 else -1
        if t < 1:
            raise SignalError(f"a document needs at least one scored token, got token_ids of shape "
                              f"{self.token_ids.shape}; drop empty documents before scoring")
        moments = ("entropy", "mean_logp", "var_logp")
        if self.access == "logits" and any(getattr(self, name) is None for name in moments):
            raise SignalError("a record computed from logits needs entropy, mean_logp and var_logp; records without "
                              "them have access='top-k log-probs'")
        for name in ("log_prob",) + moments:
            if getattr(self, name) is not None and getattr(self, name).shape != (t,):
                raise SignalError(f"{name} has shape {getattr(self, name).shape}, expected ({t},)")
        n_beta = self.betas.shape[0]
        for name in ("beta_log_prob", "beta_mu", "beta_sigma"):
            if getattr(self, name).shape != (n_beta, t):
                raise SignalError(f"{name} has shape {getattr(self, name).shape}, expected ({n_beta}, {t})")
        if self.neighbour_logprobs is not None:
            object.__setattr__(self, "neighbour_logprobs", np.atleast_1d(np.asarray(self.neighbour_logprobs,
                                                                                     dtype=np.float64)))

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @cached_property
    def first_occurrence(self) -> np.ndarray:
        """Positions of the first occurrence of each distinct token id (ascending), (n_distinct,)."""
        _, index = np.unique(self.token_ids, return_index=True)
        return np.sort(index)

    def beta_index(self, beta: float) -> int:
        """Index of ``beta`` in :attr:`betas` (matched to 1e-9 relative); a clear error if absent."""
        hits = np.flatnonzero(np.isclose(self.betas, beta, rtol=1e-9, atol=0.0))
        if hits.size == 0:
            raise SignalError(f"inverse temperature beta={beta!r} is not in the computed grid "
                              f"({self.betas.size} values from {self.betas.min():g} to {self.betas.max():g}); "
                              "pick a grid value or compute the signals with betas=... including it")
        return int(hits[0])

    def without_first(self, n: int = 1) -> TokenSignals:
        """A copy whose first ``n`` scored positions are dropped (context only), e.g. to compare with a
        server that gives no log-probability for a prompt's first token; optional signals are kept."""
        if not 0 <= n < self.n_tokens:
            raise SignalError(f"cannot drop {n} of the document's {self.n_tokens} scored tokens")
        cut = {name: getattr(self, name)[n:] for name in ("token_ids", "log_prob", "entropy", "mean_logp", "var_logp")
               if getattr(self, name) is not None}
        cut.update({name: getattr(self, name)[:, n:] for name in ("beta_log_prob", "beta_mu", "beta_sigma")})
        return replace(self, **cut)

    def with_signals(self, **signals: Any) -> TokenSignals:
        """A copy with optional signals added (``ref_logprob=..., text=...``)."""
        unknown = sorted(set(signals) - set(OPTIONAL_SIGNALS))
        if unknown:
            raise SignalError(f"unknown optional signal {unknown[0]!r}; allowed: {', '.join(OPTIONAL_SIGNALS)}")
        return replace(self, **signals)


def check_betas(betas: Iterable[float]) -> np.ndarray:
    """Sorted unique non-negative float64 grid; an error for a negative or non-finite value."""
    grid = np.asarray(list(betas), dtype=np.float64)
    if grid.ndim != 1 or not np.isfinite(grid).all() or (grid < 0).any():
        raise SignalError(f"betas must be finite non-negative inverse temperatures, got {grid!r:.80}")
    return np.unique(grid)


# -- per-row kernels ----------------------------------------------------------------------------------

@dataclass
class _RowStats:
    """Per-row results of one chunk: (C,) float64 arrays and (n_beta, C) tempered arrays."""

    log_prob: torch.Tensor
    entropy: torch.Tensor
    mean_logp: torch.Tensor
    var_logp: torch.Tensor
    beta_log_prob: torch.Tensor
    beta_mu: torch.Tensor
    beta_sigma: torch.Tensor


def _check_chunk(top: torch.Tensor, offset: int) -> None:
    bad = ~torch.isfinite(top)
    if bad.any():
        row = int(torch.nonzero(bad)[0, 0]) + offset
        raise SignalError(f"logits at scored position {row} contain NaN or +inf (or are all -inf); "
                          "fix the model's outputs (dtype overflow?) before scoring")


def _check_target(zero_prob: torch.Tensor, offset: int) -> None:
    if bool(zero_prob.any()):
        row = int(torch.nonzero(zero_prob)[0, 0]) + offset
        raise SignalError(f"the target token at scored position {row} has probability 0 (logit -inf); "
                          "its log-likelihood is -inf, so this document cannot be scored")


def _from_sums(u_target: torch.Tensor, betas: torch.Tensor, rest: torch.Tensor, s1: torch.Tensor,
               s2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log p_beta(x), mu_beta, sigma_beta)`` (n_beta, C), float64, from ``rest = S_0 - 1`` (the top
    token's term, exactly 1, left out so that ``log S_0 = log1p(rest)`` keeps its precision when the
    top token dominates), ``S_1`` and ``S_2`` (n_beta, C)."""
    log_z = torch.log1p(rest)
    s0 = 1.0 + rest
    mean_u = s1 / s0
    var_u = (s2 / s0 - mean_u * mean_u).clamp_min_(0.0)
    b = betas[:, None]
    return -b * u_target[None, :] - log_z, -b * mean_u - log_z, b * torch.sqrt(var_u)


def _exact_sums(u: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``S_0, S_1, S_2`` (n_beta, C) by one float64 pass over the vocabulary per beta; ``u`` (C, V) float64
    (the top token set to ``_U_CLAMP`` by :func:`_exact_u` gives ``S_0 - 1``)."""
    out = torch.empty(3, betas.numel(), u.shape[0], dtype=torch.float64)
    for j, beta in enumerate(betas.tolist()):
        w = torch.exp(-beta * u)
        wu = w * u
        out[0, j], out[1, j], out[2, j] = w.sum(1), wu.sum(1), (wu * u).sum(1)
    return out[0], out[1], out[2]


class _BinTables:
    """Tables for the sqrt-spaced bins (bin k: ``sqrt(u) / BIN_WIDTH`` rounds to k; expansion point
    ``c_k = (k BIN_WIDTH)**2``), grown on demand and sliced without copying:

    - ``taylor[:4 n]`` (4 n_bins, 3 n_beta), rows ``4 k + j``: maps the bin moments
      ``sum (u / BIN_WIDTH**2 - k**2)**j``, ``j = 0..3``, to the sums ``S_0, S_1, S_2`` of every beta;
    - ``bound[:n]`` (n_bins, n_beta): the Taylor remainder bound per token of bin k.
    """

    _shared: dict[tuple[float, ...], _BinTables] = {}
    _lock = threading.Lock()

    def __init__(self, betas: tuple[float, ...]) -> None:
        self.betas = torch.tensor(betas, dtype=torch.float64)[None, :]
        self.size = 0
        self.taylor = self.bound = torch.empty(0)

    @classmethod
    def for_betas(cls, betas: tuple[float, ...]) -> _BinTables:
        """One shared instance per grid, so that every call and thread reuses the tables."""
        with cls._lock:
            return cls._shared.setdefault(betas, cls(betas))

    def get(self, n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            if n_bins > self.size:
                self._build(max(n_bins, 2 * self.size, 256))
            return self.taylor[:(TAYLOR_ORDER + 1) * n_bins], self.bound[:n_bins]

    def _build(self, n_bins: int) -> None:
        k = torch.arange(n_bins, dtype=torch.float64)
        centre = (k * BIN_WIDTH) ** 2
        low = ((k - 0.5).clamp_min(0.0) * BIN_WIDTH) ** 2
        high = ((k + 0.5) * BIN_WIDTH) ** 2
        half_width = torch.maximum(centre - low, high - centre)
        b, c = self.betas, centre[:, None]
        decay = torch.exp(-b * c)
        blocks = []
        for j in range(TAYLOR_ORDER + 1):
            # j-th derivatives of u**k exp(-beta u), k = 0, 1, 2, at the centre, over j! (Leibniz rule),
            # times BIN_WIDTH**(2j) because the moments are taken in units of BIN_WIDTH**2
            d0 = (-b) ** j
            d1 = j * (-b) ** (j - 1) if j >= 1 else torch.zeros_like(b)
            d2 = j * (j - 1) * (-b) ** (j - 2) if j >= 2 else torch.zeros_like(b)
            scale = decay * BIN_WIDTH ** (2 * j) / math.factorial(j)
            blocks.append(torch.cat([scale * d0, scale * (d0 * c + d1), scale * (d0 * c * c + 2 * c * d1 + d2)], 1))
        self.taylor = torch.stack(blocks, 1).reshape(n_bins * (TAYLOR_ORDER + 1), -1).contiguous()
        order = TAYLOR_ORDER + 1
        self.bound = torch.exp(-b * low[:, None]) * (b * half_width[:, None]) ** order / math.factorial(order)
        self.size = n_bins


def _n_bins(u_max: float) -> int:
    """Bins that cover ``u`` up to ``min(u_max, DEEP_TAIL)`` (bin ``k``: ``sqrt(u) / BIN_WIDTH`` rounds to k)."""
    return int(math.sqrt(min(u_max, DEEP_TAIL)) / BIN_WIDTH + 0.5) + 1


class _Kernel:
    """Computes the signals of a block of rows, ``chunk_rows`` rows at a time for the passes over the
    vocabulary (reusing (chunk_rows, V) work buffers) and one matrix product per block."""

    def __init__(self, betas: tuple[float, ...], method: Method, chunk_rows: int, compiled: bool) -> None:
        self.betas, self.method, self.chunk_rows = betas, method, max(1, int(chunk_rows))
        self.compiled = compiled  # the fast path's moments from miaudit.llm.histogram's numba kernels
        # the tempered sums are computed for every beta but 0; beta = 1 gives the base signals
        self.tempered = tuple(sorted(set(b for b in betas if b != 0.0) | {1.0}))
        self.tempered_grid = torch.tensor(self.tempered, dtype=torch.float64)
        self.one = self.tempered.index(1.0)
        self.rows_of_beta = torch.tensor([self.tempered.index(b) if b != 0.0 else self.one for b in betas],
                                         dtype=torch.int64)
        self.zero_beta = torch.tensor([b == 0.0 for b in betas], dtype=torch.bool)
        self.tables = _BinTables.for_betas(self.tempered)
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = torch.empty(shape, dtype=dtype)
            if name == "pair":
                buf[..., 0] = 1.0
        return buf

    def __call__(self, x: torch.Tensor, target: torch.Tensor, offset: int) -> _RowStats:
        """Signals of a block: ``x`` (n, V) logits (any float dtype), ``target`` (n,) int64; ``offset``:
        the block's first row, for error messages."""
        rows, vocab = x.shape
        if self.method == "exact":
            sums = [self._exact_chunk(x[i:i + self.chunk_rows], target[i:i + self.chunk_rows], offset + i)
                    for i in range(0, rows, self.chunk_rows)]
            s0, s1, s2 = (torch.cat([c[k] for c in sums], 1) for k in range(3))
            u_target = torch.cat([c[3] for c in sums])
        else:
            s0, s1, s2, u_target = self._fast_block(x, target, offset)
        lp_t, mu_t, sigma_t = _from_sums(u_target, self.tempered_grid, s0, s1, s2)
        log_prob, mean_logp, sigma = lp_t[self.one], mu_t[self.one], sigma_t[self.one]
        lp_b, mu_b, sigma_b = lp_t[self.rows_of_beta], mu_t[self.rows_of_beta], sigma_t[self.rows_of_beta]
        if self.zero_beta.any():  # beta = 0: uniform over the vocabulary, in closed form
            lp_b[self.zero_beta] = mu_b[self.zero_beta] = -math.log(vocab)
            sigma_b[self.zero_beta] = 0.0
        return _RowStats(log_prob, -mean_logp, mean_logp, sigma * sigma, lp_b, mu_b, sigma_b)

    # -- exact ------------------------------------------------------------------------------------------
    def _exact_u(self, x: torch.Tensor, target: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``u = max - logits`` (C, V) float64 with one top token pushed to ``_U_CLAMP`` (weight 0, so the
        sums give ``S_0 - 1``), and ``u`` of the targets (C,)."""
        x = x.to(torch.float64)
        top, argmax = x.max(1)
        _check_chunk(top, offset)
        u = torch.sub(top[:, None], x, out=self._buffer("u", tuple(x.shape), torch.float64)).clamp_max_(_U_CLAMP)
        u_target = u.gather(1, target[:, None])[:, 0]
        _check_target(u_target >= _U_CLAMP, offset)
        u.scatter_(1, argmax[:, None], _U_CLAMP)
        return u, u_target

    def _exact_chunk(self, x: torch.Tensor, target: torch.Tensor, offset: int) -> tuple[torch.Tensor, ...]:
        u, u_target = self._exact_u(x, target, offset)
        return (*_exact_sums(u, self.tempered_grid), u_target)

    # -- fast ---------------------------------------------------------------------------------------------
    def _moments(self, x: torch.Tensor, target: torch.Tensor, offset: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """One pass over a chunk: per row and sqrt-spaced bin the moments ``sum delta**j``, j = 0..3,
        of ``delta = u / BIN_WIDTH**2 - k**2`` (C, n_bins, 4) float64 (the top token's count left out),
        the count of dropped deep-tail tokens (C,), ``u`` of the targets (C,) and the largest ``u``."""
        x = x.to(torch.float32)
        rows, vocab = x.shape
        shape = (rows, vocab)
        top = x.amax(1)
        _check_chunk(top, offset)
        # u / BIN_WIDTH**2 in one pass (exact scaling by a power of 2)
        us = torch.add(top[:, None] * _SCALE, x, alpha=-_SCALE, out=self._buffer("us", shape, torch.float32))
        u_target = us.gather(1, target[:, None])[:, 0].double() / _SCALE
        _check_target(torch.isinf(u_target), offset)
        u_max = float(us.amax()) / _SCALE
        n_bins = _n_bins(u_max)
        # bin k = round(sqrt(us)); tokens beyond the last bin (u > DEEP_TAIL) land in bin n_bins, dropped
        r = torch.sqrt(us, out=self._buffer("r", shape, torch.float32))
        if u_max > DEEP_TAIL:
            r.clamp_max_(n_bins)
        r.round_()
        index = self._buffer("index", shape, torch.int64)
        index.copy_(r)
        # two complex scatters, of z = 1 + i delta and z**3 = (1 - 3 delta**2) + i (3 delta - delta**3)
        # (contiguous complex products), give the four moments
        pair = self._buffer("pair", shape + (2,), torch.float32)  # real parts preset to 1
        torch.sub(us, r.mul_(r), out=pair[..., 1])
        z = torch.view_as_complex(pair)
        cube = torch.mul(z, z, out=self._buffer("cube", shape, torch.complex64)).mul_(z)
        low = torch.zeros(rows, n_bins + 1, dtype=torch.complex64).scatter_add_(1, index, z)
        high = torch.zeros(rows, n_bins + 1, dtype=torch.complex64).scatter_add_(1, index, cube)
        n_deep = low[:, n_bins].real.double()
        low, high = low[:, :n_bins].to(torch.complex128), high[:, :n_bins].to(torch.complex128)
        count, first = low.real, low.imag
        moments = torch.stack([count, first, (count - high.real) / 3, 3 * first - high.imag], 2)
        moments[:, 0, 0] -= 1  # the top token (u = 0, delta = 0): its term 1 of S_0 is left out, see _from_sums
        return moments, n_deep, u_target, u_max

    def _compiled_moments(self, x: torch.Tensor, target: torch.Tensor, offset: int
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """What :meth:`_moments` returns, for a whole block, from the compiled kernels (u in float64)."""
        x = x.to(torch.float32).contiguous()
        top, low = x.amax(1), x.amin(1)  # NaN propagates to top (two reductions beat aminmax by 10x on CPU)
        _check_chunk(top, offset)
        top = top.double()
        u_target = top - x.gather(1, target[:, None])[:, 0].double()
        _check_target(torch.isinf(u_target), offset)
        u_max = float((top - low.double()).max())
        n_bins = _n_bins(u_max)
        out = np.zeros((x.shape[0], n_bins + 1, TAYLOR_ORDER + 1))
        assert histogram.accumulate is not None  # compiled kernels are asked for only when histogram.AVAILABLE
        histogram.accumulate(x.numpy(), top.numpy(), _SCALE, n_bins, out)
        moments = torch.from_numpy(out[:, :n_bins])
        moments[:, 0, 0] -= 1  # the top token (u = 0, delta = 0): its term 1 of S_0 is left out, see _from_sums
        return moments, torch.from_numpy(out[:, n_bins, 0].copy()), u_target, u_max

    def _fast_block(self, x: torch.Tensor, target: torch.Tensor, offset: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``S_0 - 1, S_1, S_2`` (n_tempered, n) of a block, one matrix product for all its rows, and
        ``u_target`` (n,); rows whose certified error bound on ``S_0`` exceeds ``FAST_TOLERANCE`` are
        recomputed exactly."""
        if self.compiled:
            parts = [self._compiled_moments(x, target, offset)]
        else:
            parts = [self._moments(x[i:i + self.chunk_rows], target[i:i + self.chunk_rows], offset + i)
                     for i in range(0, x.shape[0], self.chunk_rows)]
        n_bins = max(p[0].shape[1] for p in parts)
        if len(parts) == 1:
            moments, n_deep, u_target = parts[0][:3]
        else:
            moments = torch.cat([torch.nn.functional.pad(p[0], (0, 0, 0, n_bins - p[0].shape[1])) for p in parts])
            n_deep = torch.cat([p[1] for p in parts])
            u_target = torch.cat([p[2] for p in parts])
        taylor, bound_table = self.tables.get(n_bins)
        sums = moments.reshape(moments.shape[0], -1) @ taylor  # (n, 3 n_tempered)
        s0, s1, s2 = sums.reshape(-1, 3, len(self.tempered)).permute(1, 2, 0)
        bound = (moments[:, :, 0] @ bound_table).T  # (n_tempered, n)
        if max(p[3] for p in parts) > DEEP_TAIL:  # a dropped token weighs less than exp(-beta DEEP_TAIL) in S_0
            bound = bound + torch.exp(-self.tempered_grid * DEEP_TAIL)[:, None] * n_deep[None, :]
        failed = (bound / (1.0 + s0)).amax(0) > FAST_TOLERANCE
        if bool(failed.any()):
            redo = torch.nonzero(failed)[:, 0]
            u_redo, _ = self._exact_u(x[redo], target[redo], offset)
            for s, exact in zip((s0, s1, s2), _exact_sums(u_redo, self.tempered_grid)):
                s[:, redo] = exact
        return s0, s1, s2, u_target


#: one block of rows: ``(first row, loader)``, the loader giving ``(logits (n, V), targets (n,))``
Block = tuple[int, Callable[[], tuple[torch.Tensor, torch.Tensor]]]


_LOCAL = threading.local()  # per thread: kernels (and their work buffers) by (grid, method, chunk_rows)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _kernel(betas: tuple[float, ...], method: Method, chunk_rows: int) -> _Kernel:
    kernels = _LOCAL.__dict__.setdefault("kernels", {})
    key = (betas, method, chunk_rows, histogram.AVAILABLE)
    if key not in kernels:
        kernels[key] = _Kernel(*key)
    return kernels[key]


def _executor(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool, so that its threads keep their kernels' buffers from call to call."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers != workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="miaudit-signals")
        return _POOL


def _rows_signals(blocks: Sequence[Block], betas: tuple[float, ...], method: Method, chunk_rows: int,
                  workers: int | None) -> dict[str, np.ndarray]:
    """Signals of every row of ``blocks`` in order: (N,) and (n_beta, N) float64 arrays.

    With ``workers > 1`` (default: torch's thread count) blocks run in parallel threads, each
    single-threaded: many small kernels scale better across blocks than inside each one."""
    if method not in ("fast", "exact"):
        raise SignalError(f"method {method!r} is not allowed; choose fast or exact")
    workers = max(1, min(torch.get_num_threads() if workers is None else int(workers), len(blocks)))

    def work(block: Block) -> _RowStats:
        with torch.no_grad():
            x, target = block[1]()
            return _kernel(betas, method, chunk_rows)(x.cpu(), target.cpu(), block[0])

    if workers == 1:
        parts = [work(block) for block in blocks]
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            parts = list(_executor(workers).map(work, blocks))
        finally:
            torch.set_num_threads(previous)
    out = {}
    for name in ("log_prob", "entropy", "mean_logp", "var_logp"):
        out[name] = torch.cat([getattr(p, name) for p in parts]).numpy()
    for name in ("beta_log_prob", "beta_mu", "beta_sigma"):
        out[name] = torch.cat([getattr(p, name) for p in parts], 1).numpy()
    return out


def chunk_rows_for(vocab_size: int) -> int:
    """Default positions per chunk: about :data:`CHUNK_LOGITS` logits, between 8 and 1024 rows."""
    return max(8, min(1024, CHUNK_LOGITS // max(1, vocab_size)))


def _block_size(n_rows: int, chunk_rows: int, workers: int | None, limit: int) -> int:
    """Rows per block: at most ``limit``, small enough to give every worker a block, a multiple of chunks."""
    workers = max(1, torch.get_num_threads() if workers is None else int(workers))
    step = max(1, int(chunk_rows))
    size = min(limit, -(-n_rows // workers))
    return max(step, -(-size // step) * step)


def _validate_ids(token_ids: torch.Tensor | np.ndarray | Sequence[int], vocab_size: int) -> torch.Tensor:
    ids = torch.as_tensor(token_ids).detach().cpu()
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise SignalError(f"token_ids must be integers, got dtype {ids.dtype}")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise SignalError(f"token ids range over [{int(ids.min())}, {int(ids.max())}] but the logits have "
                          f"{vocab_size} columns: the tokenizer does not match the model's vocabulary")
    return ids


def _rows(logits: torch.Tensor, ids: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``start:stop`` of a document's logits (T, V) and token ids (T,): one block's load."""
    return logits[start:stop], ids[start:stop]


def _make_signals(ids: torch.Tensor, arrays: dict[str, np.ndarray], betas: tuple[float, ...], vocab_size: int,
                  **optional: Any) -> TokenSignals:
    return TokenSignals(token_ids=ids.numpy().astype(np.int64), log_prob=arrays["log_prob"],
                        entropy=arrays["entropy"], mean_logp=arrays["mean_logp"], var_logp=arrays["var_logp"],
                        betas=np.asarray(betas, dtype=np.float64), beta_log_prob=arrays["beta_log_prob"],
                        beta_mu=arrays["beta_mu"], beta_sigma=arrays["beta_sigma"], vocab_size=vocab_size, **optional)


# -- public entry points ------------------------------------------------------------------------------

def compute_token_signals(
    logits: torch.Tensor | np.ndarray,
    token_ids: torch.Tensor | np.ndarray | Sequence[int],
    *,
    betas: Iterable[float] = DEFAULT_BETAS,
    method: Method = "fast",
    chunk_rows: int | None = None,
    workers: int | None = None,
    **optional: Any,
) -> TokenSignals:
    """Signals of one document. ``logits`` (T, V), row ``t`` predicting ``token_ids[t]`` (T,).

    ``betas``: inverse-temperature grid (default ACMIA's 52 values; ``()`` skips the tempered
    signals). ``method``: ``"fast"`` or ``"exact"`` (module doc). ``chunk_rows``: positions per
    chunk (default: :func:`chunk_rows_for` the vocabulary); ``workers``: parallel chunk threads
    (default: torch's thread count). ``optional``: optional signals stored as given
    (``text=..., ref_logprob=...``).
    """
    logits = torch.as_tensor(logits).detach().cpu()
    if logits.ndim != 2:
        raise SignalError(f"logits must have shape (T, V) for one document, got {tuple(logits.shape)}")
    ids = _validate_ids(token_ids, logits.shape[1])
    if ids.ndim != 1 or ids.shape[0] != logits.shape[0]:
        raise SignalError(f"token_ids of shape {tuple(ids.shape)} do not match logits of shape "
                          f"{tuple(logits.shape)}: row t of the logits must predict token t")
    if logits.shape[0] == 0:
        raise SignalError("the document has no scored token (empty, or one token without a BOS before it); "
                          "drop it or prepend a BOS token")
    if logits.shape[1] < 2:
        raise SignalError(f"logits have {logits.shape[1]} column(s); a language model needs a vocabulary of >= 2")
    grid = tuple(check_betas(betas).tolist())
    chunk_rows = chunk_rows_for(logits.shape[1]) if chunk_rows is None else chunk_rows
    size = _block_size(logits.shape[0], chunk_rows, workers, BLOCK_ROWS)
    blocks = [(a, partial(_rows, logits, ids, a, a + size)) for a in range(0, logits.shape[0], size)]
    arrays = _rows_signals(blocks, grid, method, chunk_rows, workers)
    return _make_signals(ids, arrays, grid, logits.shape[1], **optional)


def compute_token_signals_batch(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    betas: Iterable[float] = DEFAULT_BETAS,
    method: Method = "fast",
    chunk_rows: int | None = None,
    workers: int | None = None,
) -> list[TokenSignals]:
    """Signals of a batch: ``logits`` (B, T, V), ``token_ids`` (B, T) with ``logits[b, t]`` predicting
    ``token_ids[b, t]``; ``attention_mask`` (B, T) marks the scored positions (default: all)."""
    return _batched(logits, token_ids, attention_mask, betas=betas, method=method, chunk_rows=chunk_rows,
                    workers=workers)


def token_signals_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    bias: torch.Tensor | None = None,
    betas: Iterable[float] = DEFAULT_BETAS,
    method: Method = "fast",
    chunk_rows: int | None = None,
    workers: int | None = None,
) -> list[TokenSignals]:
    """Like :func:`compute_token_signals_batch`, fused with a linear output layer: ``hidden`` (B, T, H)
    final hidden states, ``weight`` (V, H) (and ``bias`` (V,)). The logits of ``chunk_rows`` positions
    are formed, used and dropped while in cache, so the (B, T, V) logits never exist. Only valid for
    models whose logits are exactly ``hidden @ weight.T + bias`` (no soft-capping or scaling)."""
    if hidden.ndim != 3 or weight.ndim != 2 or hidden.shape[2] != weight.shape[1]:
        raise SignalError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} must be (B, T, H) and (V, H)")
    return _batched(hidden, token_ids, attention_mask, betas=betas, method=method, chunk_rows=chunk_rows,
                    workers=workers, head=(weight, bias))


def _batched(inputs: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
             betas: Iterable[float], method: Method, chunk_rows: int | None, workers: int | None,
             head: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> list[TokenSignals]:
    if inputs.ndim != 3:
        raise SignalError(f"expected a (B, T, V) batch, got shape {tuple(inputs.shape)}")
    vocab = head[0].shape[0] if head is not None else inputs.shape[2]
    ids = _validate_ids(token_ids, vocab)
    if ids.shape != inputs.shape[:2]:
        raise SignalError(f"token_ids {tuple(ids.shape)} must match the batch's first two dimensions "
                          f"{tuple(inputs.shape[:2])}")
    mask = (torch.ones_like(ids, dtype=torch.bool) if attention_mask is None
            else torch.as_tensor(attention_mask).detach().cpu().bool())
    if mask.shape != ids.shape:
        raise SignalError(f"attention_mask {tuple(mask.shape)} must match token_ids {tuple(ids.shape)}")
    counts = mask.sum(1).tolist()
    empty = [b for b, n in enumerate(counts) if n == 0]
    if empty:
        raise SignalError(f"document {empty[0]} of the batch has no scored position; drop empty documents")
    inputs = inputs.detach()
    grid = tuple(check_betas(betas).tolist())
    chunk_rows = chunk_rows_for(vocab) if chunk_rows is None else chunk_rows
    size = _block_size(sum(counts), chunk_rows, workers, BLOCK_ROWS)

    def loader(b: int, where: torch.Tensor | slice) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def load() -> tuple[torch.Tensor, torch.Tensor]:
            rows = inputs[b, where]  # a view when the positions are contiguous
            if head is not None:  # the fused head: one matrix product per block
                rows = torch.nn.functional.linear(rows, head[0], head[1])
            return rows, ids[b, where.cpu() if isinstance(where, torch.Tensor) else where]
        return load

    blocks: list[Block] = []
    flat_ids: list[torch.Tensor] = []
    first = 0
    for b in range(mask.shape[0]):
        positions = torch.nonzero(mask[b])[:, 0]
        contiguous = bool((positions[-1] - positions[0] + 1) == positions.numel())
        for a in range(0, positions.numel(), size):
            part = positions[a:a + size]
            where: torch.Tensor | slice = (slice(int(part[0]), int(part[-1]) + 1) if contiguous
                                           else part.to(inputs.device))
            blocks.append((first + a, loader(b, where)))
        flat_ids.append(ids[b, positions])
        first += positions.numel()
    arrays = _rows_signals(blocks, grid, method, chunk_rows, workers)
    all_ids = torch.cat(flat_ids)
    out, start = [], 0
    for n in counts:
        document = {k: (v[start:start + n] if v.ndim == 1 else v[:, start:start + n]) for k, v in arrays.items()}
        out.append(_make_signals(all_ids[start:start + n], document, grid, vocab))
        start += n
    return out


def token_log_probs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``log p(token_ids)`` (...,) float64 from ``logits`` (..., V): for the extra passes (lowercase,
    reference model, prefix, neighbours) that need only the log-likelihood."""
    logits = torch.as_tensor(logits)
    ids = _validate_ids(token_ids, logits.shape[-1]).to(logits.device)
    if ids.shape != logits.shape[:-1]:
        raise SignalError(f"token_ids {tuple(ids.shape)} must match logits {tuple(logits.shape)} without the last axis")
    chosen = logits.gather(-1, ids[..., None])[..., 0].double()
    return chosen - torch.logsumexp(logits.double(), dim=-1)


def gradient_norm(loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter], *, p: float = math.inf) -> float:
    """GradNorm's signal: the mean over parameter tensors of the ``p``-norm of ``d loss / d theta``
    (MIMIR's definition, default ``p = inf``); ``loss`` is the document's mean token loss."""
    if p not in (1, 2, math.inf):
        raise SignalError(f"gradient norm order p={p!r} is not allowed; choose 1, 2 or inf")
    params = [q for q in parameters if q.requires_grad]
    if not params:
        raise SignalError("no parameter requires a gradient; GradNorm needs white-box access (requires_grad=True)")
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    norms = [torch.linalg.vector_norm(g.detach().double(), ord=p) for g in grads if g is not None]
    if not norms:
        raise SignalError("the loss does not depend on any parameter; check the forward pass")
    value = float(torch.stack(norms).mean())
    if not math.isfinite(value):
        raise SignalError("the gradient norm is not finite; check the model's dtype (overflow) and inputs")
    return value
