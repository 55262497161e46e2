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
    if (
        spec.kind == "file"
        and args.command not in LONG_RUNNING
        and spec.path is not None
        and not os.path.exists(spec.path)
    ):
        # Opening would create an empty database where a typo pointed.
        raise StorageError(
            f"cannot open {spec.display}: no such file; check the path (a "
            f"worker creates the database on its first start)",
            uri=spec.display,
        )
    return open_db(args.db)


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
