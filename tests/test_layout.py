"""The layout as checks: no import circle anywhere in our code (imports inside functions count: a circle broken only
by importing late is still one; imports under `if TYPE_CHECKING:` never run and do not), orchestrator's subpackages
stack in layers, no class of ours over MAX_CLASS_LINES lines, and no test subclasses the campaign loop (tests hand it
a scripted agent and executor instead)."""

from __future__ import annotations

import ast

from conftest import ROOT
from test_trust_boundary import imports, modules

MAX_CLASS_LINES = 300


def import_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports (a name imported from a module counts as that module)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for _, imported in imports(path):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan), each sorted: deterministic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circle_in_our_code():
    """Imports inside functions count: a circle broken only by importing late is still one."""
    assert circles(import_graph()) == []


def test_orchestrators_subpackages_stack_in_layers():
    """measure/, scoring/, campaign/, ledger/ and web/ taken whole never import each other in a circle (the modules at
    orchestrator's top, the entry points and the leaves below everything, are left out)."""
    subpackages = sorted(p.parent.name for p in (ROOT / "orchestrator").glob("*/__init__.py"))
    assert {"measure", "scoring", "campaign", "ledger", "web"} <= set(subpackages)

    def layer(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if parts[0] == "orchestrator" and len(parts) > 2 and parts[1] in subpackages else None

    graph: dict[str, set[str]] = {s: set() for s in subpackages}
    for source, targets in import_graph().items():
        if layer(source):
            graph[layer(source)] |= {layer(t) for t in targets if layer(t) and layer(t) != layer(source)}
    assert circles(graph) == []


def test_no_class_of_ours_is_over_the_limit():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path in modules().values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert not long, "\n".join(long)


def test_no_test_subclasses_the_campaign_loop():
    subclasses = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
        for path in sorted((ROOT / "tests").rglob("*.py")) + [p for p in modules().values()]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any((getattr(b, "id", None) or getattr(b, "attr", None)) == "CampaignLoop" for b in node.bases)
    ]
    assert not subclasses, "\n".join(subclasses)
