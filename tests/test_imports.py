"""Imports run one way: experiments -> agents -> rssm, never back, and no module of the three
packages imports one that imports it back (every import counts, at the top of a module, inside
a function or under TYPE_CHECKING: none of them may close a cycle)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rssm", "agents", "experiments")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the three packages that ``path`` imports (``from a.b import c`` is the
    module a.b.c where that is a module, else a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            names = [n for n in names if n in modules] or [node.module]
            if any(f"{node.module}.{alias.name}" in modules for alias in node.names):
                names = [n for n in names if n != node.module]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES and n in modules)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a self-import
    (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_and_packages_import_one_way():
    modules = _modules()
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    assert len(graph) > 60 and sum(map(len, graph.values())) > 100  # the walk found them
    assert not _cycles(graph), _cycles(graph)
    rank = {"rssm": 0, "agents": 1, "experiments": 2}
    upward = [
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if rank[b.split(".")[0]] > rank[a.split(".")[0]]
    ]
    assert not upward, upward


def test_the_walk_finds_a_cycle_it_is_shown():
    # The check itself: a two-module loop, and a loop closed by an import inside a function.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    source = "def f():\n    from experiments.config import schema\n"
    tree_imports = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert tree_imports == {"experiments.config"}
