"""The package's imports flow one way: no module imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import labelrec

ROOT = Path(labelrec.__file__).parent
# opener.py reaches labelrec.mlflow (download, registry lookup) only when a reference is an
# MLflow URI, so that a directory never needs mlflow (docs/architecture.md)
ALLOWED_UP = {("labelrec.opener", "labelrec.mlflow")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """labelrec module -> the labelrec modules it imports (at the top or inside functions)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("labelrec.") and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_no_import_circle() -> None:
    graph = imports()
    for a, b in ALLOWED_UP:
        graph[a] = {m for m in graph[a] if not (m == b or m.startswith(b + "."))}
    # a package's __init__ re-exporting its own modules is not a circle
    for name, found in graph.items():
        graph[name] = {m for m in found if not m.startswith(name + ".")}
    seen: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt)
        path.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node)


def test_taggers_do_not_know_the_fusion_or_the_front_ends() -> None:
    graph = imports()
    above = ("labelrec.fusion", "labelrec.predict", "labelrec.train", "labelrec.service")
    for name, found in graph.items():
        if name.startswith("labelrec.taggers"):
            assert not [m for m in found if m.startswith(above)], name
