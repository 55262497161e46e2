"""The storages the workloads run on, each started fresh for one run.

``file_store``, ``zeo_store`` and ``pg_store`` are context managers that
yield a :class:`Store`: its URI, and how to read the storage's size and
transaction count from outside (the FileStorage file, the ZEO server's file,
the PostgreSQL database). A setup that cannot be had raises
:class:`SetupMissingError` with the reason, which the workload's row shows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ZODB.FileStorage import FileIterator

from zasync.storage import parse_uri
from zasync.testservers import (
    ZEOServer,
    drop_postgres_database,
    fresh_postgres_database,
    postgres_available,
)


class SetupMissingError(Exception):
    """A setup's server or driver is not available here."""


@dataclass
class Store:
    kind: str  # 'file', 'zeo' or 'relstorage'
    uri: str
    data_path: Path | None = None  # the FileStorage file (the ZEO server's too)
    server_pid: int | None = None  # the ZEO server's process

    def size(self) -> int:
        """Bytes the storage takes now."""
        if self.data_path is not None:
            return os.path.getsize(self.data_path)
        return _pg_size(self.uri)

    def end(self) -> int:
        """A position to count transactions from (the file's end)."""
        if self.data_path is None:
            raise ValueError(f"{self.kind}: transactions are counted in files only")
        return os.path.getsize(self.data_path)

    def transactions_since(self, position: int) -> int:
        """Transactions committed after ``position`` (from :meth:`end`)."""
        iterator = FileIterator(str(self.data_path), pos=position)
        try:
            return sum(1 for _ in iterator)
        finally:
            iterator.close()


def _pg_size(uri: str) -> int:
    import psycopg2  # noqa: PLC0415 - optional: the relstorage extra

    conn = psycopg2.connect(parse_uri(uri).dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


@contextlib.contextmanager
def file_store(directory: Path) -> Iterator[Store]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "Data.fs"
    yield Store("file", f"file://{path}", path)


def zeo_available() -> str | None:
    try:
        import ZEO  # noqa: F401, PLC0415 - optional: the zeo extra
    except ImportError:
        return "ZEO is not installed: pip install 'zasync[zeo]'"
    return None


@contextlib.contextmanager
def zeo_store(directory: Path) -> Iterator[Store]:
    problem = zeo_available()
    if problem:
        raise SetupMissingError(problem)

    server = ZEOServer(directory)
    server.start()
    try:
        yield Store("zeo", server.uri, server.data_path, server.pid)
    finally:
        server.stop()


def pg_available() -> str | None:
    return postgres_available()


@contextlib.contextmanager
def pg_store() -> Iterator[Store]:
    problem = pg_available()
    if problem:
        raise SetupMissingError(problem)

    uri = fresh_postgres_database("zasync_bench")
    try:
        yield Store("relstorage", uri)
    finally:
        drop_postgres_database(uri)


def store_for(kind: str, directory: Path):
    """The context manager for a storage kind."""
    if kind == "file":
        return file_store(directory)
    if kind == "zeo":
        return zeo_store(directory)
    if kind == "relstorage":
        return pg_store()
    raise ValueError(kind)
