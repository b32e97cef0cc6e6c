"""Language models behind an OpenAI-compatible completions API (vLLM, llama.cpp's server, TGI's OpenAI
route, hosted APIs) as audit targets: the black-box setting with top-k log-probabilities.

Each document is one request to ``{endpoint}/completions`` with ``echo: true``, ``max_tokens``
(1 by default; 0 where the server allows it), ``logprobs: k`` and ``temperature: 0``. The response
echoes the prompt's tokens with the log-probability of each and its ``k`` most likely alternatives;
the generated token(s) after the prompt are dropped (``usage.completion_tokens``, else the tokens
that start at or after the prompt's end by ``text_offset``).

What the server tokenises is what is scored: token identity is the token string the server returns
(interned to integer ids per target, so first-occurrence means and DC-PDD frequencies work), and
reports say so. A server that gives no log-probability for the first prompt token (nothing predicts
it, as in OpenAI's API) leaves it as context; leading tokens without a log-probability are counted
in ``unscored``, and a missing log-probability anywhere else is an error.

Access: ``"top-k log-probs"`` (:data:`miaudit.attacks.base.ACCESS_ORDER`): the attacks that read
only the observed token's log-probability run (LOSS, zlib, lowercase, Min-K%, reference model,
ReCaLL, neighbourhood, DC-PDD); Min-K%++ and the ACMIA family need the whole next-token
distribution and are refused before any request.

Requests run ``concurrency`` at a time; 429, 5xx, timeouts, dropped connections and truncated JSON
are retried ``max_retries`` times with exponential backoff (``Retry-After`` honoured), then the
audit stops with one line naming the document, the last failure and the fix. Other 4xx errors stop
at once. Every parsed response is appended to a JSONL cache under ``cache_dir`` keyed by a
fingerprint of (endpoint, model, k, max_tokens, request kind, prompt), so an interrupted audit resumes
without re-querying finished documents. The API key is read from the environment variable named by
``api_key_env`` when a request is made; it is never stored, logged or written.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from miaudit.errors import ConfigError, DataError, SignalError
from miaudit.llm.signals import TokenSignals
from miaudit.llm.texts import check_texts, neighbour_log_likelihoods
from miaudit.utils.fingerprint import fingerprint

log = logging.getLogger(__name__)

#: the access level an API target gives (see miaudit.attacks.base.ACCESS_ORDER)
ACCESS = "top-k log-probs"
#: rough size of a token for the dry-run estimate (English text, BPE / SentencePiece vocabularies)
BYTES_PER_TOKEN = 4.0
_CACHE_VERSION = 1


class APIError(SignalError):
    """The server could not be reached, refused a request, or answered something that is not a
    completions response with log-probabilities."""


@dataclass
class APITargetConfig:
    """An OpenAI-compatible completions endpoint (``kind: llm`` config section ``api:``).

    ``endpoint``: base URL up to ``/v1`` (``http://127.0.0.1:8080/v1``); ``model``: the name sent in
    each request; ``top_k``: ``logprobs`` alternatives per position; ``api_key_env``: name of the
    environment variable holding the key (never the key itself); ``max_tokens``: 0 or 1 tokens to
    generate (some servers reject 0, llama.cpp's treats 0 as unlimited); ``concurrency``: requests
    in flight; ``max_retries`` / ``backoff_s`` / ``max_backoff_s`` / ``timeout_s``: retry policy;
    ``vocab_size``: the model's vocabulary size, needed only by DC-PDD's smoothing."""

    endpoint: str
    model: str
    top_k: int = 5
    api_key_env: str | None = None
    max_tokens: int = 1
    concurrency: int = 4
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 60.0
    vocab_size: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "config.api"
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.endpoint: {self.endpoint!r} must be an http(s) URL such as "
                              "http://127.0.0.1:8080/v1")
        if not self.model:
            raise ConfigError(f"{where}.model: give the model name the server expects")
        if not 0 <= self.top_k <= 100:
            raise ConfigError(f"{where}.top_k: must lie in [0, 100], got {self.top_k}")
        if self.max_tokens not in (0, 1):
            raise ConfigError(f"{where}.max_tokens: must be 0 or 1 (only the prompt is scored), got {self.max_tokens}")
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ConfigError(f"{where}: need concurrency >= 1, max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        if self.vocab_size is not None and self.vocab_size < 2:
            raise ConfigError(f"{where}.vocab_size: must be >= 2, got {self.vocab_size}")
        if self.api_key_env is not None and not self.api_key_env.replace("_", "").isalnum():
            raise ConfigError(f"{where}.api_key_env: {self.api_key_env!r} must be the NAME of an environment "
                              "variable (letters, digits, underscores), not the key itself")
        forbidden = sorted(set(self.extra_body) & {"prompt", "echo", "logprobs", "max_tokens", "model"})
        if forbidden:
            raise ConfigError(f"{where}.extra_body: {forbidden[0]!r} is set by miaudit; remove it")


# -- responses ------------------------------------------------------------------------------------------

@dataclass
class ServerTokens:
    """A prompt as the server tokenised and scored it: ``tokens`` (n,) the token strings,
    ``offsets`` (n,) their character offsets in the prompt (or None), ``log_prob`` (n - unscored,)
    float64 for tokens ``unscored..n-1``, ``top`` the alternatives of each scored position (a list
    of ``(token, log-prob)`` lists, most likely first)."""

    tokens: list[str]
    offsets: list[int] | None
    log_prob: np.ndarray
    top: list[list[tuple[str, float]]]
    unscored: int

    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "offsets": self.offsets, "log_prob": self.log_prob.tolist(),
                "top": [[[t, v] for t, v in alts] for alts in self.top], "unscored": self.unscored}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerTokens:
        return cls(list(data["tokens"]), data["offsets"], np.asarray(data["log_prob"], dtype=np.float64),
                   [[(str(t), float(v)) for t, v in alts] for alts in data["top"]], int(data["unscored"]))


def _top_entries(entry: Any) -> list[tuple[str, float]]:
    """One position's alternatives, most likely first: OpenAI's ``{token: logprob}`` or a list of
    ``{"token", "logprob"}`` objects (some servers)."""
    if entry is None:
        return []
    if isinstance(entry, dict):
        pairs = [(str(t), float(v)) for t, v in entry.items()]
    elif isinstance(entry, list):
        pairs = [(str(e["token"]), float(e["logprob"])) for e in entry]
    else:
        raise APIError(f"top_logprobs entries must be objects, got {type(entry).__name__}")
    return sorted(pairs, key=lambda p: -p[1])


def parse_completion(body: Any, prompt: str) -> ServerTokens:
    """The prompt's tokens and log-probabilities from a ``/v1/completions`` response with ``echo``."""
    try:
        choice = body["choices"][0]
        logprobs = choice["logprobs"]
    except (KeyError, IndexError, TypeError):
        raise APIError("the response has no choices[0].logprobs: the server must support the completions API "
                       "with echo and logprobs (vLLM, llama.cpp's server, TGI's OpenAI route do)") from None
    if not isinstance(logprobs, dict) or "tokens" not in logprobs or "token_logprobs" not in logprobs:
        raise APIError("the response's logprobs lack tokens / token_logprobs: the server ignored echo or logprobs; "
                       "check that it supports echo: true with logprobs on /v1/completions")
    tokens, values = list(logprobs["tokens"]), list(logprobs["token_logprobs"])
    top = list(logprobs.get("top_logprobs") or [None] * len(tokens))
    offsets = logprobs.get("text_offset")
    if len(values) != len(tokens) or len(top) != len(tokens) or (offsets is not None and len(offsets) != len(tokens)):
        raise APIError(f"the response's logprobs have inconsistent lengths ({len(tokens)} tokens, {len(values)} "
                       f"log-probs, {len(top)} top entries)")
    n_prompt = _prompt_length(body, tokens, offsets, prompt)
    tokens, values, top = tokens[:n_prompt], values[:n_prompt], top[:n_prompt]
    offsets = [int(o) for o in offsets[:n_prompt]] if offsets is not None else None
    unscored = 0
    while unscored < len(values) and values[unscored] is None:
        unscored += 1
    rest = values[unscored:]
    if any(v is None for v in rest):
        raise APIError(f"the server gave no log-probability for prompt token {unscored + rest.index(None)} (only the "
                       "first tokens may lack one)")
    log_prob = np.asarray(rest, dtype=np.float64)
    if not np.isfinite(log_prob).all() or (log_prob > 1e-6).any():
        raise APIError("the server returned log-probabilities that are not finite and <= 0")
    return ServerTokens([str(t) for t in tokens], offsets, log_prob,
                        [_top_entries(e) for e in top[unscored:]], unscored)


def _prompt_length(body: dict[str, Any], tokens: list[Any], offsets: list[int] | None, prompt: str) -> int:
    """How many of the echoed tokens belong to the prompt (the rest were generated)."""
    generated = (body.get("usage") or {}).get("completion_tokens")
    if isinstance(generated, int) and 0 <= generated <= len(tokens):
        return len(tokens) - generated
    if offsets is not None:
        return sum(1 for o in offsets if o < len(prompt))
    raise APIError("cannot tell the prompt's tokens from generated ones: the response has neither "
                   "usage.completion_tokens nor logprobs.text_offset; set api.max_tokens: 0 if the server allows it")


# -- the on-disk cache ----------------------------------------------------------------------------------

class ResponseCache:
    """An append-only JSONL file of ``{"key", "value"}`` lines with an in-memory index of offsets (not
    values), safe for concurrent writers in one process. A line cut short by an interruption is dropped
    when the file is opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, int] = {}
        if path.exists():
            self._load()
        self._writer = path.open("ab")

    def _load(self) -> None:
        with self.path.open("rb") as f:
            data_end, offset = 0, 0
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    self._index[json.loads(line)["key"]] = offset
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring an unreadable line of the response cache %s", self.path)
                offset += len(line)
                data_end = offset
        if data_end < self.path.stat().st_size:  # an interrupted write: cut it off
            with self.path.open("r+b") as f:
                f.truncate(data_end)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> Any:
        offset = self._index.get(key)
        if offset is None:
            return None
        with self._lock, self.path.open("rb") as f:
            f.seek(offset)
            return json.loads(f.readline())["value"]

    def put(self, key: str, value: Any) -> None:
        line = (json.dumps({"key": key, "value": value}, separators=(",", ":")) + "\n").encode()
        with self._lock:
            offset = self._writer.tell()
            self._writer.write(line)
            self._writer.flush()
            self._index[key] = offset

    def close(self) -> None:
        self._writer.close()


# -- the HTTP client --------------------------------------------------------------------------------------

class _Retryable(Exception):
    """A failure worth another try (429, 5xx, timeout, dropped connection, truncated JSON)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("Retry-After")) if headers is not None and headers.get("Retry-After") else None
    except ValueError:
        return None


class CompletionsClient:
    """POSTs to ``{endpoint}/completions`` with retries (module doc); ``post(payload, what)`` returns
    the decoded JSON body or raises :class:`APIError`."""

    def __init__(self, config: APITargetConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.url = config.endpoint.rstrip("/") + "/completions"
        self._sleep = sleep
        self.n_requests = 0
        self.n_retries = 0
        self._count_lock = threading.Lock()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        name = self.config.api_key_env
        if name:
            key = os.environ.get(name)
            if not key:
                raise ConfigError(f"config.api.api_key_env: the environment variable {name} is not set; export it "
                                  "with the API key (the key is never written to the config or the run)")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _once(self, data: bytes, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _excerpt(exc.read() if exc.fp is not None else b"")
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code} {detail}", _retry_after(exc.headers)) from None
            hint = {401: "the server refused the credentials: check the key in the environment variable named by "
                         "api.api_key_env", 403: "access denied: check the key's permissions",
                    404: "no such endpoint or model: check api.endpoint (up to /v1) and api.model"}.get(
                exc.code, "the server rejected the request: a prompt longer than the model's context (ReCaLL's "
                          "prefix + document: lower recall.n_shots), or check api.model, api.top_k (servers cap "
                          "logprobs) and api.max_tokens")
            raise APIError(f"HTTP {exc.code} from {self.url}: {hint} ({detail})") from None
        except TimeoutError as exc:
            raise _Retryable(f"timed out after {self.config.timeout_s:g} s ({exc})") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"timed out after {self.config.timeout_s:g} s") from None
            raise _Retryable(f"cannot connect to {self.url} ({exc.reason})") from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Retryable(f"the response is not valid JSON (truncated?): {_excerpt(raw)}") from None

    def post(self, payload: dict[str, Any], what: str) -> Any:
        data = json.dumps(payload).encode()
        headers = self._headers()
        config = self.config
        for attempt in range(config.max_retries + 1):
            with self._count_lock:
                self.n_requests += 1
                self.n_retries += attempt > 0
            try:
                return self._once(data, headers)
            except _Retryable as exc:
                if attempt == config.max_retries:
                    raise APIError(f"{what}: the request to {self.url} failed {attempt + 1} times, last: {exc}; check "
                                   "the server, or raise api.max_retries / api.timeout_s / lower api.concurrency "
                                   "(finished documents are cached: re-running resumes)") from None
                wait = min(config.max_backoff_s, config.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    wait = min(config.max_backoff_s, max(wait, exc.retry_after))
                log.debug("%s: %s; retry %d in %.2f s", what, exc, attempt + 1, wait)
                self._sleep(wait)
        raise AssertionError("unreachable")


def _excerpt(raw: bytes, limit: int = 240) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return (text[:limit] + "...") if len(text) > limit else (text or "(empty body)")


# -- the target -------------------------------------------------------------------------------------------

@dataclass
class RequestEstimate:
    """What an audit will send: per pass, documents, those already cached, and rough prompt tokens."""

    passes: dict[str, dict[str, int]]
    note: str = (f"prompt tokens are estimated at {BYTES_PER_TOKEN:g} UTF-8 bytes per token (the server's "
                 "tokenizer decides); cached prompts cost nothing")

    @property
    def requests(self) -> int:
        return sum(p["to_send"] for p in self.passes.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(p["prompt_tokens_to_send"] for p in self.passes.values())

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "prompt_tokens_to_send": self.prompt_tokens, "passes": self.passes,
                "note": self.note}


class APICausalLM:
    """A causal LM behind an OpenAI-compatible completions endpoint (module doc), with the methods of
    :class:`~miaudit.llm.target.HFCausalLM` that need no weights: :meth:`token_signals`,
    :meth:`mean_log_likelihoods`, :meth:`lowercase_log_likelihoods`, :meth:`prefix_log_likelihoods`,
    :meth:`neighbour_log_likelihoods`, :meth:`token_counts`."""

    access = ACCESS

    def __init__(self, config: APITargetConfig, *, cache_dir: str | Path | None = None, progress: bool = True,
                 shard_size: int = 256, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.name = config.model
        self.client = CompletionsClient(config, sleep=sleep)
        self.progress = progress
        self.shard_size = int(shard_size)
        self._vocab: dict[str, int] = {}
        self._vocab_lock = threading.Lock()
        self._cache = (ResponseCache(Path(cache_dir) / f"api-{self.fingerprint()}" / "responses.jsonl")
                       if cache_dir is not None else None)
        self.n_unscored: dict[int, int] = {}  # leading unscored tokens -> number of prompts
        self.seconds = 0.0

    # -- identity ---------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Fingerprint of what determines the responses: endpoint, model, k, max_tokens (never the key)."""
        c = self.config
        return fingerprint("openai-completions", _CACHE_VERSION, c.endpoint.rstrip("/"), c.model, c.top_k,
                           c.max_tokens, c.extra_body)

    @property
    def vocab_size(self) -> int:
        """The declared vocabulary size (``api.vocab_size``), else the number of distinct tokens seen."""
        return int(self.config.vocab_size) if self.config.vocab_size else max(2, len(self._vocab))

    def info(self) -> dict[str, Any]:
        """The ``target`` section of ``metrics.json``."""
        c = self.config
        scored_first = sorted(self.n_unscored)
        return {"model": c.model, "endpoint": c.endpoint, "access": ACCESS, "top_k": c.top_k,
                "max_tokens": c.max_tokens, "tokenisation": "the server's: scores use the tokens the server returned",
                "leading_unscored_tokens": scored_first,
                "note": ("the server gives no log-probability for the first token of a prompt: it is context only"
                         if any(scored_first) else "every prompt token was scored"),
                "requests": self.client.n_requests, "retries": self.client.n_retries,
                "distinct_tokens": len(self._vocab), "vocab_size": self.config.vocab_size,
                "fingerprint": self.fingerprint(), "api_key": "from $" + c.api_key_env if c.api_key_env else None}

    def token_id(self, token: str) -> int:
        """The integer id of a server token string (interned in order of first sight)."""
        with self._vocab_lock:
            return self._vocab.setdefault(token, len(self._vocab))

    # -- requests ---------------------------------------------------------------------------------------
    def _payload(self, prompt: str) -> dict[str, Any]:
        c = self.config
        return {**c.extra_body, "model": c.model, "prompt": prompt, "max_tokens": c.max_tokens, "echo": True,
                "logprobs": c.top_k, "temperature": 0.0}

    def _key(self, prompt: str) -> str:
        return fingerprint(self.fingerprint(), prompt, length=32)

    def score_prompt(self, prompt: str, what: str = "prompt") -> ServerTokens:
        """The server's tokens and log-probabilities of ``prompt`` (cached)."""
        key = self._key(prompt)
        if self._cache is not None and key in self._cache:
            result = ServerTokens.from_json(self._cache.get(key))
        else:
            result = parse_completion(self.client.post(self._payload(prompt), what), prompt)
            if self._cache is not None:
                self._cache.put(key, result.to_json())
        with self._vocab_lock:
            self.n_unscored[result.unscored] = self.n_unscored.get(result.unscored, 0) + 1
        return result

    def _map(self, prompts: Sequence[str], desc: str, what: Callable[[int], str]) -> Iterator[ServerTokens]:
        """Responses in order, ``concurrency`` requests in flight, ``shard_size`` prompts held at a time."""
        bar = tqdm(total=len(prompts), desc=f"{desc} {self.name}", unit="doc", disable=not self.progress,
                   leave=False)
        start = time.perf_counter()
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="miaudit-api") as pool:
            for a in range(0, len(prompts), self.shard_size):
                futures = [pool.submit(self.score_prompt, p, what(a + i))
                           for i, p in enumerate(prompts[a:a + self.shard_size])]
                for future in futures:
                    try:
                        yield future.result()
                    except BaseException:
                        for other in futures:
                            other.cancel()
                        raise
                    bar.update(1)
        self.seconds += time.perf_counter() - start
        bar.close()

    # -- signals ----------------------------------------------------------------------------------------
    def token_signals(self, texts: Sequence[str], *, attach_text: bool = True) -> list[TokenSignals]:
        return list(self.iter_token_signals(texts, attach_text=attach_text))

    def iter_token_signals(self, texts: Sequence[str], *, attach_text: bool = True) -> Iterator[TokenSignals]:
        """One record per text (access ``top-k log-probs``: log p of each scored token, no moments of
        the whole distribution), streamed in order."""
        texts = check_texts(texts)
        for i, result in enumerate(self._map(texts, "signals", lambda i: f"document {i}")):
            if result.log_prob.size == 0:
                raise DataError(f"document {i} ({texts[i]!r:.40}) has no scored token: the server scored none of its "
                                f"{len(result.tokens)} tokens; remove one-token documents")
            ids = np.array([self.token_id(t) for t in result.tokens[result.unscored:]], dtype=np.int64)
            yield topk_signals(ids, result.log_prob, vocab_size=self.vocab_size, text=texts[i] if attach_text else None)

    def mean_log_likelihoods(self, texts: Sequence[str], *, desc: str = "log-likelihood") -> np.ndarray:
        """Mean log-probability per scored token ``(n,)`` of each text."""
        texts = check_texts(texts)
        return np.array([r.log_prob.mean() if r.log_prob.size else _no_token(i, texts)
                         for i, r in enumerate(self._map(texts, desc, lambda i: f"{desc} of document {i}"))])

    def lowercase_log_likelihoods(self, texts: Sequence[str]) -> np.ndarray:
        """Mean log-likelihood ``(n,)`` of each text lowercased (the Lowercase attack)."""
        return self.mean_log_likelihoods([t.lower() for t in check_texts(texts)], desc="lowercase")

    def prefix_log_likelihoods(self, texts: Sequence[str], shots: Sequence[str], *, separator: str = "\n\n"
                               ) -> np.ndarray:
        """ReCaLL: mean log-likelihood ``(n,)`` of each text's tokens after the prefix ``shots`` joined by
        ``separator`` (and ``separator`` once more). The server tokenises prefix + text as one string;
        the text's tokens are those from its first character on (:func:`_first_token_at`), less as many leading
        tokens as the server leaves unscored at a prompt's start, so that the same tokens are scored
        with and without the prefix."""
        texts, prefix = check_texts(texts), separator.join(check_texts(shots)) + separator
        out = np.empty(len(texts))
        prompts = [prefix + t for t in texts]
        for i, r in enumerate(self._map(prompts, "recall prefix", lambda i: f"recall prefix + document {i}")):
            # the text's tokens start at token `first`; the server's unscored leading tokens are dropped from
            # them too (log_prob[j] belongs to token j + unscored)
            values = r.log_prob[_first_token_at(r, prompts[i], len(prefix)):]
            if values.size == 0:
                raise DataError(f"document {i}: no token of it is scored after the ReCaLL prefix; remove one-token "
                                "documents")
            out[i] = values.mean()
        return out

    def neighbour_log_likelihoods(self, texts: Sequence[str], perturb: Callable[[str], Sequence[str]]
                                  ) -> list[np.ndarray]:
        """Mean log-likelihoods of the neighbours ``perturb(text)`` of each text, one array per text."""
        return neighbour_log_likelihoods(texts, perturb, self.mean_log_likelihoods)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Occurrences ``(vocab_size,)`` of each server token in ``texts`` (DC-PDD's reference corpus),
        every prompt token counted (scored or not); ids as in :meth:`token_id`."""
        if not self.config.vocab_size:
            raise ConfigError("attack 'dc_pdd' through an API needs the model's vocabulary size for its Laplace "
                              "smoothing: set api.vocab_size")
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for r in self._map(check_texts(texts), "dc_pdd corpus", lambda i: f"reference corpus document {i}"):
            for token in r.tokens:
                token_id = self.token_id(token)
                if token_id >= counts.size:
                    raise ConfigError(f"the server returned more than api.vocab_size = {self.config.vocab_size} "
                                      "distinct tokens; set api.vocab_size to the model's vocabulary size")
                counts[token_id] += 1
        return counts

    def token_pieces(self, text: str) -> tuple[list[str], int]:
        """``(token strings, number of leading unscored tokens)`` of ``text`` as the server scored it."""
        result = self.score_prompt(text, "token view")
        return result.tokens, result.unscored

    # -- dry run ----------------------------------------------------------------------------------------
    def estimate(self, passes: dict[str, Sequence[str]]) -> RequestEstimate:
        """Requests and rough prompt tokens of ``passes`` (name -> prompts), without sending anything."""
        out = {}
        for name, prompts in passes.items():
            todo = [p for p in prompts if self._cache is None or self._key(p) not in self._cache]
            out[name] = {"prompts": len(prompts), "cached": len(prompts) - len(todo), "to_send": len(todo),
                         "prompt_tokens_to_send": int(sum(math.ceil(len(p.encode()) / BYTES_PER_TOKEN)
                                                          for p in todo)),
                         "completion_tokens": len(todo) * self.config.max_tokens}
        return RequestEstimate(out)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def topk_signals(token_ids: np.ndarray, log_prob: np.ndarray, *, vocab_size: int, text: str | None = None
                 ) -> TokenSignals:
    """A :class:`TokenSignals` record with ``top-k log-probs`` access: ``log_prob`` (T,) of the observed
    tokens ``token_ids`` (T,); no entropy or moments of the whole distribution, no tempered signals."""
    t = log_prob.shape[0]
    empty = np.empty((0, t))
    return TokenSignals(token_ids=np.asarray(token_ids, dtype=np.int64), log_prob=np.asarray(log_prob, np.float64),
                        entropy=None, mean_logp=None, var_logp=None, betas=np.empty(0), beta_log_prob=empty,
                        beta_mu=empty, beta_sigma=empty, vocab_size=vocab_size, text=text, access=ACCESS)


def _first_token_at(result: ServerTokens, prompt: str, position: int) -> int:
    """Index of the first token of ``result`` that starts at or after character ``position`` of ``prompt``.

    Token starts come from ``text_offset`` (else the token strings' lengths) in the server's own text,
    which may carry a leading space that the prompt lacks (SentencePiece's dummy prefix, as llama.cpp
    reports it); that shift is measured from the text's total length."""
    if result.offsets is not None:
        starts = list(result.offsets)
    else:
        starts = np.r_[0, np.cumsum([len(t) for t in result.tokens])[:-1]].astype(int).tolist()
    shift = starts[-1] + len(result.tokens[-1]) - len(prompt)
    if shift not in (0, 1):
        raise APIError(f"cannot locate the document inside the prompt from the server's tokens (their text is "
                       f"{shift:+d} characters off the prompt); drop the recall attack for this server")
    return next((j for j, start in enumerate(starts) if start >= position + shift), len(starts))


def _no_token(i: int, texts: Sequence[str]) -> float:
    raise DataError(f"text {i} ({texts[i]!r:.40}) has no token the server scored; remove one-token texts")


__all__ = ["ACCESS", "APICausalLM", "APIError", "APITargetConfig", "CompletionsClient", "RequestEstimate",
           "ResponseCache", "ServerTokens", "parse_completion", "topk_signals"]
