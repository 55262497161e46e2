"""The database a ``zasync`` command works on: opened from ``--db``, read
and changed in short transactions of the command's own."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, TypeVar

import transaction
import ZODB
from ZODB.Connection import Connection
from ZODB.FileStorage.FileStorage import packed_version

from zasync import admin
from zasync.cli.options import LONG_RUNNING
from zasync.job import Job
from zasync.storage import StorageError, open_db, parse_uri

T = TypeVar("T")

#: times a command's transaction is tried when it conflicts with a worker's
ATTEMPTS = 5


def open_database(args: argparse.Namespace) -> ZODB.DB:
    """The database ``--db`` names. Raises StorageError when it cannot be
    opened, and for a FileStorage that does not exist unless the command is
    one that creates it (worker, demo)."""
    spec = parse_uri(args.db)
    if spec.kind != "file" or spec.path is None:
        return open_db(args.db)
    if os.path.exists(spec.path):
        _check_filestorage(spec.path, spec.display)
    elif args.command not in LONG_RUNNING:
        # Opening would create an empty database where a typo pointed.
        raise StorageError(
            f"cannot open {spec.display}: no such file; check the path (a "
            f"worker creates the database on its first start)",
            uri=spec.display,
        )
    return open_db(args.db)


#: the first bytes of a FileStorage file
FILESTORAGE_MAGIC: bytes = packed_version


def _check_filestorage(path: str, display: str) -> None:
    """Raise StorageError unless ``path`` is a FileStorage (its magic
    bytes): nothing is ever written next to or into another file."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(FILESTORAGE_MAGIC))
    except OSError as e:
        raise StorageError(
            f"cannot open {display}: {e.strerror}; check the path", uri=display
        ) from None
    if head != FILESTORAGE_MAGIC:
        what = "an empty file" if not head else "not a FileStorage"
        raise StorageError(
            f"cannot open {display}: {what} (a Data.fs starts with "
            f"{FILESTORAGE_MAGIC.decode()}); name a Data.fs, or a new path for "
            f"a worker to create",
            uri=display,
        )


def in_transaction(db: ZODB.DB, work: Callable[[Any, Connection], T]) -> T:
    """``work(queues, conn)`` in a transaction of its own, committed; tried
    again (up to :data:`ATTEMPTS` times) when it conflicts."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(ATTEMPTS):
            with attempt:
                return work(admin.get_queues(conn), conn)
    finally:
        conn.close()
    raise AssertionError("unreachable: the last attempt raises or returns")


def one_job(args: argparse.Namespace, action: Callable[[Job], T]) -> T:
    """``action(job)`` in a transaction, on the job whose id is ``job_id``;
    the database is closed after. Raises ZasyncError for an unknown id."""
    db = open_database(args)
    try:
        return in_transaction(
            db, lambda queues, conn: action(admin.find_job(conn, args.job_id))
        )
    finally:
        db.close()
