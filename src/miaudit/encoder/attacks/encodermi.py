"""EncoderMI (Liu, Jia, Qu, Gong, CCS 2021): membership inference against contrastive image encoders.

Signals are :class:`~miaudit.encoder.features.SimilarityFeatures`: for each input, the pairwise
similarities of the embeddings of ``k`` augmented views. All three variants learn from a shadow
encoder pre-trained by the attacker on its own data (``fit(EncoderShadowData)`` or an object with a
``shadow`` attribute holding one) and score ``(n,)``, higher = member:

- ``encodermi_v``: an MLP on the similarity vector sorted in descending order (vector classifier);
  score = the classifier's logit, decision threshold 0.
- ``encodermi_s``: a DeepSets set classifier (Zaheer et al., 2017) ``rho(mean_i phi(s_i))``,
  invariant to the order of the similarities; score = logit, threshold 0.
- ``encodermi_t``: the mean similarity; the threshold maximising accuracy on the shadow data.

The two classifiers keep the weights of the epoch with the lowest loss on a held-out
``validation_fraction`` of the shadow data (early stopping; the target's labels are never used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from miaudit.attacks.base import Attack, Check, Interval
from miaudit.attacks.registry import register
from miaudit.encoder.features import EncoderShadowData, SimilarityFeatures
from miaudit.errors import DataError, SignalError
from miaudit.evaluation.metrics import roc_curve

CITATION = ("Liu, Jia, Qu, Gong. EncoderMI: Membership Inference against Pre-trained Encoders in "
            "Contrastive Learning. ACM CCS 2021")


class _EncoderMI(Attack):
    target_kind = "encoder"
    access = "embeddings"
    needs_reference = "shadow"
    fit_input = ("shadow",)
    requires_fit = True
    citation = CITATION

    def _shadow(self, reference: Any) -> EncoderShadowData:
        shadow = getattr(reference, "shadow", reference)
        if not isinstance(shadow, EncoderShadowData):
            raise DataError(f"attack {self.name!r} learns from a shadow encoder: pass EncoderShadowData (the shadow "
                            f"encoder's similarity features on its members and non-members), got "
                            f"{type(shadow).__name__}")
        self.measure_ = shadow.measure
        self.n_views_ = shadow.n_views
        return shadow

    def _features(self, signals: Any, *, same_views: bool) -> np.ndarray:
        if not isinstance(signals, SimilarityFeatures):
            raise SignalError(f"attack {self.name!r} scores SimilarityFeatures (pairwise similarities of augmented "
                              f"views' embeddings), got {type(signals).__name__}")
        if signals.measure != self.measure_:
            raise SignalError(f"attack {self.name!r} was fitted on {self.measure_!r} similarities but got "
                              f"{signals.measure!r}; compute the target's features with the same measure")
        if same_views and signals.n_views != self.n_views_:
            raise SignalError(f"attack {self.name!r} was fitted on {self.n_views_} views but got {signals.n_views}; "
                              "use the same number of augmented views for shadow and target")
        return signals.values


# -- small torch binary classifiers -------------------------------------------------------------
def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class DeepSets(nn.Module):
    """``(n, m)`` sets of ``m`` scalars -> ``(n,)`` logits, ``rho(mean_i phi(s_i))``; permutation invariant."""

    def __init__(self, hidden: Sequence[int]):
        super().__init__()
        self.phi = nn.Sequential(_mlp([1, *hidden]), nn.ReLU())
        self.rho = _mlp([hidden[-1], hidden[-1], 1])

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        pooled = self.phi(s.unsqueeze(-1)).mean(dim=1)  # (n, m, h) -> (n, h)
        return self.rho(pooled).squeeze(-1)


class VectorMLP(nn.Module):
    """``(n, p)`` feature vectors -> ``(n,)`` logits."""

    def __init__(self, n_features: int, hidden: Sequence[int]):
        super().__init__()
        self.net = _mlp([n_features, *hidden, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _train_binary(net: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, weight_decay: float,
                  validation_fraction: float, rng: np.random.Generator) -> nn.Module:
    """Full-batch Adam on class-balanced logistic loss (``y`` True = member).

    With ``validation_fraction > 0`` a stratified part of the shadow data is held out and the
    weights of the epoch with the lowest held-out loss are kept (early stopping on shadow data only).
    """
    val = np.zeros(y.size, bool)
    if validation_fraction > 0:
        for cls in (True, False):
            idx = rng.permutation(np.flatnonzero(y == cls))
            val[idx[:int(round(validation_fraction * idx.size))]] = True
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    train, held = torch.as_tensor(~val), torch.as_tensor(val)
    pos_weight = torch.tensor((~y[~val]).sum() / max(int(y[~val].sum()), 1), dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state = float("inf"), None
    for _ in range(epochs):
        net.train()
        optimizer.zero_grad()
        loss_fn(net(xt[train]), yt[train]).backward()
        optimizer.step()
        if val.any():
            net.eval()
            with torch.no_grad():
                held_loss = float(loss_fn(net(xt[held]), yt[held]))
            if held_loss < best:
                best, best_state = held_loss, {k: v.clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval()


def _logits(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


class _LearnedEncoderMI(_EncoderMI):
    """Shared hyper-parameters and fitting of the two neural variants (subclasses define the features)."""

    param_constraints = {
        "hidden": Check(lambda sizes: len(sizes) > 0 and all(h >= 1 for h in sizes),
                        "a non-empty list of hidden layer sizes >= 1"),
        "epochs": Interval(1, None), "lr": Interval(0.0, None, closed="neither", what="a learning rate"),
        "weight_decay": Interval(0.0, None), "validation_fraction": Interval(0.0, 1.0, closed="left")}

    def _set_params(self, hidden: Sequence[int], epochs: int, lr: float, weight_decay: float,
                    validation_fraction: float, seed: int) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.seed = seed

    def _fit(self, reference: Any) -> None:
        hidden = tuple(int(h) for h in self.hidden)
        values, membership = self._shadow(reference).pooled(lambda features: features.values)
        self._fit_scaler(values)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            net = self._build(values.shape[1], hidden)
            self.net_ = _train_binary(net, self._prepare(values), membership, epochs=self.epochs, lr=self.lr,
                                      weight_decay=self.weight_decay, validation_fraction=self.validation_fraction,
                                      rng=np.random.default_rng(self.seed))
        self.threshold_ = 0.0  # logit 0 = probability 1/2

    def _fit_scaler(self, values: np.ndarray) -> None:
        raise NotImplementedError

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _build(self, n_features: int, hidden: tuple[int, ...]) -> nn.Module:
        raise NotImplementedError


@register
class EncoderMIVector(_LearnedEncoderMI):
    """EncoderMI-V: MLP on the descending-sorted similarity vector (standardised per position)."""

    name = "encodermi_v"

    def __init__(self, *, hidden: Sequence[int] = (64, 32), epochs: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-4, validation_fraction: float = 0.2, seed: int = 0):
        self._set_params(hidden, epochs, lr, weight_decay, validation_fraction, seed)

    def _fit_scaler(self, values: np.ndarray) -> None:
        sorted_values = -np.sort(-values, axis=1)
        self.mean_ = sorted_values.mean(axis=0)
        self.scale_ = np.maximum(sorted_values.std(axis=0), 1e-12)

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return (-np.sort(-values, axis=1) - self.mean_) / self.scale_

    def _build(self, n_features: int, hidden: tuple[int, ...]) -> nn.Module:
        return VectorMLP(n_features, hidden)

    def _score(self, signals: SimilarityFeatures) -> np.ndarray:
        return _logits(self.net_, self._prepare(self._features(signals, same_views=True)))


@register
class EncoderMISet(_LearnedEncoderMI):
    """EncoderMI-S: DeepSets classifier on the set of similarities (one global standardisation).

    ``phi`` (scalar -> ``hidden``) runs on every similarity, so it is kept small by default.
    """

    name = "encodermi_s"

    def __init__(self, *, hidden: Sequence[int] = (16, 16), epochs: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-4, validation_fraction: float = 0.2, seed: int = 0):
        self._set_params(hidden, epochs, lr, weight_decay, validation_fraction, seed)

    def _fit_scaler(self, values: np.ndarray) -> None:
        self.mean_ = float(values.mean())
        self.scale_ = max(float(values.std()), 1e-12)

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean_) / self.scale_

    def _build(self, n_features: int, hidden: tuple[int, ...]) -> nn.Module:
        return DeepSets(hidden)

    def _score(self, signals: SimilarityFeatures) -> np.ndarray:
        return _logits(self.net_, self._prepare(self._features(signals, same_views=False)))


@register
class EncoderMIThreshold(_EncoderMI):
    """EncoderMI-T: score = mean pairwise similarity; threshold = best accuracy on the shadow data."""

    name = "encodermi_t"

    def _fit(self, reference: Any) -> None:
        values, membership = self._shadow(reference).pooled(lambda features: features.values)
        mean = values.mean(axis=1)
        curve = roc_curve(membership, mean)
        n_pos, n_neg = int(membership.sum()), int((~membership).sum())
        accuracy = (curve.tpr * n_pos + (1 - curve.fpr) * n_neg) / (n_pos + n_neg)
        best = 1 + int(np.argmax(accuracy[1:]))  # skip the +inf threshold (nobody is a member)
        self.threshold_ = float(curve.thresholds[best])
        self.shadow_accuracy_ = float(accuracy[best])

    def _score(self, signals: SimilarityFeatures) -> np.ndarray:
        return self._features(signals, same_views=False).mean(axis=1)
