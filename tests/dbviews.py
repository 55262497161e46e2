"""Views of a test database from elsewhere: another connection (as another
thread or process would see it), and the committed history of an object
(to check what a single transaction wrote)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import transaction
from ZODB.utils import p64, u64


@contextlib.contextmanager
def other_connection(db) -> Iterator[tuple[object, transaction.TransactionManager]]:
    """A connection with a transaction manager of its own; whatever is not
    committed is aborted on exit."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        yield conn, tm
    finally:
        tm.abort()
        conn.close()


def read(db, oid: bytes, getter):
    """``getter(object)`` for the object ``oid`` as committed now."""
    with other_connection(db) as (conn, _tm):
        return getter(conn.get(oid))


def tids_of(db, oid: bytes) -> list[bytes]:
    """The ids of the transactions that wrote ``oid``, oldest first."""
    return [entry["tid"] for entry in reversed(db.history(oid, size=10_000))]


def as_of(db, tid: bytes, oid: bytes, getter):
    """``getter(object)`` for the object ``oid`` as transaction ``tid`` left
    it."""
    conn = db.open(before=p64(u64(tid) + 1))
    try:
        return getter(conn.get(oid))
    finally:
        conn.close()


def oids_written_by(db, tid: bytes) -> set[bytes]:
    """The object ids transaction ``tid`` wrote."""
    for txn in db.storage.iterator(tid, tid):
        return {record.oid for record in txn}
    return set()
