"""tools.deps: zasync's import graph has no cycle and no overlong module."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from tools import deps

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_has_no_cycle_and_no_long_module():
    done = subprocess.run(
        [sys.executable, "-m", "tools.deps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == deps.EXIT_OK, done.stdout + done.stderr


def test_cycles_are_the_components_of_more_than_one_module_and_self_imports():
    graph = {
        "a": ["b"],
        "b": ["c"],
        "c": ["a", "d"],  # a -> b -> c -> a
        "d": ["e"],
        "e": [],
        "f": ["f"],  # imports itself
        "g": ["h", "outside"],  # an edge out of the graph is ignored
        "h": ["g"],
        "i": ["a", "g"],  # reaches two cycles without being in one
    }
    assert deps.find_cycles(graph) == [["a", "b", "c"], ["f"], ["g", "h"]]
    assert deps.cycle_path(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert deps.cycle_path(graph, ["f"]) == ["f", "f"]


def test_a_graph_without_cycles():
    chain = {str(n): [str(n + 1)] for n in range(5000)}  # deeper than recursion
    chain["5000"] = []
    assert deps.find_cycles(chain) == []
    assert deps.find_cycles({}) == []


def _imports(source: str, *, module: str = "zasync.mod", is_package: bool = False):
    known = {
        "zasync",
        "zasync.mod",
        "zasync.queue",
        "zasync.handoff",
        "zasync.job",
        "zasync.plone",
        "zasync.plone.worker",
        "zasync.plone.settings",
    }
    tree = ast.parse(textwrap.dedent(source))
    return deps.imported_modules(
        tree, module=module, is_package=is_package, known=known
    )


def test_imports_resolve_to_modules_wherever_they_are_written():
    runtime, type_only = _imports(
        """
        import os
        import zasync.queue
        from zasync import handoff
        from zasync.job import Job

        def later():
            from zasync.plone import worker
        """
    )
    assert runtime == {
        "zasync.queue",
        "zasync.handoff",
        "zasync.job",
        "zasync.plone.worker",
    }
    assert type_only == set()


def test_a_package_is_a_facade_only_when_imported_itself():
    runtime, _ = _imports("from zasync import Job\nimport zasync.plone.worker\n")
    assert runtime == {"zasync", "zasync.plone.worker"}


def test_type_checking_imports_are_apart():
    runtime, type_only = _imports(
        """
        from typing import TYPE_CHECKING
        import typing
        if TYPE_CHECKING:
            from zasync.queue import Queue
            from zasync.job import Job
        else:
            from zasync import handoff
        if typing.TYPE_CHECKING:
            import zasync.plone.worker
        from zasync.job import Job
        """
    )
    assert runtime == {"zasync.handoff", "zasync.job"}
    assert type_only == {"zasync.queue", "zasync.plone.worker"}


def test_relative_imports():
    runtime, _ = _imports(
        "from . import settings\nfrom ..job import Job\n",
        module="zasync.plone.worker",
    )
    assert runtime == {"zasync.plone.settings", "zasync.job"}
    runtime, _ = _imports(
        "from .worker import x\n", module="zasync.plone", is_package=True
    )
    assert runtime == {"zasync.plone.worker"}


def test_report_names_cycles_and_long_modules(tmp_path):
    package = tmp_path / "zasync"
    package.mkdir()
    (package / "__init__.py").write_text("from zasync.a import A\n")
    (package / "a.py").write_text("def f():\n    from zasync import b\n")
    (package / "b.py").write_text("import zasync.a\n" + "\n" * 20)
    lines, problems = deps.report(deps.read_modules(tmp_path), max_lines=10)
    assert problems
    text = "\n".join(lines)
    assert "zasync -> zasync.a\n" in text
    assert "zasync.a -> zasync.b\n" in text
    assert "zasync.a, zasync.b\n    e.g. zasync.a -> zasync.b -> zasync.a" in text
    assert "zasync.b: 21 lines" in text
    lines, problems = deps.report(deps.read_modules(tmp_path), max_lines=100)
    assert problems  # the cycle alone
