"""The kit's layers and its import graph, read from the source with :mod:`ast` (nothing is imported).

Why a module: the one-way rule between layers (docs/architecture.md) is only real if something checks
it. ``tests/test_layers.py`` fails on a wrong-direction or cyclic import, the submission builder embeds
the import closure of the runtime entry point (and nothing else), and ``scripts/draw_architecture.py``
draws the layer picture from this same graph, so the picture cannot drift from the code.

Layers, lowest first; a module may import its own layer and the ones below it:

* ``runtime`` — ``kit.runtime.*`` and ``kit`` itself: what the submission notebook embeds;
* ``offline`` — ``kit.offline.*``: the run data model, its reader, metrics, selection, reports;
* ``sim`` — ``kit.sim.*``: virtual clock, replay engine, competition simulator;
* ``learn`` — ``kit.learn.*``: curation, rewards, scorer, difficulty targets and training;
* ``app`` — ``kit.cli``, ``kit.__main__``, ``kit.layers``: the command line, which wires layers together.

Every module belongs to one of them: a module anywhere else in ``kit`` is an error (:func:`layer_of`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

KIT_DIR = Path(__file__).resolve().parent
LAYERS: tuple[str, ...] = ("runtime", "offline", "sim", "learn", "app")
"""Lowest first: a module may import modules of its own layer or of a layer before it."""
APP_MODULES = frozenset({"kit.cli", "kit.__main__", "kit.layers"})


def layer_of(module: str) -> str:
    """The layer of a ``kit`` module name (see the module docstring)."""
    if module == "kit":
        return "runtime"
    head = module.split(".")[1] if module.startswith("kit.") else ""
    if head in ("runtime", "offline", "sim", "learn"):
        return head
    if module in APP_MODULES:
        return "app"
    raise ValueError(f"module {module!r} belongs to no layer: put it in kit/runtime, offline, sim or learn")


def allowed(importer: str, imported: str) -> bool:
    """Whether module ``importer`` may import module ``imported`` (both ``kit`` modules)."""
    return LAYERS.index(layer_of(imported)) <= LAYERS.index(layer_of(importer))


def module_files(root: Path = KIT_DIR) -> dict[str, Path]:
    """Every module of the ``kit`` package: dotted name → file."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    deferred: bool
    """Inside a function (runs when called, not when the module is imported)."""


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(module: str, is_package: bool, node: ast.AST, modules: Mapping[str, Path]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, is_package, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in modules else base


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    """The ``kit`` modules that ``module`` imports (at any depth of its code), with line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, is_package, child, modules):
                    if target == "kit" or target.startswith("kit."):
                        found.append(Import(module, target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def import_graph(root: Path = KIT_DIR) -> list[Import]:
    """Every import between ``kit`` modules."""
    modules = module_files(root)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def wrong_direction(imports: Iterable[Import]) -> list[Import]:
    return [i for i in imports if not allowed(i.importer, i.imported)]


def cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted; self-imports ignored."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.importer != i.imported:
            graph.setdefault(i.importer, set()).add(i.imported)
            graph.setdefault(i.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(groups)


def closure(start: Iterable[str], imports: Iterable[Import]) -> set[str]:
    """Modules reachable from ``start`` through imports (deferred ones included), packages of each added."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        graph.setdefault(i.importer, set()).add(i.imported)
    seen: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # a package's __init__ runs first
        todo += sorted(graph.get(m, ()))
    return seen


def layer_edges(imports: Iterable[Import]) -> dict[tuple[str, str], int]:
    """Imports between different layers, counted per (importing layer, imported layer)."""
    out: dict[tuple[str, str], int] = {}
    for i in imports:
        a, b = layer_of(i.importer), layer_of(i.imported)
        if a != b:
            out[(a, b)] = out.get((a, b), 0) + 1
    return dict(sorted(out.items()))
