"""Live annotations: what a running job reports (progress, messages)
while it runs, committed at once in side transactions of its worker
thread, so other processes see it before the job commits.

They are kept on the thread's Slot object, which nothing else writes, so
they never conflict with the job's own transaction.

The same side connection answers the job's ``zasync.local.check()``: has a
cancel been requested for it (zasync.cancel_requests), has it run past its
timeout.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Any

import transaction

from zasync.interfaces import KEY, JobCancelled, JobTimeout
from zasync.keys import oid_int
from zasync.queue_timeout import timeout_of
from zasync.txn import close_connection

log = logging.getLogger(__name__)

#: seconds between two reads of a running job's cancel requests
CHECK_INTERVAL = 0.2


class LiveChannel:
    """The side connection of one worker thread (slot ``index``)."""

    def __init__(self, dispatcher: Any, index: int):
        self.dispatcher = dispatcher
        self.index = index
        self._tm: Any = None
        self._conn: Any = None
        #: set once a job of this thread wrote live annotations (or saw a
        #: cancel request): finished jobs' entries are then cleared
        self.written = False
        # check(): the run it was last called in, when to read the cancel
        # requests next, when the run times out (monotonic clock); the
        # run that last timed out, its start (us) and when it timed out
        self._run: Any = None
        self._next_read = 0.0
        self._deadline = math.inf
        #: the current run's timeout (its own, or its queue's default)
        self.timeout: float | None = None
        self._timed_out: tuple[int, int | None, float] | None = None
        #: set when the thread was abandoned (zasync.watchdog): it writes
        #: nothing any more
        self.discarded = False

    def _connection(self) -> Any:
        if self._conn is None:
            self._tm = transaction.TransactionManager(explicit=True)
            self._conn = self.dispatcher.db.open(transaction_manager=self._tm)
        return self._conn

    def _slot(self, conn: Any) -> Any:
        return self.dispatcher.record_in(conn).slots[self.index]

    def write(self, job: Any, values: dict[str, Any]) -> None:
        """Commit ``values`` as the live annotations of ``job``."""
        if self.discarded:
            return
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
        """Forget the live annotations and cancel requests of finished
        jobs."""
        conn = self._connection()
        try:
            for attempt in self._tm.attempts(5):
                with attempt:
                    slot = self._slot(conn)
                    live = slot.live or {}
                    if any(oid in live for oid in oids):
                        slot.live = {k: v for k, v in live.items() if k not in oids}
                    if slot.cancel_requests:
                        slot.cancel_requests.forget(oids)
        except Exception:
            log.exception("could not clear live annotations")

    def check(self, run: Any) -> None:
        """For the job of ``run`` (a zasync.local context, one per call):
        raise JobTimeout once it ran past its ``timeout``, JobCancelled once
        a cancel of it was requested (read at most every CHECK_INTERVAL
        seconds)."""
        clock = time.monotonic()
        job = run.job
        if run is not self._run:
            self._begin_run(run, clock)
        if clock >= self._deadline:
            self._timed_out = (oid_int(job), job._active_start_us, clock)
            raise JobTimeout(
                f"job {job.id} ({job.callable_name}) ran past its timeout of "
                f"{self.timeout:g} s"
            )
        if clock >= self._next_read:
            self._next_read = clock + CHECK_INTERVAL
            if self._cancel_requested(job):
                self.written = True  # its request is cleared after its commit
                raise JobCancelled(
                    f"job {job.id} ({job.callable_name}) was cancelled while it ran"
                )

    def start_run(self, run: Any) -> float:
        """The job of ``run`` is being called: return when it times out
        (time.monotonic(); math.inf: never), by its ``timeout`` or else its
        queue's ``default_timeout``."""
        self._begin_run(run, time.monotonic())
        return self._deadline

    def timed_out(self, job: Any) -> None:
        """The run of ``job`` was interrupted for its timeout (by the
        watchdog) now: a run retried at once counts from now."""
        self._timed_out = (oid_int(job), job._active_start_us, time.monotonic())

    def _begin_run(self, run: Any, clock: float) -> None:
        """The first check() of a run: when it times out. A run retried at
        once after a timeout (same start) counts from that timeout."""
        self._run = run
        self._next_read = clock
        job = run.job
        timeout = self.timeout = timeout_of(job)
        if timeout is None:
            self._deadline = math.inf
            return
        elapsed = 0.0
        last = self._timed_out
        if (
            last is not None
            and last[1] == job._active_start_us
            and last[0] == (oid_int(job))
        ):
            elapsed = clock - last[2]
        elif job.active_start is not None:
            now = datetime.datetime.now(datetime.UTC)
            elapsed = (now - job.active_start).total_seconds()
        self._deadline = clock + timeout - elapsed

    def _cancel_requested(self, job: Any) -> bool:
        """Whether a cancel of this run of ``job`` is committed now."""
        conn = self._connection()
        self._tm.begin()
        try:
            requests = self._slot(conn).cancel_requests
            if not requests:
                return False
            oid = oid_int(job)
            if oid not in requests.jobs:
                return False
            # The job's attempts as committed, not as its run changed them.
            return requests.wanted(oid, conn.get(job._p_oid)._attempts)
        finally:
            self._tm.abort()

    def close(self) -> None:
        if self._conn is not None:
            close_connection(self._conn, self._tm)
            self._conn = None
