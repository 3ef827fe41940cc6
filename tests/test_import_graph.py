"""The engine's imports point one way: no cycle, no widgets, no generic module importing FastNAS.

Every ``import`` statement of every ``nasviz/**/*.py`` counts, wherever it stands (module level,
inside a function, under ``TYPE_CHECKING``), and so does a string that names a nasviz module
(``importlib.import_module("nasviz.x")``), so neither a function-level import nor an importlib
string can hide a cycle.
Importing ``a.b.c`` also imports its parent packages ``a.b`` and ``a`` (their ``__init__`` runs
first), so those edges count too.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nasviz"

#: generic engine areas: none of them may import the FastNAS algorithm package
GENERIC = (
    "config",
    "hparam",
    "dynamic",
    "tracing",
    "cost",
    "modes",
    "state",
    "space",
    "search",
    "patch",
    "extension",
    "hooks",
    "calibrate",
)
#: re-export modules kept for former import paths; they may import what they re-export, and no
#: engine module may import them
SHIMS = {
    "nasviz.modes.fastnas": "former path of nasviz.fastnas.mode",
    "nasviz.profile": "former path of nasviz.cost (users import profile, CostModel from it)",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every nasviz module ``name`` imports (anywhere in the file), with the parent packages of
    each target. A parent package that is also an ancestor of ``name`` is not an edge (it was
    imported before ``name`` started running); the target itself always is, so a submodule that
    imports its own package explicitly still counts.
    """
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    ancestors = set(_with_parents(name)[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            # ``from a import b`` imports the submodule a.b when there is one
            targets = [source, *(f"{source}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # a module named in a string (``importlib.import_module("nasviz.x")``) counts too
            targets = [node.value] if node.value.startswith("nasviz.") else []
        for target in targets:
            if target not in known:
                continue
            out.add(target)
            out |= {p for p in _with_parents(target)[:-1] if p in known and p not in ancestors}
    out.discard(name)
    return out


@functools.cache
def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _is_engine(name: str) -> bool:
    return name != "nasviz" and not name.startswith("nasviz.widgets")


def _area(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _engine_graph() -> dict[str, set[str]]:
    return {
        name: {d for d in deps if _is_engine(d)}
        for name, deps in _graph().items()
        if _is_engine(name)
    }


def test_the_graph_sees_function_level_and_parent_imports() -> None:
    graph = _graph()
    # a submodule edge, and a parent-package edge (importing nasviz.dynamic.base runs
    # nasviz.dynamic's __init__) the parser must find
    assert "nasviz.cost.profile" in graph["nasviz.cost.model"]
    assert "nasviz.dynamic" in graph["nasviz.cost.model"]  # via nasviz.dynamic.base
    assert "nasviz.fastnas.convert" in graph["nasviz.fastnas.mode"]
    # a function-level import is seen (here a planted one, parsed the same way)
    tree = "def f():\n    from nasviz.space import select\n"
    found = {
        n.module for n in ast.walk(ast.parse(tree)) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert found == {"nasviz.space"}
    # the cycle finder finds a planted cycle
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_engine_modules() -> None:
    cycles = _cycles(_engine_graph())
    assert cycles == [], "import cycles (every import counts, function-level ones too):\n" + (
        "\n".join(" <-> ".join(c) for c in cycles)
    )


def test_no_engine_module_imports_the_widgets() -> None:
    bad = {
        name: sorted(d for d in deps if d.startswith("nasviz.widgets"))
        for name, deps in _graph().items()
        if _is_engine(name)
    }
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("area", GENERIC)
def test_generic_modules_never_import_fastnas(area: str) -> None:
    graph = _graph()
    mods = [n for n in graph if _area(n) == area and n not in SHIMS]
    assert mods, f"no module found for area {area!r}"
    bad = {n: sorted(d for d in graph[n] if _area(d) == "fastnas") for n in mods}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_engine_module_imports_a_shim() -> None:
    graph = _graph()
    users = {
        name: sorted(set(deps) & set(SHIMS))
        for name, deps in graph.items()
        if _is_engine(name) and name not in SHIMS
    }
    assert {k: v for k, v in users.items() if v} == {}
