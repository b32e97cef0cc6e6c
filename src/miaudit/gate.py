"""CI gates: ``--fail-if "[ATTACK:]METRIC OP NUMBER"`` evaluated on a run's ``metrics.json``.

Grammar (whitespace free around the parts)::

    gate    := [attack ":"] metric op number
    metric  := "auc" | "advantage" | "balanced_accuracy" | "epsilon" | "tpr@" fpr
    fpr     := number | number "%"          (tpr@0.01 and tpr@1% are the same)
    op      := ">" | ">=" | "<" | "<="

A gate *trips* when its comparison is true ("fail if ..."). Without an attack name the gate
applies to the strongest attack of the run for that metric, i.e. the attack with the largest
value of the metric (model-free baselines such as the LLM blind baseline are not candidates; name
them explicitly to gate on them). ``epsilon`` is the empirical lower bound on epsilon of
:func:`miaudit.evaluation.epsilon.empirical_epsilon` (stored per attack as
``"empirical_epsilon"`` by :func:`miaudit.tracking.finalize_run`, or computed from the run's
saved scores).
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from miaudit.errors import MiauditError

BASELINE_NAMES = frozenset({"blind_baseline"})  # model-free baselines: never "the strongest attack"
GRAMMAR = ('[ATTACK:]METRIC OP NUMBER with METRIC one of auc, advantage, balanced_accuracy, epsilon, '
           'tpr@FPR (e.g. tpr@0.01 or tpr@1%) and OP one of > >= < <=; e.g. "tpr@0.01 > 0.05" or '
           '"rmia:auc >= 0.6"')
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERN = re.compile(
    rf"^\s*(?:(?P<attack>[A-Za-z0-9_.\-]+)\s*:\s*)?"
    rf"(?P<metric>auc|advantage|balanced_accuracy|epsilon|tpr\s*@\s*(?P<fpr>{_NUMBER})\s*(?P<pct>%)?)"
    rf"\s*(?P<op>>=|<=|>|<)\s*(?P<value>{_NUMBER})\s*$")


@dataclass(frozen=True)
class Gate:
    expression: str
    attack: str | None  # None = the strongest attack for this metric
    metric: str  # "auc", "advantage", "balanced_accuracy", "epsilon" or "tpr@<fpr>"
    fpr: float | None  # for tpr@ metrics
    op: str
    threshold: float

    def trips(self, value: float) -> bool:
        """True when the comparison holds for ``value``, i.e. the gate fails the run."""
        return _OPS[self.op](value, self.threshold)


@dataclass
class GateResult:
    tripped: bool
    details: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_gate(expression: str) -> Gate:
    """Parse one gate expression; a :class:`MiauditError` naming the grammar if it does not parse."""
    match = _PATTERN.match(expression or "")
    if not match:
        raise MiauditError(f"cannot parse gate {expression!r}; expected {GRAMMAR}")
    fpr = None
    metric = match["metric"]
    if match["fpr"] is not None:
        fpr = float(match["fpr"]) / (100.0 if match["pct"] else 1.0)
        if not 0.0 < fpr < 1.0:
            raise MiauditError(f"gate {expression!r}: the FPR of tpr@FPR must be in (0, 1), got {fpr:g}")
        metric = f"tpr@{fpr:g}"
    return Gate(expression=expression.strip(), attack=match["attack"], metric=metric, fpr=fpr,
                op=match["op"], threshold=float(match["value"]))


def is_baseline(entry: dict[str, Any]) -> bool:
    """True for a model-free baseline entry (the LLM blind baseline), which gates name explicitly or not at all."""
    return entry.get("name") in BASELINE_NAMES or bool(entry.get("baseline"))


def _load_metrics(metrics: dict[str, Any] | str | Path) -> tuple[dict[str, Any], Path | None]:
    if isinstance(metrics, dict):
        return metrics, None
    path = Path(metrics)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise MiauditError(f"{path} does not exist; pass a run directory or its metrics.json")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path.parent
    except json.JSONDecodeError as exc:
        raise MiauditError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-run the audit") from None


def metric_value(attack: dict[str, Any], gate: Gate, run_dir: Path | None = None) -> float:
    """The gate's metric for one ``metrics.json`` attack entry (from saved scores when not stored)."""
    name = attack.get("name", "?")
    if gate.metric in ("auc", "advantage", "balanced_accuracy"):
        if gate.metric not in attack:
            raise MiauditError(f"attack {name!r} has no {gate.metric!r} in metrics.json; re-run the audit")
        return float(attack[gate.metric])
    if gate.metric == "epsilon":
        stored = attack.get("empirical_epsilon")
        if isinstance(stored, dict) and stored.get("epsilon") is not None:
            return float(stored["epsilon"])
        from miaudit.evaluation.epsilon import empirical_epsilon
        labels, scores = _saved_scores(name, run_dir, gate)
        return empirical_epsilon(labels, scores).epsilon
    key = f"{gate.fpr:g}"
    stored = attack.get("tpr_at_fpr", {})
    if key in stored:
        return float(stored[key])
    from miaudit.evaluation.metrics import tpr_at_fpr
    labels, scores = _saved_scores(name, run_dir, gate, available=sorted(stored))
    return tpr_at_fpr(labels, scores, fpr=gate.fpr)


def _saved_scores(name: str, run_dir: Path | None, gate: Gate, available: list[str] | None = None):
    from miaudit.evaluation.result import AttackResult

    folder = run_dir / "scores" if run_dir is not None else None
    if folder is None or not (folder / f"{name}.scores.npz").is_file():
        extra = f" (stored FPRs: {', '.join(available)})" if available else ""
        raise MiauditError(f"gate {gate.expression!r}: {gate.metric} is not stored for attack {name!r}{extra} and "
                           "its saved scores are not available; gate on a stored metric or keep scores/")
    result = AttackResult.load(folder, name)
    return result.labels, result.scores


def check_gates(metrics_json: dict[str, Any] | str | Path, expressions: list[str] | tuple[str, ...], *,
                run_dir: str | Path | None = None) -> GateResult:
    """Evaluate every gate on a run's metrics; ``tripped`` when any gate trips.

    ``metrics_json`` is the parsed ``metrics.json``, its path, or the run directory. ``run_dir``
    (default: the folder of the file) gives access to saved scores for metrics not stored.
    Each detail: expression, attack (the one used), metric, value, op, threshold, tripped.
    """
    metrics, folder = _load_metrics(metrics_json)
    folder = Path(run_dir) if run_dir is not None else folder
    attacks = metrics.get("attacks")
    if not isinstance(attacks, list):
        raise MiauditError("metrics.json has no 'attacks' list; it is not a miaudit run (or from an older version)")
    by_name = {a.get("name"): a for a in attacks}
    details = []
    for expression in expressions:
        gate = parse_gate(expression)
        if gate.attack is not None:
            if gate.attack not in by_name:
                raise MiauditError(f"gate {expression!r} names attack {gate.attack!r}, which is not in this run; "
                                   f"attacks run: {', '.join(map(str, by_name)) or 'none'}")
            chosen, value = gate.attack, metric_value(by_name[gate.attack], gate, folder)
        else:
            candidates = [a for a in attacks if not is_baseline(a)]
            if not candidates:
                raise MiauditError(f"gate {expression!r}: the run has no attack results to check")
            values = {a.get("name"): metric_value(a, gate, folder) for a in candidates}
            chosen = max(values, key=lambda n: values[n])
            value = values[chosen]
        details.append({"expression": gate.expression, "attack": chosen, "strongest": gate.attack is None,
                        "metric": gate.metric, "value": value, "op": gate.op, "threshold": gate.threshold,
                        "tripped": gate.trips(value)})
    return GateResult(tripped=any(d["tripped"] for d in details), details=details)


def describe(detail: dict[str, Any]) -> str:
    """One line for a gate detail, e.g. ``TRIPPED tpr@0.01 > 0.05: rmia tpr@0.01 = 0.120``."""
    word = "TRIPPED" if detail["tripped"] else "holds"
    who = f"{detail['attack']} (strongest)" if detail["strongest"] else detail["attack"]
    return f"gate {word}: {detail['expression']}  ({who}: {detail['metric']} = {detail['value']:.4g})"


__all__ = ["BASELINE_NAMES", "GRAMMAR", "Gate", "GateResult", "check_gates", "describe", "is_baseline", "metric_value",
           "parse_gate"]
