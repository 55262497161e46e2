"""The package as it is published (``make dist`` builds and checks it in
CI): its metadata in pyproject.toml, and package data that covers every
file Plone loads from it (ZCML, templates, profiles, static files)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_metadata_says_what_it_is_for():
    project = PROJECT["project"]
    classifiers = set(project["classifiers"])
    assert {
        "Framework :: Plone :: 6.1",
        "Framework :: Plone :: 6.2",
        "Framework :: Plone :: Addon",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    } <= classifiers
    # the licence as an SPDX expression (PEP 639), which replaces the
    # "License ::" classifier
    assert project["license"] == "ZPL-2.1"
    assert not any(c.startswith("License ::") for c in classifiers)
    assert project["readme"] == {"file": "README.md", "content-type": "text/markdown"}


def test_every_data_file_of_the_package_is_shipped():
    patterns = PROJECT["tool"]["setuptools"]["package-data"]["zasync"]
    package = ROOT / "src" / "zasync"
    data = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file()
        and path.suffix not in (".py", ".pyc")
        and "__pycache__" not in path.parts
    ]
    assert data
    missing = [
        name
        for name in data
        if not any(
            fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name, p.removeprefix("**/"))
            for p in patterns
        )
    ]
    assert missing == []
