"""The layout's import rules (docs/architecture.md): the core never imports a model kind, a kind
imports only the core (defenses, which act on classifiers, also import the classifier kind), and no
two top-level packages import each other."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import miaudit

PACKAGE = Path(miaudit.__file__).parent
CORE = {"attacks", "evaluation", "runs", "report", "data", "utils", "config", "errors", "kinds", "__init__"}
KINDS = {"classifier", "llm", "encoder", "text_generator", "multimodal", "federated", "defenses"}
TOP = {"cli", "commands", "__main__"}
#: the kinds a kind may import besides the core
KIND_DEPENDENCIES = {"defenses": {"classifier"}, "federated": {"classifier", "defenses"}}


def _unit(path: Path) -> str:
    """The top-level unit a file belongs to: ``classifier`` for classifier/attacks/lira.py, ``config`` for config.py."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def import_graph() -> dict[str, dict[str, list[str]]]:
    """``{unit: {imported unit: [files]}}`` over every ``miaudit`` import in the package (lazy ones included)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "miaudit" else [f"miaudit.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "miaudit" and len(parts) > 1 and parts[1] != unit:
                    graph[unit][parts[1]].append(str(path.relative_to(PACKAGE)))
    return graph


def test_every_unit_is_classified():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units <= CORE | KINDS | TOP, f"unclassified top-level units: {sorted(units - CORE - KINDS - TOP)}"


def test_core_never_imports_a_kind_or_the_command_line():
    graph = import_graph()
    bad = {f"{unit} -> {dep} ({', '.join(sorted(set(files)))})" for unit in CORE for dep, files in graph[unit].items()
           if dep in KINDS | TOP}
    assert not bad, "core modules import a kind:\n" + "\n".join(sorted(bad))


def test_kinds_import_only_the_core_and_their_declared_dependencies():
    graph = import_graph()
    bad = {f"{unit} -> {dep}" for unit in KINDS for dep in graph[unit]
           if dep in KINDS - KIND_DEPENDENCIES.get(unit, set()) or dep in TOP}
    assert not bad, "kinds import other kinds or the command line:\n" + "\n".join(sorted(bad))


def test_no_two_top_level_units_import_each_other():
    graph = import_graph()
    cycles = {tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph.get(b, {})}
    assert not cycles, f"mutual imports: {sorted(cycles)}"
