"""One client's local training in one round, with the classifier zoo and the defenses' training plugins.

Pure torch (no Flower): the Flower client of :mod:`miaudit.federated.simulation` calls
:func:`train_client` with the global weights it received, and the same functions build the
server's copy of the model. Determinism: the recipe's ``seed`` (derived per client and round by
the caller) fixes the batch order and every draw inside training (DP noise included), so a round's
update depends only on the global weights, the client's data and that seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from miaudit.classifier.training import TrainConfig, TrainingPlugin, build_model_from_config, train_classifier
from miaudit.data import ArrayDataset
from miaudit.defenses.base import n_classes_of
from miaudit.defenses.dp import private_optimiser

#: plugin report keys that describe a private optimiser's accounting (Opacus DP-SGD, LADP)
DP_REPORT_KEYS = ("noise_multiplier", "sample_rate", "steps")


def federated_model(recipe: TrainConfig, input_shape: Sequence[int], n_classes: int, *, private: bool) -> nn.Module:
    """The zoo model ``recipe`` names, initialised from ``recipe.seed``.

    ``private``: clients train with a private optimiser, so batch norm (which mixes the examples of a
    batch) is replaced by GroupNorm up front (Opacus's ``ModuleValidator.fix``): server and clients
    then share one architecture and one set of parameter names.
    """
    model = build_model_from_config(recipe, input_shape, n_classes)
    if private:
        from opacus.validators import ModuleValidator

        if not ModuleValidator.is_valid(model):
            model = ModuleValidator.fix(model)
    return model


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state dict (what a client sends, what the server keeps)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_client(state: dict[str, torch.Tensor], data: ArrayDataset, recipe: TrainConfig,
                 plugins: Sequence[TrainingPlugin] = (), *, private: bool = False
                 ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train from the global ``state`` on the client's ``data`` for ``recipe.epochs`` local epochs.

    ``plugins``: fresh training-defense plugins for this client and round. Returns the client's new
    state and a report: ``num-examples``, the last local epoch's ``train-loss`` / ``train-accuracy``,
    and for a private optimiser its round's ``noise_multiplier``, ``sample_rate`` and ``steps``.
    """
    model = federated_model(recipe, data.input_shape, n_classes_of(data), private=private)
    model.load_state_dict(state)
    result = train_classifier(model, data, recipe, plugins=plugins, progress=False)
    last = result.history[-1]
    report: dict[str, float] = {"num-examples": len(data), "train-loss": float(last["loss"]),
                                "train-accuracy": float(last["accuracy"])}
    for plugin_report in result.reports.values():
        if all(k in plugin_report for k in DP_REPORT_KEYS):
            report.update({k: float(plugin_report[k]) for k in DP_REPORT_KEYS})
    return state_of(result.model), report


def is_private(plugins: Sequence[TrainingPlugin]) -> bool:
    """True when one of the training plugins is a private optimiser."""
    return private_optimiser(plugins) is not None


__all__ = ["DP_REPORT_KEYS", "federated_model", "is_private", "state_of", "train_client"]
