"""The user documentation runs: every ```pycon block of docs/seed.md (the
plone.app.async user documentation) and docs/plone.md is a doctest, run in
order under ZASYNC_PLONE_FUNCTIONAL_TESTING with ``layer`` bound to the
layer.

Markdown is turned into a doctest by blanking every line outside the pycon
blocks (so line numbers in failure reports are those of the .md file); a
block ends with a blank line so that the fence is not read as expected
output.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
import transaction
from zope.component import getGlobalSiteManager

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^\s*```\s*([\w-]*)\s*$")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def doctest_source(text: str) -> str:
    """The pycon blocks of a markdown text, other lines blanked."""
    out, fence = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if match and fence is None:
            fence = match.group(1) or "text"
            out.append("")
        elif match:
            fence = None
            out.append("")
        else:
            out.append(line if fence == "pycon" else "")
    return "\n".join(out) + "\n"


def run_markdown(path: Path, globs: dict) -> None:
    source = doctest_source(path.read_text(encoding="utf-8"))
    test = doctest.DocTestParser().get_doctest(source, globs, path.name, str(path), 0)
    assert test.examples, f"{path} has no pycon examples"
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=report.append, clear_globs=False)
    if runner.failures:
        pytest.fail(
            f"{runner.failures} of {runner.tries} examples of {path.name} "
            f"failed:\n" + "".join(report),
            pytrace=False,
        )


@pytest.fixture
def clean_handlers():
    """Whatever a failing document leaves registered is unregistered."""
    from zasync.plone.tests import funcs

    funcs.results = []
    gsm = getGlobalSiteManager()

    def handlers():
        return {(r.factory, r.required, r.name) for r in gsm.registeredHandlers()}

    before = handlers()
    yield
    for factory, required, name in handlers() - before:
        gsm.unregisterHandler(factory, required, name)
    transaction.abort()


def test_seed_user_documentation(functional, clean_handlers):
    """plone.app.async's own user documentation, ported by renames only."""
    run_markdown(DOCS / "seed.md", {"layer": functional})


def test_plone_user_documentation(functional, clean_handlers):
    """docs/plone.md: basic use, batches, security, callbacks and events,
    delays, configuration, deployment."""
    run_markdown(DOCS / "plone.md", {"layer": functional})


def test_markdown_outside_pycon_is_ignored():
    text = "intro\n```python\n>>> 1\n2\n```\n```pycon\n>>> 1 + 1\n2\n\n```\n"
    test = doctest.DocTestParser().get_doctest(doctest_source(text), {}, "t", "t.md", 0)
    assert [e.source for e in test.examples] == ["1 + 1\n"]
    assert test.examples[0].lineno == 6
