"""Synthetic, separable case for label-only robustness attacks (``signal_type = "label_only"``).

Each example has a latent robustness ``r = e + 2 * member + N(0, 0.3)`` with ``e ~ N(0, 1)``: the
clean prediction is right with probability ``sigmoid(r + 1.5)``; each augmented view is right with
probability ``sigmoid(r)``, noisy copies at level j with ``sigmoid(r - j)``, and the boundary
distance is ``softplus(r)``. Misclassified examples get 0 everywhere (as the real signals do).
Returns ``(AttackReference(shadow=ShadowSignals), target LabelOnlySignals, membership labels)``.
"""

from __future__ import annotations

import numpy as np

from miaudit.classifier.reference import AttackReference
from miaudit.classifier.signals.label_only import LabelOnlySignals
from miaudit.classifier.signals.shadow import ShadowSignals

N_AUDIT = 120
N_SHADOW_MODELS = 3
N_SHADOW_EXAMPLES = 120
N_VIEWS = 5
LEVELS = (0.05, 0.1, 0.2)
N_CLASSES = 4


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def synthetic_signals(rng: np.random.Generator, members: np.ndarray) -> LabelOnlySignals:
    n = members.size
    r = rng.normal(0.0, 1.0, n) + 2.0 * members + rng.normal(0.0, 0.3, n)
    labels = rng.integers(0, N_CLASSES, n)
    correct = rng.random(n) < _sigmoid(r + 1.5)
    predictions = np.where(correct, labels, (labels + 1) % N_CLASSES)
    augmentation = (rng.random((n, N_VIEWS)) < _sigmoid(r)[:, None]).astype(float)
    augmentation[:, 0] = correct
    noise = rng.binomial(20, _sigmoid(r[:, None] - np.arange(len(LEVELS)))) / 20.0
    distance = np.log1p(np.exp(r))
    augmentation[~correct] = 0.0
    noise[~correct] = 0.0
    distance[~correct] = 0.0
    queries = np.full(n, 1 + N_VIEWS - 1 + 20 * len(LEVELS) + 50)
    return LabelOnlySignals(labels, predictions, queries, augmentation=augmentation,
                            augmentation_names=tuple(f"view{j}" for j in range(N_VIEWS)), noise=noise,
                            noise_levels=LEVELS, boundary_distance=distance, boundary_censored=np.zeros(n, bool),
                            boundary_queries=np.full(n, 50))


def make_case(attack_cls, seed: int):
    rng = np.random.default_rng(seed)
    members = rng.permutation(N_AUDIT) < N_AUDIT // 2
    target = synthetic_signals(rng, members)
    shadow_membership = [rng.permutation(N_SHADOW_EXAMPLES) < N_SHADOW_EXAMPLES // 2 for _ in range(N_SHADOW_MODELS)]
    shadow = ShadowSignals([synthetic_signals(rng, m) for m in shadow_membership], shadow_membership)
    return AttackReference(shadow=shadow), target, members.astype(int)
