"""Train many small models at once: stacked parameters, ``torch.func.functional_call`` under ``vmap``.

Model ``j`` gets exactly what :func:`miaudit.classifier.training.train_classifier` would give it: initial
weights from its own seed, its own batch order (the same ``DataLoader`` over its training indices
with a generator seeded by its seed), cross-entropy averaged over its own batch, and an
element-wise optimiser (Adam / SGD with momentum and weight decay act on each entry separately,
so one optimiser over stacked parameters equals one optimiser per model). Only floating-point
summation order differs (batched matrix products), so weights agree with sequential training to
round-off that grows with the number of steps; see ``docs/reference-attacks.md`` for the measured
tolerance.

Supported: models without buffers or batch statistics (the zoo's MLP and small CNN, and a
group-norm ResNet). Batch-norm models are refused: their running statistics cannot be vmapped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.utils.data import DataLoader, TensorDataset

from miaudit.classifier.training import TrainConfig, build_model_from_config
from miaudit.data import ArrayDataset
from miaudit.errors import ConfigError
from miaudit.utils.device import resolve_device
from miaudit.utils.logs import progress as progress_bar


def check_vectorisable(model: nn.Module, name: str) -> None:
    """Raise :class:`ConfigError` unless ``model`` is a pure function of its parameters."""
    batch_norm = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    buffers = [n for n, _ in model.named_buffers()]
    if batch_norm or buffers:
        raise ConfigError(f"the vectorised executor cannot train model {name!r}: it keeps batch statistics "
                          f"({', '.join(buffers[:3]) or type(batch_norm[0]).__name__}); use executor 'sequential', "
                          "'process' or 'ray', or a model without batch norm (mlp, cnn, resnet18 with norm: group)")


def _batch_orders(n_train: int, recipe: TrainConfig) -> list[list[torch.Tensor]]:
    """Per epoch, the list of index batches ``train_classifier`` would draw for a training set of ``n_train``."""
    loader = DataLoader(TensorDataset(torch.arange(n_train)), batch_size=recipe.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(recipe.seed))
    return [[batch for (batch,) in loader] for _ in range(recipe.epochs)]


def train_vectorised(dataset: ArrayDataset, train_indices: Sequence[np.ndarray], recipes: Sequence[TrainConfig],
                     *, progress: bool = True) -> tuple[list[dict[str, torch.Tensor]], float]:
    """Train one model per ``(train_indices[j], recipes[j])`` at once; recipes may differ only in ``seed``.

    All training sets must have the same size (the pool groups models by size). Returns the
    models' state dicts and the wall time in seconds.
    """
    sizes = {len(ix) for ix in train_indices}
    if len(sizes) != 1:
        raise ConfigError(f"vectorised training needs training sets of one size, got {sorted(sizes)}")
    base_recipe = recipes[0]
    for r in recipes[1:]:
        if {**vars(r), "seed": 0} != {**vars(base_recipe), "seed": 0}:
            raise ConfigError("vectorised training needs one recipe for every model (only the seed may differ)")
    device = resolve_device(base_recipe.device, where="training.device")
    start = time.perf_counter()
    models = [build_model_from_config(r, dataset.input_shape, dataset.n_classes) for r in recipes]
    template = models[0].to(device)
    check_vectorisable(template, base_recipe.model)
    names = [n for n, _ in template.named_parameters()]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).to(device).requires_grad_()
              for n in names}  # each (G, *shape)
    if base_recipe.optimizer == "adam":
        optimizer = torch.optim.Adam(params.values(), lr=base_recipe.lr, weight_decay=base_recipe.weight_decay)
    else:
        optimizer = torch.optim.SGD(params.values(), lr=base_recipe.lr, momentum=base_recipe.momentum,
                                    weight_decay=base_recipe.weight_decay)

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, p, (x,))  # (B, ...) -> (B, K)

    batched = vmap(forward)  # (G, B, ...) -> (G, B, K)
    x_all = torch.from_numpy(dataset.x).to(device)
    y_all = torch.from_numpy(dataset.y).to(device)
    rows = torch.from_numpy(np.stack([np.asarray(ix, dtype=np.int64) for ix in train_indices])).to(device)  # (G, n)
    orders = [_batch_orders(rows.shape[1], r) for r in recipes]
    n_steps = sum(len(epoch) for epoch in orders[0])
    bar = progress_bar(total=n_steps, desc=f"vectorised x{len(recipes)}", enabled=progress, leave=False, unit="step")
    template.train()
    for epoch in range(base_recipe.epochs):
        for step in range(len(orders[0][epoch])):
            positions = torch.stack([orders[j][epoch][step] for j in range(len(recipes))]).to(device)  # (G, B)
            index = torch.gather(rows, 1, positions)  # dataset rows of each model's batch
            logits = batched(params, x_all[index])  # (G, B, K)
            losses = F.cross_entropy(logits.flatten(0, 1), y_all[index].flatten(), reduction="none")
            loss = losses.view(index.shape).mean(dim=1).sum()  # sum of per-model mean losses
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
    bar.close()
    states = [{n: params[n][j].detach().cpu().clone() for n in names} for j in range(len(recipes))]
    return states, time.perf_counter() - start


__all__ = ["check_vectorisable", "train_vectorised"]
