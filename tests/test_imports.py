"""How the modules of virtmon depend on each other: no cycles.

Every import counts, wherever it is written: at the top of a module, inside a function or under
``if TYPE_CHECKING``. An import moved into a function to get past a circle still ties the two
modules together (each needs the other to work; neither can be understood or tested alone), so
it is a cycle like any other. A late import that closes no circle (the demo, the web
configuration: loaded only when used) is not one, and is not affected.

A package's ``__init__`` is not an edge of the modules inside it: ``import virtmon.x.y`` runs
``virtmon/x/__init__.py`` first, but ``y`` does not use it unless it imports from it by name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The cycles that remain, each with why. The test fails when one is gone too: then it leaves
# this list.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the virtmon package by its dotted name."""
    found = {}
    for path in (root / "virtmon").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: Mapping[str, Path]) -> set[str]:
    """The modules of ``known`` that the source at ``path`` imports, anywhere in it."""
    def module(name: str) -> str | None:
        while name and name not in known:  # `import a.b.c` of a name inside a.b is a.b
            name = name.rpartition(".")[0]
        return name or None

    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: a relative import"  # the tree writes none
            # `from a import b` imports the module a.b when there is one, else a name of a.
            names += [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                      else node.module for alias in node.names]
    return {m for m in map(module, names) if m is not None}


def cycles(graph: Mapping[str, set[str]]) -> Iterator[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[frozenset[str]]:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in order:
                yield from visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], order[other])
        if low[node] == order[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                yield frozenset(component)

    for node in sorted(graph):
        if node not in order:
            yield from visit(node)


def import_graph() -> dict[str, set[str]]:
    """Each module of virtmon and the modules of virtmon it imports."""
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_cycles_are_found(tmp_path: Path) -> None:
    """The check finds a circle closed by an import inside a function, and none where a
    package's __init__ imports its own modules."""
    package = tmp_path / "virtmon"
    (package / "p").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "a.py": "import virtmon.b\n",
        "b.py": "def late():\n    from virtmon import a\n",
        "p/__init__.py": "from virtmon.p.x import X\n",
        "p/x.py": "from virtmon.c import C\nX = C\n",
        "c.py": "C = 1\n",
    }.items():
        (package / name).write_text(text)
    known = modules(tmp_path)
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    assert graph["virtmon.b"] == {"virtmon.a"}
    assert list(cycles(graph)) == [frozenset({"virtmon.a", "virtmon.b"})]
    assert list(cycles({"d": {"d"}})) == [frozenset({"d"})]


def test_no_module_imports_one_that_imports_it_back() -> None:
    """No module of virtmon depends on itself through others, except the listed cycles."""
    found = {cycle: sorted(cycle) for cycle in cycles(import_graph())}
    assert set(found) - set(KNOWN_CYCLES) == set(), [found[c] for c in found
                                                     if c not in KNOWN_CYCLES]
    assert set(KNOWN_CYCLES) - set(found) == set(), "a listed cycle is gone: remove it"
