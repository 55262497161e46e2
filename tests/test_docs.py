"""The examples in docs/*.md run as doctests."""

import doctest
import pathlib

import pytest

DOCS = pathlib.Path(__file__).parent.parent / "docs"
CORE_DOCS = ["usage.md", "porting.md", "schedules.md"]


@pytest.mark.parametrize("name", CORE_DOCS)
def test_doc(name, tmp_path):
    path = DOCS / name
    result = doctest.testfile(
        str(path),
        module_relative=False,
        globs={"tmpdir": str(tmp_path)},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=True,
    )
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"
