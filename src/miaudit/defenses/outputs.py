"""Inference-time defenses: post-processors ``ClassifierOutputs -> ClassifierOutputs``.

All keep the predicted label (so test accuracy is unchanged, up to ties). They return
probabilities (or labels only), which is what a defended prediction API would answer.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from torch import nn

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.defenses.base import DefenseError, OutputDefense, output_logits
from miaudit.defenses.registry import register

SHOKRI_CITATION = ("Shokri, Stronati, Song & Shmatikov, 'Membership Inference Attacks Against Machine Learning "
                   "Models', IEEE S&P 2017 (Sec. VI mitigation: restrict to top-k, coarsen precision)")


def _check_int(value: int, what: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DefenseError(f"{what} must be an integer >= {low}, got {value!r}")


def _top_k_mask(probs: np.ndarray, k: int) -> np.ndarray:
    """``(n, C)`` bool: the ``k`` largest entries of each row."""
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    mask = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


@register
class TrustScoreMasking(OutputDefense):
    """Confidence-score masking: keep the ``k`` largest probabilities, zero the rest, renormalise to sum 1.

    The masking step of the seed experiment ("trust-score masking", k = 3); it hides the tail of
    the vector and rescales the head, which changes the true-class confidence attacks read.
    """

    name = "trust_score_masking"
    citation = ("Confidence-score masking (Jia et al., MemGuard, CCS 2019, Sec. 2; Hu et al., 'Membership Inference "
                "Attacks on Machine Learning: A Survey', ACM CSUR 2022, Sec. 6.1)")

    def __init__(self, *, k: int = 3):
        _check_int(k, "trust_score_masking k", 1)
        self.k = k

    def _apply(self, outputs, rng):
        masked = np.where(_top_k_mask(outputs.probs, self.k), outputs.probs, 0.0)
        return ClassifierOutputs(outputs.labels, probs=masked / masked.sum(axis=1, keepdims=True))


@register
class TopK(OutputDefense):
    """Release only the ``k`` largest probabilities, unchanged (Shokri et al. 2017).

    The rest of the mass, ``1 - sum(top k)``, is spread evenly over the other classes, the least
    informative completion a client can make of a top-k answer (so rows still sum to 1).
    """

    name = "top_k"
    citation = SHOKRI_CITATION

    def __init__(self, *, k: int = 1):
        _check_int(k, "top_k k", 1)
        self.k = k

    def _apply(self, outputs, rng):
        probs = outputs.probs
        mask = _top_k_mask(probs, self.k)
        n_rest = probs.shape[1] - mask.sum(axis=1, keepdims=True)
        kept_mass = np.where(mask, probs, 0).sum(axis=1, keepdims=True)
        rest = np.where(n_rest > 0, (1 - kept_mass) / np.maximum(n_rest, 1), 0)
        return ClassifierOutputs(outputs.labels, probs=np.where(mask, probs, rest))


@register
class Rounding(OutputDefense):
    """Round probabilities to ``decimals`` digits (Shokri et al. 2017), keeping rows summing to 1.

    Largest-remainder rounding: every entry is floored to the grid ``10^-decimals`` and the
    remaining grid units go to the entries with the largest remainders, so each entry is within one
    grid step of its value and the row is still a distribution.
    """

    name = "rounding"
    citation = SHOKRI_CITATION

    def __init__(self, *, decimals: int = 2):
        _check_int(decimals, "rounding decimals", 0)
        self.decimals = decimals

    def _apply(self, outputs, rng):
        units = 10**self.decimals
        scaled = outputs.probs * units
        floor = np.floor(scaled)
        missing = np.rint(units - floor.sum(axis=1)).astype(int)  # (n,) grid units still to hand out
        order = np.argsort(-(scaled - floor), axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(order.shape[1])[None, :].repeat(len(order), 0), axis=1)
        rounded = (floor + (ranks < missing[:, None])) / units
        return ClassifierOutputs(outputs.labels, probs=rounded)


@register
class LabelOnly(OutputDefense):
    """Release the predicted label only (Shokri et al. 2017's strongest output restriction)."""

    name = "label_only"
    min_access = "label-only"
    output_access = "label-only"
    citation = SHOKRI_CITATION

    def __init__(self) -> None:
        pass

    def _apply(self, outputs, rng):
        return ClassifierOutputs(outputs.labels, predictions=outputs.predicted)


@register
class TemperatureScaling(OutputDefense):
    """Release ``softmax(z / T)``: fitted by NLL on the defender's non-members (Guo et al.) or a fixed ``T``.

    ``temperature=None`` fits ``T`` on the model's outputs for data it never trained on (the
    calibration recipe of Guo et al. 2017); a fixed value is used as given.
    """

    name = "temperature"
    citation = "Guo, Pleiss, Sun & Weinberger, 'On Calibration of Modern Neural Networks', ICML 2017"

    def __init__(self, *, temperature: float | None = None):
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                        or temperature <= 0):
            raise DefenseError(f"temperature must be a number > 0 or null (fit it), got {temperature!r}")
        self.temperature = temperature

    @property
    def requires_fit(self) -> bool:
        return self.temperature is None

    @property
    def needs_reference(self) -> bool:
        return self.temperature is None

    def fit(self, members, nonmembers, *, seed=0):
        z = output_logits(nonmembers)
        rows = np.arange(len(nonmembers))

        def nll(log_t: float) -> float:
            return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, nonmembers.labels].mean())

        self.temperature_ = float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))
        self.fitted_ = True
        return self

    def _apply(self, outputs, rng):
        t = self.temperature if self.temperature is not None else self.temperature_
        return ClassifierOutputs(outputs.labels, probs=softmax(output_logits(outputs) / t, axis=1))


class _DefenceClassifier(nn.Module):
    """MemGuard's defender-side attack model ``g``: sorted probability vector ``(B, C)`` -> member logit ``(B,)``."""

    def __init__(self, n_classes: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_classes, 2 * width), nn.ReLU(), nn.Linear(2 * width, width), nn.ReLU(),
                                 nn.Linear(width, 1))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=1).sort(dim=1, descending=True).values  # differentiable w.r.t. the logits
        return self.net(probs).squeeze(1)


@register
class MemGuard(OutputDefense):
    """MemGuard: add to each confidence vector a noise that keeps its label and fools a membership classifier.

    ``fit`` trains the defender's classifier ``g`` (an MLP on the sorted probability vector) to
    tell the model's outputs on its members from its outputs on reference data. Phase I, per
    example with logits ``z``: gradient steps (normalised, size ``step``) on ``z'`` minimising
    ``|logit g(z')| + c2 * relu(max_{j != y^} z'_j - z'_y^) + c3 * ||softmax z' - softmax z||_1``
    until the label is kept and ``g``'s decision has crossed 0.5; ``c3`` starts at ``c3_initial``
    and is multiplied by 10 while that still succeeds (smaller distortion), keeping the last
    success (the authors' ``defense_framework.py``; c1 = 1, c2 = 10, at most ``max_iter`` steps).
    Phase II: the noisy vector is released with probability ``min(epsilon / ||r||_1, 1)``, where
    ``epsilon`` is the expected L1 distortion budget, and only when it moves ``g`` towards 0.5.
    Simplification: all examples are optimised in one batch, and ``g`` is a fixed small MLP.
    """

    name = "memguard"
    requires_fit = True
    needs_reference = True
    citation = ("Jia, Salem, Backes, Zhang & Gong, 'MemGuard: Defending against Black-Box Membership Inference "
                "Attacks via Adversarial Examples', ACM CCS 2019")
    C1: ClassVar[float] = 1.0
    C2: ClassVar[float] = 10.0

    def __init__(self, *, epsilon: float = 1.0, max_iter: int = 300, step: float = 0.1, c3_initial: float = 0.1,
                 classifier_epochs: int = 300):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise DefenseError(f"memguard epsilon (L1 distortion budget) must be a number >= 0, got {epsilon!r}")
        _check_int(max_iter, "memguard max_iter", 1)
        _check_int(classifier_epochs, "memguard classifier_epochs", 1)
        for key, value in (("step", step), ("c3_initial", c3_initial)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise DefenseError(f"memguard {key} must be a number > 0, got {value!r}")
        self.epsilon = epsilon
        self.max_iter = max_iter
        self.step = step
        self.c3_initial = c3_initial
        self.classifier_epochs = classifier_epochs

    def fit(self, members, nonmembers, *, seed=0):
        x = torch.from_numpy(np.concatenate([output_logits(members), output_logits(nonmembers)])).float()
        truth = torch.cat([torch.ones(len(members)), torch.zeros(len(nonmembers))])
        weight = torch.where(truth > 0, len(truth) / (2 * len(members)), len(truth) / (2 * len(nonmembers)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g = _DefenceClassifier(x.shape[1])
            opt = torch.optim.Adam(g.parameters(), lr=1e-3)
            for _ in range(self.classifier_epochs):  # full batch: the outputs are small (n, C)
                opt.zero_grad()
                F.binary_cross_entropy_with_logits(g(x), truth, weight=weight).backward()
                opt.step()
        self.classifier_ = g.eval().requires_grad_(False)
        with torch.no_grad():
            self.classifier_accuracy_ = float(((g(x) > 0).float() == truth).float().mean())
        self.fitted_ = True
        return self

    def _search(self, z: torch.Tensor, c3: float, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase I for one ``c3``: ``(z', success)`` for the rows ``active`` (others are left as ``z``)."""
        g = self.classifier_
        label = z.argmax(1)
        origin = z.softmax(1)
        side = torch.sign(g(z))
        current = z.clone()
        running = active.clone()
        for _ in range(self.max_iter):
            if not running.any():
                break
            zz = current[running].clone().requires_grad_(True)
            lab = label[running]
            others = zz.masked_fill(F.one_hot(lab, z.shape[1]).bool(), -1e8).max(1).values
            loss = (self.C1 * g(zz).abs() + self.C2 * F.relu(others - zz[torch.arange(len(zz)), lab])
                    + c3 * (zz.softmax(1) - origin[running]).abs().sum(1))
            (grad,) = torch.autograd.grad(loss.sum(), zz)
            norm = grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
            current[running] = (zz - self.step * grad / norm).detach()
            done = (current.argmax(1) == label) & (torch.sign(g(current)) != side)
            running = running & ~done
        success = active & (current.argmax(1) == label) & (torch.sign(g(current)) != side)
        return torch.where(success[:, None], current, z), success

    def _apply(self, outputs, rng):
        z = torch.from_numpy(output_logits(outputs)).float()
        g = self.classifier_
        with torch.no_grad():
            undecided = g(z).abs() <= 4e-5  # already on the boundary (sigmoid within 1e-5 of 0.5)
        best, found = z.clone(), torch.zeros(len(z), dtype=torch.bool)
        active, c3 = ~undecided, self.c3_initial
        while active.any() and c3 <= 1e5:
            candidate, success = self._search(z, c3, active)
            best[success], found = candidate[success], found | success
            active, c3 = success, c3 * 10  # retry the successes with a larger distortion penalty
        probs, noisy = z.softmax(1).numpy().astype(np.float64), best.softmax(1).numpy().astype(np.float64)
        with torch.no_grad():
            closer = (torch.sigmoid(g(best)) - 0.5).abs() < (torch.sigmoid(g(z)) - 0.5).abs()
        distortion = np.abs(noisy - probs).sum(1)
        p_noise = np.where(found.numpy() & closer.numpy(),
                           np.minimum(self.epsilon / np.maximum(distortion, 1e-12), 1), 0)
        released = np.where((rng.random(len(z)) < p_noise)[:, None], noisy, probs)
        self.last_success_rate_ = float(found.float().mean())
        self.last_mean_distortion_ = float((np.abs(released - probs).sum(1)).mean())
        return ClassifierOutputs(outputs.labels, probs=released / released.sum(1, keepdims=True))


__all__ = ["LabelOnly", "MemGuard", "Rounding", "TemperatureScaling", "TopK", "TrustScoreMasking"]
