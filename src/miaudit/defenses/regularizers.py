"""Training-time regularisers: L2, dropout, label smoothing, RelaxLoss, Mixup + MMD, adversarial regularisation.

Each is a :class:`~miaudit.defenses.base.TrainingDefense` (a plugin of
:func:`miaudit.classifier.training.train_classifier`). Defenses that *replace* the cross-entropy return
``base_loss - CE + new_loss``, so they compose with defenses that add terms, in any order.
Randomness (mixup draws, reference batches, inference-model initialisation) comes from torch's
global RNG, which the training loop seeds from ``TrainConfig.seed``: same config, same model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from miaudit.defenses.base import DefenseContext, DefenseError, TrainingDefense
from miaudit.defenses.registry import register


def _positive(value: float, what: str, *, upper: float | None = None, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    too_large = upper is not None and value > upper
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok or too_large:
        bound = f" and <= {upper}" if upper is not None else ""
        raise DefenseError(f"{what} must be a number {'>= 0' if allow_zero else '> 0'}{bound}, got {value!r}")


def _replace_ce(base_loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Swap the loop's cross-entropy term inside ``base_loss`` for ``new``."""
    return base_loss - F.cross_entropy(logits, y) + new


@register
class L2Penalty(TrainingDefense):
    """Explicit L2 penalty ``strength / 2 * sum_w ||w||^2`` over all trainable parameters.

    Its gradient ``strength * w`` equals coupled weight decay (``torch.optim`` ``weight_decay=strength``
    for SGD and Adam; not AdamW's decoupled decay). Kept as a loss term so it shows in the loss.
    """

    name = "l2"
    citation = "Krogh & Hertz, 'A Simple Weight Decay Can Improve Generalization', NeurIPS 1991"

    def __init__(self, *, strength: float = 0.01):
        _positive(strength, "l2 strength")
        self.strength = strength

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
             base_loss: torch.Tensor) -> torch.Tensor:
        squares = sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
        return base_loss + 0.5 * self.strength * squares


@register
class Dropout(TrainingDefense):
    """Dropout with probability ``p`` on the input of the classifier head (the model's last ``nn.Linear``).

    Inserted at ``setup`` and removed at ``finalize`` (dropout is the identity at inference), so the
    trained model has the zoo architecture. Works for every zoo model (MLP, CNN, ResNet-18).
    """

    name = "dropout"
    stage = 0
    dp_compatible = True
    citation = ("Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, 'Dropout: A Simple Way to Prevent "
                "Neural Networks from Overfitting', JMLR 2014")

    def __init__(self, *, p: float = 0.5):
        _positive(p, "dropout p", upper=0.95)
        self.p = p

    def setup(self, model, optimizer, loader):
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not names:
            raise DefenseError("dropout: the model has no nn.Linear classifier head to put dropout in front of")
        self._path = names[-1]
        parent, key = _parent(model, self._path)
        setattr(parent, key, nn.Sequential(nn.Dropout(self.p), getattr(parent, key)))
        return model, optimizer, loader

    def finalize(self, model: nn.Module) -> nn.Module:
        parent, key = _parent(getattr(model, "_module", model), self._path)
        wrapped = getattr(parent, key)
        if isinstance(wrapped, nn.Sequential) and isinstance(wrapped[0], nn.Dropout):
            setattr(parent, key, wrapped[1])
        return model


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    *head, key = path.split(".")
    parent = model
    for part in head:
        parent = getattr(parent, part)
    return parent, key


@register
class LabelSmoothing(TrainingDefense):
    """Cross-entropy against ``(1 - epsilon) * onehot + epsilon / C`` instead of the one-hot label."""

    name = "label_smoothing"
    loss_role = "replaces"
    dp_compatible = True
    citation = ("Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, 'Rethinking the Inception Architecture for Computer "
                "Vision', CVPR 2016")

    def __init__(self, *, epsilon: float = 0.1):
        _positive(epsilon, "label_smoothing epsilon", upper=1.0)
        self.epsilon = epsilon

    def loss(self, model, x, y, logits, base_loss):
        return _replace_ce(base_loss, logits, y, F.cross_entropy(logits, y, label_smoothing=self.epsilon))


@register
class RelaxLoss(TrainingDefense):
    """RelaxLoss: keep the training loss near a target level ``alpha`` instead of driving it to zero.

    Even epochs: minimise ``|CE - alpha|`` (gradient ascent once the batch loss is below ``alpha``).
    Odd epochs: plain CE while it is above ``alpha``, else "posterior flattening": cross-entropy
    against soft labels that keep the true-class probability (clamped to ``upper``) and spread the
    rest uniformly over the other classes (Algorithm 1 of the paper and the authors' code).
    """

    name = "relaxloss"
    loss_role = "replaces"
    citation = ("Chen, Yu & Fritz, 'RelaxLoss: Defending Membership Inference Attacks without Losing Utility', "
                "ICLR 2022")

    def __init__(self, *, alpha: float = 1.0, upper: float = 1.0):
        _positive(alpha, "relaxloss alpha")
        _positive(upper, "relaxloss upper", upper=1.0)
        self.alpha = alpha
        self.upper = upper

    def setup(self, model, optimizer, loader):
        self._epoch = 0
        return model, optimizer, loader

    def loss(self, model, x, y, logits, base_loss):
        ce = F.cross_entropy(logits, y)
        if self._epoch % 2 == 0:
            new = (ce - self.alpha).abs()
        elif ce > self.alpha:
            new = ce
        else:
            probs = logits.softmax(dim=1)
            p_true = probs.gather(1, y[:, None]).clamp(max=self.upper).detach()  # (B, 1)
            soft = ((1 - p_true) / (logits.shape[1] - 1)).expand_as(probs).clone()
            soft.scatter_(1, y[:, None], p_true)
            new = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
        return _replace_ce(base_loss, logits, y, new)

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, Any] | None:
        self._epoch = epoch + 1
        return None


def _rbf_mmd2(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """Biased MMD^2 between samples ``a`` ``(m, d)`` and ``b`` ``(m', d)`` with an RBF kernel of width ``sigma``."""
    z = torch.cat([a, b])
    sq = torch.cdist(z, z).pow(2)
    k = torch.exp(-sq / (2 * sigma**2))
    m = len(a)
    return k[:m, :m].mean() + k[m:, m:].mean() - 2 * k[:m, m:].mean()


@register
class MixupMMD(TrainingDefense):
    """Mixup training plus an MMD penalty between outputs on members and on class-matched reference data.

    Loss: ``lam * CE(f(x~), y) + (1 - lam) * CE(f(x~), y[perm])`` with ``x~ = lam x + (1 - lam) x[perm]``,
    ``lam ~ Beta(alpha, alpha)`` (Zhang et al. 2018), plus ``mmd_weight * MMD^2(softmax f(x), softmax f(x'))``
    where ``x'`` are reference examples drawn with the same labels as the batch and their outputs
    are detached (RBF kernel, sigma 1, biased estimator, as in the authors' code). Simplification:
    the penalty is added on every batch, where the authors run it as a second pass per epoch
    when the train-validation accuracy gap exceeds 3 points.
    """

    name = "mixup_mmd"
    loss_role = "replaces"
    needs_reference = True
    citation = ("Li, Li & Ribeiro, 'Membership Inference Attacks and Defenses in Classification Models', "
                "ACM CODASPY 2021")

    def __init__(self, *, alpha: float = 1.0, mmd_weight: float = 0.1, sigma: float = 1.0):
        _positive(alpha, "mixup_mmd alpha")
        _positive(mmd_weight, "mixup_mmd mmd_weight", allow_zero=True)
        _positive(sigma, "mixup_mmd sigma")
        self.alpha = alpha
        self.mmd_weight = mmd_weight
        self.sigma = sigma

    def setup(self, model, optimizer, loader):
        ref = self.reference_data
        self._ref_x = torch.from_numpy(ref.x)
        self._by_class = {int(c): torch.from_numpy((ref.y == c).nonzero()[0]) for c in range(self.context.n_classes)}
        return model, optimizer, loader

    def _matched_reference(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference rows with the labels of ``y`` (examples of classes the reference lacks are dropped)."""
        keep, rows = [], []
        for i, label in enumerate(y.tolist()):
            pool = self._by_class[label]
            if len(pool):
                keep.append(i)
                rows.append(int(pool[torch.randint(len(pool), ())]))
        return torch.tensor(keep, dtype=torch.long), self._ref_x[rows]

    def loss(self, model, x, y, logits, base_loss):
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(len(y), device=y.device)
        mixed = model(lam * x + (1 - lam) * x[perm])
        new = lam * F.cross_entropy(mixed, y) + (1 - lam) * F.cross_entropy(mixed, y[perm])
        if self.mmd_weight > 0:
            keep, ref_x = self._matched_reference(y.cpu())
            if len(keep) > 1:
                with torch.no_grad():
                    ref_probs = model(ref_x.to(x.device)).softmax(dim=1)
                new = new + self.mmd_weight * _rbf_mmd2(logits[keep.to(x.device)].softmax(dim=1), ref_probs, self.sigma)
        return _replace_ce(base_loss, logits, y, new)


class _InferenceModel(nn.Module):
    """Nasr et al.'s inference model h(f(x), y): a stream for the prediction, one for the label, then a joint MLP."""

    def __init__(self, n_classes: int, width: int = 64):
        super().__init__()
        self.probs = nn.Sequential(nn.Linear(n_classes, 2 * width), nn.ReLU(), nn.Linear(2 * width, width), nn.ReLU())
        self.label = nn.Sequential(nn.Linear(n_classes, width), nn.ReLU())
        self.joint = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """``(B, C)``, ``(B, C)`` -> ``(B,)`` logit of "member"."""
        return self.joint(torch.cat([self.probs(probs), self.label(onehot)], dim=1)).squeeze(1)


@register
class AdversarialRegularization(TrainingDefense):
    """Min-max training against an inference model (Nasr et al. 2018, Algorithm 1).

    After ``warmup_epochs`` of plain training, every batch first takes ``attack_steps`` Adam steps
    of the inference model ``h`` on the member batch (label 1) against an equally large random
    batch of reference data (label 0), maximising its log-likelihood gain; then the classifier
    minimises ``CE + alpha * mean h(f(x), y)`` on the member batch (the authors' code uses the
    mean membership probability as the privacy term; ``alpha`` = 3 there).
    """

    name = "adv_reg"
    needs_reference = True
    citation = ("Nasr, Shokri & Houmansadr, 'Machine Learning with Membership Privacy using Adversarial "
                "Regularization', ACM CCS 2018")

    def __init__(self, *, alpha: float = 3.0, attack_steps: int = 1, attack_lr: float = 1e-3, warmup_epochs: int = 1):
        _positive(alpha, "adv_reg alpha")
        _positive(attack_lr, "adv_reg attack_lr")
        if not isinstance(attack_steps, int) or attack_steps < 1:
            raise DefenseError(f"adv_reg attack_steps must be an integer >= 1, got {attack_steps!r}")
        if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise DefenseError(f"adv_reg warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.alpha = alpha
        self.attack_steps = attack_steps
        self.attack_lr = attack_lr
        self.warmup_epochs = warmup_epochs

    def check(self, context: DefenseContext) -> None:
        super().check(context)
        if self.warmup_epochs >= context.recipe.epochs:
            raise DefenseError(f"adv_reg warmup_epochs={self.warmup_epochs} leaves no adversarial epoch of the "
                               f"{context.recipe.epochs} training epochs; lower it")

    def setup(self, model, optimizer, loader):
        device = next(model.parameters()).device
        self._h = _InferenceModel(self.context.n_classes).to(device)
        self._h_opt = torch.optim.Adam(self._h.parameters(), lr=self.attack_lr)
        ref = self.reference_data
        self._ref = (torch.from_numpy(ref.x), torch.from_numpy(ref.y))
        self._epoch, self._correct, self._seen = 0, 0, 0
        return model, optimizer, loader

    def _h_logit(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._h(logits.softmax(dim=1), F.one_hot(y, logits.shape[1]).float())

    def loss(self, model, x, y, logits, base_loss):
        if self._epoch < self.warmup_epochs:
            return base_loss
        for _ in range(self.attack_steps):
            rows = torch.randint(len(self._ref[0]), (len(y),))
            with torch.no_grad():
                ref_logits = model(self._ref[0][rows].to(x.device))
            scores = torch.cat([self._h_logit(logits.detach(), y),
                                self._h_logit(ref_logits, self._ref[1][rows].to(y.device))])
            truth = torch.cat([torch.ones(len(y)), torch.zeros(len(y))]).to(scores.device)
            self._h_opt.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(scores, truth).backward()
            self._h_opt.step()
            self._correct += int(((scores > 0) == truth.bool()).sum())
            self._seen += len(truth)
        self._h.requires_grad_(False)
        privacy = torch.sigmoid(self._h_logit(logits, y)).mean()
        self._h.requires_grad_(True)
        return base_loss + self.alpha * privacy

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, Any] | None:
        self._epoch = epoch + 1
        if not self._seen:
            return None
        accuracy, self._correct, self._seen = self._correct / self._seen, 0, 0
        return {"adv_reg_inference_accuracy": accuracy}


__all__ = ["AdversarialRegularization", "Dropout", "L2Penalty", "LabelSmoothing", "MixupMMD", "RelaxLoss"]
