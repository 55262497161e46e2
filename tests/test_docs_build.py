"""``make docs`` fails on what a reader would trip over: the docs' own
configuration (docs/conf.py) and the Makefile's sphinx-build flags, run on
a small site of the test's own, refuse a link to a page that does not
exist and a reference to an undocumented object, and accept a link to a
file of the repository outside docs/. (CI builds the real site with
``make docs``; this checks that the build is strict.) The README's links
name files that exist."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

INDEX = """# Test site

```{toctree}
:glob:

*
```
"""


def sphinx_flags() -> list[str]:
    """The flags the Makefile's docs target gives sphinx-build."""
    makefile = (ROOT / "Makefile").read_text()
    command = re.search(r"sphinx-build (.+) docs docs/_build/html", makefile)
    assert command, "the Makefile's docs target runs sphinx-build on docs/"
    return shlex.split(command.group(1))


def build(tmp_path: Path, page: str) -> tuple[int, str]:
    """Build a site of docs/conf.py, an index and ``page``, as the Makefile
    does; return sphinx-build's exit code and its warnings."""
    pytest.importorskip("sphinx", reason="make docs installs the docs extra")
    from sphinx.cmd.build import build_main

    # Laid out as the repository is: docs/ beside the files pages link to.
    source = tmp_path / "repo" / "docs"
    source.mkdir(parents=True)
    shutil.copy(DOCS / "conf.py", source / "conf.py")
    (source / "_static").mkdir()
    (source / "index.md").write_text(INDEX)
    (source / "page.md").write_text(page)
    (tmp_path / "repo" / "NOTES.md").write_text("# Notes\n")
    warnings = tmp_path / "warnings.txt"
    out = tmp_path / "html"
    code = build_main([*sphinx_flags(), "-w", str(warnings), str(source), str(out)])
    return code, warnings.read_text()


def test_the_build_is_strict_about_the_makefiles_flags():
    assert {"-W", "-n", "--keep-going"} <= set(sphinx_flags())


@pytest.mark.slow
def test_a_link_to_a_missing_page_fails_the_build(tmp_path):
    code, warnings = build(tmp_path, "# Page\n\nSee [the guide](guide.md).\n")
    assert code != 0
    assert "guide" in warnings and "xref_missing" in warnings


@pytest.mark.slow
def test_a_reference_to_an_undocumented_object_fails_the_build(tmp_path):
    page = "# Page\n\n```{eval-rst}\nSee :func:`zasync.no_such_function`.\n```\n"
    code, warnings = build(tmp_path, page)
    assert code != 0
    assert "zasync.no_such_function" in warnings


@pytest.mark.slow
def test_a_link_to_a_file_of_the_repository_builds(tmp_path):
    code, warnings = build(tmp_path, "# Page\n\nSee [the notes](../NOTES.md).\n")
    assert (code, warnings) == (0, "")


def test_the_readmes_links_name_files_that_exist():
    for readme in (ROOT / "README.md", ROOT / "examples" / "first_job" / "README.md"):
        links = re.findall(r"\]\(([^)#\s]+)\)", readme.read_text())
        local = [link for link in links if "://" not in link]
        assert local, readme
        for link in local:
            assert (readme.parent / link).exists(), f"{readme.name}: {link}"
