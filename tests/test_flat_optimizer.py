"""The flat-buffer optimiser: a parameter gets the same update alone or stacked with others, and the update is
the recipe's optimiser's."""

import pytest
import torch

from miaudit.classifier.training import TrainConfig, flat, make_optimizer
from miaudit.classifier.training.flat import PAD_ELEMENTS, FlatOptimizer

#: odd sizes on purpose: a fused kernel's scalar remainder would round them differently
SHAPES = [(7, 13), (30,), (3, 2, 3, 3), (5,)]
RECIPES = [{"optimizer": "adam"}, {"optimizer": "adam", "weight_decay": 0.01, "lr": 3e-3},
           {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, {"optimizer": "sgd", "weight_decay": 1e-3}]


def _draws(seed: int, shapes, steps: int = 30):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=generator) for s in shapes] for _ in range(steps)]


def _train(params, recipe, gradients, *, fused=None):
    optimizer = FlatOptimizer(params, recipe, fused=fused)
    for step in gradients:
        optimizer.zero_grad()
        for p, g in zip(optimizer.params, step):
            p.grad += g  # what backward does: accumulate into the zeroed view
        optimizer.step()
    return optimizer


def _torch_optim(initial, recipe, gradients):
    """``initial``'s copies stepped by torch.optim's foreach optimiser (:func:`make_optimizer`)."""
    params = [p.clone().requires_grad_() for p in initial]
    optimizer = make_optimizer(params, recipe)
    for step in gradients:
        for p, g in zip(params, step):
            p.grad = g.clone()
        optimizer.step()
    return params


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_a_stacked_group_updates_each_model_exactly_as_alone(recipe, threads):
    config, n_models = TrainConfig(**recipe), 12
    initial = _draws(0, [(n_models, *s) for s in SHAPES], steps=1)[0]
    gradients = _draws(1, [(n_models, *s) for s in SHAPES])
    outer = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stacked = [p.clone().requires_grad_() for p in initial]
        _train(stacked, config, gradients)
        for j in range(n_models):
            alone = [p[j].clone().requires_grad_() for p in initial]
            _train(alone, config, [[g[j] for g in step] for step in gradients])
            assert all(torch.equal(a, s[j]) for a, s in zip(alone, stacked)), f"model {j} differs"
    finally:
        torch.set_num_threads(outer)


@pytest.mark.parametrize("recipe", RECIPES)
def test_without_the_fused_kernel_it_is_torch_optims_foreach_bit_for_bit(recipe):
    config = TrainConfig(**recipe)
    initial = _draws(2, SHAPES, steps=1)[0]
    gradients = _draws(3, SHAPES)
    reference = _torch_optim(initial, config, gradients)
    mine = [p.clone().requires_grad_() for p in initial]
    optimizer = _train(mine, config, gradients, fused=False)
    assert not optimizer.fused
    assert all(torch.equal(p, q) for p, q in zip(reference, mine))


def test_fused_adam_is_torch_optims_fused_adam_bit_for_bit_and_its_foreach_adam_up_to_rounding():
    config = TrainConfig(optimizer="adam", lr=3e-3, weight_decay=0.01)
    initial, gradients = _draws(4, SHAPES, steps=1)[0], _draws(5, SHAPES)
    mine = [p.clone().requires_grad_() for p in initial]
    optimizer = _train(mine, config, gradients, fused=None)
    assert optimizer.fused  # this torch has the CPU kernel
    fused = optimizer.buffer.new_zeros(optimizer.buffer.shape).requires_grad_()  # the same flat layout
    torch_fused = torch.optim.Adam([fused], lr=config.lr, weight_decay=config.weight_decay, fused=True)
    with torch.no_grad():
        fused[:sum(p.numel() for p in initial)] = torch.cat([p.flatten() for p in initial])
    for step in gradients:
        padding = fused.new_zeros(len(fused) - sum(g.numel() for g in step))
        fused.grad = torch.cat([*(g.flatten() for g in step), padding])
        torch_fused.step()
    assert torch.equal(fused.detach(), optimizer.buffer)
    for p, q, start in zip(_torch_optim(initial, config, gradients), mine, initial):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6)
        assert (q - start).abs().min() > 1e-5  # every entry moved: the closeness is not of unchanged values


def test_without_a_fused_kernel_adam_falls_back_to_the_foreach_arithmetic(monkeypatch):
    monkeypatch.setattr(flat, "_has_fused_adam", lambda like: False)
    assert not FlatOptimizer([torch.zeros(3, requires_grad=True)], TrainConfig()).fused
    with pytest.raises(ValueError, match="no fused adam kernel for cpu"):
        FlatOptimizer([torch.zeros(3, requires_grad=True)], TrainConfig(), fused=True)


def test_parameters_become_views_of_one_padded_buffer_keeping_their_layout():
    linear = torch.nn.Linear(13, 3)
    conv = torch.nn.Conv2d(3, 5, 3).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    frozen = torch.nn.Parameter(torch.ones(4), requires_grad=False)
    before = [p.detach().clone() for p in [*linear.parameters(), *conv.parameters()]]
    strides = conv.weight.stride()
    optimizer = FlatOptimizer([*linear.parameters(), *conv.parameters(), linear.weight, frozen], TrainConfig())
    assert len(optimizer.params) == 4  # a repeated parameter once, the frozen one left out
    assert optimizer.buffer.numel() % PAD_ELEMENTS == 0 and optimizer.buffer.numel() >= 39 + 3 + 135 + 5
    assert conv.weight.stride() == strides  # channels-last stays channels-last
    for p, value in zip(optimizer.params, before):
        assert p.untyped_storage().data_ptr() == optimizer.buffer.untyped_storage().data_ptr()
        assert p.grad is not None and p.grad.untyped_storage().data_ptr() == optimizer.grad.untyped_storage().data_ptr()
        assert torch.equal(p, value)
    torch.nn.functional.cross_entropy(linear(torch.randn(6, 13)), torch.zeros(6, dtype=torch.long)).backward()
    assert optimizer.grad.abs().sum() > 0  # backward accumulated into the flat gradient
    optimizer.step()
    assert not torch.equal(linear.weight, before[0])
    assert torch.equal(frozen, torch.ones(4))
    optimizer.zero_grad()
    assert optimizer.grad.abs().sum() == 0 and linear.weight.grad is not None


def test_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="at least one parameter"):
        FlatOptimizer([torch.zeros(3)], TrainConfig())
    with pytest.raises(ValueError, match="one dtype"):
        FlatOptimizer([torch.zeros(3, requires_grad=True), torch.zeros(3, dtype=torch.float64, requires_grad=True)],
                      TrainConfig())
