"""Shadow sets: what attacks that learn from shadow models receive, for signals of any type.

A shadow model (Shokri et al. 2017) is trained by the attacker like the target, on data whose
membership the attacker knows; its signals on its own members and non-members teach an attack
what membership looks like. :class:`ShadowSet` holds, per shadow model, its signals on its own
examples (any signal type with ``len``: classifier outputs, label-only or gradient signals,
encoder similarity features, per-user token ranks) and their membership ``(n_k,)`` (True =
trained on), checked once here. Each kind names its own subclass (``ShadowData`` for classifier
outputs, ``EncoderShadowData``, ``TextShadowData``, ``ShadowSignals``), whose constructor takes
the same two lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from miaudit.errors import DataError

S = TypeVar("S", bound=Sized)


class ShadowSet(Generic[S]):
    """``signals[k]``: shadow model k's signals on its own ``n_k`` examples; ``membership[k]`` ``(n_k,)`` bool.

    Every model needs both members and non-members, and all models give signals of one type.
    Subclasses set ``examples`` (what the rows are, for messages) and may check more in
    :meth:`_check` (e.g. one similarity measure for every model).
    """

    #: what one row of a model's signals is ("examples", "users"), as error messages name it
    examples: ClassVar[str] = "examples"
    #: how error messages say that a model needs members and non-members
    needs_both: ClassVar[str] = "both member and non-member {examples}"

    def __init__(self, signals: Sequence[S], membership: Sequence[np.ndarray]):
        name = type(self).__name__
        if not isinstance(signals, (list, tuple)) or not isinstance(membership, (list, tuple)):
            raise DataError(f"{name} takes two lists with one entry per shadow model: [signals of model 1, ...] and "
                            "[membership of model 1, ...]; for one model write "
                            f"{name}([signals], [membership])")
        if not len(signals):
            raise DataError(f"{name} is empty; give the signals of at least one shadow model")
        if len(signals) != len(membership):
            raise DataError(f"{name}: {len(signals)} shadow models' signals but {len(membership)} membership arrays; "
                            "give one membership array per shadow model")
        kinds = {type(s).__name__ for s in signals}
        if len(kinds) != 1:
            raise DataError(f"{name}: shadow signals mix types ({', '.join(sorted(kinds))}); give one type per "
                            "reference")
        self.signals: list[S] = list(signals)
        self.membership: list[np.ndarray] = [np.asarray(m, dtype=bool) for m in membership]
        for k, (s, m) in enumerate(zip(self.signals, self.membership)):
            if m.shape != (len(s),):
                raise DataError(f"{name}: shadow model {k}'s membership has shape {m.shape} but its signals cover "
                                f"{len(s)} {self.examples}")
            if m.all() or not m.any():
                both = self.needs_both.format(examples=self.examples)
                raise DataError(f"{name}: shadow model {k} needs {both} (all {len(s)} of its {self.examples} are "
                                f"{'members' if m.all() else 'non-members'})")
        self._check()

    def _check(self) -> None:
        """Further checks of a kind's signals (default: none)."""

    def __repr__(self) -> str:
        sizes = ", ".join(str(len(s)) for s in self.signals)
        return f"{type(self).__name__}({self.signal_type.__name__} of {self.n_models} models: {sizes} {self.examples})"

    @property
    def n_models(self) -> int:
        return len(self.signals)

    @property
    def signal_type(self) -> type:
        """The type of every model's signals."""
        return type(self.signals[0])

    def pooled(self, statistic: Callable[[S], Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(statistic of every model's signals, concatenated (N, ...), membership (N,))`` over all models."""
        values = np.concatenate([np.asarray(statistic(s)) for s in self.signals])
        return values, np.concatenate(self.membership)


__all__ = ["ShadowSet"]
