"""The package's import graph: no circles, the root config only above the components it composes."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dotseg"


def _graph() -> dict[str, dict[str, bool]]:
    """module -> {imported dotseg module: at module level?}; imports under ``if`` (TYPE_CHECKING) are
    not runtime edges and are left out; deferred imports (inside functions) are edges too."""
    paths = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, dict[str, bool]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) for n in ast.walk(node)}
        top = {id(n) for n in tree.body}
        edges: dict[str, bool] = {}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dotseg"):
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("dotseg")]
            for t in targets:
                if t in paths and t != name:
                    edges[t] = edges.get(t, False) or id(node) in top
        graph[name] = edges
    return graph


def test_the_import_graph_has_no_circles() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            raise AssertionError("import circle: " + " -> ".join(cycle))
        if node in done:
            return
        for nxt in graph[node]:
            visit(nxt, [*path, node])
        done.add(node)

    for module in graph:
        visit(module, [])


def test_components_never_import_the_root_config() -> None:
    """dotseg.config composes the components' sections; a component importing it back would tie a
    section change to code that has nothing to do with it (the checkpoint format above all)."""
    graph = _graph()
    above = ("dotseg.cli", "dotseg.training", "dotseg.tuning", "dotseg.tracking", "dotseg.cluster_files")
    importers = {m for m, edges in graph.items() if "dotseg.config" in edges and m != "dotseg.config"}
    assert {m for m in importers if not m.startswith(above)} == {"dotseg.checkpoint.format1", "dotseg.checkpoint.store"}
    # ...and those two only where they need it (format-1 run ids, a checkpoint's provenance), never at import.
    assert not any(graph[m]["dotseg.config"] for m in ("dotseg.checkpoint.format1", "dotseg.checkpoint.store"))
