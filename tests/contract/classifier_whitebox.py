"""Synthetic, separable case for white-box gradient attacks (``signal_type = "whitebox"``).

Three layers; an example's log gradient norm in layer l is ``a_l + e - 2.5 * member + N(0, 0.3)``
with a latent difficulty ``e ~ N(0, 1)``, its loss ``softplus(e - 2.5 * member)``, and it is
classified correctly when its loss is below log 2. Members therefore have smaller gradients and
losses. Returns ``(AttackReference(shadow=ShadowSignals), target GradientSignals, membership labels)``.
"""

from __future__ import annotations

import numpy as np

from miaudit.classifier.reference import AttackReference
from miaudit.classifier.signals.gradients import GradientSignals
from miaudit.classifier.signals.shadow import ShadowSignals

N_AUDIT = 120
N_SHADOW_MODELS = 3
N_SHADOW_EXAMPLES = 120
LAYERS = ("features.0", "head.net.1", "head.net.3")
OFFSETS = np.array([0.5, 1.0, -0.5])


def synthetic_signals(rng: np.random.Generator, members: np.ndarray) -> GradientSignals:
    n = members.size
    e = rng.normal(0.0, 1.0, n) - 2.5 * members
    log_norms = OFFSETS[None, :] + e[:, None] + rng.normal(0.0, 0.3, (n, len(LAYERS)))
    loss = np.log1p(np.exp(e))
    return GradientSignals(rng.integers(0, 4, n), np.exp(log_norms), LAYERS, loss, (loss < np.log(2)).astype(float))


def make_case(attack_cls, seed: int):
    rng = np.random.default_rng(seed)
    members = rng.permutation(N_AUDIT) < N_AUDIT // 2
    target = synthetic_signals(rng, members)
    shadow_membership = [rng.permutation(N_SHADOW_EXAMPLES) < N_SHADOW_EXAMPLES // 2 for _ in range(N_SHADOW_MODELS)]
    shadow = ShadowSignals([synthetic_signals(rng, m) for m in shadow_membership], shadow_membership)
    return AttackReference(shadow=shadow), target, members.astype(int)
