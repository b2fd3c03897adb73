"""Layering: mooframe's imports point one way (interfaces and plain data at the bottom, the CLI at the top).

The graph is read from the source with the standard library's `ast`: every import counts, also those inside
functions (a lazy import does not make a cycle acceptable, it only hides it from the interpreter).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mooframe"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports. `from pkg import name` counts as an import of the
    submodule `pkg.name` where there is one, else of `pkg` itself (its `__init__`)."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        home = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = home.split(".")[: len(home.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        graph[name] = {target for target in targets if target in files and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def test_the_graph_reader_finds_a_cycle_through_relative_lazy_and_package_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from .b import helper\n")
    (package / "sub" / "b.py").write_text("def helper():\n    from ..c import value\n")
    (package / "c.py").write_text("import pkg.a\nvalue = 1\n")
    (package / "d.py").write_text("from pkg import c\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub"] == {"pkg.sub.b"} and graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (package / "c.py").write_text("value = 1\n")
    assert cycles(import_graph(package)) == []


def test_mooframe_has_no_import_cycle(graph):
    assert len(graph) > 50  # the whole package was read
    assert cycles(graph) == []


@pytest.mark.parametrize(
    "module", ["mooframe.front", "mooframe.files", "mooframe.problem", "mooframe.pareto_set", "mooframe.solver"]
)
def test_interfaces_and_plain_data_sit_below_results_reports_and_implementations(graph, module):
    above = {"mooframe.result", "mooframe.report", "mooframe.selection", "mooframe.checkpoint", "mooframe.solve"}
    above |= {"mooframe.cli", "mooframe.registry", "mooframe.demo", "mooframe.export"}
    below = reachable(graph, module)
    assert not below & above
    assert not {m for m in below if m.startswith(("mooframe.models", "mooframe.solvers", "mooframe.adapters"))}


def test_checkpoints_read_files_through_the_shared_readers_not_through_results(graph):
    assert "mooframe.files" in graph["mooframe.checkpoint"] and "mooframe.files" in graph["mooframe.result"]
    assert "mooframe.result" not in reachable(graph, "mooframe.checkpoint")


def test_models_and_solvers_never_import_an_adapter(graph):
    pieces = [m for m in graph if m.startswith(("mooframe.models", "mooframe.solvers"))]
    assert len(pieces) >= 15
    assert {m: sorted(t for t in graph[m] if t.startswith("mooframe.adapters")) for m in pieces} == {
        m: [] for m in pieces
    }
