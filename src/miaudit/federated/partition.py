"""Splitting a federation's training data over its clients: IID, Dirichlet label skew, label shards.

Every function returns one sorted array of positions (into the given labels) per client; the
clients' parts are disjoint and cover every example. :func:`partition` checks the result: a client
count larger than the data allows, or a non-IID draw that leaves a client with fewer than
``min_client_size`` examples, is a one-line :class:`~miaudit.errors.DataError` naming the fix (a
partition is never silently re-drawn, which would bias it towards balanced clients).
"""

from __future__ import annotations

import numpy as np

from miaudit.errors import DataError

HSU_2019 = ("Hsu, Qi & Brown, 'Measuring the Effects of Non-Identical Data Distribution for Federated Visual "
            "Classification', arXiv:1909.06335, 2019")
MCMAHAN_2017 = ("McMahan, Moore, Ramage, Hampson & Agüera y Arcas, 'Communication-Efficient Learning of Deep "
                "Networks from Decentralized Data', AISTATS 2017")


def iid_partition(n: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of ``range(n)`` cut into ``n_clients`` parts whose sizes differ by at most one."""
    return [np.sort(part) for part in np.array_split(rng.permutation(n), n_clients)]


def dirichlet_partition(labels: np.ndarray, n_clients: int, alpha: float,
                        rng: np.random.Generator) -> list[np.ndarray]:
    """Label skew (Hsu et al. 2019): each class's examples go to the clients in proportions drawn from Dir(alpha).

    ``labels`` ``(n,)``; small ``alpha`` gives each client few classes, large ``alpha`` tends to IID.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(n_clients, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * rows.size).astype(np.int64)
        for client, chunk in enumerate(np.split(rows, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def shard_partition(labels: np.ndarray, n_clients: int, shards_per_client: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """McMahan et al. 2017's pathological non-IID split: sort by label, cut into equal shards, deal them out."""
    order = rng.permutation(labels.size)
    order = order[np.argsort(labels[order], kind="stable")]  # by label, random order within a class
    shards = np.array_split(order, n_clients * shards_per_client)
    dealt = rng.permutation(len(shards)).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in dealt]


def partition(labels: np.ndarray, n_clients: int, scheme: str, *, seed: int, alpha: float | None = None,
              shards_per_client: int | None = None, min_client_size: int = 1,
              what: str = "the federation") -> list[np.ndarray]:
    """Split ``labels`` ``(n,)`` over ``n_clients`` with ``scheme`` ("iid", "dirichlet", "shards"), checked.

    ``what`` names the federation in error messages (e.g. "the target federation").
    """
    labels = np.asarray(labels)
    n = labels.size
    needed = n_clients * min_client_size
    if n < needed:
        raise DataError(f"federation.n_clients={n_clients} needs at least {needed} training examples "
                        f"({min_client_size} per client) but {what} has {n}; lower federation.n_clients or give it "
                        "more data (split.n_members, split.n_shadow)")
    rng = np.random.default_rng(seed)
    alpha = 0.5 if alpha is None else float(alpha)
    if scheme == "iid":
        parts = iid_partition(n, n_clients, rng)
    elif scheme == "dirichlet":
        parts = dirichlet_partition(labels, n_clients, alpha, rng)
    elif scheme == "shards":
        per_client = int(shards_per_client or 2)
        if n < n_clients * per_client:
            raise DataError(f"federation.partition shards: {n_clients} clients x {per_client} shards need at least "
                            f"{n_clients * per_client} examples but {what} has {n}; lower shards_per_client")
        parts = shard_partition(labels, n_clients, per_client, rng)
    else:
        raise DataError(f"unknown partition scheme {scheme!r}; choose iid, dirichlet or shards")
    sizes = [p.size for p in parts]
    small = int(np.argmin(sizes))
    if sizes[small] < min_client_size:
        detail = f" (alpha={alpha:g})" if scheme == "dirichlet" else ""
        raise DataError(f"federation.partition {scheme}{detail} leaves client {small} of {what} with {sizes[small]} "
                        f"examples (fewer than min_client_size={min_client_size}); raise federation.alpha, use "
                        "fewer clients, partition: iid, or another seed")
    return parts


def label_counts(labels: np.ndarray, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """``(n_clients, n_classes)`` how many examples of each class every client holds."""
    return np.stack([np.bincount(labels[p], minlength=n_classes) for p in parts])


__all__ = ["HSU_2019", "MCMAHAN_2017", "dirichlet_partition", "iid_partition", "label_counts", "partition",
           "shard_partition"]
