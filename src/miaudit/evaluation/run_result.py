"""The typed result of a run: its attack entries and the one rule for "the strongest attack".

A run's ``metrics.json`` lists one entry per attack (``evaluate``'s metrics plus what the attack
is). :class:`AttackEntry` reads one entry; :class:`RunResult` reads a whole run. Every place that
names a strongest attack (report headlines, the terminal table, the ``--json`` summary, CI gates
without an attack name, the run store, ``runs compare``, defense comparisons) calls
:func:`strongest`, so they agree:

- candidates are scored entries that are neither a model-free baseline (the LLM blind baseline:
  it measures the data, not the model) nor an ``oracle`` entry (a hyper-parameter chosen on the
  evaluation labels themselves: for comparison only); an entry is named explicitly to be used anyway;
- the winner has the largest value of the metric; ties go to the larger AUC, then to the entry
  listed first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: names of model-free baselines: never "the strongest attack"
BASELINE_NAMES = frozenset({"blind_baseline"})
#: metrics an entry can be ranked by; ``tpr@<fpr>`` with the FPR as in ``tpr_at_fpr`` keys (``tpr@0.01``)
RANKED_METRICS = ("auc", "advantage", "balanced_accuracy", "epsilon")
_TPR = re.compile(r"^tpr@(?P<fpr>[0-9.eE+-]+)$")


def fpr_key(fpr: float) -> str:
    """The key of an FPR in ``tpr_at_fpr`` (``0.01 -> "0.01"``)."""
    return f"{fpr:g}"


@dataclass(frozen=True)
class AttackEntry:
    """One attack's entry of a run (``metrics.json`` ``attacks[i]``, or a row of a defense comparison).

    ``fields`` is the entry exactly as written; the typed attributes are read from it. An entry that
    could not be scored (``applicable: false`` or ``error``) has ``auc = None``.
    """

    name: str
    attack: str
    auc: float | None
    auc_ci: tuple[float, float] | None
    advantage: float | None
    tpr_at_fpr: dict[str, float]
    tpr_at_fpr_ci: dict[str, tuple[float, float]]
    balanced_accuracy: float | None
    threshold_source: str | None
    empirical_epsilon: float | None
    selection: str | None
    baseline: bool
    fields: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> AttackEntry:
        eps = entry.get("empirical_epsilon")
        name = str(entry.get("name", "?"))
        return cls(
            name=name, attack=str(entry.get("attack", name)),
            auc=_float(entry.get("auc")), auc_ci=_pair(entry.get("auc_ci")), advantage=_float(entry.get("advantage")),
            tpr_at_fpr={str(k): float(v) for k, v in (entry.get("tpr_at_fpr") or {}).items() if v is not None},
            tpr_at_fpr_ci={str(k): p for k, v in (entry.get("tpr_at_fpr_ci") or {}).items()
                           if (p := _pair(v)) is not None},
            balanced_accuracy=_float(entry.get("balanced_accuracy")), threshold_source=entry.get("threshold_source"),
            empirical_epsilon=_float(eps.get("epsilon")) if isinstance(eps, Mapping) else _float(eps),
            selection=entry.get("selection"),
            baseline=name in BASELINE_NAMES or bool(entry.get("baseline")),
            fields=dict(entry))

    @property
    def scored(self) -> bool:
        """True when the entry has results (an AUC)."""
        return self.auc is not None

    @property
    def oracle(self) -> bool:
        """True for an entry whose hyper-parameter was chosen on the evaluation labels (comparison only)."""
        return self.selection == "oracle" or self.name.endswith(".oracle")

    @property
    def candidate(self) -> bool:
        """May this entry be "the strongest attack" of a run (scored, no baseline, no oracle)?"""
        return self.scored and not self.baseline and not self.oracle

    def value(self, metric: str) -> float | None:
        """The entry's value of ``metric`` (``auc``, ``advantage``, ``balanced_accuracy``, ``epsilon``,
        ``tpr@<fpr>``); None when it does not have it."""
        if metric == "epsilon":
            return self.empirical_epsilon
        if metric in ("auc", "advantage", "balanced_accuracy"):
            return getattr(self, metric)
        match = _TPR.match(metric)
        if match is None:
            raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(RANKED_METRICS)} or tpr@FPR")
        return self.tpr_at_fpr.get(fpr_key(float(match["fpr"])))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.fields)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _pair(value: Any) -> tuple[float, float] | None:
    if not value or len(value) != 2 or value[0] is None or value[1] is None:
        return None
    return float(value[0]), float(value[1])


def accountant_claim(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``{"epsilon", "delta"}`` a DP accountant claims for the run's training (``dp`` section, else the
    target's own fields); values are None without an accountant."""
    dp = metrics.get("dp")
    claim: Mapping[str, Any] = dp if isinstance(dp, Mapping) else {}
    target = metrics.get("target") or {}
    return {k: claim.get(k, target.get(k)) for k in ("epsilon", "delta")}


def entries_of(attacks: Iterable[Mapping[str, Any] | AttackEntry]) -> list[AttackEntry]:
    """Typed entries from ``metrics.json``-style dicts (entries pass through)."""
    return [a if isinstance(a, AttackEntry) else AttackEntry.from_dict(a) for a in attacks]


def strongest(attacks: Iterable[Mapping[str, Any] | AttackEntry], metric: str = "auc", *,
              value: Callable[[AttackEntry], float | None] | None = None) -> AttackEntry | None:
    """The strongest attack for ``metric`` by the one rule of this module (None without a candidate).

    ``value`` computes the metric of an entry when it is not stored on it (e.g. a TPR at an FPR the
    run did not report, from its saved scores); default :meth:`AttackEntry.value`. Candidates
    without a value are skipped.
    """
    measure = value or (lambda entry: entry.value(metric))
    best: tuple[float, float, int] | None = None
    chosen = None
    for position, entry in enumerate(entries_of(attacks)):
        if not entry.candidate:
            continue
        v = measure(entry)
        if v is None:
            continue
        rank = (float(v), float(entry.auc if entry.auc is not None else -1.0), -position)
        if best is None or rank > best:
            best, chosen = rank, entry
    return chosen


def ranked(attacks: Iterable[Mapping[str, Any] | AttackEntry]) -> list[AttackEntry]:
    """Entries in reading order: candidates by AUC (strongest first), then oracle entries by AUC, then
    model-free baselines, then entries without results."""
    entries = entries_of(attacks)

    def group(entry: AttackEntry) -> int:
        if not entry.scored:
            return 3
        return 2 if entry.baseline else 1 if entry.oracle else 0

    return sorted(entries, key=lambda e: (group(e), -(e.auc if e.auc is not None else 0.0)))


@dataclass(eq=False)
class RunResult(Mapping[str, Any]):
    """A run's ``metrics.json``, typed: attack entries, the blind baseline, the strongest attack.

    Reads as, and compares equal to, the mapping it was written from (``result["attacks"]``), so code
    that needs a field no attribute covers reads it directly.
    """

    metrics: dict[str, Any]
    path: Path | None = None
    attacks: list[AttackEntry] = field(init=False)

    def __post_init__(self) -> None:
        self.attacks = entries_of(self.metrics.get("attacks") or [])

    @property
    def kind(self) -> str | None:
        return self.metrics.get("kind")

    @property
    def seed(self) -> int | None:
        return self.metrics.get("seed")

    @property
    def warnings(self) -> list[str]:
        return list(self.metrics.get("warnings") or [])

    @property
    def all_warnings(self) -> list[str]:
        """The run's warnings, then its attacks' (a warning every scored attack shares is listed once, as
        "all attacks: ..."), without repeats: what every report and the terminal show."""
        attacks = [a for a in self.ranked() if a.scored and not a.baseline]
        per_attack = [list(a.fields.get("warnings") or []) for a in attacks]
        shared = [w for w in per_attack[0] if all(w in ws for ws in per_attack)] if per_attack else []
        out = self.warnings + [f"all attacks: {w}" if len(attacks) > 1 else w for w in shared]
        for a, ws in zip(attacks, per_attack):
            out += [f"{a.name}: {w}" for w in ws if w not in shared]
        return list(dict.fromkeys(out))

    @property
    def fpr_keys(self) -> list[str]:
        """The FPRs at which TPR was reported, as ``tpr_at_fpr`` keys, ascending."""
        fprs = (self.metrics.get("evaluation") or {}).get("fprs")
        keys = [fpr_key(float(f)) for f in fprs] if fprs else [k for a in self.attacks for k in a.tpr_at_fpr]
        return sorted(set(keys), key=float)

    @property
    def n_nonmembers(self) -> int | None:
        """Non-members behind the TPR figures: the fewest of any scored entry, else ``data.n_nonmembers``."""
        counts = [int(a.fields["n_nonmembers"]) for a in self.attacks if a.fields.get("n_nonmembers") is not None]
        return min(counts) if counts else (self.metrics.get("data") or {}).get("n_nonmembers")

    @property
    def baseline(self) -> AttackEntry | None:
        """The model-free blind baseline (LLM runs; classifier runs on the user's member files), as an entry, when
        the run has one."""
        listed = next((a for a in self.attacks if a.baseline), None)
        if listed is not None:
            return listed
        section = self.metrics.get("blind_baseline")
        if isinstance(section, Mapping) and "auc" in section:
            return AttackEntry.from_dict({"name": "blind_baseline", "baseline": True, **section})
        return None

    def strongest(self, metric: str = "auc") -> AttackEntry | None:
        """:func:`strongest` over this run's attacks."""
        return strongest(self.attacks, metric)

    def ranked(self) -> list[AttackEntry]:
        """:func:`ranked` over this run's attacks."""
        return ranked(self.attacks)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)


__all__ = ["BASELINE_NAMES", "RANKED_METRICS", "AttackEntry", "RunResult", "accountant_claim", "entries_of",
           "fpr_key", "ranked", "strongest"]
