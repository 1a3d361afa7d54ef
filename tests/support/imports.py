"""The package's import graph, read from the source with `ast` (every import, also those inside
functions and under TYPE_CHECKING: a lazy import is still a dependency a reader must follow)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from paths import REPO

PACKAGE = REPO / "mbt_online"


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path: Path) -> Iterable[tuple[str, str | None]]:
    """(module, name) for each `import module` (name None) and `from module import name`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from ((node.module, a.name) for a in node.names)


def project_imports(path: Path, modules: dict[str, Path], follow: bool = False) -> set[str]:
    """The package's modules that `path` imports (`from pkg import module` counts the module).
    With `follow`, a name imported from a package that re-exports it also counts the module that
    defines it (`from mbt_online.report import render_table` reaches `report.tables`)."""
    out = set()
    for module, name in imported_names(path):
        full = f"{module}.{name}" if name else module
        if full in modules:
            out.add(full)
        elif module in modules:
            out.add(module)
            if follow and name:
                out |= _defined_in(module, name, modules, depth=3)
    return out


def _defined_in(module: str, name: str, modules: dict[str, Path], depth: int) -> set[str]:
    """The module(s) a re-exported `name` of `module` comes from."""
    if depth == 0:
        return set()
    for source, imported in imported_names(modules[module]):
        if imported == name and source in modules:
            return {source} | _defined_in(source, name, modules, depth - 1)
    return set()


def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {m: project_imports(p, modules) - {m, "mbt_online"} for m, p in modules.items()}


def room(module: str) -> str:
    """The folder a module lives in (`generation`, `training`, ...); a top-level module is a room
    of its own (`loop`, `contracts`, ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found
