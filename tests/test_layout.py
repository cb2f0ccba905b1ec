"""The package's shape (issue 12, properties 1 and 6), read from the source with ast: nothing is imported.

A pure core, no import cycles, no module over 600 lines, and nothing of the lab or the tests in pyrhfos.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyrhfos"

# No I/O in the core: no sockets, clocks, processes, threads, signals, files, kernel or system libraries.
IO_MODULES = frozenset(
    {
        "asyncio",
        "socket",
        "subprocess",
        "time",
        "threading",
        "selectors",
        "signal",
        "os",
        "pyroute2",
        "scapy",
        "psutil",
    }
)
MAX_LINES = 600
NOT_IN_PACKAGE = ("pyrhfos_lab", "tests", "bench")  # test and demo code stays out of the wheel


@dataclass(frozen=True)
class Import:
    target: str  # the absolute module name imported (for ``from X import n``: X.n if a module, else X)
    line: int
    also: tuple[str, ...] = ()  # packages whose __init__ also runs (ancestors outside the importer's)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of pyrhfos by dotted name (a package by its __init__)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _base(importer: str, level: int) -> str:
    """The package a relative import of ``level`` dots starts from."""
    is_package = modules()[importer].name == "__init__.py"
    parts = importer.split(".")
    drop = level - 1 if is_package else level
    if drop >= len(parts):
        raise AssertionError(f"{importer}: relative import beyond the top package")
    return ".".join(parts[: len(parts) - drop])


def _ancestors_outside(name: str, importer: str) -> tuple[str, ...]:
    """Packages above ``name`` whose __init__ importing it runs, less those holding the importer
    (those are already being imported when it runs)."""
    parts = name.split(".")
    own = importer.split(".")
    return tuple(".".join(parts[:i]) for i in range(1, len(parts)) if parts[:i] != own[:i] or len(own) <= i)


def imports(name: str) -> list[Import]:
    """Every import statement of module ``name``, at any depth (functions, classes, TYPE_CHECKING)."""
    tree = ast.parse(modules()[name].read_text(), str(modules()[name]))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, node.lineno, _ancestors_outside(alias.name, name)))
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, node.level) if node.level else ""
            src = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                target = sub if sub in modules() else src
                found.append(Import(target, node.lineno, _ancestors_outside(target, name)))
    return found


def top(module: str) -> str:
    return module.split(".", 1)[0]


def internal_edges(name: str) -> Iterator[tuple[str, int]]:
    """The pyrhfos modules ``name`` makes run: what it names, and package __init__s on the way."""
    for imp in imports(name):
        for target in (imp.target, *imp.also):
            if target in modules() and target != name:
                yield target, imp.line


def where(name: str, line: int) -> str:
    return f"{modules()[name].relative_to(ROOT)}:{line}"


def dynamic_imports(name: str) -> list[str]:
    """Calls of __import__ / importlib: imports an ast reading of ``import`` lines cannot see."""
    tree = ast.parse(modules()[name].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func == "__import__" or func.startswith("importlib."):
                found.append(f"{where(name, node.lineno)}: {func}()")
    return found


# -- property 1: the core does no I/O -----------------------------------------------------------------


def core_modules() -> list[str]:
    core = [m for m in modules() if m == "pyrhfos.core" or m.startswith("pyrhfos.core.")]
    assert "pyrhfos.core.machine" in core and "pyrhfos.core.wire" in core, "the core moved: update this test"
    return core


def forbidden_imports(mods: list[str], forbidden: Iterable[str]) -> list[str]:
    """Each import of ``mods`` whose top-level package is forbidden, and every dynamic import."""
    banned = set(forbidden)
    bad = []
    for m in mods:
        found = [imp for imp in imports(m) if top(imp.target) in banned]
        bad += [f"{where(m, imp.line)}: imports {imp.target}" for imp in found]
    return bad + [d for m in mods for d in dynamic_imports(m)]


def test_core_imports_no_io_module_anywhere() -> None:
    bad = forbidden_imports(core_modules(), IO_MODULES)
    assert not bad, "the core must stay pure:\n" + "\n".join(bad)


def test_core_reaches_no_io_module_through_pyrhfos_modules() -> None:
    """What the core imports from pyrhfos (outside core/ too) does no I/O either, at any depth."""
    bad = []
    for start in core_modules():
        seen = {start}
        todo: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        while todo:
            name, path = todo.pop()
            for imp in imports(name):
                if top(imp.target) in IO_MODULES and name != start:  # the start's own: test above
                    via = " -> ".join(path[1:])
                    bad.append(f"{start} -> {via}: {where(name, imp.line)} imports {imp.target}")
                if imp.target in modules() and imp.target not in seen:
                    seen.add(imp.target)
                    todo.append((imp.target, (*path, imp.target)))
    assert not bad, "the core reaches I/O through another module:\n" + "\n".join(sorted(set(bad)))


# -- property 6: no cycles, short modules, no test code in the package --------------------------------


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph has a few dozen nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
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
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Breadth-first inside the component: the shortest way from start back to itself.
        paths = {start: [start]}
        frontier = [start]
        cycle: list[str] | None = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        cycle = [*paths[v], start]
                        break
                    if w in members and w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        assert cycle is not None
        cycles.append(cycle)
    return cycles


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it makes run: the line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for name in modules():
        edges: dict[str, int] = {}
        for target, line in internal_edges(name):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    shown = [
        " -> ".join(cycle)
        + "\n    "
        + ", ".join(where(a, graph[a][b]) for a, b in zip(cycle, cycle[1:], strict=False))
        for cycle in cycles
    ]
    assert not cycles, "import cycles among pyrhfos modules:\n" + "\n".join(shown)


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (more than one concern each): {long}"


def test_package_imports_no_lab_or_test_code() -> None:
    bad = forbidden_imports(modules(), NOT_IN_PACKAGE)
    assert not bad, "pyrhfos must install and run without the lab or the tests:\n" + "\n".join(bad)


# -- the checker itself -------------------------------------------------------------------------------


def test_cycle_finder_reports_a_closed_path() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"e": 1}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_relative_imports_resolve_to_modules_and_packages() -> None:
    # cli/common.py: ``from ..config import ConfigError, load`` names the package (its __init__);
    # ``from ..config.model import Config`` the module, and config's __init__ runs on the way.
    common = {(i.target, i.also) for i in imports("pyrhfos.cli.common")}
    assert ("pyrhfos.config", ()) in common  # pyrhfos/__init__ is already running: no edge
    assert ("pyrhfos.config.model", ("pyrhfos.config",)) in common
    # config/__init__.py: ``from .model import Config`` from a package is its own submodule.
    assert "pyrhfos.config.model" in {i.target for i in imports("pyrhfos.config")}
    # inside its own package, the package's __init__ is not an edge (it is already running).
    assert all("pyrhfos.config" not in i.also for i in imports("pyrhfos.config.validate"))


def test_the_checks_catch_a_bad_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check above fails, naming the culprit, on a small package built to break every rule."""
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/machine.py": "def later():\n    import time\n",  # I/O hidden in a function
        "core/wire.py": "from ..net import helper\n",  # pure itself, but reaches a socket
        "net/__init__.py": "",
        "net/helper.py": "import socket\nfrom ..core import wire\n",  # and back: a cycle
        "cli.py": "from pyrhfos_lab import lab\n" + "\n" * MAX_LINES,
    }
    for rel, text in files.items():
        (tmp_path / "pyrhfos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pyrhfos" / rel).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "pyrhfos")
    modules.cache_clear()
    try:
        for check, culprit in (
            (test_core_imports_no_io_module_anywhere, "pyrhfos/core/machine.py:2: imports time"),
            (
                test_core_reaches_no_io_module_through_pyrhfos_modules,
                "pyrhfos/net/helper.py:1 imports socket",
            ),
            (test_no_import_cycles, "pyrhfos.core.wire -> pyrhfos.net.helper -> pyrhfos.core.wire"),
            (test_no_module_over_600_lines, "pyrhfos/cli.py"),
            (test_package_imports_no_lab_or_test_code, "pyrhfos/cli.py:1: imports pyrhfos_lab"),
        ):
            with pytest.raises(AssertionError, match=re.escape(culprit)):
                check()
    finally:
        modules.cache_clear()
