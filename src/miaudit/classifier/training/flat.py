"""The recipe's optimiser over parameters held in one flat buffer: one fused Adam kernel per step, and the same
update for a parameter wherever it sits.

Why fused: ``torch.optim``'s ``foreach`` Adam makes seven passes over memory per step (lerp, mul, addcmul, sqrt,
div, add, addcdiv). For a vectorised group of 64 Location MLPs (3.9 million parameters) that took 5.0 ms per
step on 2 CPU cores; torch's fused kernel, one pass, 1.6 ms.

Why one flat, padded buffer: the fused CPU kernel updates a tensor in vector lanes and its last ``numel mod
lane width`` entries in a scalar loop, which rounds differently (measured: one model's 30-entry output bias
stepped alone ended 1.2e-7 away from the same model stacked with 63 others after 30 steps of random
gradients). Every model must get the same update whether it is trained alone
(:func:`~miaudit.classifier.training.train_classifier`) or in a vectorised group, so the parameters are moved
into one buffer whose length is a multiple of :data:`PAD_ELEMENTS` (a multiple of every lane width): the
kernel's work units are whole cache lines, so no entry is left to the scalar loop, in any layout and with any
number of threads. The parameters become views of the buffer (their own shapes and strides, so channels-last
stays channels-last), their gradients views of a second buffer that backward accumulates into.

Use it only where every trainable parameter gets a gradient at every step (the model zoo): ``torch.optim`` skips
a parameter without a gradient, while here it would get a zero gradient and still move by its momentum.
SGD (and Adam where the fused kernel is unavailable: CPU before torch 2.4) runs ``torch.optim``'s ``foreach``
arithmetic on the buffer, whose vector and scalar paths round alike (``tests/test_flat_optimizer.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from miaudit.classifier.training.loop import TrainConfig

#: the flat buffers' length is a multiple of this many entries (64 float32 = 256 bytes: whole cache lines and a
#: multiple of every SIMD lane width), so the fused kernel has no scalar remainder
PAD_ELEMENTS = 64


def _is_dense(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s entries fill ``numel`` consecutive storage slots (any order of dimensions)."""
    expected = 1
    for size, stride in sorted(zip(tensor.shape, tensor.stride()), key=lambda pair: pair[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _views(buffer: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive views of ``buffer`` with the shapes (and, for dense tensors, the strides) of ``like``."""
    views, offset = [], 0
    for tensor in like:
        stride = tensor.stride() if _is_dense(tensor) else _contiguous_strides(tensor.shape)
        views.append(buffer.as_strided(tensor.shape, stride, offset))
        offset += tensor.numel()
    return views


#: torch.optim.Adam's defaults, which :func:`~miaudit.classifier.training.make_optimizer` uses
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class FlatOptimizer:
    """Adam or SGD (as ``recipe`` says: ``lr``, ``weight_decay``, ``momentum``; torch's default betas and eps)
    over ``params``, which it moves into one flat buffer (their values kept; see the module docstring).

    ``fused``: run Adam as torch's fused kernel (``None``: when this torch has one for the device; else
    ``torch.optim``'s ``foreach`` arithmetic, op for op). After construction ``p.grad`` of every parameter is a
    view of :attr:`grad`; :meth:`zero_grad` zeroes it and backward accumulates into it. The kernels are called
    directly: constructing a ``torch.optim`` optimiser imports ``torch._dynamo`` (about a second) on first use.
    """

    def __init__(self, params: Iterable[torch.Tensor], recipe: TrainConfig, *, fused: bool | None = None):
        self.params = [p for p in dict.fromkeys(params) if p.requires_grad]
        if not self.params:
            raise ValueError("FlatOptimizer needs at least one parameter that requires a gradient")
        kinds = {(p.dtype, p.device) for p in self.params}
        if len(kinds) != 1:
            raise ValueError(f"FlatOptimizer needs parameters of one dtype and device, got {sorted(map(str, kinds))}")
        first = self.params[0]
        total = sum(p.numel() for p in self.params)
        padded = -(-total // PAD_ELEMENTS) * PAD_ELEMENTS
        self.buffer = torch.zeros(padded, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.buffer)
        with torch.no_grad():
            for p, view, grad in zip(self.params, _views(self.buffer, self.params), _views(self.grad, self.params)):
                view.copy_(p)
                p.data = view
                p.grad = grad
        self.adam = recipe.optimizer == "adam"
        self.lr, self.weight_decay, self.momentum = recipe.lr, recipe.weight_decay, recipe.momentum
        self.steps = 0  # the foreach arithmetic's bias corrections read it; the fused kernel reads step_count
        self.fused = self.adam and fused is not False and _has_fused_adam(self.buffer)
        if fused and not self.fused:
            raise ValueError(f"this torch ({torch.__version__}) has no fused {recipe.optimizer} kernel for "
                             f"{first.device.type}")
        # optimiser state: Adam's two moments (and a scratch for the foreach arithmetic); SGD's momentum buffer
        self.state = [torch.zeros_like(self.buffer) for _ in range((3 - self.fused) if self.adam else 1)]
        self.step_count = torch.zeros((), dtype=torch.float32, device=first.device)  # the fused kernel reads it

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients. They stay views of :attr:`grad` (backward accumulates into them), so they are
        zeroed whatever ``set_to_none`` (accepted for ``torch.optim``'s signature) says."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self.fused:
            self.step_count += 1
            beta1, beta2 = ADAM_BETAS
            torch._fused_adam_([self.buffer], [self.grad], [self.state[0]], [self.state[1]], [], [self.step_count],
                               lr=self.lr, beta1=beta1, beta2=beta2, weight_decay=self.weight_decay, eps=ADAM_EPS,
                               amsgrad=False, maximize=False)
            return
        grad = self.grad if self.weight_decay == 0 else torch.add(self.grad, self.buffer, alpha=self.weight_decay)
        if self.adam:
            self._adam_foreach(grad)
        else:
            self._sgd_foreach(grad)

    def _adam_foreach(self, grad: torch.Tensor) -> None:
        """``torch.optim.Adam(foreach=True)``'s arithmetic, op for op; the square root into a kept scratch."""
        (beta1, beta2), (exp_avg, exp_avg_sq, scratch) = ADAM_BETAS, self.state
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = (self.lr / (1 - beta1 ** self.steps)) * -1
        torch.sqrt(exp_avg_sq, out=scratch).div_((1 - beta2 ** self.steps) ** 0.5).add_(ADAM_EPS)
        self.buffer.addcdiv_(exp_avg, scratch, value=step_size)

    def _sgd_foreach(self, grad: torch.Tensor) -> None:
        """``torch.optim.SGD(foreach=True)``'s arithmetic (no dampening or nesterov)."""
        if self.momentum != 0:
            momentum = self.state[0]
            if self.steps == 1:
                momentum.copy_(grad)
            else:
                momentum.mul_(self.momentum).add_(grad, alpha=1)
            grad = momentum
        self.buffer.add_(grad, alpha=-self.lr)


def _has_fused_adam(like: torch.Tensor) -> bool:
    """Whether this torch has a fused Adam kernel for ``like``'s device and dtype (CPU: torch 2.4 and later)."""
    param, grad, exp_avg, exp_avg_sq = (torch.zeros(1, dtype=like.dtype, device=like.device) for _ in range(4))
    try:
        torch._fused_adam_([param], [grad], [exp_avg], [exp_avg_sq], [], [torch.ones((), device=like.device)],
                           lr=1e-3, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], weight_decay=0.0, eps=ADAM_EPS,
                           amsgrad=False, maximize=False)
    except (RuntimeError, NotImplementedError):
        return False
    return True


__all__ = ["ADAM_BETAS", "ADAM_EPS", "PAD_ELEMENTS", "FlatOptimizer"]
