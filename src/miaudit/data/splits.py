"""Membership ground truth: who the target trained on, and keep matrices for model pools."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miaudit.errors import DataError


@dataclass
class MembershipSplit:
    """Disjoint index arrays into one dataset.

    - ``target_members``: the target model's training set (members, label 1 in an audit).
    - ``target_nonmembers``: examples the target never saw, audited as non-members (label 0).
    - ``shadow``: data for shadow models (Shokri et al. 2017), disjoint from the audited examples.
    - ``population``: further data the target never saw (population attacks, RMIA's ``z`` samples).
    """

    target_members: np.ndarray
    target_nonmembers: np.ndarray
    shadow: np.ndarray
    population: np.ndarray

    def __post_init__(self) -> None:
        parts = {name: np.asarray(getattr(self, name), dtype=np.int64).reshape(-1) for name in
                 ("target_members", "target_nonmembers", "shadow", "population")}
        for name, index in parts.items():
            setattr(self, name, index)
        everything = np.concatenate(list(parts.values()))
        if np.unique(everything).size != everything.size:
            raise DataError("membership split parts overlap; members, non-members, shadow and population "
                            "data must be disjoint")

    @property
    def audited(self) -> np.ndarray:
        """Indices of the audited examples: members then non-members, ``(n_members + n_nonmembers,)``."""
        return np.concatenate([self.target_members, self.target_nonmembers])

    @property
    def membership(self) -> np.ndarray:
        """Boolean ground truth aligned with :attr:`audited` (True = member)."""
        return np.concatenate([np.ones(self.target_members.size, bool), np.zeros(self.target_nonmembers.size, bool)])


def make_split(n: int, *, n_members: int, n_nonmembers: int, n_shadow: int = 0, n_population: int = 0,
               seed: int = 0) -> MembershipSplit:
    """Draw disjoint random parts of ``range(n)`` from ``seed`` (same seed -> same split)."""
    sizes = {"n_members": n_members, "n_nonmembers": n_nonmembers, "n_shadow": n_shadow, "n_population": n_population}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{name} must be a non-negative integer, got {value!r}")
    if n_members == 0 or n_nonmembers == 0:
        raise DataError("an audit needs at least one member and one non-member; raise n_members / n_nonmembers")
    total = sum(sizes.values())
    if total > n:
        raise DataError(f"the split asks for {total} examples ({', '.join(f'{k}={v}' for k, v in sizes.items())}) "
                        f"but the dataset has only {n}; lower the sizes")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, n_members, n_nonmembers, n_shadow, n_population])
    parts = [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return MembershipSplit(*parts)


def paired_keep_matrix(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    """``(n_models, n_examples)`` bool: model ``2i`` trains on a random half, model ``2i+1`` on the other.

    Every example is therefore IN for exactly half the models (LiRA / RMIA offline-online pools,
    Carlini et al. 2022).
    """
    if isinstance(n_models, bool) or n_models < 2 or n_models % 2:
        raise DataError(f"n_models must be an even number >= 2 for paired halves, got {n_models}")
    if n_examples < 2:
        raise DataError(f"need at least 2 examples to split into halves, got {n_examples}")
    rng = np.random.default_rng(seed)
    keep = np.zeros((n_models, n_examples), dtype=bool)
    for pair in range(n_models // 2):
        half = n_examples // 2 + (rng.integers(2) if n_examples % 2 else 0)
        chosen = rng.permutation(n_examples)[:half]
        keep[2 * pair, chosen] = True
        keep[2 * pair + 1] = ~keep[2 * pair]
    return keep


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices (sorted) of ``labels`` (0/1) drawn at random, members and non-members in their original
    proportion (at least one of each whenever ``n >= 2``)."""
    rng = np.random.default_rng(seed)
    n_members = min(max(int(round(n * labels.mean())), 1), n - 1)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in ((1, n_members), (0, n - n_members))]
    return np.sort(np.concatenate(picked))
