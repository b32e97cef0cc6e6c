"""Differentially private training: DP-SGD through Opacus, and layer-adaptive DP (LADP).

Both sample batches by Poisson sampling (rate ``q = 1 / len(loader)``), clip per-example
gradients, add Gaussian noise, and account with Opacus's RDP accountant. Batch norm mixes
examples inside a batch, so a model with batch norm is rewritten by Opacus's
``ModuleValidator.fix`` (BatchNorm -> GroupNorm) before training, and the run says so.

Privacy statement (both): ``(epsilon, delta)``-DP for the training set under add/remove-one
adjacency, for the sequence of all noisy updates (hence for every released checkpoint), computed
by the RDP accountant (an upper bound). Not covered: hyper-parameter choices made on private data,
and anything a composed defense does outside the clipped per-example gradients (the registry
refuses such combinations).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from miaudit.classifier.training import TrainingPlugin, build_model_from_config
from miaudit.defenses.base import DefenseContext, DefenseError, TrainingDefense
from miaudit.defenses.registry import register

OPACUS_CITATION = ("Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang, 'Deep Learning with Differential "
                   "Privacy', ACM CCS 2016; Yousefpour et al., 'Opacus: User-Friendly Differential Privacy Library "
                   "in PyTorch', 2021; Mironov, 'Renyi Differential Privacy', CSF 2017")


def _opacus():
    try:
        import opacus  # noqa: F401
    except ImportError:
        raise DefenseError("DP training needs Opacus: pip install 'miaudit[dp]'") from None
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.validators import ModuleValidator

    return ModuleValidator, RDPAccountant, get_noise_multiplier


def _quiet_opacus() -> None:
    """Silence Opacus / torch notices that DP training triggers on every run (not problems of the run)."""
    for message in (".*[Ss]ecure RNG turned off.*", ".*Optimal order is the (largest|smallest) alpha.*",
                    ".*Full backward hook is firing when gradients are computed with respect to module outputs.*"):
        warnings.filterwarnings("ignore", message=message)


@functools.lru_cache(maxsize=1024)
def _noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, epochs: int) -> float:
    """Opacus's ``get_noise_multiplier`` (RDP), memoised: its search takes seconds and every model of a run
    (every client of every round, in a federation) asks again for the same few sizes."""
    _, _, get_noise_multiplier = _opacus()
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      epochs=epochs, accountant="rdp"))


def _rebuild_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    return type(optimizer)(model.parameters(), **optimizer.defaults)


class PrivateOptimiser(TrainingDefense):
    """A private optimiser (DP-SGD, LADP): a stage-3 training defense with a privacy accountant.

    Shared parameters and checks: budget (target epsilon or noise multiplier), delta, clipping norm.
    """

    stage = 3
    dp_compatible = True
    #: the budget (exactly one of the two is set), the accountant's delta and the clipping norm
    target_epsilon: float | None
    noise_multiplier: float | None
    delta: float
    max_grad_norm: float

    def _check_budget(self, target_epsilon: float | None, noise_multiplier: float | None, delta: float,
                      max_grad_norm: float) -> None:
        if (target_epsilon is None) == (noise_multiplier is None):
            raise DefenseError(f"{self.name}: give exactly one of target_epsilon and noise_multiplier (set the other "
                               "to null)")
        for key, value in (("target_epsilon", target_epsilon), ("noise_multiplier", noise_multiplier),
                           ("max_grad_norm", max_grad_norm)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise DefenseError(f"{self.name} {key} must be a number > 0, got {value!r}")
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
            raise DefenseError(f"{self.name} delta must lie in (0, 1), got {delta!r}")

    @staticmethod
    def sample_rate(n: int, batch_size: int) -> tuple[float, int]:
        """Poisson rate ``q = 1 / ceil(n / B)`` (as Opacus's DPDataLoader) and steps per epoch."""
        batches = math.ceil(n / batch_size)
        return 1.0 / batches, batches

    def noise_for(self, n: int) -> float:
        """The noise multiplier for ``n`` training examples (from ``target_epsilon`` when one is set)."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        if self.target_epsilon is None:
            raise DefenseError(f"{self.name}: give exactly one of target_epsilon and noise_multiplier (both are null)")
        q, _ = self.sample_rate(n, self.context.recipe.batch_size)
        try:
            return _noise_multiplier(float(self.target_epsilon), float(self.delta), q, self.context.recipe.epochs)
        except ValueError:
            raise DefenseError(
                f"{self.name}: target_epsilon={self.target_epsilon:g} at delta={self.delta:g} cannot be reached with "
                f"{n} training examples, batch size {self.context.recipe.batch_size} and "
                f"{self.context.recipe.epochs} epochs (noise multiplier would exceed 1e6); raise target_epsilon, "
                "train fewer epochs or use a smaller batch") from None

    def check(self, context: DefenseContext) -> None:
        super().check(context)
        validator, _, _ = _opacus()
        _quiet_opacus()
        model = build_model_from_config(context.recipe, context.input_shape, context.n_classes)
        problems = validator.validate(model, strict=False)
        if problems:
            fixed = validator.fix(model)
            remaining = validator.validate(fixed, strict=False)
            if remaining:
                raise DefenseError(f"{self.name}: the model has layers Opacus cannot make private: {remaining[0]}")
            note = (f"{self.name}: {len(problems)} batch-norm layer(s) of {context.recipe.model} are replaced by "
                    "GroupNorm (opacus ModuleValidator.fix) because batch norm mixes examples within a batch")
            if note not in context.notes:
                context.notes.append(note)
        for n in sorted(set(context.train_sizes)):
            sigma = self.noise_for(n)
            context.notes.append(f"{self.name}: {n} training examples -> noise multiplier {sigma:.4g}")
            if self.delta >= 1.0 / n:
                context.notes.append(f"{self.name}: delta={self.delta:g} is not below 1/n = {1 / n:.3g}; a smaller "
                                     "delta is advisable")

    def _make_valid(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
        validator, _, _ = _opacus()
        self._bn_replaced = not validator.is_valid(model)
        if self._bn_replaced:
            model = validator.fix(model)
            optimizer = _rebuild_optimizer(optimizer, model)
        return model, optimizer

    def finalize(self, model: nn.Module) -> nn.Module:
        from opacus.grad_sample import AbstractGradSampleModule

        return model.to_standard_module() if isinstance(model, AbstractGradSampleModule) else model


def private_optimiser(defenses: Iterable[TrainingPlugin]) -> PrivateOptimiser | None:
    """The private optimiser among ``defenses`` (a composition holds at most one), if any."""
    return next((d for d in defenses if isinstance(d, PrivateOptimiser)), None)


@register
class DPSGD(PrivateOptimiser):
    """DP-SGD (Abadi et al. 2016) through Opacus: flat per-example clipping to ``max_grad_norm``, Gaussian noise.

    Give ``target_epsilon`` (the noise multiplier is found with Opacus's ``get_noise_multiplier``
    for the run's sample rate and epochs) or a fixed ``noise_multiplier``. ``report()`` gives the
    epsilon the RDP accountant spent at ``delta``.
    """

    name = "dp_sgd"
    citation = OPACUS_CITATION

    def __init__(self, *, target_epsilon: float | None = 8.0, noise_multiplier: float | None = None,
                 delta: float = 1e-5, max_grad_norm: float = 1.0):
        self._check_budget(target_epsilon, noise_multiplier, delta, max_grad_norm)
        self.target_epsilon = target_epsilon
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.max_grad_norm = max_grad_norm

    def setup(self, model, optimizer, loader):
        from opacus import PrivacyEngine

        _quiet_opacus()
        model, optimizer = self._make_valid(model, optimizer)
        self._sigma = self.noise_for(len(loader.dataset))
        self._engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = self._engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=self._sigma,
            max_grad_norm=self.max_grad_norm, poisson_sampling=True)
        self._sample_rate = 1.0 / len(loader)
        return model, optimizer, loader

    def report(self) -> dict[str, Any]:
        accountant = self._engine.accountant
        return {"epsilon": float(accountant.get_epsilon(delta=self.delta)), "delta": self.delta,
                "noise_multiplier": self._sigma, "max_grad_norm": self.max_grad_norm,
                "sample_rate": self._sample_rate, "steps": int(sum(s for _, _, s in accountant.history)),
                "accountant": "rdp", "batch_norm_replaced": self._bn_replaced}


class _LayerwiseDPOptimizer:
    """Per-layer clipping and noise on Opacus per-sample gradients, then the wrapped optimizer's step.

    Layer ``l`` (the parameters of one module): per-example gradients clipped to norm ``C_l``,
    summed, plus ``N(0, (sigma_l C_l)^2)`` noise per coordinate, divided by the expected batch size.
    Each step is accounted as one subsampled Gaussian mechanism with ``sigma_eff``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, layers: list[tuple[str, list[nn.Parameter]]],
                 expected_batch_size: float, sample_rate: float, sigma_eff: float, accountant: Any):
        self.optimizer = optimizer
        self.layers = layers
        self.expected_batch_size = expected_batch_size
        self.sample_rate = sample_rate
        self.sigma_eff = sigma_eff
        self.accountant = accountant
        self.clips: list[float] = []
        self.sigmas: list[float] = []

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for _, params in self.layers:
            for p in params:
                p.grad_sample = None  # type: ignore[attr-defined]  # Opacus adds grad_sample to parameters at runtime
                p.grad = None

    def step(self) -> None:
        for (_, params), clip, sigma in zip(self.layers, self.clips, self.sigmas):
            samples = [p.grad_sample for p in params]  # type: ignore[attr-defined]  # set by Opacus's hooks
            norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in samples))  # (B,)
            factor = (clip / (norms + 1e-6)).clamp(max=1.0)
            for p, g in zip(params, samples):
                summed = torch.einsum("i,i...->...", factor, g)
                noise = torch.normal(0.0, sigma * clip, size=summed.shape, device=summed.device)
                p.grad = (summed + noise) / self.expected_batch_size
        self.optimizer.step()
        self.accountant.step(noise_multiplier=self.sigma_eff, sample_rate=self.sample_rate)


@register
class LayerAdaptiveDP(PrivateOptimiser):
    """Layer-adaptive DP-SGD (LADP): per-layer clipping norms and noise, budget split by layer sensitivity.

    On a public batch (``public_batch`` reference examples; re-estimated before every epoch) the
    per-example gradient of each layer ``l`` (one module's parameters) gives its median norm
    ``m_l`` and its empirical Fisher trace ``F_l = mean ||g_l||^2``. Then

    - clipping: ``C_l = C * m_l / sqrt(sum_k m_k^2)`` (so the total norm bound stays ``C = max_grad_norm``);
    - budget share: ``w_l = (1 - uniform_mix) * s_l / sum_k s_k + uniform_mix / L`` with ``s = F``
      (``sensitivity="fisher"``) or ``s = m`` (``"grad_norm"``); more sensitive layers get more budget;
    - noise: ``sigma_l = sigma_eff / sqrt(w_l)``, std ``sigma_l * C_l`` on layer ``l``.

    Privacy: releasing all layers' noisy clipped sums is one Gaussian mechanism. Scaling layer ``l``
    by ``1 / (sigma_l C_l)`` makes the noise ``N(0, I)`` and the sensitivity
    ``sqrt(sum_l (C_l / (sigma_l C_l))^2) = sqrt(sum_l 1 / sigma_l^2) = 1 / sigma_eff`` (tight: one
    example can saturate every layer's clip at once). Since ``sum_l w_l = 1``, every step is exactly
    a Poisson-subsampled Gaussian mechanism with noise multiplier ``sigma_eff``, accounted with
    Opacus's RDP accountant: the same ``(epsilon, delta)`` as DP-SGD with ``sigma_eff``. What is NOT
    covered: the clipping norms and budget shares are computed from the reference batch; they are
    free only if that data is public (here: the defender's reference split, disjoint from the
    private training set). Estimating them on the private data would leak and is not accounted.
    """

    name = "ladp"
    needs_reference = True
    citation = (OPACUS_CITATION + "; per-layer clipping: McMahan, Ramage, Talwar & Zhang, 'Learning Differentially "
                "Private Recurrent Language Models', ICLR 2018; layer-wise budget allocation as in the seed "
                "experiment's LADP")

    def __init__(self, *, target_epsilon: float | None = 8.0, noise_multiplier: float | None = None,
                 delta: float = 1e-5, max_grad_norm: float = 1.0, sensitivity: str = "fisher",
                 uniform_mix: float = 0.5, public_batch: int = 256):
        self._check_budget(target_epsilon, noise_multiplier, delta, max_grad_norm)
        if sensitivity not in ("fisher", "grad_norm"):
            raise DefenseError(f"ladp sensitivity {sensitivity!r} is not allowed; choose 'fisher' or 'grad_norm'")
        if isinstance(uniform_mix, bool) or not isinstance(uniform_mix, (int, float)) or not 0 < uniform_mix <= 1:
            raise DefenseError(f"ladp uniform_mix must lie in (0, 1] (it keeps every layer's share above zero), "
                               f"got {uniform_mix!r}")
        if isinstance(public_batch, bool) or not isinstance(public_batch, int) or public_batch < 2:
            raise DefenseError(f"ladp public_batch must be an integer >= 2, got {public_batch!r}")
        self.target_epsilon = target_epsilon
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.sensitivity = sensitivity
        self.uniform_mix = uniform_mix
        self.public_batch = public_batch

    def setup(self, model, optimizer, loader):
        from opacus import GradSampleModule
        from opacus.data_loader import DPDataLoader

        _, accountant_cls, _ = _opacus()
        _quiet_opacus()
        model, optimizer = self._make_valid(model, optimizer)
        model = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        layers = []
        for name, module in model._module.named_modules():
            params = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if params:
                layers.append((name or "(root)", params))
        n = len(loader.dataset)
        loader = DPDataLoader.from_data_loader(loader)
        q = 1.0 / len(loader)
        self._sigma_eff = self.noise_for(n)
        self._optimizer = _LayerwiseDPOptimizer(optimizer, layers, n * q, q, self._sigma_eff, accountant_cls())
        self._allocate(model)
        return model, self._optimizer, loader

    def _layer_stats(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """Median per-example gradient norm and empirical Fisher trace of every layer on a public batch."""
        ref = self.reference_data
        rows = torch.randperm(len(ref))[:self.public_batch]
        x, y = torch.from_numpy(ref.x)[rows.numpy()], torch.from_numpy(ref.y)[rows.numpy()]
        device = next(model.parameters()).device
        was_training = model.training
        model.train()
        self._optimizer.zero_grad()
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        medians, fisher = [], []
        for _, params in self._optimizer.layers:
            sq = sum(p.grad_sample.flatten(1).pow(2).sum(1) for p in params)  # (B,)
            medians.append(float(sq.sqrt().median()))
            fisher.append(float(sq.mean()))
        self._optimizer.zero_grad()
        model.train(was_training)
        return np.array(medians), np.array(fisher)

    def _allocate(self, model: nn.Module) -> None:
        medians, fisher = self._layer_stats(model)
        if not np.isfinite(medians).all() or medians.max() <= 0:
            raise DefenseError("ladp: the public batch gives zero gradients for every layer; check the reference data")
        medians = np.maximum(medians, 1e-6 * medians.max())
        scores = fisher if self.sensitivity == "fisher" else medians
        n_layers = len(medians)
        shares = (1 - self.uniform_mix) * scores / scores.sum() + self.uniform_mix / n_layers
        clips = self.max_grad_norm * medians / np.sqrt((medians**2).sum())
        self._optimizer.clips = clips.tolist()
        self._optimizer.sigmas = (self._sigma_eff / np.sqrt(shares)).tolist()
        self._shares, self._medians, self._fisher = shares, medians, fisher

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, Any] | None:
        if epoch + 1 < self.context.recipe.epochs:
            self._allocate(model)
        return None

    def report(self) -> dict[str, Any]:
        opt = self._optimizer
        return {
            "epsilon": float(opt.accountant.get_epsilon(delta=self.delta)), "delta": self.delta,
            "noise_multiplier": self._sigma_eff, "effective_noise_multiplier": self._sigma_eff,
            "max_grad_norm": self.max_grad_norm, "sample_rate": opt.sample_rate,
            "steps": int(sum(s for _, _, s in opt.accountant.history)), "accountant": "rdp",
            "batch_norm_replaced": self._bn_replaced, "sensitivity": self.sensitivity,
            "layers": [{"name": name, "clip": round(c, 6), "noise_multiplier": round(s, 4), "budget_share": round(w, 4),
                        "median_grad_norm": round(float(m), 6), "fisher_trace": round(float(f), 6)}
                       for (name, _), c, s, w, m, f in zip(opt.layers, opt.clips, opt.sigmas, self._shares,
                                                            self._medians, self._fisher)],
            "guarantee": ("(epsilon, delta)-DP of the training set: every step is one Poisson-subsampled Gaussian "
                          "mechanism with the effective noise multiplier (sum_l sigma_l^-2)^-1/2; clipping norms and "
                          "budget shares come from the public reference batch and are not accounted"),
        }


__all__ = ["DPSGD", "LayerAdaptiveDP", "PrivateOptimiser", "private_optimiser"]
