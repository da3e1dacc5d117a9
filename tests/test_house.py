"""The house: the package shows its architecture, and keeps showing it.

Every import in ``rotator/`` counts (module level, inside functions, under
``TYPE_CHECKING``): the static graph has no cycle. No module is over ~400 lines
and no class over ~250, except where :data:`LONG` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rotator"

MODULE_LINES = 400
#: "no class over ~250 lines": 250 and a tenth for the ~
CLASS_LINES = 275
#: module or class -> (its line budget, why it is over)
LONG: dict[str, tuple[int, str]] = {
    "rotator.demo.sandbox.Sandbox": (
        360,
        "its routes and fault switches (delays, reuse grace, refusals) share one lock and one "
        "token table; it serves the demo and the tests, never a rotation",
    ),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The rotator modules ``name`` imports, wherever in the file the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for imported in targets:
            # the deepest rotator module the name reaches (a name may be a function)
            target = imported
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # a package's __init__ is not an edge of its submodules' imports (Python runs it
    # first, but the face re-exports; it is checked as a module of its own)
    return {
        name: {t for t in targets if not name.startswith(f"{t}.")}
        for name, targets in graph.items()
    }


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_core_does_not_import_the_rooms_above_it() -> None:
    core = ("errors", "secrets", "tokens", "schedule", "state", "http", "waits", "registry")
    rooms = ("rotator.service", "rotator.commands", "rotator.rotation", "rotator.cli")
    graph = _graph()
    for name in core:
        reached = {t for t in graph[f"rotator.{name}"] if t.startswith(rooms)}
        assert not reached, f"rotator.{name} imports {sorted(reached)}"


def test_no_module_or_class_is_too_long() -> None:
    too_long: list[str] = []
    for name, path in _modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        budget = LONG.get(name, (MODULE_LINES, ""))[0]
        if lines > budget:
            too_long.append(f"{name}: {lines} lines (budget {budget})")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > LONG.get(f"{name}.{node.name}", (CLASS_LINES, ""))[0]:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert too_long == []
