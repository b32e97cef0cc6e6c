"""Synthetic, separable text-generator case for the attack contract (and the AuditMI tests).

Each user has ``TEXTS_PER_USER`` texts of ``TOKENS`` tokens; the rank of every next token under a
model is ``min(Geometric(p) - 1, VOCAB - 1)`` with ``p = 0.5`` for users the model trained on and
``p = 0.2`` otherwise: a model ranks its training users' words higher.
"""

from __future__ import annotations

import numpy as np

from miaudit.text_generator.features import TextShadowData, UserRanks

VOCAB = 50
TEXTS_PER_USER = 3
TOKENS = 10
N_USERS = 60
N_SHADOW_MODELS = 2


def user_ranks(membership: np.ndarray, rng: np.random.Generator, *, texts: int = TEXTS_PER_USER) -> UserRanks:
    """A model's ranks on users whose membership is ``membership`` ``(n_users,)`` bool."""
    ranks = [[np.minimum(rng.geometric(0.5 if m else 0.2, TOKENS) - 1, VOCAB - 1) for _ in range(texts)]
             for m in membership]
    return UserRanks(ranks, VOCAB, [f"user{i}" for i in range(membership.size)])


def make_case(attack_cls: type, seed: int = 0) -> tuple[TextShadowData, UserRanks, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(N_USERS) < N_USERS // 2
    memberships = [rng.permutation(labels) for _ in range(N_SHADOW_MODELS)]
    reference = TextShadowData([user_ranks(m, rng) for m in memberships], memberships)
    return reference, user_ranks(labels, rng), labels.astype(int)
