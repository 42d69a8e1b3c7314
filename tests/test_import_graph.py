"""The import graph of every `treadle.*` module: no cycles, and `shared/` a leaf.

Imports are read from the source (ast), at any depth: inside functions and
under `if TYPE_CHECKING:` too, since a cycle hidden by a lazy import is still
a cycle in the design. `from treadle.x import y` imports `treadle.x.y` when
that is a module, else `treadle.x`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

#: What shared/ may not import: it is what the services and users import.
SERVICES = ("treadle.scheduler", "treadle.gateway", "treadle.cli")


def _roots(repo_root: Path) -> list[Path]:
    """Every folder holding a part of the `treadle` namespace."""
    candidates = [repo_root / "shared", *sorted((repo_root / "services").iterdir())]
    return [root for root in candidates if (root / "treadle").is_dir()]


def _modules(repo_root: Path) -> dict[str, Path]:
    """Each treadle.* module by dotted name (a package by its __init__.py)."""
    found: dict[str, Path] = {}
    for root in _roots(repo_root):
        for path in sorted((root / "treadle").rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The treadle.* modules that module `name` (at `path`) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield child if child in modules else base


def import_graph(repo_root: Path) -> dict[str, set[str]]:
    modules = _modules(repo_root)
    return {
        name: {m for m in _imported(name, path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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


def _circle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete circle through the first module of `component`."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in sorted(graph[node] & members):
            if other == start:
                return [*paths[node], start]
            if other not in paths:
                paths[other] = [*paths[node], other]
                queue.append(other)
    return component


def test_the_graph_sees_imports_at_any_depth(repo_root: Path) -> None:
    graph = import_graph(repo_root)
    assert "treadle.scheduler.supervisor" in graph, "the scheduler's modules are found"
    assert "treadle.common.errors" in graph["treadle.scheduler.core"]
    assert "treadle.scheduler.registry" in graph["treadle.scheduler"], "a package's __init__"


def test_no_import_cycle_among_treadle_modules(repo_root: Path) -> None:
    graph = import_graph(repo_root)
    found = [
        f"{len(component)} modules ({', '.join(component)}), "
        f"e.g. {' -> '.join(_circle(graph, component))}"
        for component in cycles(graph)
    ]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_shared_imports_no_service(repo_root: Path) -> None:
    graph = import_graph(repo_root)
    modules = _modules(repo_root)
    shared = repo_root / "shared" / "treadle"
    offenders = [
        f"{name} imports {target}"
        for name, path in modules.items()
        if path.is_relative_to(shared)
        for target in sorted(graph[name])
        if any(target == s or target.startswith(f"{s}.") for s in SERVICES)
    ]
    assert offenders == [], "shared/ must not import the services:\n" + "\n".join(offenders)
