"""Enqueue hooks: how the persistent data tells the runtime that jobs were
queued, without importing it.

Queues call :func:`job_queued` for every job put in them, in the caller's
transaction, and :func:`queues_changed` for every change to their pending
jobs. The runtime subscribes (see zasync.wiring): a job may be handed to an
idle worker thread before the transaction commits, and the workers of this
process (and, on PostgreSQL, of the others) are woken once it has
committed, once per transaction and database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: called as ``hook(queue, job)`` for each job put in a queue
_on_queued: list[Callable[[Any, Any], None]] = []
#: called as ``hook(db)`` after a transaction that changed a queue committed
_on_committed: list[Callable[[Any], None]] = []


def on_queued(hook: Callable[[Any, Any], None]) -> None:
    """Call ``hook(queue, job)`` whenever a job is put in a queue."""
    if hook not in _on_queued:
        _on_queued.append(hook)


def on_committed(hook: Callable[[Any], None]) -> None:
    """Call ``hook(db)`` after each transaction that changed the pending
    jobs of a queue of ``db`` committed (not when it aborted)."""
    if hook not in _on_committed:
        _on_committed.append(hook)


def job_queued(queue: Any, job: Any) -> None:
    """Tell the subscribers that ``job`` was put in ``queue``."""
    for hook in _on_queued:
        hook(queue, job)


def queues_changed(jar: Any) -> None:
    """Note that the transaction of connection ``jar`` changed a queue's
    pending jobs: the subscribers hear of it once it has committed."""
    txn = jar.transaction_manager.get()
    try:
        dbs = txn.data(_CHANGED)
    except KeyError:
        dbs = set()
        txn.set_data(_CHANGED, dbs)
        txn.addAfterCommitHook(_after_commit, (dbs,))
    dbs.add(jar.db())


_CHANGED = object()  # transaction data: the databases whose queues changed


def _after_commit(committed: bool, dbs: set[Any]) -> None:
    if committed:
        for db in dbs:
            for hook in _on_committed:
                hook(db)
