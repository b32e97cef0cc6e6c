"""Synthetic, separable classifier case for the attack contract (and any classifier attack's tests).

Every example has a latent ease ``e ~ N(1.5, 1.5)``; a model's logit margin for the true class is
``e + 3 * trained_on_it + N(0, 0.5)`` on top of standard-normal logits, so models are confident and
correct on their members and less confident, sometimes wrong, elsewhere. The case holds:

- target outputs on ``N_AUDIT`` audited examples, half of them members (the returned labels);
- shadow data: ``N_SHADOW_MODELS`` shadow models, each on its own members and non-members;
- a reference pool of ``N_REF`` models on the audited examples with a paired ``keep`` matrix
  (every example IN for exactly half the models), plus their outputs on ``N_POP`` population examples;
- ``reference.population``: the target's outputs on those same population examples.

Attacks with label-only access receive every output as predicted labels only.
"""

from __future__ import annotations

import importlib

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference import AttackReference, ReferencePool, ShadowData

N_CLASSES = 4
N_AUDIT = 120
N_SHADOW_MODELS = 3
N_SHADOW_EXAMPLES = 120
N_REF = 8
N_POP = 50


def _outputs(rng: np.random.Generator, labels: np.ndarray, ease: np.ndarray, trained: np.ndarray,
             label_only: bool) -> ClassifierOutputs:
    logits = rng.normal(size=(labels.size, N_CLASSES))
    logits[np.arange(labels.size), labels] += ease + 3.0 * trained + rng.normal(0.0, 0.5, labels.size)
    if label_only:
        return ClassifierOutputs(labels, predictions=logits.argmax(axis=1))
    return ClassifierOutputs(labels, logits=logits)


def paired_keep(rng: np.random.Generator, n_models: int, n_examples: int) -> np.ndarray:
    """``(n_models, n_examples)`` bool; models 2i and 2i+1 train on complementary random halves."""
    keep = np.zeros((n_models, n_examples), dtype=bool)
    for i in range(0, n_models, 2):
        half = rng.permutation(n_examples)[: n_examples // 2]
        keep[i, half] = True
        keep[i + 1] = ~keep[i]
    return keep


def make_case(attack_cls, seed: int):
    """``(AttackReference, target ClassifierOutputs on the audited examples, membership labels (n,) int)``."""
    signal_type = getattr(attack_cls, "signal_type", None)
    if signal_type is not None:  # signals computed from the model itself (label-only queries, gradients)
        return importlib.import_module(f"contract.classifier_{signal_type}").make_case(attack_cls, seed)
    rng = np.random.default_rng(seed)
    label_only = getattr(attack_cls, "access", None) == "label-only"

    def outputs(labels, ease, trained):
        return _outputs(rng, labels, ease, np.asarray(trained, dtype=float), label_only)

    def new_examples(n):
        return rng.integers(0, N_CLASSES, n), rng.normal(1.5, 1.5, n)

    y, ease = new_examples(N_AUDIT)
    members = np.zeros(N_AUDIT, dtype=bool)
    members[rng.permutation(N_AUDIT)[: N_AUDIT // 2]] = True
    target = outputs(y, ease, members)

    shadow_outputs, shadow_membership = [], []
    for _ in range(N_SHADOW_MODELS):
        ys, es = new_examples(N_SHADOW_EXAMPLES)
        ms = rng.permutation(N_SHADOW_EXAMPLES) < N_SHADOW_EXAMPLES // 2
        shadow_outputs.append(outputs(ys, es, ms))
        shadow_membership.append(ms)

    y_pop, ease_pop = new_examples(N_POP)
    keep = paired_keep(rng, N_REF, N_AUDIT)
    pool = ReferencePool(outputs=[outputs(y, ease, keep[m]) for m in range(N_REF)], keep=keep,
                         population=[outputs(y_pop, ease_pop, np.zeros(N_POP)) for _ in range(N_REF)])
    reference = AttackReference(shadow=ShadowData(shadow_outputs, shadow_membership), pool=pool,
                                population=outputs(y_pop, ease_pop, np.zeros(N_POP)))
    return reference, target, members.astype(int)
