"""Defenses that change the training procedure: distillation (DMP), model stacking, early stopping.

They are still plugins of :func:`miaudit.classifier.training.train_classifier`: ``setup`` may train auxiliary
models on the private data and hand the loop another model and data loader, so shadow and
reference models get the very same procedure (adaptive attacks). Auxiliary models are trained
with the target's recipe; their seeds are drawn from torch's RNG, which the loop seeds from the
model's own seed.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from miaudit.classifier.training import TrainConfig, build_model_from_config, predict_logits, train_classifier
from miaudit.data import ArrayDataset
from miaudit.defenses.base import DefenseContext, DefenseError, TrainingDefense
from miaudit.defenses.registry import register


def _tensors(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    data = loader.dataset
    if not isinstance(data, TensorDataset) or len(data.tensors) != 2:
        raise DefenseError("this defense expects the training loop's (x, y) TensorDataset loader")
    return data.tensors[0], data.tensors[1]


def _sub_seed() -> int:
    """A seed from torch's (loop-seeded) RNG."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


def _recipe(context: DefenseContext, seed: int, device: torch.device) -> TrainConfig:
    return dataclasses.replace(context.recipe, seed=seed, device=str(device))


def _loader_like(loader: DataLoader, x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=loader.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(_sub_seed()))


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@register
class Distillation(TrainingDefense):
    """Distillation for Membership Privacy (DMP): the released student never sees the private data.

    ``setup`` trains a teacher (same architecture and recipe) on the private training set, then the
    loop trains the student on the defender's reference data (the transfer set), minimising
    ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` at temperature ``T``. Simplification:
    the whole reference set is the transfer set (DMP additionally selects low-entropy examples).
    """

    name = "distillation"
    stage = 1
    loss_role = "replaces"
    needs_reference = True
    citation = ("Shejwalkar & Houmansadr, 'Membership Privacy for Machine Learning Models Through Knowledge "
                "Transfer', AAAI 2021 (DMP)")

    def __init__(self, *, temperature: float = 3.0):
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            raise DefenseError(f"distillation temperature must be a number > 0, got {temperature!r}")
        self.temperature = temperature

    def setup(self, model, optimizer, loader):
        x, y = _tensors(loader)
        device = _device(model)
        private = ArrayDataset(x.numpy(), y.numpy(), n_classes=self.context.n_classes, name="private")
        teacher = train_classifier(copy.deepcopy(model), private, _recipe(self.context, _sub_seed(), device),
                                   progress=False).model
        self._teacher = teacher.eval().requires_grad_(False)
        ref = self.reference_data
        labels = torch.from_numpy(predict_logits(teacher, ref.x).argmax(1)).long()
        self._teacher_train_accuracy = float((predict_logits(teacher, x.numpy()).argmax(1) == y.numpy()).mean())
        return model, optimizer, _loader_like(loader, torch.from_numpy(ref.x), labels)

    def loss(self, model, x, y, logits, base_loss):
        t = self.temperature
        with torch.no_grad():
            soft = (self._teacher(x) / t).softmax(dim=1)
        kl = F.kl_div((logits / t).log_softmax(dim=1), soft, reduction="batchmean") * t * t
        return base_loss - F.cross_entropy(logits, y) + kl

    def finalize(self, model: nn.Module) -> nn.Module:
        del self._teacher
        return model

    def report(self) -> dict[str, Any]:
        return {"teacher_train_accuracy": self._teacher_train_accuracy,
                "transfer_set_size": len(self.reference_data)}


class StackedModel(nn.Module):
    """Frozen base classifiers; a linear meta-learner on their concatenated centred log-probabilities.

    ``(B, ...)`` -> each base ``(B, K)`` log-probabilities, centred over classes -> concatenated
    ``(B, n_models * K)`` -> ``(B, K)`` logits. The meta-learner starts as the bases' geometric
    mean (weights ``I / n_models``, bias 0), so its training refines an ensemble instead of
    starting from chance; centring keeps a class-independent shift of a base's log-probabilities
    from acting as a class bias.
    """

    def __init__(self, bases: list[nn.Module], n_classes: int):
        super().__init__()
        self.bases = nn.ModuleList(bases).requires_grad_(False)
        self.meta = nn.Linear(len(bases) * n_classes, n_classes)
        with torch.no_grad():
            self.meta.weight.copy_(torch.eye(n_classes).repeat(1, len(bases)) / len(bases))
            self.meta.bias.zero_()

    def train(self, mode: bool = True) -> StackedModel:
        super().train(mode)
        self.bases.eval()  # base models are fixed: no dropout / batch-norm updates
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logs = [b(x).log_softmax(dim=1) for b in self.bases]
        return self.meta(torch.cat([lp - lp.mean(dim=1, keepdim=True) for lp in logs], dim=1))


@register
class Stacking(TrainingDefense):
    """Model stacking (ML-Leaks): ``n_models`` base models and a meta-learner on disjoint parts of the data.

    The private training set is split at random into ``n_models + 1`` disjoint parts: base model
    ``k`` (the target's architecture and recipe) trains on part ``k``, and the loop then trains
    the linear meta-learner on the base models' outputs for the last part. No single model sees
    more than one part, which is what limits memorisation of any one example.
    """

    name = "stacking"
    stage = 1
    citation = ("Salem, Zhang, Humbert, Berrang, Fritz & Backes, 'ML-Leaks: Model and Data Independent Membership "
                "Inference Attacks and Defenses on Machine Learning Models', NDSS 2019 (model stacking)")

    def __init__(self, *, n_models: int = 3):
        if not isinstance(n_models, int) or isinstance(n_models, bool) or n_models < 2:
            raise DefenseError(f"stacking n_models must be an integer >= 2, got {n_models!r}")
        self.n_models = n_models

    def check(self, context: DefenseContext) -> None:
        super().check(context)
        smallest = min(context.train_sizes)
        if smallest // (self.n_models + 1) < 2:
            raise DefenseError(f"stacking splits {smallest} training examples into {self.n_models + 1} parts; "
                               "use more training data or fewer n_models")

    def setup(self, model, optimizer, loader):
        x, y = _tensors(loader)
        device = _device(model)
        parts = torch.randperm(len(y)).tensor_split(self.n_models + 1)
        bases = []
        for k, part in enumerate(parts[:-1]):
            recipe = _recipe(self.context, _sub_seed(), device)
            base = model if k == 0 else build_model_from_config(recipe, self.context.input_shape,
                                                                  self.context.n_classes).to(device)
            data = ArrayDataset(x[part].numpy(), y[part].numpy(), n_classes=self.context.n_classes, name="part")
            bases.append(train_classifier(base, data, recipe, progress=False).model)
        stacked = StackedModel(bases, self.context.n_classes).to(device)
        meta_optimizer = type(optimizer)(stacked.meta.parameters(), **optimizer.defaults)
        self._part_sizes = [len(p) for p in parts]
        return stacked, meta_optimizer, _loader_like(loader, x[parts[-1]], y[parts[-1]])

    def report(self) -> dict[str, Any]:
        return {"part_sizes": self._part_sizes}


@register
class EarlyStopping(TrainingDefense):
    """Keep the weights of the epoch with the best validation ``monitor`` (loss or accuracy).

    The validation split is the defender's reference data (never an audited example, so no
    member is silently dropped from training). Training stops improving the kept weights after
    ``patience`` epochs without improvement; ``finalize`` restores the best epoch. The loop still
    runs the remaining epochs (their time counts in the training time), it has no stop signal.
    """

    name = "early_stopping"
    needs_reference = True
    dp_compatible = True  # model selection on public validation data is post-processing of the DP transcript
    citation = ("Caruana, Lawrence & Giles, 'Overfitting in Neural Nets: Backpropagation, Conjugate Gradient, and "
                "Early Stopping', NeurIPS 2000; as an MIA defense: Song & Mittal, USENIX Security 2021")

    def __init__(self, *, patience: int = 3, monitor: str = "loss"):
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise DefenseError(f"early_stopping patience must be an integer >= 1, got {patience!r}")
        if monitor not in ("loss", "accuracy"):
            raise DefenseError(f"early_stopping monitor {monitor!r} is not allowed; choose 'loss' or 'accuracy'")
        self.patience = patience
        self.monitor = monitor

    def setup(self, model, optimizer, loader):
        self._best, self._best_epoch, self._state, self._stopped = None, 0, None, None
        return model, optimizer, loader

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, Any] | None:
        ref = self.reference_data
        logits = torch.from_numpy(predict_logits(model, ref.x))
        y = torch.from_numpy(ref.y)
        value = (F.cross_entropy(logits, y).item() if self.monitor == "loss"
                 else -float((logits.argmax(1) == y).float().mean()))  # lower is better for both
        if self._stopped is None:
            if self._best is None or value < self._best:
                self._best, self._best_epoch = value, epoch + 1
                # by position, not name: wrappers (dropout, Opacus) rename keys but keep the tensor order
                self._state = [t.detach().clone() for t in model.state_dict().values()]
            elif epoch + 1 - self._best_epoch >= self.patience:
                self._stopped = epoch + 1
        return {f"validation_{self.monitor}": value if self.monitor == "loss" else -value}

    def finalize(self, model: nn.Module) -> nn.Module:
        if self._state is not None:
            with torch.no_grad():
                for tensor, saved in zip(model.state_dict().values(), self._state, strict=True):
                    tensor.copy_(saved)
        return model

    def report(self) -> dict[str, Any]:
        best = self._best if self.monitor == "loss" else -self._best
        return {"best_epoch": self._best_epoch, "stopped_epoch": self._stopped, f"best_validation_{self.monitor}": best,
                "validation_size": len(self.reference_data)}


__all__ = ["Distillation", "EarlyStopping", "Stacking", "StackedModel"]
