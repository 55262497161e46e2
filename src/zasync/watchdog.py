"""The watchdog of a dispatcher's threads: jobs that do not stop when told.

A running job is told to stop by a cancel (``zasync.admin.cancel``) or by
its ``timeout``, which it sees at its next ``zasync.local.check()``. One
that has not stopped ``interrupt_grace`` seconds later is interrupted: the
same error is raised in its thread (zasync.interrupts), its work is rolled
back and it ends as if it had checked. One that still has not returned
``stuck_delay`` seconds after that (blocked in C code, or swallowing the
error) is *stuck*: its thread is abandoned and replaced, so that the worker
keeps its capacity, the job completes with the error (never run again: its
old thread may still run it), and whatever the old thread later tries to
commit is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import transaction

from zasync.failure import Failure
from zasync.interfaces import ACTIVE, ASSIGNED, JobCancelled, JobTimeout
from zasync.interrupts import Run
from zasync.job import now
from zasync.keys import oid_bytes
from zasync.stuck import STUCK_SINCE
from zasync.txn import close_connection

log = logging.getLogger(__name__)

#: seconds between two looks at the running jobs
WATCH_INTERVAL = 0.1
#: seconds between two looks at the abandoned threads (have they ended?)
TIDY_INTERVAL = 1.0
#: seconds between two reads of the cancels requested of running jobs
CANCEL_READ_INTERVAL = 0.5


class Watchdog:
    """Watches the threads of ``pool`` (a zasync.pool.ThreadPool)."""

    def __init__(self, pool: Any):
        self.pool = pool
        self.dispatcher = pool.dispatcher
        self._thread: threading.Thread | None = None
        self._tm: Any = None
        self._conn: Any = None
        #: the calls whose cancel was seen, and when (time.monotonic())
        self._cancel_seen: dict[Run, float] = {}
        self._next_read = 0.0
        #: the threads abandoned, by the id of the job they are stuck in;
        #: the worker record's ``stuck`` is made to match it
        self._stuck: dict[str, threading.Thread] = {}
        #: when to look at them next (at once: the record may name those
        #: of an earlier run of this worker)
        self._next_tidy: float | None = 0.0
        #: set when a job starts (each thread's Body) or the worker stops
        self.wake = threading.Event()
        #: whether it waits for a job to start (read by tests)
        self.asleep = False

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop,
            name=f"zasync-{self.dispatcher.uuid[:8]}-watchdog",
            daemon=True,
        )
        self._thread.start()

    def join(self, deadline: float | None) -> None:
        if self._thread is not None:
            remaining = None if deadline is None else deadline - time.monotonic()
            self._thread.join(None if remaining is None else max(0.0, remaining))

    def _loop(self) -> None:
        """Every WATCH_INTERVAL while a job runs or a thread is stuck;
        asleep until a job starts (``wake``, set by its thread) or the
        worker stops otherwise, so that an idle worker costs nothing."""
        stopping = self.dispatcher.stopping
        try:
            while not stopping.wait(WATCH_INTERVAL):
                self.wake.clear()
                try:
                    watching = self.step(time.monotonic())
                except Exception:
                    log.exception("watchdog of dispatcher %s", self.dispatcher.uuid)
                    self._close()
                    watching = True
                # stop() sets stopping, then wake: a wake cleared above
                # after a stop is seen here
                if not watching and not stopping.is_set():
                    self.asleep = True
                    self.wake.wait()
                    self.asleep = False
        finally:
            self._close()

    def step(self, clock: float) -> bool:
        """Interrupt the jobs past their timeout or cancelled, and abandon
        the threads stuck in one, at time.monotonic() ``clock``. False when
        there is nothing to watch: no job runs, no thread is stuck."""
        if self._next_tidy is not None and clock >= self._next_tidy:
            self._tidy_stuck()
            self._next_tidy = clock + TIDY_INTERVAL if self._stuck else None
        calls = [
            (runner, run)
            for runner in list(self.pool.runners)
            if (run := runner.body.run) is not None
        ]
        self._cancel_seen = {
            run: seen
            for run, seen in self._cancel_seen.items()
            if any(run is r for _, r in calls)
        }
        if not calls:
            return self._next_tidy is not None
        if clock >= self._next_read:
            self._next_read = clock + CANCEL_READ_INTERVAL
            self._read_cancels(calls, clock)
        settings = self.dispatcher.settings
        for runner, run in calls:
            if run.interrupted_at is None:
                error = self._due(run, clock, settings.interrupt_grace)
                if error is not None and runner.body.interrupt(run, error):
                    log.warning(
                        "interrupting job %s (%s) in thread %d: %s",
                        run.job_id,
                        run.name,
                        runner.index,
                        error,
                        extra={"action": "interrupt", "job_id": run.job_id},
                    )
            elif clock >= run.interrupted_at + settings.stuck_delay:
                self._abandon(runner, run, clock)
        return True

    def _due(self, run: Run, clock: float, grace: float) -> BaseException | None:
        """The error to interrupt ``run`` with, if it is due."""
        if clock >= run.deadline + grace:
            return JobTimeout(
                f"job {run.job_id} ({run.name}) ran past its timeout of "
                f"{run.timeout:g} s and did not stop within {grace:g} s: interrupted"
            )
        seen = self._cancel_seen.get(run)
        if seen is not None and clock >= seen + grace:
            return JobCancelled(
                f"job {run.job_id} ({run.name}) was cancelled while it ran and "
                f"did not stop within {grace:g} s: interrupted"
            )
        return None

    # -- the database ------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            self._tm = transaction.TransactionManager(explicit=True)
            self._conn = self.dispatcher.db.open(transaction_manager=self._tm)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            close_connection(self._conn, self._tm)
            self._conn = None

    def _read_cancels(self, calls: list[tuple[Any, Run]], clock: float) -> None:
        """Note the calls whose cancel is committed now."""
        calls = [
            (runner, run)
            for runner, run in calls
            if run not in self._cancel_seen and run.interrupted_at is None
        ]
        if not calls:
            return
        conn = self._connection()
        self._tm.begin()
        try:
            record = self.dispatcher.record_in(conn)
            for runner, run in calls:
                requests = record.slots[runner.index].cancel_requests
                if not requests or run.oid not in requests.jobs:
                    continue
                # The job's attempts as committed, not as its run changed them.
                attempts = conn.get(oid_bytes(run.oid))._attempts
                if requests.wanted(run.oid, attempts):
                    self._cancel_seen[run] = clock
        finally:
            self._tm.abort()

    def _abandon(self, runner: Any, run: Run, clock: float) -> None:
        """``run`` did not return ``stuck_delay`` seconds after its
        interruption: complete its job with the interruption's error and
        replace its thread."""
        assert run.interrupted_at is not None and run.failure is not None
        since = time.time() - (clock - run.interrupted_at)
        failure = type(run.failure)(
            f"{run.failure} It had not returned "
            f"{self.dispatcher.settings.stuck_delay:g} s later: its worker thread "
            f"was abandoned and replaced."
        )
        recorded = self._record(runner, run, failure, since)
        # Once per call: not again at the next look.
        run.interrupted_at = float("inf")
        if not recorded:
            return  # it ended meanwhile: not stuck
        # The record names it now: kept while the thread runs.
        self._next_tidy = clock + TIDY_INTERVAL
        if self.pool.replace(runner, run):
            self._stuck[run.job_id or hex(run.oid)] = self.pool.abandoned[-1]
            log.error(
                "job %s (%s) stuck in worker thread %d: the thread is abandoned "
                "and replaced; the job failed with %s",
                run.job_id,
                run.name,
                runner.index,
                type(failure).__name__,
                extra={"action": "stuck", "job_id": run.job_id},
            )

    def _tidy_stuck(self) -> None:
        """Make the worker record's ``stuck`` name the abandoned threads
        still running: not those that ended, nor those of an earlier run
        of this worker."""
        self._stuck = {k: t for k, t in self._stuck.items() if t.is_alive()}
        conn = self._connection()
        for attempt in self._tm.attempts(5):
            with attempt:
                record = self.dispatcher.record_in(conn)
                stuck = record.stuck or {}
                kept = {k: v for k, v in stuck.items() if k in self._stuck}
                if kept != stuck:
                    record.stuck = kept or None

    def _record(
        self, runner: Any, run: Run, failure: BaseException, since: float
    ) -> bool:
        """Complete the job of ``run`` with ``failure`` if ``runner``'s slot
        still holds it; True when recorded."""
        conn = self._connection()
        uuid = self.dispatcher.uuid
        for attempt in self._tm.attempts(5):
            with attempt:
                job = conn.get(oid_bytes(run.oid))
                slot = self.dispatcher.record_in(conn).slots[runner.index]
                if (
                    job._status not in (ASSIGNED, ACTIVE)
                    or job._worker != uuid
                    or job._slot != runner.index
                ):
                    return False  # it ended: nothing written
                job.annotations[STUCK_SINCE] = since
                record = self.dispatcher.record_in(conn)
                record.stuck = {**(record.stuck or {}), job.id: since}
                # Its run counts (its own count was never committed).
                job._attempts += 1
                if job.active_start is None:
                    job.active_start = now()
                job._finish(Failure(failure), now())
                # A job with callbacks stays in the slot: the new thread
                # runs them.
                runner.settle(job, slot)
                if slot.live and run.oid in slot.live:
                    slot.live = {k: v for k, v in slot.live.items() if k != run.oid}
                if slot.cancel_requests:
                    slot.cancel_requests.forget([run.oid])
        return True
