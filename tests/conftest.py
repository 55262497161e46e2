"""Shared pytest fixtures. Each section belongs to one concern; add yours
under a section comment of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# --- servers ---
# Real servers (no mocks): a ZEO server per test, a fresh PostgreSQL database
# per test. A missing service skips the test, except under CI (``CI`` set in
# the environment), where it fails: CI must run everything.


def missing_service(message: str) -> None:
    """Skip the running test because ``message`` names a missing service, or
    fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def zeo_server(tmp_path: Path) -> Iterator[object]:
    """A running :class:`zasync.testservers.ZEOServer` with its Data.fs in
    ``tmp_path / 'zeo'``; stopped after the test."""
    try:
        import ZEO  # noqa: F401
    except ImportError:
        missing_service("ZEO is not installed: pip install 'zasync[zeo]'")
    from zasync.testservers import ZEOServer

    with ZEOServer(tmp_path / "zeo") as server:
        yield server


@pytest.fixture
def pg_uri() -> Iterator[str]:
    """The ``postgresql://`` URI of a fresh, empty database on the test
    server (``ZASYNC_TEST_PG``); dropped after the test."""
    from zasync.testservers import (
        drop_postgres_database,
        fresh_postgres_database,
        postgres_available,
    )

    problem = postgres_available()
    if problem is not None:
        missing_service(problem)
    uri = fresh_postgres_database()
    try:
        yield uri
    finally:
        drop_postgres_database(uri)
