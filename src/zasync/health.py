"""Is this worker alive? A check for liveness probes (``zasync health``,
``@async-health``): the database answers, and the worker named (or every
live-registered one) has a fresh heartbeat.

A worker writes its heartbeat at least every ``heartbeat_interval`` (60 s
by default) while idle, and as it extends its lease (every 10 s with the
default 30 s lease) while it runs jobs. Fresh means seen within
``max_age`` seconds: by default three heartbeat intervals of that worker,
the rule by which workers judge each other (zasync.workers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import transaction

from zasync.interfaces import KEY


@dataclass(frozen=True)
class Health:
    """``ok`` and one line saying why."""

    ok: bool
    message: str


def check_queues(
    queues: Any,
    *,
    worker: str | None = None,
    all_workers: bool = False,
    max_age: float | None = None,
    now: float | None = None,
) -> Health:
    """The health of the workers registered in ``queues`` (root['zasync']).

    Without ``worker`` or ``all_workers`` the database answering is enough.
    Never raises for a missing or stale worker: says so in the result.
    """
    if worker is None and not all_workers:
        return Health(True, f"ok: database answers, {len(queues.workers)} workers")
    now = time.time() if now is None else now
    if worker is not None:
        record = queues.workers.get(worker)
        if record is None:
            return Health(False, f"worker {worker} is not registered")
        records = [record]
    else:
        records = [r for r in queues.workers.values() if r.stopped is None]
        if not records:
            return Health(False, "no live worker is registered")
    for record in records:
        problem = _stale(record, max_age, now)
        if problem:
            return Health(False, problem)
    names = ", ".join(r.uuid for r in records)
    return Health(True, f"ok: {len(records)} worker(s) fresh ({names})")


def _stale(record: Any, max_age: float | None, now: float) -> str | None:
    if record.stopped is not None:
        return f"worker {record.uuid} stopped at {_when(record.stopped)}"
    limit = max_age if max_age is not None else 3 * record.heartbeat_interval
    age = now - record.heartbeat.last_seen
    if age > limit:
        return (
            f"worker {record.uuid} ({record.hostname}:{record.pid}) last seen "
            f"{age:.0f}s ago, more than {limit:g}s"
        )
    return None


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def check(
    db: Any,
    *,
    worker: str | None = None,
    all_workers: bool = False,
    max_age: float | None = None,
) -> Health:
    """:func:`check_queues` in a read-only transaction of its own on ``db``."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        with tm:
            queues = conn.root().get(KEY)
            if queues is None:
                return Health(False, "the database has no zasync queues yet")
            return check_queues(
                queues, worker=worker, all_workers=all_workers, max_age=max_age
            )
    finally:
        conn.close()
