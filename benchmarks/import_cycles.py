"""Import cycles inside the ``spoofray`` package, found by reading the source with ``ast``.

Every ``import``/``from … import`` counts: module-level ones and the late ones inside
functions (a late import hides a cycle from the interpreter, not from the design). Imports
under ``if TYPE_CHECKING:`` never run and are left out.

  python benchmarks/import_cycles.py            prints each cycle; exit status 1 if any
  python benchmarks/import_cycles.py --edges    also prints the whole graph

``tests/test_layout.py`` runs this file and uses :func:`file_imports` for its other
layout rules (what may import ``spoofray.testing``, ``ray``, or a test module).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys
from collections.abc import Iterator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Import:
    """One imported module name as written in a file (``from a.b import c`` gives
    ``a.b.c`` when ``a/b/c.py`` or ``a/b/c/`` exists under the root, else ``a.b``)."""

    module: str
    line: int
    late: bool  # inside a function (or class body), not at module level


def module_name(path: str, root: str = REPO_ROOT) -> str:
    """``spoofray/models/ml.py`` → ``spoofray.models.ml``; a package's ``__init__.py`` →
    the package."""
    rel = os.path.relpath(os.path.abspath(path), root)
    parts = rel[:-3].split(os.sep) if rel.endswith(".py") else rel.split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str, root: str) -> bool:
    base = os.path.join(root, *name.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, late: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            for sub in child.orelse:
                yield from _walk_one(sub, late)
            continue
        yield from _walk_one(child, late)


def _walk_one(node: ast.AST, late: bool) -> Iterator[tuple[ast.AST, bool]]:
    yield node, late
    inner = late or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                      ast.ClassDef))
    yield from _walk(node, inner)


def file_imports(path: str, root: str = REPO_ROOT) -> list[Import]:
    """Every module ``path`` imports, absolute names, with line and level."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    here = module_name(path, root)
    package = here if os.path.basename(path) == "__init__.py" else here.rpartition(".")[0]
    out: list[Import] = []
    for node, late in _walk(tree, False):
        if isinstance(node, ast.Import):
            out += [Import(alias.name, node.lineno, late) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(p for p in [*base_parts, node.module or ""] if p)
            else:
                base = node.module or ""
            subs = [f"{base}.{a.name}" for a in node.names
                    if a.name != "*" and _is_module(f"{base}.{a.name}", root)]
            out += [Import(s, node.lineno, late) for s in subs]
            if len(subs) < len(node.names):  # some names are attributes of ``base``
                out.append(Import(base, node.lineno, late))
    return out


def python_files(folder: str) -> list[str]:
    """The ``.py`` files under ``folder``, sorted (``__pycache__`` skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return found


def import_graph(package: str = "spoofray", root: str = REPO_ROOT
                 ) -> dict[str, dict[str, list[int]]]:
    """Module → {imported module of the same package → lines}, over every file of it."""
    graph: dict[str, dict[str, list[int]]] = {}
    for path in python_files(os.path.join(root, package)):
        edges = graph.setdefault(module_name(path, root), {})
        for imp in file_imports(path, root):
            if imp.module == package or imp.module.startswith(package + "."):
                edges.setdefault(imp.module, []).append(imp.line)
    return graph


def cycles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """One cycle (``[a, b, …, a]``) for every strongly connected component with more than
    one module, or a module importing itself (Tarjan, then a shortest loop through the
    component's first module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
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
            components.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for comp in components:
        start = comp[0]
        if len(comp) == 1 and start not in graph.get(start, {}):
            continue
        members, previous, frontier = set(comp), {start: None}, [start]
        while frontier and start not in [w for v in frontier for w in graph.get(v, {})]:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, {})):
                    if w in members and w not in previous:
                        previous[w] = v
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in graph.get(v, {}))
        path = [start]
        while last is not None:
            path.append(last)
            last = previous[last]
        found.append(path[::-1] if len(path) > 1 else [start, start])
    return found


def describe(cycle: list[str], graph: dict[str, dict[str, list[int]]]) -> str:
    """``a → b (line 3, 40) → a (line 12)``."""
    hops = [cycle[0]]
    for a, b in zip(cycle, cycle[1:]):
        lines = ", ".join(str(n) for n in graph[a][b])
        hops.append(f"{b} ({a} line {lines})")
    return " → ".join(hops)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default="spoofray")
    p.add_argument("--edges", action="store_true", help="print every module's imports too")
    args = p.parse_args(argv)
    graph = import_graph(args.package)
    if args.edges:
        for module in sorted(graph):
            print(f"{module}: {', '.join(sorted(graph[module])) or '-'}")
    found = cycles(graph)
    for cycle in found:
        print("cycle:", describe(cycle, graph))
    print(f"{len(graph)} modules, {sum(len(e) for e in graph.values())} imports, "
          f"{len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
