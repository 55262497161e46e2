"""The import graph of zasync's modules, read from the source (nothing is
imported), with its cycles and the modules that grew too long.

``python -m tools.deps`` (from the repository root) prints one line per
module, ``module -> the zasync modules it imports``, then the type-only
imports, then the cycles and the modules longer than ``--max-lines``.
It exits with 1 when there is a cycle or a module that is too long, else 0.

What counts as an edge:

- every import of a zasync module, wherever it is written: at module level,
  in a function, in a ``try``. Imports under ``if TYPE_CHECKING:`` run only
  for the type checker: they are listed apart and are not edges.
- ``from zasync import handoff`` imports the module ``zasync.handoff``;
  ``from zasync.queue import Queue`` imports ``zasync.queue``;
  ``from zasync import Job`` imports the package ``zasync`` itself.
- A package's ``__init__`` is a facade: importing ``zasync.queue`` runs
  ``zasync/__init__.py`` first, but that is not an edge to ``zasync``; only
  a module that imports the package (``import zasync``, ``from zasync import
  Job``) depends on it, and through it on what the facade imports.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: the package whose modules make the graph
PACKAGE = "zasync"
#: where it lives, from the repository root
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"
#: a module longer than this should split by concept (STYLE.md: about 600
#: lines at most; the engine aims lower)
DEFAULT_MAX_LINES = 450

EXIT_OK = 0
EXIT_PROBLEMS = 1  # a cycle, or a module over --max-lines


@dataclass(frozen=True)
class Module:
    """One module of the package, as its source says."""

    name: str
    path: Path
    lines: int
    #: zasync modules it imports when it runs (the graph's edges)
    imports: frozenset[str]
    #: zasync modules it imports only under ``if TYPE_CHECKING:``
    type_only: frozenset[str]


# --------------------------------------------------------------------------
# Reading the source
# --------------------------------------------------------------------------


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root`` (subpackages included),
    by dotted name; a package is named by its ``__init__.py``."""
    files: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(
    node: ast.AST, type_only: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node``, with whether it is type-only."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, type_only
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _import_nodes(ast.Module([statement], []), True)
            for statement in child.orelse:
                yield from _import_nodes(ast.Module([statement], []), type_only)
        else:
            yield from _import_nodes(child, type_only)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    base = ".".join(parts)
    return f"{base}.{node.module}" if node.module else base


def _known_prefix(name: str, known: Collection[str]) -> str | None:
    """``name`` if it is a module of the graph, else its longest prefix that
    is (``import zasync.x.attr`` style), else None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _targets(
    node: ast.Import | ast.ImportFrom,
    *,
    module: str,
    is_package: bool,
    known: Collection[str],
) -> Iterator[str]:
    """The modules of the graph that one import statement depends on."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _known_prefix(alias.name, known)
            if target is not None:
                yield target
        return
    source = _absolute(node, module, is_package)
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in known:  # from zasync import handoff
            yield submodule
        else:  # from zasync.queue import Queue; from zasync import Job
            target = _known_prefix(source, known)
            if target is not None:
                yield target


def imported_modules(
    tree: ast.Module, *, module: str, is_package: bool, known: Collection[str]
) -> tuple[set[str], set[str]]:
    """The modules of ``known`` that ``tree`` (the source of ``module``)
    imports: those it imports when it runs, and those it imports only under
    ``if TYPE_CHECKING:`` (a module imported both ways is in the first)."""
    runtime: set[str] = set()
    type_only: set[str] = set()
    for node, only_for_types in _import_nodes(tree):
        targets = _targets(node, module=module, is_package=is_package, known=known)
        (type_only if only_for_types else runtime).update(targets)
    return runtime, type_only - runtime


def read_modules(root: Path = SOURCE_ROOT, package: str = PACKAGE) -> list[Module]:
    """Parse every module of ``package`` under ``root``, in name order."""
    files = module_files(root, package)
    modules = []
    for name, path in files.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        runtime, type_only = imported_modules(
            tree, module=name, is_package=path.name == "__init__.py", known=files
        )
        modules.append(
            Module(
                name=name,
                path=path,
                lines=len(source.splitlines()),
                imports=frozenset(runtime),
                type_only=frozenset(type_only),
            )
        )
    return modules


# --------------------------------------------------------------------------
# Cycles
# --------------------------------------------------------------------------


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (module -> the modules it imports):
    its strongly connected components of more than one module, and each
    module that imports itself, every one sorted, in sorted order.

    Edges to modules that are not keys of ``graph`` are ignored.
    """
    edges = {
        node: sorted(set(targets) & graph.keys()) for node, targets in graph.items()
    }
    components = _strongly_connected(edges)
    cycles = [
        sorted(component)
        for component in components
        if len(component) > 1 or component[0] in edges[component[0]]
    ]
    return sorted(cycles)


def _strongly_connected(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep chains)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(edges[start]))]
        index[start] = lowlink[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    components.append(_pop_component(stack, on_stack, node))
            elif child not in index:
                index[child] = lowlink[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                lowlink[node] = min(lowlink[node], index[child])
    return components


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> list[str]:
    component = []
    while True:
        node = stack.pop()
        on_stack.discard(node)
        component.append(node)
        if node == root:
            return component


def cycle_path(graph: Mapping[str, Iterable[str]], members: Sequence[str]) -> list[str]:
    """One closed path through the cycle ``members`` (as :func:`find_cycles`
    gives it), from its first member back to it: the shortest one."""
    start = members[0]
    inside = set(members)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for target in sorted(set(graph.get(node, ())) & inside):
                if target == start:
                    path = [start]
                    while node != start:
                        path.append(node)
                        node = previous[node]
                    return [start, *reversed(path[1:]), start]
                if target not in previous:
                    previous[target] = node
                    next_frontier.append(target)
        frontier = next_frontier
    raise ValueError(f"{list(members)} is not a cycle of the graph")


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


def report(modules: Sequence[Module], *, max_lines: int) -> tuple[list[str], bool]:
    """The lines to print, and whether a cycle or a long module was found."""
    graph = {m.name: m.imports for m in modules}
    lines = [f"{m.name} -> {', '.join(sorted(m.imports)) or '(none)'}" for m in modules]
    type_only = [m for m in modules if m.type_only]
    if type_only:
        lines += ["", "type-only imports (under TYPE_CHECKING, not edges):"]
        lines += [f"  {m.name} -> {', '.join(sorted(m.type_only))}" for m in type_only]
    cycles = find_cycles(graph)
    lines.append("")
    if cycles:
        lines.append(f"cycles ({len(cycles)}):")
        for members in cycles:
            lines.append(f"  {', '.join(members)}")
            lines.append(f"    e.g. {' -> '.join(cycle_path(graph, members))}")
    else:
        lines.append("no cycles")
    too_long = [m for m in modules if m.lines > max_lines]
    if too_long:
        lines.append(f"modules over {max_lines} lines ({len(too_long)}):")
        lines += [f"  {m.name}: {m.lines} lines" for m in too_long]
    else:
        lines.append(f"no module over {max_lines} lines")
    return lines, bool(cycles or too_long)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.deps",
        description="Print the import graph of zasync's modules; fail on an "
        "import cycle or a module that is too long.",
        epilog=f"exit codes: {EXIT_OK} ok, {EXIT_PROBLEMS} a cycle or a long "
        "module, 2 bad usage",
    )
    parser.add_argument(
        "--max-lines",
        type=int,
        default=DEFAULT_MAX_LINES,
        metavar="N",
        help=f"fail on modules longer than N lines (default {DEFAULT_MAX_LINES})",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=SOURCE_ROOT,
        metavar="DIR",
        help=f"the directory that holds the {PACKAGE} package (default: src/)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.src / PACKAGE).is_dir():
        print(f"--src {args.src}: no {PACKAGE} package in it", file=sys.stderr)
        return 2
    lines, problems = report(read_modules(args.src), max_lines=args.max_lines)
    print("\n".join(lines))
    return EXIT_PROBLEMS if problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
