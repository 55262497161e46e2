"""Sphinx configuration of zasync's documentation site (``make docs``).

The pages are the Markdown files of this directory (MyST); ``api.md``
documents the public API from the docstrings (autodoc). ``make docs``
builds with warnings as errors, as CI does.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

project = "zasync"
author = "zasync developers"
copyright = "zasync developers"
release = importlib.metadata.version("zasync")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "repoze.sphinx.autointerface",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: ``{eval-rst}`` blocks for autodoc's directives, heading anchors for
# links such as [x](first-job.md#how-workers-find-job-modules).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Code blocks of an unknown language are shown plain, not warned about;
# nor is a ZConfig block shown as XML that Pygments reads leniently.
highlight_language = "none"
suppress_warnings = ["misc.highlighting_failure"]
# A type hint ``type[...]`` would find the attributes named ``type``
# (Failure.type) beside the builtin: not a broken link.
suppress_warnings += ["ref.python"]

# Links from a page to a file of the repository outside docs/ (such as
# benchmarks/WORKLOADS.md) name a file of the checkout: shown as their
# text, without a warning.
DOCS = Path(__file__).resolve().parent
nitpick_ignore_regex = [
    ("myst", rf"{re.escape(str(DOCS.parent))}/(?!docs/).*"),
    # Type hints that name the standard library's, ZODB's and zope's types
    # (documented elsewhere: the build fetches no other site's inventory),
    # type variables and private helpers: shown as text.
    (
        "py:class",
        r"(collections|datetime|uuid_module|typing|ZODB|BTrees|persistent"
        r"|zope|transaction)\..*",
    ),
    ("py:class", r"(.*\.)?_\w+|zasync\.\w+\.T"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"zasync {release}"
html_static_path = ["_static"]
