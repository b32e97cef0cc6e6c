"""Train a group of models of one recipe at once: the vectorised reference-pool executor.

Model ``j`` gets what :func:`miaudit.classifier.training.train_classifier` would give it: initial
weights from its own seed, its own batch order (:func:`~miaudit.classifier.training.shuffled_batches`
with its seed), cross-entropy averaged over its own batch, and an element-wise optimiser (Adam /
SGD act on each entry separately, so one optimiser over all models' parameters equals one optimiser
per model: :class:`~miaudit.classifier.training.flat.FlatOptimizer`, the fused kernel over one flat buffer,
which updates every entry as training the model alone does). What is shared per step: one
gather of every model's batch from precomputed ``(G, n)`` permutations into a reused buffer, one
optimiser step, the loss and accuracy bookkeeping on the device; after training every chunk of the
queries is scored by every model of the group.

Two ways to run the forward and backward pass of a group (``batching``), chosen by measurement
(``benchmarks/reference_training.py``):

- ``"stacked"``: parameters stacked to ``(G, *shape)``; the zoo's MLP runs as batched matrix
  products (:class:`_BatchedLinear`), any other model as one ``torch.func.functional_call`` under
  ``vmap`` (convolutions become grouped convolutions). The default for models without convolutions
  and for every buffer-free model on CUDA. Needs a model without buffers (no batch norm).
- ``"per-model"``: each model is its own module, run one after another in a step, in channels-last
  memory format where that is faster (:func:`prefers_channels_last`). The default
  for convolutional models on CPU, where a stacked grouped convolution measured about half as fast
  as one model's convolution (the group's activations no longer fit in the caches), and for models
  with batch norm (running statistics cannot be stacked).

On CPU with more than one intra-op thread either kind of group is split into :func:`model_threads` shares,
each trained and scored in its own thread with one intra-op thread, from start to end: no step waits for
another share, and a model runs whole in one thread, so its numbers do not depend on its share.

Only floating-point summation order can differ from sequential training (batched matrix products,
channels-last kernels, one intra-op thread per model instead of two), so weights agree to round-off
that grows with the number of steps (for the Location MLP on this machine's MKL the stacked products
even summed in the same order: bit-identical logits); see ``docs/reference-attacks.md`` for the measured tolerance. With
``precision="bfloat16"`` the forward pass runs under autocast, so agreement is only to bfloat16
round-off.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from miaudit.classifier.training import (
    MLP,
    TrainConfig,
    autocast,
    build_model_from_config,
    gather_rows,
    scoring_batch_size,
    shuffled_batches,
)
from miaudit.classifier.training.flat import FlatOptimizer
from miaudit.data import ArrayDataset
from miaudit.errors import ConfigError, DataError
from miaudit.utils.device import resolve_device
from miaudit.utils.logs import progress as progress_bar

_T = TypeVar("_T")
Batching = Literal["stacked", "per-model"]
BATCHINGS = ("auto", "stacked", "per-model")


def check_vectorisable(model: nn.Module, name: str) -> None:
    """Raise :class:`ConfigError` unless ``model`` is a pure function of its parameters (stacked batching)."""
    batch_norm = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    buffers = [n for n, _ in model.named_buffers()]
    if batch_norm or buffers:
        raise ConfigError(f"stacked vectorised training cannot train model {name!r}: it keeps batch statistics "
                          f"({', '.join(buffers[:3]) or type(batch_norm[0]).__name__}); use batching 'per-model' "
                          "(the default for such models), or a model without batch norm (resnet18 with norm: group)")


def _has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def prefers_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Channels-last memory format for a per-model group: on CPU, for convolutional models without group norm.

    Measured on CPU (torch 2.13, oneDNN): channels-last made the zoo's small CNN's convolutions about
    1.5x and its max-pooling about 6x faster, but group norm about 8x slower, which loses more than the
    convolutions gain in a group-norm ResNet-18.
    """
    return (device.type == "cpu" and _has_convolutions(model)
            and not any(isinstance(m, nn.GroupNorm) for m in model.modules()))


def choose_batching(model: nn.Module, device: torch.device) -> Batching:
    """``"per-model"`` for models with buffers and for convolutional models on CPU, else ``"stacked"``."""
    if next(model.buffers(), None) is not None:
        return "per-model"
    if device.type == "cpu" and _has_convolutions(model):
        return "per-model"
    return "stacked"


# -- group size from memory ------------------------------------------------------------------------
#: examples in the forward pass that measures activation memory (scaled to the batch size)
PROBE_BATCH = 2


def _saved_bytes(model: nn.Module, input_shape: Sequence[int], batch_size: int) -> int:
    """Bytes autograd keeps for the backward pass of one training forward pass of ``batch_size`` examples.

    Measured on a CPU copy of the model in a forward pass of :data:`PROBE_BATCH` zero examples: the tensors
    saved for backward (the parameters themselves excepted) plus the output, scaled to ``batch_size``.
    Tensors saved by several operations are counted each time (an overestimate, on the safe side). A real
    forward pass of two examples costs milliseconds; the ``meta`` device, which needs no arithmetic, cost
    about a second of imports on first use.
    """
    probe = copy.deepcopy(model).cpu().train()
    parameters = {p.data_ptr() for p in probe.parameters()}
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if tensor.data_ptr() not in parameters:
            total += tensor.numel() * tensor.element_size()
        return tensor

    x = torch.zeros((PROBE_BATCH, *input_shape))
    with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = probe(x)  # a training forward pass: dropout draws from the generator, which fork_rng restores
    return (total + out.numel() * out.element_size()) * batch_size // PROBE_BATCH


def training_bytes(model: nn.Module, input_shape: Sequence[int], batch_size: int, optimizer: str) -> tuple[int, int]:
    """``(parameter bytes, activation bytes)`` of training one model: weights, gradients and optimiser
    state (two buffers for Adam, one for SGD momentum), and what one step keeps for backward."""
    n_params = sum(p.numel() * p.element_size() for p in model.parameters())
    states = 2 if optimizer == "adam" else 1
    batch = batch_size * math.prod(input_shape) * 4
    return n_params * (2 + states), _saved_bytes(model, input_shape, batch_size) + batch


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of ``/proc/meminfo`` on
    CPU; ``None`` when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def choose_group_size(n_models: int, bytes_per_model: int, free_bytes: int | None, *, fixed_bytes: int = 0,
                      fraction: float = 0.6, limit: int | None = None) -> int:
    """How many models to train at once: the most (at most ``n_models`` and ``limit``) whose estimated
    memory ``fixed_bytes + G * bytes_per_model`` fits in ``fraction`` of ``free_bytes``; at least 1.

    ``free_bytes=None`` (unknown) puts no memory bound. ``fraction`` leaves room for the allocator,
    temporary tensors and the scoring pass.
    """
    if n_models < 1:
        raise ConfigError(f"a group needs at least one model, got n_models={n_models}")
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    size = n_models if limit is None else max(1, min(n_models, limit))
    if free_bytes is not None and bytes_per_model > 0:
        size = min(size, int((free_bytes * fraction - fixed_bytes) // bytes_per_model))
    return max(1, size)


#: largest group on CPU for stacked batching (larger groups measured no faster and hold more memory)
CPU_STACKED_LIMIT = 64


def auto_group_size(model: nn.Module, input_shape: Sequence[int], recipe: TrainConfig, n_models: int,
                    batching: Batching, device: torch.device, *, n_workers: int = 1) -> int:
    """Group size for ``n_models`` models: the memory estimate of :func:`training_bytes` against
    :func:`available_memory` (shared by ``n_workers`` processes). Stacked groups hold every model's
    activations at once; per-model groups one model's per model thread."""
    params, activations = training_bytes(model, input_shape, recipe.batch_size, recipe.optimizer)
    activations *= model_threads(device, n_models, model) if batching == "per-model" else 1
    free = available_memory(device)
    free = None if free is None else free // n_workers
    limit = CPU_STACKED_LIMIT if device.type == "cpu" and batching == "stacked" else None
    if batching == "stacked":
        return choose_group_size(n_models, params + activations, free, limit=limit)
    return choose_group_size(n_models, params, free, fixed_bytes=activations, limit=limit)


# -- the two ways to run a group -------------------------------------------------------------------
class _BatchedLinear(torch.autograd.Function):
    """``y = x W^T + b`` for ``G`` models at once: ``x`` ``(G, B, in)``, ``W`` ``(G, out, in)``, ``b`` ``(G, out)``.

    The backward pass writes the weight and bias gradients into the ``sink`` tensors (``(G, out, in)``,
    ``(G, out)``: the parameters' gradients, views of the optimiser's flat buffer) instead of handing fresh
    ones to autograd: on CPU a fresh gradient of a group's size is paid for in page faults every step. The
    weight gradient is ``g^T x`` in the weight's own layout (autograd's backward of a batched product computes
    ``x^T g`` and copies it). Each weight is used once per forward pass, so overwriting the sink is
    accumulating into a zeroed gradient. Under autocast the products run in the autocast dtype;
    gradients are stored in the sink's dtype (the bias gradient is summed in float32).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                sink: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        x_, w_ = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x_, w_)
        ctx.x_dtype, ctx.sink = x.dtype, sink
        with torch.autocast(device, enabled=False):
            return torch.baddbmm(bias.to(dtype).unsqueeze(1), x_, w_.transpose(1, 2))  # (G, B, out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        x, w = ctx.saved_tensors
        weight_grad, bias_grad = ctx.sink
        g = grad.to(x.dtype)
        if x.dtype == weight_grad.dtype:
            torch.bmm(g.transpose(1, 2), x, out=weight_grad)  # (G, out, in)
        else:
            weight_grad.copy_(torch.bmm(g.transpose(1, 2), x))
        torch.sum(grad.float(), dim=1, out=bias_grad)
        grad_x = torch.bmm(g, w).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None  # (G, B, in)
        return grad_x, None, None, None


def _linear_chain(model: nn.Module) -> list[tuple[str, ...]] | None:
    """The zoo's MLP (or a plain ``Sequential``) as steps ``("flatten",)``, ``("relu",)``,
    ``("linear", weight name, bias name)``; ``None`` for any other model."""
    net, prefix = (model.net, "net.") if isinstance(model, MLP) else (model, "")
    if not isinstance(net, nn.Sequential):
        return None
    steps: list[tuple[str, ...]] = []
    for name, layer in net.named_children():
        if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            steps.append(("flatten",))
        elif isinstance(layer, nn.ReLU):
            steps.append(("relu",))
        elif isinstance(layer, nn.Linear) and layer.bias is not None:
            steps.append(("linear", f"{prefix}{name}.weight", f"{prefix}{name}.bias"))
        else:
            return None
    return steps


class _Stacked:
    """``G`` models as one: parameters stacked to ``(G, *shape)``, forward under ``vmap``."""

    def __init__(self, models: Sequence[nn.Module], device: torch.device, name: str):
        self.template = models[0].to(device)
        check_vectorisable(self.template, name)
        self.names = [n for n, _ in self.template.named_parameters()]
        per_model = [dict(m.named_parameters()) for m in models]
        self.params = {n: torch.stack([p[n].detach() for p in per_model]).to(device).requires_grad_()
                       for n in self.names}  # each (G, *shape)
        self._chain = _linear_chain(self.template)
        #: whether a step writes every gradient whole (batched products into their sinks), so that the
        #: optimiser need not zero them first
        self.overwrites_gradients = self._chain is not None
        self._vmapped = vmap(self._forward)  # (G, B, ...) -> (G, B, K)

    def _train(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Training forward ``(G, B, ...) -> (G, B, K)``: MLPs as batched products, other models under vmap."""
        if self._chain is None:
            return self._vmapped(params, x)
        after_linear = False
        for step in self._chain:
            if step[0] == "flatten":
                x = x.flatten(2)
            elif step[0] == "relu":  # in place on a product's output (not kept for backward), else a copy
                x = torch.relu_(x) if after_linear else torch.relu(x)
            else:
                weight, bias = params[step[1]], params[step[2]]
                if weight.grad is None or bias.grad is None:
                    raise RuntimeError("batched products write into the parameters' gradients: build the optimiser "
                                       "(FlatOptimizer) before the first step")
                x = _BatchedLinear.apply(x, weight, bias, (weight.grad, bias.grad))
            after_linear = step[0] == "linear"
        return x

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, params, (x,))  # (B, ...) -> (B, K)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def step(self, x: torch.Tensor, y: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of every model on its batch ``x`` ``(G, B, ...)``, ``y`` ``(G, B)``;
        returns the per-model mean losses and numbers of correct predictions, both ``(G,)``."""
        self.template.train()
        with autocast(x.device, precision):
            logits = self._train(self.params, x)  # (G, B, K)
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(dim=1)
        losses.sum().backward()  # the gradient of model j's parameters is that of its own mean loss
        return losses.detach(), (logits.detach().argmax(-1) == y).sum(dim=1)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``(G, n, K)`` of every model on the same inputs ``x`` ``(n, ...)``, in eval mode.

        Each model runs its own forward on each chunk of ``x`` (the numerics of scoring it alone, so a
        model scores the same whichever group it was trained in)."""
        self.template.eval()
        n_models = len(self.params[self.names[0]])
        chunks = x.split(scoring_batch_size(x.device))
        return torch.stack([torch.cat([self._forward({n: p[j] for n, p in self.params.items()}, chunk).float()
                                       for chunk in chunks]) for j in range(n_models)])

    def states(self) -> list[dict[str, torch.Tensor]]:
        return [{n: self.params[n][j].detach().cpu().clone() for n in self.names}
                for j in range(len(self.params[self.names[0]]))]


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _gradient_to_channels_last(grad: torch.Tensor) -> torch.Tensor:
    return grad.contiguous(memory_format=torch.channels_last)


def _flatten_keeps_channels_last(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of an ``nn.Flatten``: a channels-last input gets its gradient back channels-last."""
    x = args[0]
    if isinstance(x, torch.Tensor) and x.requires_grad and _is_channels_last(x):
        x.register_hook(_gradient_to_channels_last)


def keep_gradients_channels_last(model: nn.Module) -> None:
    """Make every ``nn.Flatten`` of ``model`` hand a channels-last input its gradient in channels-last format.

    Flattening a channels-last activation copies it to row-major order, so its gradient comes back
    row-major, and the max-pooling before it then runs its backward pass on its row-major kernel, copying
    its indices and its gradient to and from that layout. Measured for the zoo's small CNN (8 and 16
    channels, batches of 64, one thread): a training step 7.6 -> 6.3 ms; the gradients are the same bit for
    bit (only their layout changes).
    """
    for module in model.modules():
        if isinstance(module, nn.Flatten):
            module.register_forward_pre_hook(_flatten_keeps_channels_last)


def draws_random_numbers(model: nn.Module) -> bool:
    """True for a model whose training forward pass draws from torch's global generator (dropout)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


class _PerModel:
    """``G`` separate modules, one after another in a step (see also :func:`prefers_channels_last`).

    Models that draw random numbers (dropout) each get their own generator stream, seeded from ``seeds`` as
    the sequential loop seeds torch's global generator, and swapped in for their part of every step: a model's
    dropout masks are those it would draw trained alone, not an interleaving of the group's draws.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device, seeds: Sequence[int]):
        self.format = torch.channels_last if prefers_channels_last(models[0], device) else torch.contiguous_format
        self.models = [m.to(device).to(memory_format=self.format) for m in models]  # type: ignore[call-overload]
        if self.format == torch.channels_last:
            for model in self.models:
                keep_gradients_channels_last(model)
        self.overwrites_gradients = False  # backward accumulates into zeroed gradients
        self.device = device
        self.streams = [_seeded_stream(seed, device) for seed in seeds] if draws_random_numbers(models[0]) else None

    def parameters(self) -> list[torch.Tensor]:
        return [p for m in self.models for p in m.parameters()]

    def step(self, x: torch.Tensor, y: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`_Stacked.step`, model by model; each model's activations are freed before the next runs."""
        losses, hits = [], []
        for j, model in enumerate(self.models):
            model.train()
            if self.streams is not None:
                _set_stream(self.streams[j], self.device)
            with autocast(x.device, precision):
                logits = model(x[j].contiguous(memory_format=self.format) if x.dim() == 5 else x[j])  # (B, K)
                loss = F.cross_entropy(logits, y[j])
            loss.backward()
            if self.streams is not None:
                self.streams[j] = _get_stream(self.device)
            losses.append(loss.detach())
            hits.append((logits.detach().argmax(-1) == y[j]).sum())
        return torch.stack(losses), torch.stack(hits)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``(G, n, K)`` of every model on the same inputs ``x`` ``(n, ...)``, in eval mode."""
        return score_per_model(self.models, x, self.format)

    def states(self) -> list[dict[str, torch.Tensor]]:
        return [{k: v.detach().cpu().contiguous().clone() for k, v in m.state_dict().items()} for m in self.models]


def _get_stream(device: torch.device) -> torch.Tensor:
    """The state of the global generator that ``device``'s random ops draw from."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.random.get_rng_state()


def _set_stream(state: torch.Tensor, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.random.set_rng_state(state)


def _seeded_stream(seed: int, device: torch.device) -> torch.Tensor:
    """The generator state ``torch.manual_seed(seed)`` gives (what the sequential loop starts a model's training
    with), read without changing the caller's generators."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _get_stream(device)


def model_threads(device: torch.device, n_models: int, model: nn.Module | None = None) -> int:
    """How many threads a group's models are trained and scored in: on CPU, torch's intra-op threads (at most
    one per model), each thread running whole models with one intra-op thread; elsewhere, and for a ``model``
    that draws random numbers in its forward pass (dropout: threads would interleave their draws from torch's
    global generator), one.

    Measured on 2 CPU cores (torch 2.13): a training step of 16 of the zoo's small CNNs (8 and 16 channels,
    batches of 64) took 121 ms with the models one after another on two intra-op threads, 128 ms on one, and
    60 ms with two threads of one model each: small convolutions barely split across cores. Whole pools
    (:func:`train_vectorised`): 16 small CNNs 2.60 s in one group stepped by two threads, 2.29 s as two
    8-model shares trained in two threads; 64 Location MLPs 2.33 s in one stacked group on two intra-op
    threads, 2.19 s as two 32-model shares (medians of 5, the same logits bit for bit).
    """
    if device.type != "cpu" or (model is not None and draws_random_numbers(model)):
        return 1
    return max(1, min(torch.get_num_threads(), n_models))


class _Stopped(Exception):
    """Raised by work that saw its ``stop`` event set: another thread's work failed or the caller was interrupted."""


def in_model_threads(work: Callable[[int], _T], n_items: int, threads: int,
                     stop: threading.Event | None = None) -> list[_T]:
    """``[work(j) for j in range(n_items)]`` (models, or shares of a group): with ``threads > 1`` in that many
    threads of one intra-op thread each (the caller's thread count is restored), each thread taking the next
    item whenever it finishes one; else here, in order.

    Items are taken as threads come free rather than in fixed shares: the cores are not equally fast from
    moment to moment (two fixed shares of a step of 8 small CNNs each took 75-79 ms and 59-70 ms). A model
    runs whole in one thread, so its numbers do not depend on which thread ran it. When one item fails, or
    the caller is interrupted, ``stop`` (made here when not given) is set: no thread takes another item, work
    that checks it raises :class:`_Stopped`, and the first real error is raised once every thread has ended.
    Grad mode and autocast are per thread: ``work`` sets what it needs."""
    if threads <= 1:
        return [work(j) for j in range(n_items)]
    stop = stop or threading.Event()
    outer = torch.get_num_threads()
    results: list[_T | None] = [None] * n_items
    items = itertools.count()  # next() on it is atomic: each item is taken by exactly one thread

    def take_items() -> None:
        torch.set_num_threads(1)
        while not stop.is_set() and (j := next(items)) < n_items:
            results[j] = work(j)

    running = [_model_pool(os.getpid(), threads).submit(take_items) for _ in range(threads)]
    try:
        concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_EXCEPTION)
        errors = [error for f in running if f.done() and (error := f.exception()) is not None]
        if errors:
            raise next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
    except BaseException:
        stop.set()
        concurrent.futures.wait(running)
        raise
    finally:
        torch.set_num_threads(outer)
    return results  # type: ignore[return-value]  # every entry was filled


@functools.cache
def _model_pool(pid: int, threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool of ``threads`` model threads, made once (starting threads every training step cost
    0.3 ms); keyed by process id, so a forked worker makes its own instead of using threads it lacks."""
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="miaudit-models")


def score_per_model(models: Sequence[nn.Module], x: torch.Tensor,
                    memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """Float32 logits ``(G, n, K)`` of each model on ``x`` ``(n, ...)``, in eval mode, chunk by chunk, in
    ``memory_format`` (default: :func:`prefers_channels_last` for the models' device), the models shared
    among :func:`model_threads` threads.

    How per-model groups score, and how their cached weights are rescored: the same kernels, so the
    same logits bit for bit.
    """
    if memory_format is None:
        channels_last = prefers_channels_last(models[0], x.device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
    chunks = x.split(scoring_batch_size(x.device))
    if x.dim() == 4:
        chunks = [chunk.contiguous(memory_format=memory_format) for chunk in chunks]

    @torch.no_grad()
    def score(j: int) -> torch.Tensor:
        model = models[j].eval().to(memory_format=memory_format)  # type: ignore[call-overload]
        return torch.cat([model(chunk).float() for chunk in chunks])

    return torch.stack(in_model_threads(score, len(models), model_threads(x.device, len(models), models[0])))


# -- training --------------------------------------------------------------------------------------
@dataclass
class GroupResult:
    """What :func:`train_vectorised` returns, one entry per model of the group."""

    states: list[dict[str, torch.Tensor]]  # state dicts on CPU, contiguous
    logits: list[dict[str, np.ndarray]]  # query name -> (n_query, K) float32
    histories: list[list[dict[str, Any]]]  # per epoch: epoch, loss, accuracy (training batches), seconds
    seconds: float  # wall time of the whole group (training and scoring)


def _epoch_permutations(n: int, recipes: Sequence[TrainConfig], device: torch.device
                        ) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Per epoch a ``(G, n)`` tensor: row ``j`` is model ``j``'s batches of that epoch, concatenated; and the
    ``(start, stop)`` of each batch (the same for every model: one training-set size, one batch size)."""
    epochs = recipes[0].epochs
    orders = [shuffled_batches(n, r.batch_size, r.seed, epochs) for r in recipes]
    sizes = [len(b) for b in orders[0][0]]
    bounds = [(sum(sizes[:i]), sum(sizes[:i + 1])) for i in range(len(sizes))]
    perms = [torch.stack([torch.cat(order[e]) for order in orders]).to(device) for e in range(epochs)]
    return perms, bounds


def train_vectorised(dataset: ArrayDataset, train_indices: Sequence[np.ndarray], recipes: Sequence[TrainConfig],
                     *, queries: dict[str, np.ndarray] | None = None, batching: str = "auto",
                     progress: bool = True, build: Callable[[TrainConfig], nn.Module] | None = None) -> GroupResult:
    """Train one model per ``(train_indices[j], recipes[j])`` at once and score each on ``queries``.

    ``build(recipe)`` makes a model's initial weights from its recipe's seed (default: the zoo model of the recipe;
    the pool passes the user's class for a torch model family).

    Recipes may differ only in ``seed``; all training sets must have the same size (the pool groups
    models by size). ``batching``: "auto" (:func:`choose_batching`), "stacked" or "per-model". On CPU with
    more than one intra-op thread the group is split into :func:`model_threads` shares, each trained and
    scored from start to end in its own thread with one intra-op thread (no step waits for another share);
    a model's numbers do not depend on its share.
    """
    if not recipes or len(recipes) != len(train_indices):
        raise ConfigError(f"{len(recipes)} recipes for {len(train_indices)} training sets")
    sizes = {len(ix) for ix in train_indices}
    if len(sizes) != 1:
        raise ConfigError(f"vectorised training needs training sets of one size, got {sorted(sizes)}")
    if 0 in sizes:
        raise DataError("cannot train on an empty dataset")
    base = recipes[0]
    for r in recipes[1:]:
        if {**vars(r), "seed": 0} != {**vars(base), "seed": 0}:
            raise ConfigError("vectorised training needs one recipe for every model (only the seed may differ)")
    if batching not in BATCHINGS:
        raise ConfigError(f"unknown batching {batching!r}; choose one of {', '.join(BATCHINGS)}")
    device = resolve_device(base.device, where="training.device")
    start = time.perf_counter()
    n_classes = dataset.n_classes
    assert n_classes is not None  # ArrayDataset infers it when not given
    # built here, one after another: initial weights are drawn from torch's global generator
    models = [build(r) if build is not None else build_model_from_config(r, dataset.input_shape, n_classes)
              for r in recipes]
    chosen: Batching = choose_batching(models[0], device) if batching == "auto" else batching  # type: ignore[assignment]
    n_models, threads = len(models), model_threads(device, len(models), models[0])
    steps = base.epochs * math.ceil(sizes.pop() / base.batch_size)
    bar = progress_bar(total=steps, desc=f"vectorised x{n_models}", enabled=progress, leave=False, unit="step")
    bounds = np.linspace(0, n_models, threads + 1).astype(int)
    shares = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    stop = threading.Event()  # set when a share fails: the others stop at their next step

    def share(k: int) -> GroupResult:
        part = shares[k]
        return _train_share(models[part], dataset, train_indices[part], recipes[part], queries or {}, chosen,
                            device, bar if k == 0 else None, stop)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # dropout streams swap its state
        parts = in_model_threads(share, len(shares), threads, stop)
    bar.close()
    return GroupResult([s for p in parts for s in p.states], [lg for p in parts for lg in p.logits],
                       [h for p in parts for h in p.histories], time.perf_counter() - start)


def _train_share(models: Sequence[nn.Module], dataset: ArrayDataset, train_indices: Sequence[np.ndarray],
                 recipes: Sequence[TrainConfig], queries: dict[str, np.ndarray], batching: Batching,
                 device: torch.device, bar: Any, stop: threading.Event) -> GroupResult:
    """Train and score ``models`` as one group (see :func:`train_vectorised`); ``bar``: the progress bar this
    share advances (or ``None``); ``stop``: set when the other shares must stop."""
    start, base = time.perf_counter(), recipes[0]
    group = (_Stacked(models, device, base.model) if batching == "stacked"
             else _PerModel(models, device, [r.seed for r in recipes]))
    optimizer = FlatOptimizer(group.parameters(), base)  # each model's update exactly as training it alone
    x_all = torch.from_numpy(dataset.x).to(device)
    y_all = torch.from_numpy(dataset.y).to(device)
    rows = torch.from_numpy(np.stack([np.asarray(ix, dtype=np.int64) for ix in train_indices])).to(device)  # (G, n)
    n_models, n = rows.shape
    perms, bounds = _epoch_permutations(n, recipes, device)
    histories: list[list[dict[str, Any]]] = [[] for _ in recipes]
    batch_buffer = x_all.new_empty((n_models * base.batch_size, *x_all.shape[1:]))  # reused by every step
    for epoch in range(base.epochs):
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros(n_models, device=device)
        correct = torch.zeros(n_models, dtype=torch.int64, device=device)
        for lo, hi in bounds:
            if stop.is_set():
                raise _Stopped
            index = torch.gather(rows, 1, perms[epoch][:, lo:hi])  # (G, B) dataset rows of each model's batch
            if not group.overwrites_gradients:
                optimizer.zero_grad()
            losses, hits = group.step(gather_rows(x_all, index, batch_buffer), y_all[index], base.precision)
            optimizer.step()
            loss_sum += losses.float() * (hi - lo)
            correct += hits
            if bar is not None:
                bar.update()
        mean_loss, accuracy = (loss_sum / n).tolist(), (correct.double() / n).tolist()
        for j, (loss, acc) in enumerate(zip(mean_loss, accuracy)):
            if not math.isfinite(loss):
                raise DataError(f"training loss became {loss} in epoch {epoch + 1} (model seed {recipes[j].seed}); "
                                "lower training.lr")
            histories[j].append({"epoch": epoch + 1, "loss": loss, "accuracy": acc,
                                 "seconds": time.perf_counter() - epoch_start})
    scored: list[dict[str, np.ndarray]] = [{} for _ in recipes]
    for name, x in queries.items():
        logits = group.logits(torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)).cpu().numpy()
        for j in range(n_models):
            scored[j][name] = logits[j]
    return GroupResult(group.states(), scored, histories, time.perf_counter() - start)


__all__ = ["BATCHINGS", "CPU_STACKED_LIMIT", "GroupResult", "auto_group_size", "available_memory",
           "check_vectorisable", "choose_batching", "choose_group_size", "keep_gradients_channels_last",
           "prefers_channels_last", "score_per_model", "train_vectorised", "training_bytes"]
