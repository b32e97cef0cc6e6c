"""Hugging Face causal language models as audit targets.

:class:`HFCausalLM` wraps a causal LM and its tokenizer (a local folder or a hub id, any dtype, any
device) and turns documents into :class:`~miaudit.llm.signals.TokenSignals` with ONE forward pass per
document: every reference-free attack reads the same record. The extra passes that some attacks
need are separate methods: lowercased text (``lowercase``), a reference model (``ref``), a non-member
prefix (``recall``), per-document gradients (``gradnorm``) and perturbed neighbours
(``neighbourhood``).

Tokenisation and BOS. Texts are tokenised without the tokenizer's own special tokens; then
``bos="auto"`` (default) prepends the tokenizer's BOS id when it has one, so that every token of the
text is scored (the first one is predicted from BOS). A tokenizer without a BOS token (``"auto"``)
or ``bos="never"`` leaves the first text token as context only: it is never scored, because nothing
predicts it. ``bos="always"`` demands a BOS token. A document must leave at least one scored token:
with no BOS, a one-token document is an error.

Long documents. ``max_length`` defaults to the model's context size. ``long_documents="truncate"``
keeps the first ``max_length`` positions; ``"sliding_window"`` (default) scores every token exactly
once with windows of ``max_length`` positions moved ``stride`` tokens at a time, so each token after
the first window sees at least ``max_length - stride`` tokens of context (the usual strided
perplexity evaluation).

Caching. Signals are cached on disk under ``cache_dir`` by a fingerprint of (model weights,
tokenizer, texts, pass and its parameters), in shards of ``shard_size`` documents: a second attack or
a second run costs no forward pass, and an interrupted run resumes at the first missing shard. Shards
are verified files (:mod:`miaudit.utils.cache`): one that is truncated, empty or edited is reported,
naming the file, and recomputed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from miaudit.errors import ConfigError, DataError, SignalError, model_load_error
from miaudit.llm.attacks.dc_pdd import token_counts
from miaudit.llm.signals import TokenSignals, compute_token_signals, token_log_probs
from miaudit.llm.texts import check_texts, neighbour_log_likelihoods
from miaudit.utils.cache import load_verified_npz, save_verified_npz, warn_damaged
from miaudit.utils.device import resolve_device
from miaudit.utils.fingerprint import fingerprint
from miaudit.utils.logs import progress as progress_bar
from miaudit.utils.logs import sync_library_progress

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

BosPolicy = Literal["auto", "always", "never"]
LongDocuments = Literal["sliding_window", "truncate"]
#: GradNorm: most bytes of per-window float32 gradients held at once (with batch_size windows at most)
GRAD_BATCH_BYTES = 1 << 30
#: a tokenizer with fewer tokens than this fraction of the model's vocabulary is reported as a mismatch
SMALL_TOKENIZER_RATIO = 0.5
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


# -- loading ----------------------------------------------------------------------------------------

def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("language-model audits need Hugging Face transformers; install miaudit[llm]") from None
    sync_library_progress()  # -q and non-terminal output also silence transformers' own loading bars
    return transformers


@dataclass
class LLMModelConfig:
    """A causal LM: a local folder or a hub id (downloaded unless ``local_files_only``)."""

    name_or_path: str
    tokenizer: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    device: str = "cpu"
    local_files_only: bool = False
    trust_remote_code: bool = False
    batch_size: int = 8
    max_length: int | None = None
    long_documents: Literal["sliding_window", "truncate"] = "sliding_window"
    stride: int | None = None
    bos: Literal["auto", "always", "never"] = "auto"


def load_tokenizer(name_or_path: str, *, revision: str | None = None, local_files_only: bool = False,
                   trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained`` (a folder or hub id), or a single ``tokenizers`` JSON file such as
    Pythia's ``20B_tokenizer.json``; a one-line error for a path or hub id that does not load."""
    transformers = _transformers()
    try:
        if str(name_or_path).endswith(".json") and Path(name_or_path).is_file():
            return transformers.PreTrainedTokenizerFast(tokenizer_file=str(name_or_path))
        return transformers.AutoTokenizer.from_pretrained(name_or_path, revision=revision,
                                                          local_files_only=local_files_only,
                                                          trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers and tokenizers raise many types for files they cannot parse
        raise model_load_error("tokenizer", name_or_path, exc) from None


def load_causal_lm(name_or_path: str, *, dtype: str = "auto", device: str = "cpu", revision: str | None = None,
                   local_files_only: bool = False, trust_remote_code: bool = False) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` in ``dtype`` ("auto" = as saved) on ``device``, in eval mode.

    Weights load without running pickled code; a damaged ``model.safetensors``, a pickled
    ``pytorch_model.bin`` and an unavailable device are one-line errors.
    """
    transformers = _transformers()
    if dtype != "auto" and dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not allowed; choose auto, {', '.join(DTYPES)}")
    target = resolve_device(device, where="model.device")
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            name_or_path, revision=revision, local_files_only=local_files_only, trust_remote_code=trust_remote_code,
            dtype="auto" if dtype == "auto" else DTYPES[dtype])
    except Exception as exc:  # transformers, safetensors and torch raise many types for files they cannot load
        raise model_load_error("causal LM", name_or_path, exc) from None
    return model.to(target).eval()


# -- tokenisation -------------------------------------------------------------------------------------

def encode_text(tokenizer: Any, text: str, *, bos: BosPolicy = "auto") -> list[int]:
    """Token ids of ``text`` without the tokenizer's special tokens, BOS first per ``bos`` (module doc)."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"cannot score an empty or whitespace-only text ({text!r:.30}); remove it from the dataset")
    ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    bos_id = tokenizer.bos_token_id
    if bos == "always" and bos_id is None:
        raise ConfigError("bos='always' but the tokenizer has no BOS token; use bos='auto' or 'never'")
    if bos != "never" and bos_id is not None:
        ids = [bos_id] + ids
    return ids


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Fingerprint of the vocabulary (token -> id) and special tokens: equal means same tokenisation map."""
    return fingerprint(sorted(tokenizer.get_vocab().items()), tokenizer.bos_token_id, tokenizer.eos_token_id,
                       type(tokenizer).__name__)


def _tensor_digest(t: torch.Tensor) -> list[Any]:
    """Shape, dtype, exact float64 sum and a strided sample of ``t`` (reads it once on its device)."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // 65536)
    sample = flat[::step].float().cpu().numpy()
    return [list(t.shape), str(t.dtype), float(torch.sum(flat, dtype=torch.float64)), sample]


def model_fingerprint(model: torch.nn.Module) -> str:
    """Fingerprint of a model's class, config and weights (a strided sample and the sum of each tensor)."""
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)
    config_dict = to_dict() if callable(to_dict) else {}
    config_dict = {k: v for k, v in config_dict.items() if k not in ("_name_or_path", "transformers_version")}
    state = {name: _tensor_digest(t) for name, t in model.state_dict().items()}
    return fingerprint(type(model).__qualname__, json.dumps(config_dict, sort_keys=True, default=str), state)


# -- the forward pass -----------------------------------------------------------------------------------

@dataclass
class _Segment:
    doc: int  # index of the document in the current chunk
    ids: list[int]  # model input (one window)
    first: int  # index in ``ids`` of the first scored target
    last: bool  # the document's last window


def _plan_windows(n: int, first_target: int, max_length: int, stride: int,
                  mode: LongDocuments) -> list[tuple[int, int, int]]:
    """Windows ``(begin, end, first_target)`` over a sequence of ``n`` tokens scoring targets
    ``first_target .. n-1`` once each (target j is predicted by the logits at position j - 1)."""
    if n <= max_length:
        return [(0, n, first_target)]
    if mode == "truncate":
        return [(0, max_length, first_target)] if first_target < max_length else []
    windows, scored_to, begin = [], first_target, 0
    while scored_to < n:
        end = min(begin + max_length, n)
        if end > scored_to:
            windows.append((begin, end, max(scored_to, begin + 1)))
            scored_to = end
        begin += stride
    return windows


def per_row_gradients(model: torch.nn.Module, ids: torch.Tensor, weights: torch.Tensor, names: set[str]
                      ) -> dict[str, torch.Tensor]:
    """Per-row parameter gradients ``{name: (B, *shape)}`` of ``sum_t weights[b, t] * loss[b, t]`` for each
    row ``b`` of a right-padded batch ``ids`` (B, L) of a causal LM (``weights`` (B, L - 1), 0 on padding;
    the real tokens of a row never see its padding, so no attention mask is needed), for the
    parameters ``names`` (as ``model.named_parameters()`` names them).

    One batched forward and backward pass gives the gradient of the loss at the output of every module
    that owns parameters; each such module's per-row parameter gradients then come from
    ``torch.func.vmap`` of ``vjp`` through that module alone (a Linear layer: one batched matrix
    product), the standard per-sample-gradient construction. A parameter shared by several modules or
    calls sums their parts. A module whose output is shared by every row (a broadcast, e.g. GPT-2's
    position embedding of ``(1, L)`` position ids) loses the rows' parts; the batch is then computed one
    row at a time."""
    from torch.func import functional_call, vjp, vmap

    canonical = {id(q): n for n, q in model.named_parameters() if n in names}
    owners: dict[torch.nn.Module, dict[str, str]] = {}
    for module in model.modules():
        own = {n: canonical[id(q)] for n, q in module.named_parameters(recurse=False) if id(q) in canonical}
        if own:
            owners[module] = own
    captured: list[tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any], torch.Tensor]] = []

    def keep(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            captured.append((module, args, kwargs, output))

    handles = [m.register_forward_hook(keep, with_kwargs=True) for m in owners]
    try:
        with torch.enable_grad():
            logits = model(input_ids=ids).logits[:, :-1]
            losses = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                       ids[:, 1:].reshape(-1), reduction="none")
            loss = (losses.view(weights.shape) * weights).sum()
            outputs = torch.autograd.grad(loss, [c[3] for c in captured], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    grads: dict[str, torch.Tensor] = {}
    for (module, args, kwargs, _), g_out in zip(captured, outputs):
        if g_out is None:
            continue
        params = {n: q.detach() for n, q in module.named_parameters(recurse=False) if n in owners[module]}
        inputs = tuple(a.detach() for a in args)
        explicit = _explicit_row_gradients(module, inputs, kwargs, g_out.detach())
        if explicit is not None:  # Linear and Embedding: the closed forms, no vmap
            for local, value in explicit.items():
                if local in owners[module]:
                    name = owners[module][local]
                    grads[name] = grads[name] + value if name in grads else value
            continue

        def row(xs: tuple[torch.Tensor, ...], g: torch.Tensor, module: torch.nn.Module = module,
                params: dict[str, torch.Tensor] = params, kwargs: dict[str, Any] = kwargs) -> dict[str, torch.Tensor]:
            def through_module(weights: dict[str, torch.Tensor]) -> torch.Tensor:
                return functional_call(module, weights, tuple(x[None] for x in xs), kwargs)[0]
            return vjp(through_module, params)[1](g)[0]

        for local, value in vmap(row)(inputs, g_out.detach()).items():
            name = owners[module][local]
            grads[name] = grads[name] + value if name in grads else value
    if ids.shape[0] > 1 and any(value.shape[0] != ids.shape[0] for value in grads.values()):
        rows = [per_row_gradients(model, ids[b:b + 1], weights[b:b + 1], names) for b in range(ids.shape[0])]
        return {name: torch.cat([row[name] for row in rows]) for name in rows[0]}
    return grads


def _explicit_row_gradients(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], kwargs: dict[str, Any],
                            g: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Per-row parameter gradients of an ``nn.Linear`` (``W``: ``g^T x`` per row, ``b``: ``sum_t g``) or a
    plain ``nn.Embedding`` (``g`` added at each row's ids), from its input ``x`` (B, T, in) or ids (B, T)
    and output gradient ``g`` (B, T, out); None for any other module."""
    if kwargs or len(inputs) != 1:
        return None
    (x,) = inputs
    if type(module) is torch.nn.Linear and x.ndim == 3:
        out = {"weight": torch.einsum("bto,bti->boi", g, x)}
        if module.bias is not None:
            out["bias"] = g.sum(1)
        return out
    if (type(module) is torch.nn.Embedding and x.ndim == 2 and module.max_norm is None
            and not module.scale_grad_by_freq and module.padding_idx is None):
        weight = torch.zeros((x.shape[0],) + tuple(module.weight.shape), dtype=g.dtype, device=g.device)
        return {"weight": weight.scatter_add_(1, x[..., None].expand(-1, -1, g.shape[-1]), g)}
    return None


class HFCausalLM:
    """A Hugging Face causal LM + tokenizer as an audit target (see the module doc for BOS,
    long documents and caching).

    ``model`` / ``tokenizer``: loaded objects (use :meth:`from_pretrained` for a folder or hub id).
    ``batch_size``: windows per forward pass. ``max_length``: context size (default: the model's).
    ``stride``: sliding-window step (default ``max_length // 2``). ``cache_dir``: where signals are
    cached (None: no cache). ``signal_params``: keyword arguments for the signal engine (e.g. the
    inverse-temperature grid), part of the cache key.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        name: str | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        long_documents: LongDocuments = "sliding_window",
        stride: int | None = None,
        bos: BosPolicy = "auto",
        cache_dir: str | Path | None = None,
        shard_size: int = 512,
        progress: bool = True,
        signal_params: dict[str, Any] | None = None,
    ) -> None:
        if long_documents not in ("sliding_window", "truncate"):
            raise ConfigError(f"long_documents {long_documents!r} is not allowed; choose sliding_window or truncate")
        if bos not in ("auto", "always", "never"):
            raise ConfigError(f"bos {bos!r} is not allowed; choose auto, always or never")
        if bos == "always" and tokenizer.bos_token_id is None:
            raise ConfigError("bos='always' but the tokenizer has no BOS token; use bos='auto' or 'never'")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model, "name_or_path", None) or type(model).__name__
        self.batch_size = int(batch_size)
        model_max = _model_max_length(model)
        self.max_length = int(max_length or model_max or 1024)
        if model_max and self.max_length > model_max:
            raise ConfigError(f"max_length {self.max_length} exceeds the model's context of {model_max} positions")
        self.stride = int(stride or max(1, self.max_length // 2))
        if self.max_length < 2 or not 1 <= self.stride < self.max_length:
            raise ConfigError(f"need max_length >= 2 and 1 <= stride < max_length; got {self.max_length}, "
                              f"{self.stride}")
        self.long_documents = long_documents
        self.bos = bos
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.shard_size = int(shard_size)
        self.progress = progress
        self._check_vocabulary()
        self.signal_params = dict(signal_params or {})
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, tokenizer: str | Any | None = None, dtype: str = "auto",
                        device: str = "cpu", revision: str | None = None, local_files_only: bool = False,
                        trust_remote_code: bool = False, **kwargs: Any) -> HFCausalLM:
        """Load a local folder or a hub id (``local_files_only=False`` downloads for online users)."""
        model = load_causal_lm(name_or_path, dtype=dtype, device=device, revision=revision,
                               local_files_only=local_files_only, trust_remote_code=trust_remote_code)
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer or name_or_path, revision=None if tokenizer else revision,
                                       local_files_only=local_files_only, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, name=kwargs.pop("name", name_or_path), **kwargs)

    # -- checks and identity ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def _pad_id(self) -> int:
        """Any id fills padded positions (masked out); the tokenizer's pad id when it has one."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def _check_vocabulary(self) -> None:
        """Refuse a tokenizer larger than the model's vocabulary; warn about one far smaller (a mismatch:
        models pad their vocabulary by a few hundred entries at most, not by half)."""
        n_tokenizer = len(self.tokenizer)
        if n_tokenizer > self.vocab_size:
            raise ConfigError(f"the tokenizer has {n_tokenizer} tokens but the model's output layer only "
                              f"{self.vocab_size}: they do not belong together; load the model's own tokenizer")
        if n_tokenizer < SMALL_TOKENIZER_RATIO * self.vocab_size:
            logger.warning("the tokenizer of %s has %d tokens but the model's output layer %d: they probably do not "
                           "belong together (token ids would mean other words to the model); load the model's own "
                           "tokenizer", self.name, n_tokenizer, self.vocab_size)

    def check_same_tokenizer(self, other: HFCausalLM) -> None:
        """A reference model must tokenise identically: same vocabulary, same BOS handling."""
        if tokenizer_fingerprint(self.tokenizer) != tokenizer_fingerprint(other.tokenizer) or self.bos != other.bos:
            raise ConfigError(f"the reference model {other.name!r} uses another tokenizer than the target "
                              f"{self.name!r}; token-level comparisons need the same tokenizer (pick a reference "
                              "model of the same family)")

    def fingerprint(self) -> str:
        """Fingerprint of (weights, tokenizer, tokenisation and window settings, engine parameters)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(model_fingerprint(self.model), tokenizer_fingerprint(self.tokenizer),
                                            self.bos, self.max_length, self.long_documents, self.stride,
                                            {k: v for k, v in self.signal_params.items() if k != "chunk_rows"})
        return self._fingerprint

    # -- tokenisation -------------------------------------------------------------------------------
    @property
    def has_bos(self) -> bool:
        """Whether documents start with a BOS token (then every text token is scored)."""
        return self.bos != "never" and self.tokenizer.bos_token_id is not None

    def encode(self, text: str) -> list[int]:
        return encode_text(self.tokenizer, text, bos=self.bos)

    def _document(self, text: str, prefix: Sequence[int] = ()) -> tuple[list[int], int]:
        """``(ids, first scored target)`` of ``text`` after an optional ``prefix`` of token ids."""
        ids = self.encode(text)
        has_bos = self.has_bos
        if len(ids) < 2:
            raise DataError(f"document {text!r:.40} has one token and no BOS before it: nothing to score; "
                            "remove one-token documents or use a tokenizer with a BOS token")
        if not prefix:
            return ids, 1
        bos, body = (ids[:1], ids[1:]) if has_bos else ([], ids)
        # the prefix's end is kept, next to the document: all that fits beside it; with sliding windows
        # at least half the context (a long document's later windows slide past the prefix), while a
        # truncated document keeps exactly the tokens it has without the prefix
        room = self.max_length - len(bos) - len(body)
        keep = max(room, (self.max_length - len(bos)) // 2) if self.long_documents == "sliding_window" else room
        context = list(prefix)[-keep:] if keep > 0 else []
        # the scored tokens are those of the unprefixed document: without a BOS the first stays context
        return bos + context + body, len(bos) + len(context) + (0 if has_bos else 1)

    # -- forward ------------------------------------------------------------------------------------
    def _segments(self, documents: list[tuple[list[int], int]], d: int) -> list[_Segment]:
        ids, first = documents[d]
        windows = _plan_windows(len(ids), first, self.max_length, self.stride, self.long_documents)
        if not windows:
            raise DataError(f"document {d} has no token left to score after truncation to {self.max_length} "
                            "positions; raise max_length or use long_documents='sliding_window'")
        return [_Segment(d, ids[b:e], t - b, k == len(windows) - 1) for k, (b, e, t) in enumerate(windows)]

    @torch.no_grad()
    def _logits(self, documents: list[tuple[list[int], int]]) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(index, logits (T, V) float32, targets (T,) int64)`` per document, where row t of ``logits``
        predicts ``targets[t]``; a long document's windows are concatenated.

        Documents come longest first (similar lengths share a batch, little padding) and each is
        yielded as soon as its last window is through, so only a batch of logits is held at a time.
        """
        by_length = sorted(range(len(documents)), key=lambda d: -len(documents[d][0]))
        segments = [s for d in by_length for s in self._segments(documents, d)]
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(segments), self.batch_size):
            batch = segments[start:start + self.batch_size]
            ids, mask = _pad([s.ids for s in batch], self._pad_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            for row, s in enumerate(batch):
                parts.append((logits[row, s.first - 1:len(s.ids) - 1].float(), ids[row, s.first:len(s.ids)]))
                if s.last:
                    yield s.doc, torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
                    parts = []


    # -- signals: the one pass ----------------------------------------------------------------------
    def token_signals(self, texts: Sequence[str], *, attach_text: bool = True) -> list[TokenSignals]:
        """One :class:`TokenSignals` per text from ONE forward pass each (cached); ``attach_text`` stores
        the text in the record (zlib needs it)."""
        return list(self.iter_token_signals(texts, attach_text=attach_text))

    def iter_token_signals(self, texts: Sequence[str], *, attach_text: bool = True) -> Iterator[TokenSignals]:
        """Stream the signals shard by shard (``shard_size`` documents): memory stays constant in the
        number of documents, and shards already in the cache cost no forward pass."""
        texts = check_texts(texts)
        bar = progress_bar(total=len(texts), desc=f"signals {self._short_name()}", unit="doc", enabled=self.progress,
                           leave=False)
        for start in range(0, len(texts), self.shard_size):
            chunk = texts[start:start + self.shard_size]
            shard = self._cached("token_signals", chunk, lambda c: self._compute_signals(c, bar),
                                 _encode_signals, _decode_signals)
            bar.n = min(len(texts), start + len(chunk))
            bar.refresh()
            for text, record in zip(chunk, shard):
                yield record.with_signals(text=text) if attach_text else record
        bar.close()

    def _compute_signals(self, texts: list[str], bar: Any) -> list[TokenSignals]:
        out: list[TokenSignals | None] = [None] * len(texts)
        for i, logits, targets in self._logits([self._document(t) for t in texts]):
            out[i] = compute_token_signals(logits, targets, **self.signal_params)
            bar.update(1)
        return out  # type: ignore[return-value]

    # -- signals: extra passes ----------------------------------------------------------------------
    def mean_log_likelihoods(self, texts: Sequence[str], *, prefix: Sequence[int] = (), desc: str = "log-likelihood"
                             ) -> np.ndarray:
        """Mean log-likelihood per scored token ``(n,)`` of each text, optionally after a ``prefix`` of
        token ids that is context only (ReCaLL); the scored tokens are the same with and without it."""
        prefix = [int(t) for t in prefix]
        return self._per_text_array(texts, "mean_ll", prefix, self._compute_mean_ll, desc)

    def _per_text_array(self, texts: Sequence[str], kind: str, setting: Any,
                        compute: Callable[[list[str], Any, Any], np.ndarray], desc: str) -> np.ndarray:
        """``(n,)`` values of an extra pass, computed shard by shard (``compute(texts, setting, bar)``) and
        cached per shard under ``kind`` and ``setting``, with one progress bar."""
        texts = check_texts(texts)
        out = []
        bar = progress_bar(total=len(texts), desc=f"{desc} {self._short_name()}", unit="doc", enabled=self.progress,
                           leave=False)
        for start in range(0, len(texts), self.shard_size):
            chunk = texts[start:start + self.shard_size]
            out.append(self._cached(kind, (chunk, setting), lambda c: compute(c[0], c[1], bar),
                                    _encode_array, _decode_array))
            bar.n = min(len(texts), start + len(chunk))
            bar.refresh()
        bar.close()
        return np.concatenate(out)

    def _compute_mean_ll(self, texts: list[str], prefix: list[int], bar: Any) -> np.ndarray:
        values = np.empty(len(texts))
        for i, logits, targets in self._logits([self._document(t, prefix) for t in texts]):
            values[i] = float(token_log_probs(logits, targets).mean())
            bar.update(1)
        return values

    def lowercase_log_likelihoods(self, texts: Sequence[str]) -> np.ndarray:
        """Mean log-likelihood ``(n,)`` of each text lowercased (the Lowercase attack, Carlini et al. 2021)."""
        return self.mean_log_likelihoods([t.lower() for t in check_texts(texts)], desc="lowercase")

    def prefix_ids(self, shots: Sequence[str], *, separator: str = "\n\n") -> list[int]:
        """Token ids of the ReCaLL prefix: the non-member ``shots`` joined by ``separator``, then
        ``separator`` again so the document starts a new paragraph (no BOS; :meth:`_document` keeps the
        prefix's end when prefix + document exceed ``max_length``)."""
        shots = check_texts(shots)
        return list(self.tokenizer(separator.join(shots) + separator, add_special_tokens=False,
                                   verbose=False)["input_ids"])

    def prefix_log_likelihoods(self, texts: Sequence[str], shots: Sequence[str], *, separator: str = "\n\n"
                               ) -> np.ndarray:
        """Mean log-likelihood ``(n,)`` of each text after the non-member prefix built from ``shots`` (ReCaLL)."""
        return self.mean_log_likelihoods(texts, prefix=self.prefix_ids(shots, separator=separator),
                                         desc="recall prefix")

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Occurrences ``(vocab_size,)`` of each token id in ``texts`` (DC-PDD's reference corpus), tokenised
        without special tokens."""
        return token_counts([self.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in texts],
                            self.vocab_size)

    def neighbour_log_likelihoods(self, texts: Sequence[str], perturb: Callable[[str], Sequence[str]]
                                  ) -> list[np.ndarray]:
        """Mean log-likelihoods of the neighbours ``perturb(text)`` of each text (Mattern et al. 2023):
        one ``(n_neighbours,)`` array per text. ``perturb`` is the user's perturbation model (e.g. a
        masked LM replacing words); it must return at least one non-empty text."""
        return neighbour_log_likelihoods(texts, perturb, self.mean_log_likelihoods, progress=self.progress)

    def gradient_norms(self, texts: Sequence[str], *, p: float = math.inf) -> np.ndarray:
        """GradNorm's signal ``(n,)``: for each text, the mean over parameter tensors of the ``p``-norm of
        the gradient of its mean token loss (white-box), as :func:`~miaudit.llm.signals.gradient_norm`.

        Per-document gradients come in batches (:func:`per_row_gradients`): windows of several documents
        (longest first, right-padded: a causal model's real tokens never see the padding), at most
        ``batch_size`` windows and :data:`GRAD_BATCH_BYTES` of per-window gradients at a time; a long
        document's windows are summed, weighted by their share of its scored tokens."""
        if p not in (1, 2, math.inf):
            raise ConfigError(f"gradient norm order p={p!r} is not allowed; choose 1, 2 or inf")
        return self._per_text_array(texts, "grad_norm", p, self._compute_grad_norms, "gradients")

    def _compute_grad_norms(self, texts: list[str], p: float, bar: Any) -> np.ndarray:
        names = self._grad_parameters()
        shapes = {n: q.shape for n, q in self.model.named_parameters() if n in names}
        documents = [self._document(t) for t in texts]
        rows = []  # (document, window, its weight per target)
        remaining = np.zeros(len(texts), dtype=np.int64)  # windows of each document not yet through
        for d in range(len(texts)):
            segments = self._segments(documents, d)
            n_targets = sum(len(s.ids) - s.first for s in segments)
            rows += [(d, s, 1.0 / n_targets) for s in segments]
            remaining[d] = len(segments)
        rows.sort(key=lambda row: -len(row[1].ids))  # windows of similar length share a batch: little padding
        n_params = sum(math.prod(shape) for shape in shapes.values())
        step = max(1, min(self.batch_size, GRAD_BATCH_BYTES // (4 * n_params)))
        values = np.empty(len(texts))
        pending: dict[int, dict[str, torch.Tensor]] = {}
        for a in range(0, len(rows), step):
            chunk = rows[a:a + step]
            width = max(len(s.ids) for _, s, _ in chunk)
            ids = torch.full((len(chunk), width), self._pad_id, dtype=torch.long)
            weights = torch.zeros(len(chunk), width - 1)
            for r, (_, s, w) in enumerate(chunk):
                ids[r, :len(s.ids)] = torch.tensor(s.ids)
                weights[r, s.first - 1:len(s.ids) - 1] = w
            grads = per_row_gradients(self.model, ids.to(self.device), weights.to(self.device), names)
            for r, (d, _, _) in enumerate(chunk):
                total = pending.setdefault(d, {})
                for name, g in grads.items():
                    total[name] = total[name] + g[r].double() if name in total else g[r].double()
                remaining[d] -= 1
                if remaining[d] == 0:
                    norms = [torch.linalg.vector_norm(total[name], ord=p) if name in total
                             else torch.zeros((), dtype=torch.float64) for name in shapes]
                    values[d] = float(torch.stack(norms).mean())
                    if not math.isfinite(values[d]):
                        raise SignalError("the gradient norm is not finite; check the model's dtype (overflow) and "
                                          "inputs")
                    del pending[d]
                    bar.update(1)
        return values

    def _grad_parameters(self) -> set[str]:
        """Names of the parameters that require a gradient and that the loss depends on (found by one
        backward pass on a two-token input), as :func:`~miaudit.llm.signals.gradient_norm` counts them."""
        named = [(n, q) for n, q in self.model.named_parameters() if q.requires_grad]
        if not named:
            raise SignalError("no parameter requires a gradient; GradNorm needs white-box access (requires_grad=True)")
        ids = torch.tensor([[self._pad_id, self._pad_id]], device=self.device)
        with torch.enable_grad():
            logits = self.model(input_ids=ids).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:])
            grads = torch.autograd.grad(loss, [q for _, q in named], allow_unused=True)
        used = {n for (n, _), g in zip(named, grads) if g is not None}
        if not used:
            raise SignalError("the loss does not depend on any parameter; check the forward pass")
        return used

    # -- cache --------------------------------------------------------------------------------------
    def _short_name(self) -> str:
        return Path(str(self.name)).name or str(self.name)

    def _cached(self, kind: str, payload: Any, compute: Callable[[Any], Any],
                encode: Callable[[Any], dict[str, np.ndarray]], decode: Callable[[dict[str, np.ndarray]], Any]) -> Any:
        """``compute(payload)``, or its value from a verified cache shard (:mod:`miaudit.utils.cache`): a
        truncated, edited or foreign shard is reported naming the file, recomputed and replaced."""
        if self.cache_dir is None:
            return compute(payload)
        path = self.cache_dir / self.fingerprint() / f"{kind}-{fingerprint(kind, payload)}.npz"
        arrays = load_verified_npz(path, key=path.stem)
        if arrays is not None:
            try:
                return decode(arrays)
            except (KeyError, ValueError, IndexError, TypeError) as exc:
                warn_damaged(path, f"not a {kind} shard ({type(exc).__name__}: {exc})")
        value = compute(payload)
        save_verified_npz(path, encode(value), key=path.stem)
        return value


def _pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, L)`` input ids and attention mask on ``device``."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    return ids.to(device), mask.to(device)


_SIGNAL_ARRAYS = ("token_ids", "log_prob", "entropy", "mean_logp", "var_logp")
_BETA_ARRAYS = ("beta_log_prob", "beta_mu", "beta_sigma")


def _encode_signals(records: list[TokenSignals]) -> dict[str, np.ndarray]:
    arrays = {name: np.concatenate([getattr(r, name) for r in records]) for name in _SIGNAL_ARRAYS}
    arrays.update({name: np.concatenate([getattr(r, name) for r in records], axis=1) for name in _BETA_ARRAYS})
    return {"lengths": np.array([r.n_tokens for r in records]), "betas": records[0].betas,
            "vocab_size": np.array(records[0].vocab_size), **arrays}


def _decode_signals(data: dict[str, np.ndarray]) -> list[TokenSignals]:
    bounds = np.cumsum(np.r_[0, data["lengths"]])
    betas, vocab = data["betas"], int(data["vocab_size"])
    records = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        # Any: TokenSignals' non-array fields (text, ...) are not among these names, which mypy cannot see
        part: dict[str, Any] = {n: data[n][a:b] for n in _SIGNAL_ARRAYS} | {n: data[n][:, a:b] for n in _BETA_ARRAYS}
        records.append(TokenSignals(betas=betas, vocab_size=vocab, **part))
    return records


def _encode_array(values: np.ndarray) -> dict[str, np.ndarray]:
    return {"values": np.asarray(values)}


def _decode_array(data: dict[str, np.ndarray]) -> np.ndarray:
    return data["values"]


def _model_max_length(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
