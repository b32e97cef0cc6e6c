"""The recipe's Adam / SGD step over many models' parameters, without temporaries.

``torch.optim``'s ``foreach`` Adam allocates a fresh ``sqrt`` tensor (and, with weight decay, a fresh
gradient) of every parameter's size each step. For a vectorised group those tensors are large (64
Location MLPs: 15 MB per step), and on CPU a fresh large allocation is paid for in page faults: in a
profile of that group the ``sqrt`` alone took more time than the forward pass. :class:`InPlaceOptimizer`
does the same arithmetic, operation for operation (so every model's update is exactly what its own
``torch.optim`` optimiser computes; ``tests/test_reference_pool.py`` checks it bit for bit), in place,
with the scratch tensors allocated once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from miaudit.classifier.training import TrainConfig

#: torch.optim.Adam's defaults, which :func:`miaudit.classifier.training.make_optimizer` uses
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class InPlaceOptimizer:
    """Adam (``recipe.optimizer == "adam"``, with L2 ``weight_decay``) or SGD with ``momentum`` and
    ``weight_decay``, as ``torch.optim`` computes them with ``foreach=True`` (no dampening, nesterov,
    amsgrad or maximize). ``params``: the tensors to update; :meth:`step` takes their gradients."""

    def __init__(self, params: Sequence[torch.Tensor], recipe: TrainConfig):
        self.params = list(params)
        self.adam = recipe.optimizer == "adam"
        self.lr, self.weight_decay, self.momentum = recipe.lr, recipe.weight_decay, recipe.momentum
        self.steps = 0
        zeros = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        if self.adam:
            self.exp_avgs = zeros
            self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
            self.scratch = [torch.empty_like(p, memory_format=torch.preserve_format) for p in self.params]
        else:
            self.buffers = zeros  # momentum buffers; the first step copies the gradient into them

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, gradients: Sequence[torch.Tensor | None]) -> None:
        """One update from ``gradients`` (aligned with ``params``; overwritten when there is weight decay)."""
        grads = [g for g in gradients if g is not None]
        if len(grads) != len(self.params) or len(grads) != len(gradients):
            raise RuntimeError("every parameter needs a gradient before the optimiser step")
        self.steps += 1
        if self.weight_decay != 0:  # L2 penalty: grad + weight_decay * param, into the (discarded) gradients
            torch._foreach_add_(grads, self.params, alpha=self.weight_decay)
        if self.adam:
            self._adam(grads)
        else:
            self._sgd(grads)

    def _adam(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2 = ADAM_BETAS
        torch._foreach_lerp_(self.exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sqs, beta2)
        torch._foreach_addcmul_(self.exp_avg_sqs, grads, grads, 1 - beta2)
        bias_correction1 = 1 - beta1 ** self.steps
        bias_correction2 = 1 - beta2 ** self.steps
        step_size = (self.lr / bias_correction1) * -1
        for exp_avg_sq, scratch in zip(self.exp_avg_sqs, self.scratch):
            torch.sqrt(exp_avg_sq, out=scratch)
        torch._foreach_div_(self.scratch, bias_correction2 ** 0.5)
        torch._foreach_add_(self.scratch, ADAM_EPS)
        torch._foreach_addcdiv_(self.params, self.exp_avgs, self.scratch, step_size)

    def _sgd(self, grads: list[torch.Tensor]) -> None:
        if self.momentum != 0:
            if self.steps == 1:
                torch._foreach_copy_(self.buffers, grads)
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads, alpha=1)
            grads = self.buffers
        torch._foreach_add_(self.params, grads, alpha=-self.lr)


__all__ = ["InPlaceOptimizer"]
