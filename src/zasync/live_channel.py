"""Live annotations: what a running job reports (progress, messages)
while it runs, committed at once in side transactions of its worker
thread, so other processes see it before the job commits.

They are kept on the thread's Slot object, which nothing else writes, so
they never conflict with the job's own transaction.
"""

from __future__ import annotations

import logging
from typing import Any

import transaction

from zasync.interfaces import KEY
from zasync.keys import oid_int
from zasync.txn import close_connection

log = logging.getLogger(__name__)


class LiveChannel:
    """The side connection of one worker thread (slot ``index``)."""

    def __init__(self, dispatcher: Any, index: int):
        self.dispatcher = dispatcher
        self.index = index
        self._tm: Any = None
        self._conn: Any = None
        #: set once a job of this thread wrote live annotations
        self.written = False

    def _connection(self) -> Any:
        if self._conn is None:
            self._tm = transaction.TransactionManager(explicit=True)
            self._conn = self.dispatcher.db.open(transaction_manager=self._tm)
        return self._conn

    def _slot(self, conn: Any) -> Any:
        return self.dispatcher.record_in(conn).slots[self.index]

    def write(self, job: Any, values: dict[str, Any]) -> None:
        """Commit ``values`` as the live annotations of ``job``."""
        conn = self._connection()
        self.written = True
        for attempt in self._tm.attempts(5):
            with attempt:
                slot = self._slot(conn)
                live = dict(slot.live or {})
                live[oid_int(job)] = values
                slot.live = live

    def read(self, job: Any) -> dict[str, Any]:
        """The annotations of ``job`` as committed now: its
        ``job.annotations`` (as any code wrote them), overlaid by its live
        annotations while it runs."""
        conn = self._connection()
        self._tm.begin()
        try:
            fresh = conn.get(job._p_oid) if job._p_oid is not None else None
            if fresh is None:
                return {}
            values = dict(fresh._annotations or {})
            values.update(self._live(conn, fresh))
            return values
        finally:
            self._tm.abort()

    def _live(self, conn: Any, job: Any) -> dict[str, Any]:
        if job._worker is None or job._slot is None:
            return {}
        record = self.dispatcher.record_in(conn)
        if job._worker != record.uuid:
            record = conn.root()[KEY].workers.get(job._worker)
            if record is None:
                return {}
        live = record.slots[job._slot].live or {}
        return dict(live.get(oid_int(job), {}))

    def clear(self, oids: list[int]) -> None:
        """Forget the live annotations of finished jobs."""
        conn = self._connection()
        try:
            for attempt in self._tm.attempts(5):
                with attempt:
                    slot = self._slot(conn)
                    live = slot.live or {}
                    if any(oid in live for oid in oids):
                        slot.live = {k: v for k, v in live.items() if k not in oids}
        except Exception:
            log.exception("could not clear live annotations")

    def close(self) -> None:
        if self._conn is not None:
            close_connection(self._conn, self._tm)
            self._conn = None
