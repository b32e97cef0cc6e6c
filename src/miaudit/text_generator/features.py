"""AuditMI per-user features (Song & Shmatikov, KDD 2019): histograms of next-token ranks.

For user ``u`` and model ``f``, every token of every text of ``u`` gets the rank of the true next token
in ``f``'s prediction (0 = top-1). The user's feature vector is the histogram of those ranks over
``n_bins`` bins of ``[0, max_rank]`` (ranks above ``max_rank`` are clipped into the last bin, as in the
authors' code), either equal-width bins (``"linear"``, the authors' choice) or log-spaced bins
(``"log"``, finer resolution near rank 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miaudit.attacks.shadow import ShadowSet
from miaudit.errors import ConfigError, DataError, SignalError


@dataclass
class UserRanks:
    """Signals of text-generator attacks: ``ranks[u][j]`` are the ``(L,)`` ranks of user ``u``'s text ``j``."""

    ranks: list[list[np.ndarray]]
    vocab_size: int
    user_ids: list[str]

    def __post_init__(self) -> None:
        if len(self.ranks) != len(self.user_ids):
            raise DataError(f"{len(self.ranks)} users' ranks but {len(self.user_ids)} user ids")
        if not self.ranks:
            raise DataError("no users to audit")
        if self.vocab_size < 2:
            raise SignalError(f"vocab_size is {self.vocab_size}; next-token ranks need a vocabulary of >= 2 tokens")
        self.ranks = [[np.asarray(r, dtype=np.int64) for r in texts] for texts in self.ranks]
        for uid, texts in zip(self.user_ids, self.ranks):
            if not texts or not any(r.size for r in texts):
                raise DataError(f"user {uid!r} has no texts (no ranked tokens); drop users without text "
                                "before auditing")
            for r in texts:
                if r.ndim != 1 or (r.size and (r.min() < 0 or r.max() >= self.vocab_size)):
                    raise SignalError(f"user {uid!r}: ranks must be 1-D integers in [0, {self.vocab_size})")

    def __len__(self) -> int:
        return len(self.ranks)

    def subset(self, index: np.ndarray) -> UserRanks:
        rows = [int(i) for i in np.arange(len(self))[index]]
        return UserRanks([self.ranks[i] for i in rows], self.vocab_size, [self.user_ids[i] for i in rows])

    def flat(self, max_texts: int | None = None) -> list[np.ndarray]:
        """Per user, the ranks of their first ``max_texts`` non-empty texts (all when None), concatenated."""
        out = []
        for texts in self.ranks:
            kept = [r for r in texts if r.size][:max_texts]
            out.append(np.concatenate(kept))
        return out


def bin_edges(n_bins: int, max_rank: int, binning: str = "linear") -> np.ndarray:
    """``(k + 1,)`` increasing edges over ``[0, max_rank + 1]`` (``k <= n_bins``; log bins may merge at the start)."""
    if n_bins < 1 or max_rank < 1:
        raise ConfigError(f"need n_bins >= 1 and max_rank >= 1, got {n_bins} and {max_rank}")
    if binning == "linear":
        return np.linspace(0, max_rank + 1, n_bins + 1)
    if binning == "log":
        return np.unique(np.round(np.geomspace(1, max_rank + 2, n_bins + 1)) - 1)
    raise ConfigError(f"binning {binning!r} is not known; choose 'linear' or 'log'")


def rank_histograms(ranks: list[np.ndarray], edges: np.ndarray, max_rank: int) -> np.ndarray:
    """``(n_users, len(edges) - 1)`` counts of each user's ranks (clipped to ``max_rank``) per bin."""
    return np.stack([np.histogram(np.minimum(r, max_rank), bins=edges)[0] for r in ranks]).astype(np.float64)


class TextShadowData(ShadowSet[UserRanks]):
    """Shadow text models' ranks on their own users; ``membership[k][u]`` True = user u trained shadow k."""

    examples = "users"

    @property
    def ranks(self) -> list[UserRanks]:
        """``ranks[k]``: shadow model k's next-token ranks on its own users."""
        return self.signals
