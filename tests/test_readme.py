"""README.md, as a newcomer follows it: the prerequisites, where the
commands live, how to install from a checkout or a built wheel (zasync is
not on PyPI), a code snippet without unused imports, and files that
exist where its commands name them. (tests/test_deploy_examples.py parses
its zasync commands.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_it_names_the_prerequisites_and_where_the_commands_are():
    for needed in ("`make`", "`venv`", "8080", "8100", "PostgreSQL", ".venv/bin"):
        assert needed in README, needed


def test_it_installs_from_a_checkout_or_a_wheel_not_from_pypi():
    assert "pip install -e '.[zeo]'" in README
    assert "python -m build" in README and "dist/zasync-" in README
    assert not re.search(r"pip install (-c \S+ )?'?zasync\[", README)


def test_the_python_snippets_use_what_they_import():
    snippets = re.findall(r"```python\n(.*?)```", README, re.S)
    assert snippets
    for snippet in snippets:
        tree = ast.parse(snippet)
        imported = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert imported <= used, imported - used


def test_the_files_its_commands_name_exist():
    paths = re.findall(r"--zope-conf (\S+)", README)
    assert paths
    for path in paths:
        assert (ROOT / path).is_file(), path
    # the example's files need the environment examples/cluster.py sets
    for name in ("EXAMPLE_HOME", "EXAMPLE_VAR", "ZEO_ADDRESS"):
        assert name in README


def test_it_points_to_the_control_panel_and_the_rest_api():
    assert "Site Setup > Asynchronous jobs" in README and "@@async-jobs" in README
    assert "docs/restapi.md" in README
