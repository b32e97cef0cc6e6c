"""CI gates: ``--fail-if "[ATTACK:]METRIC OP NUMBER"`` evaluated on a run's ``metrics.json``.

Grammar (whitespace free around the parts)::

    gate    := [attack ":"] metric [bound] op number  |  run_metric op number
    metric  := "auc" | "advantage" | "balanced_accuracy" | "epsilon" | "tpr@" fpr
    bound   := ".lower" | ".upper"          (an end of the metric's stored confidence interval)
    run_metric := "one_run_epsilon"         (a run-level metric: no attack prefix)
    fpr     := number | number "%"          (tpr@0.01 and tpr@1% are the same)
    op      := ">" | ">=" | "<" | "<="

A gate *trips* when its comparison is true ("fail if ..."). A point value can trip or hold by the
luck of which records were audited; a bound cannot, at the run's confidence: ``tpr@0.01.lower > 0.05``
fails a job only when leakage above 0.05 is shown, ``tpr@0.01.upper > 0.05`` fails it unless leakage
above 0.05 is ruled out. A point-value gate on a TPR at an FPR with fewer than 10 expected false
positives among the non-members carries a note saying so. Without an attack name the gate
applies to the strongest attack of the run for that metric, chosen by the one rule of
:func:`miaudit.evaluation.run_result.strongest` (model-free baselines such as the LLM blind baseline
and ``oracle`` entries are not candidates; name them explicitly to gate on them: ``blind_baseline:auc > 0.6``
fails a job whose benchmark is confounded, ``min_k_pp.oracle:auc > 0.7`` gates an oracle entry). ``epsilon`` is the
empirical lower bound on epsilon of :func:`miaudit.evaluation.epsilon.empirical_epsilon` (stored per
attack as ``"empirical_epsilon"`` by the pipeline, or computed from the run's saved scores).
``one_run_epsilon`` is the run's one-run canary bound (Steinke, Nasr & Jagielski 2023),
``metrics.json`` ``"one_run_audit"`` ``"epsilon"``, written by audits of kind ``dp_canary``; it belongs
to the run, not to an attack, so it takes no attack prefix.

Defense comparisons (``miaudit defend``): :func:`check_defense_gates` evaluates every gate on
every defense row of ``defenses.json`` (or on the rows named with ``--gate-defense``), each row
with its own strongest attack and its own saved scores (``scores/<defense>/<attack>.scores.npz``).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from miaudit.errors import MiauditError
from miaudit.evaluation.run_result import RunResult, strongest
from miaudit.evaluation.verdict import RiskThresholds

RUN_METRICS = frozenset({"one_run_epsilon"})  # metrics of the run itself: no attack prefix
GRAMMAR = ('[ATTACK:]METRIC[.lower|.upper] OP NUMBER with METRIC one of auc, advantage, balanced_accuracy, '
           'epsilon, tpr@FPR (e.g. tpr@0.01 or tpr@1%), or the run-level one_run_epsilon (no ATTACK:), and OP one '
           'of > >= < <=; e.g. "tpr@0.01 > 0.05", "tpr@0.01.lower > 0.05", "rmia:auc >= 0.6" or '
           '"one_run_epsilon > 8"')
#: metrics whose confidence interval metrics.json stores (the key of the interval, or of the TPR intervals)
_INTERVALS = {"auc": "auc_ci", "advantage": "advantage_ci"}
#: fewer expected false positives than this at a gated FPR make a point-value TPR gate noise (the verdict's rule)
MIN_FALSE_POSITIVES = RiskThresholds.min_false_positives
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERN = re.compile(
    rf"^\s*(?:(?P<attack>[A-Za-z0-9_.\-]+)\s*:\s*)?"
    rf"(?P<metric>one_run_epsilon|auc|advantage|balanced_accuracy|epsilon|tpr\s*@\s*(?P<fpr>{_NUMBER})\s*(?P<pct>%)?)"
    rf"(?:\.(?P<bound>lower|upper))?"
    rf"\s*(?P<op>>=|<=|>|<)\s*(?P<value>{_NUMBER})\s*$")


@dataclass(frozen=True)
class Gate:
    expression: str
    attack: str | None  # None = the strongest attack for this metric (always None for a run-level metric)
    metric: str  # "auc", "advantage", "balanced_accuracy", "epsilon", "tpr@<fpr>" or "one_run_epsilon"
    fpr: float | None  # for tpr@ metrics
    op: str
    threshold: float
    bound: str | None = None  # "lower" / "upper": that end of the metric's confidence interval; None: the point value

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
    if metric in RUN_METRICS and match["attack"] is not None:
        raise MiauditError(f"gate {expression!r}: {metric} belongs to the run (its one-run canary audit), not to an "
                           f"attack; drop the {match['attack']!r}: prefix, e.g. \"{metric} > 8\"")
    if match["bound"] and metric in (*RUN_METRICS, "epsilon"):
        raise MiauditError(f"gate {expression!r}: {metric} is itself a lower confidence bound on epsilon; drop "
                           f"'.{match['bound']}'")
    if match["bound"] and metric == "balanced_accuracy":
        raise MiauditError(f"gate {expression!r}: balanced_accuracy has no stored confidence interval; gate on "
                           "auc, advantage or tpr@FPR with .lower / .upper, or on balanced_accuracy's point value")
    return Gate(expression=expression.strip(), attack=match["attack"], metric=metric, fpr=fpr,
                op=match["op"], threshold=float(match["value"]), bound=match["bound"])


def _load_json(source: dict[str, Any] | str | Path, filename: str = "metrics.json"
               ) -> tuple[dict[str, Any], Path | None]:
    """``(parsed JSON, its folder)`` from a parsed dict, a run folder holding ``filename``, or the file."""
    if isinstance(source, dict):
        return source, None
    path = Path(source)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise MiauditError(f"{path} does not exist; pass a run directory or its {filename}")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path.parent
    except json.JSONDecodeError as exc:
        raise MiauditError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-run the command") from None


def metric_value(attack: dict[str, Any], gate: Gate, run_dir: Path | None = None, *,
                 scores_dir: Path | None = None) -> float:
    """The gate's metric for one ``metrics.json`` attack entry (from saved scores when not stored).

    Saved scores are read from ``scores_dir`` (default ``run_dir/scores``).
    """
    name = attack.get("name", "?")
    if gate.metric in RUN_METRICS:
        raise MiauditError(f"gate {gate.expression!r}: {gate.metric} is a metric of the run, not of attack {name!r}")
    if scores_dir is None and run_dir is not None:
        scores_dir = Path(run_dir) / "scores"
    if gate.bound is not None:
        return _bound_value(attack, gate)
    if gate.metric in ("auc", "advantage", "balanced_accuracy"):
        if gate.metric not in attack:
            raise MiauditError(f"attack {name!r} has no {gate.metric!r} in its results; re-run the command")
        return float(attack[gate.metric])
    if gate.metric == "epsilon":
        stored = attack.get("empirical_epsilon")
        if isinstance(stored, dict) and stored.get("epsilon") is not None:
            return float(stored["epsilon"])
        from miaudit.evaluation.epsilon import empirical_epsilon
        labels, scores = _saved_scores(name, scores_dir, gate)
        return empirical_epsilon(labels, scores).epsilon
    if gate.fpr is None:  # parse_gate gives every tpr@ metric its FPR; a Gate built by hand may lack it
        raise MiauditError(f"gate {gate.expression!r}: metric {gate.metric!r} has no FPR; use tpr@FPR, e.g. tpr@0.01")
    key = f"{gate.fpr:g}"
    stored = attack.get("tpr_at_fpr", {})
    if key in stored:
        return float(stored[key])
    from miaudit.evaluation.metrics import tpr_at_fpr
    labels, scores = _saved_scores(name, scores_dir, gate, available=sorted(stored))
    return tpr_at_fpr(labels, scores, fpr=gate.fpr)


def _bound_value(attack: dict[str, Any], gate: Gate) -> float:
    """The gate's end of the confidence interval stored for its metric on one attack entry."""
    name = attack.get("name", "?")
    if gate.metric in _INTERVALS:
        interval = attack.get(_INTERVALS[gate.metric])
        stored = "auc_ci / advantage_ci"
    else:
        intervals = attack.get("tpr_at_fpr_ci") or {}
        interval = intervals.get(f"{gate.fpr:g}")
        stored = f"tpr_at_fpr_ci at FPRs {', '.join(sorted(intervals, key=float)) or 'none'}"
    if not interval or len(interval) != 2:
        raise MiauditError(f"gate {gate.expression!r}: attack {name!r} has no stored confidence interval for "
                           f"{gate.metric} (stored: {stored}); gate on a stored FPR, or on the point value")
    return float(interval[0] if gate.bound == "lower" else interval[1])


def low_fpr_note(attack: dict[str, Any], gate: Gate) -> str | None:
    """Why a point-value TPR gate is noise when its FPR expects fewer than :data:`MIN_FALSE_POSITIVES` false
    positives among the attack's non-members; None otherwise (bounds, other metrics, counts not stored)."""
    n = attack.get("n_nonmembers")
    if gate.bound is not None or gate.fpr is None or not isinstance(n, int) or n * gate.fpr >= MIN_FALSE_POSITIVES:
        return None
    needed = math.ceil(MIN_FALSE_POSITIVES / gate.fpr)
    return (f"{gate.metric} rests on {n * gate.fpr:.1f} expected false positives among {n} non-members, so its point "
            f"value trips or holds by chance; gate on {gate.metric}.lower (fail when leakage is shown) or "
            f"{gate.metric}.upper (fail unless it is ruled out), or audit at least {needed} non-members")


def _saved_scores(name: str, folder: Path | None, gate: Gate, available: list[str] | None = None):
    from miaudit.evaluation.result import AttackResult

    if folder is None or not (folder / f"{name}.scores.npz").is_file():
        extra = f" (stored FPRs: {', '.join(available)})" if available else ""
        where = f" ({folder / f'{name}.scores.npz'} is missing)" if folder is not None else ""
        raise MiauditError(f"gate {gate.expression!r}: {gate.metric} is not stored for attack {name!r}{extra} and "
                           f"its saved scores are not available{where}; gate on a stored metric or keep scores/")
    result = AttackResult.load(folder, name)
    return result.labels, result.scores


def _unknown_attack(gate: Gate, names: Sequence[str], where: str, listed: str = "attacks run") -> MiauditError:
    return MiauditError(f"gate {gate.expression!r} names attack {gate.attack!r}, which is not in {where}; "
                        f"{listed}: {', '.join(names) or 'none'}")


def evaluate_gate(gate: Gate, attacks: list[dict[str, Any]], *, scores_dir: Path | None = None,
                  where: str = "this run") -> tuple[dict[str, Any], float]:
    """``(attack entry, value)`` of ``gate`` on a list of attack entries (``metrics.json`` ``attacks``).

    The named attack, or the strongest for the gated quantity (a bound when the gate names one) by the
    one rule of :func:`~miaudit.evaluation.run_result.strongest`. ``scores_dir`` holds their
    ``<name>.scores.npz`` for metrics not stored; ``where`` names the set of attacks in error messages.
    """
    if gate.attack is not None:
        named = next((a for a in attacks if a.get("name") == gate.attack), None)
        if named is None:
            raise _unknown_attack(gate, [str(a.get("name")) for a in attacks], where)
        return named, metric_value(named, gate, scores_dir=scores_dir)
    chosen = strongest(attacks, gate.metric,
                       value=lambda entry: metric_value(entry.fields, gate, scores_dir=scores_dir))
    if chosen is None:
        raise MiauditError(f"gate {gate.expression!r}: {where} has no attack results to check")
    return dict(chosen.fields), metric_value(chosen.fields, gate, scores_dir=scores_dir)


def run_metric_value(metrics: dict[str, Any], gate: Gate) -> tuple[dict[str, Any], float]:
    """``(detail fields, value)`` of a run-level gate (``one_run_epsilon``) on a run's ``metrics.json``.

    A clear :class:`MiauditError` when the run has no one-run canary audit (only ``kind: dp_canary``
    audits write one).
    """
    one_run = metrics.get("one_run_audit")
    if not isinstance(one_run, dict) or one_run.get("epsilon") is None:
        raise MiauditError(f"gate {gate.expression!r}: this run (kind {metrics.get('kind', '?')!r}) has no one-run "
                           "canary audit ('one_run_audit' in metrics.json); one_run_epsilon needs an audit of kind "
                           "dp_canary (see docs/dp-auditing.md)")
    fields = {"attack": "one_run_audit", "bound_attack": one_run.get("attack"),
              "accountant_epsilon": (metrics.get("dp") or {}).get("epsilon")}
    return fields, float(one_run["epsilon"])


def _detail(gate: Gate, attack: str, value: float, *, note: str | None = None, **extra: Any) -> dict[str, Any]:
    detail = {"expression": gate.expression, **extra, "attack": attack, "strongest": gate.attack is None,
              "metric": gate.metric, "bound": gate.bound, "value": value, "op": gate.op,
              "threshold": gate.threshold, "tripped": gate.trips(value)}
    if note:
        detail["note"] = note
    return detail


def check_gates(metrics_json: dict[str, Any] | str | Path, expressions: list[str] | tuple[str, ...], *,
                run_dir: str | Path | None = None) -> GateResult:
    """Evaluate every gate on a run's metrics; ``tripped`` when any gate trips.

    ``metrics_json`` is the parsed ``metrics.json``, its path, or the run directory. ``run_dir``
    (default: the folder of the file) gives access to saved scores for metrics not stored.
    Each detail: expression, attack (the one used), metric, bound (None, "lower" or "upper"), value, op,
    threshold, tripped, and a ``note`` when a point-value TPR gate rests on too few false positives; a
    ``one_run_epsilon`` detail has attack ``"one_run_audit"``, ``bound_attack`` (the attack that scored
    the canaries) and ``accountant_epsilon`` (None without a DP accountant).
    """
    metrics, folder = _load_json(metrics_json)
    folder = Path(run_dir) if run_dir is not None else folder
    attacks = metrics.get("attacks")
    if not isinstance(attacks, list):
        raise MiauditError("metrics.json has no 'attacks' list; it is not a miaudit run (or from an older version)")
    baseline = RunResult(metrics).baseline  # gated only when named ("blind_baseline:auc > 0.6")
    if baseline is not None and not any(a.get("name") == baseline.name for a in attacks):
        attacks = [*attacks, baseline.fields]
    details = []
    for expression in expressions:
        gate = parse_gate(expression)
        if gate.metric in RUN_METRICS:
            fields, value = run_metric_value(metrics, gate)
            details.append({**_detail(gate, fields.pop("attack"), value), "strongest": False, **fields})
            continue
        chosen, value = evaluate_gate(gate, attacks, scores_dir=folder / "scores" if folder is not None else None)
        details.append(_detail(gate, chosen["name"], value, note=low_fpr_note(chosen, gate)))
    return GateResult(tripped=any(d["tripped"] for d in details), details=details)


def check_run_gate_targets(expressions: list[str] | tuple[str, ...], *, attacks: list[str], kind: str | None,
                           baselines: list[str] | tuple[str, ...] = ()) -> list[Gate]:
    """Check an audit's gates against its config before it runs: each parses, a named attack is one the
    config runs (``attacks``: their labels; ``<label>.oracle`` is the oracle entry of a tuned attack) or a
    model-free baseline the run writes (``baselines``, e.g. ``blind_baseline``), and ``one_run_epsilon``
    needs ``kind: dp_canary``. A one-line :class:`MiauditError` otherwise."""
    gates = [parse_gate(e) for e in expressions]
    for gate in gates:
        if gate.metric in RUN_METRICS and kind != "dp_canary":
            raise MiauditError(f"gate {gate.expression!r}: one_run_epsilon exists only in audits of kind dp_canary "
                               f"(this config is kind {kind!r}); gate on epsilon, auc, advantage or tpr@FPR instead")
        named = gate.attack
        if named is not None and named not in baselines and named.removesuffix(".oracle") not in attacks:
            raise _unknown_attack(gate, [*attacks, *baselines], "this config", "its attacks")
    return gates


def check_defense_gate_targets(expressions: list[str] | tuple[str, ...], *, attacks: list[str], defenses: list[str],
                               selected: list[str] | tuple[str, ...] | None = None) -> list[Gate]:
    """Check gates against a defense comparison's attack names and defense labels (before it runs).

    Raises a :class:`MiauditError` for an unparseable gate, a gate naming an attack not in
    ``attacks``, a ``selected`` label not in ``defenses``, or ``selected`` without any gate.
    """
    gates = [parse_gate(e) for e in expressions]
    for gate in gates:
        if gate.metric in RUN_METRICS:
            raise MiauditError(f"gate {gate.expression!r}: {gate.metric} is the bound of a one-run canary audit "
                               "(miaudit audit with kind dp_canary); a defense comparison has none. Gate a defense "
                               "row on its attacks' empirical bound instead, e.g. \"epsilon > 8\"")
        if gate.attack is not None and gate.attack not in attacks:
            raise _unknown_attack(gate, attacks, "this comparison", "its attacks")
    for label in selected or ():
        if label not in defenses:
            raise MiauditError(f"--gate-defense {label!r} is not a defense of this comparison; its defenses are: "
                               f"{', '.join(defenses)}")
    if selected and not gates:
        raise MiauditError("--gate-defense chooses the defenses that --fail-if gates check; give at least one "
                           "--fail-if EXPR")
    return gates


def check_defense_gates(defenses_json: dict[str, Any] | str | Path, expressions: list[str] | tuple[str, ...], *,
                        run_dir: str | Path | None = None, defenses: list[str] | tuple[str, ...] | None = None
                        ) -> GateResult:
    """Evaluate every gate on every defense row of a ``defenses.json`` (``miaudit defend``).

    ``defenses_json`` is the parsed file, its path, or the output folder; ``defenses`` restricts
    the check to those row labels (default: all rows). Each row is checked on its own attacks:
    a gate without an attack name applies to that row's strongest attack for the metric. Attacks
    that could not run on a row (``applicable: false``, e.g. ``loss`` behind ``label_only``) are not
    candidates; a gate naming one gives a detail with ``value: None`` that does not trip, and is
    an error when the attack applies to none of the checked rows. An attack that failed on a row
    (``error``) cannot be gated on. Each detail: expression, defense, attack, strongest, metric,
    value, op, threshold, tripped (``applicable``/``reason`` when skipped).
    """
    result, folder = _load_json(defenses_json, "defenses.json")
    folder = Path(run_dir) if run_dir is not None else folder
    rows = result.get("defenses")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "label" in r for r in rows):
        raise MiauditError("defenses.json has no 'defenses' list of labelled rows; it is not a miaudit defense "
                           "comparison (or from an older version)")
    labels = [r["label"] for r in rows]
    names = list(dict.fromkeys(a.get("name") for r in rows for a in r.get("attacks", [])))
    gates = check_defense_gate_targets(expressions, attacks=names, defenses=labels, selected=defenses)
    checked = [r for r in rows if not defenses or r["label"] in defenses]
    details = []
    for gate in gates:
        found = []
        for row in checked:
            label = row["label"]
            named = next((a for a in row.get("attacks", []) if a.get("name") == gate.attack), None)
            if named is not None and "auc" not in named:
                if named.get("error"):
                    raise MiauditError(f"gate {gate.expression!r}: attack {gate.attack!r} failed on defense {label!r} "
                                       f"({named['error']}); the gate cannot be checked")
                details.append({"expression": gate.expression, "defense": label, "attack": gate.attack,
                                "strongest": False, "metric": gate.metric, "value": None, "op": gate.op,
                                "threshold": gate.threshold, "tripped": False, "applicable": False,
                                "reason": named.get("reason") or "not applicable"})
                continue
            scored = [a for a in row.get("attacks", []) if "auc" in a]
            scores_dir = folder / "scores" / label if folder is not None else None
            chosen, value = evaluate_gate(gate, scored, scores_dir=scores_dir, where=f"defense {label!r}")
            details.append(_detail(gate, chosen["name"], value, note=low_fpr_note(chosen, gate), defense=label))
            found.append(label)
        if not found:
            raise MiauditError(f"gate {gate.expression!r}: attack {gate.attack!r} applies to none of the checked "
                               f"defenses ({', '.join(r['label'] for r in checked)}); name another attack or choose "
                               "other defenses with --gate-defense")
    return GateResult(tripped=any(d["tripped"] for d in details), details=details)


def describe(detail: dict[str, Any]) -> str:
    """One line for a gate detail, e.g. ``TRIPPED tpr@0.01 > 0.05: rmia tpr@0.01 = 0.120``.

    Details of defense comparisons name their defense (``[dp_sgd]``); a gate whose named attack
    does not apply to a defense reads ``not applicable``.
    """
    where = f" [{detail['defense']}]" if detail.get("defense") else ""
    if detail.get("value") is None:
        return (f"gate not applicable: {detail['expression']}{where}  ({detail['attack']}: "
                f"{detail.get('reason') or 'no result'})")
    word = "TRIPPED" if detail["tripped"] else "holds"
    who = f"{detail['attack']} (strongest)" if detail["strongest"] else detail["attack"]
    if detail.get("bound_attack"):
        who = f"one-run canary audit, scored by {detail['bound_attack']}"
    quantity = f"{detail['metric']}.{detail['bound']}" if detail.get("bound") else detail["metric"]
    line = f"gate {word}: {detail['expression']}{where}  ({who}: {quantity} = {detail['value']:.4g})"
    return f"{line}; note: {detail['note']}" if detail.get("note") else line


__all__ = ["GRAMMAR", "MIN_FALSE_POSITIVES", "RUN_METRICS", "Gate", "GateResult", "check_defense_gate_targets",
           "check_defense_gates", "check_gates", "check_run_gate_targets", "describe", "evaluate_gate", "low_fpr_note",
           "metric_value", "parse_gate", "run_metric_value"]
