"""Running claimed jobs: one SlotRunner per worker thread.

The job's writes, its result and its status commit in one transaction.
Several short jobs share a transaction, each behind a savepoint
(zasync.savepoints): a job that raises is rolled back to its savepoint and
recorded as failed while the others go on. A conflict at commit falls back
to one transaction per job, retried as the job's policy says, and narrows
the worker while its jobs conflict with each other (zasync.limiter).
Batches are bounded in time so that latency does not suffer. Callbacks
run after the commit (zasync.callbacks).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import transaction
from transaction.interfaces import TransientError

from zasync.alone import Alone
from zasync.callbacks import Callbacks
from zasync.composite import in_serial
from zasync.execution import Execution
from zasync.failure import Failure
from zasync.interfaces import (
    CALLBACKS,
    COMPLETED,
)
from zasync.interrupts import Body, Run
from zasync.job import Job, now
from zasync.keys import oid_bytes, oid_int, to_us
from zasync.limiter import SOLO_AFTER
from zasync.live_channel import LiveChannel
from zasync.outcomes import (
    JobCommittedError,
    Outcome,
    Outcomes,
    UnstorableResultError,
    log_extra,
)
from zasync.recovery import at_most_once, make_policy, release_quotas
from zasync.savepoints import CommitFirstError, Savepoints
from zasync.txn import close_connection, is_disconnection

log = logging.getLogger(__name__)


class ThreadAbandonedError(Exception):
    """Raised at the commit of a worker thread that was abandoned (see
    zasync.watchdog): its work is no longer ours."""


class _Gate:
    """A synchronizer of the thread's transaction manager: every
    transaction it begins refuses to commit once the thread was
    abandoned."""

    def __init__(self, runner: SlotRunner):
        self.runner = runner

    def _check(self) -> None:
        if self.runner.discarded:
            raise ThreadAbandonedError(
                f"worker thread {self.runner.index} was abandoned: its work is "
                f"no longer ours and is not committed"
            )

    def newTransaction(self, txn: Any) -> None:  # noqa: N802 - transaction API
        txn.addBeforeCommitHook(self._check)

    def beforeCompletion(self, txn: Any) -> None:  # noqa: N802 - transaction API
        pass

    def afterCompletion(self, txn: Any) -> None:  # noqa: N802 - transaction API
        pass


#: seconds after a conflict during which a thread claims one job at a time
CONFLICTED_SECONDS = 10.0
#: seconds between looks at a storage that is away
STORAGE_POLL = 0.2


class SlotRunner:
    """Runs the jobs of one slot in the calling thread's own connection and
    transaction manager (the thread's own, so that code in jobs that calls
    ``transaction.get()`` or ``transaction.savepoint()`` works on the job's
    transaction)."""

    def __init__(self, dispatcher: Any, index: int):
        self.dispatcher = dispatcher
        self.index = index
        self.tm: Any = None
        self.conn: Any = None
        #: held by the dispatcher's loop while it claims in this thread's
        #: connection (see zasync.claimer), and by this thread while it
        #: opens or closes the connection
        self.lock = threading.Lock()
        self.live = LiveChannel(dispatcher, index)
        self.savepoints = Savepoints()
        self.callbacks = Callbacks(self)
        self.alone = Alone(self)
        #: the job being called (set just before its call): it may have
        #: started when its transaction fails
        self.started_oid: int | None = None
        self.execution = Execution(self)
        #: (oid, callable) of the job being called, for stop()'s report
        self.current: tuple[bytes, Any] | None = None
        self.batch_limit = 1
        self._conflicted_until = 0.0  # no batches before then
        self.working = 0.0  # seconds spent in the current run's jobs
        #: jobs completed as a side effect of the current transaction (a
        #: composite completed by its last member's callback)
        self.finished_here: list[Job] = []
        #: whether the thread is inside a job's callable, where the
        #: watchdog may interrupt it; the last call it made
        self.body = Body()
        self.last_run: Run | None = None
        #: set when the watchdog abandoned the thread: it commits nothing
        #: and ends once its job returns
        self.discarded = False
        self._gate = _Gate(self)
        #: set when a job of the current batch was interrupted
        self.interrupted = False

    # -- connections ------------------------------------------------------

    def open(self) -> None:
        with self.lock:
            self.tm = transaction.manager.manager
            self.conn = self.dispatcher.db.open(transaction_manager=self.tm)
            self.savepoints.attach(self.tm, self.conn)
            self.tm.registerSynch(self._gate)

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                close_connection(self.conn, self.tm)
                self.tm.unregisterSynch(self._gate)
            self.conn = None
        self.live.close()

    def fresh_cache(self) -> None:
        """After a job was interrupted (zasync.interrupts), maybe while it
        loaded objects: a new, empty cache for this thread's connection,
        so that no half-loaded object is used again."""
        self.interrupted = False
        with self.lock:
            self.tm.abort()
            # ZODB's own way to drop a connection's cache (resetCaches()).
            self.conn._resetCache()

    def discard(self) -> None:
        """Abandon this thread (zasync.watchdog): from now on it starts
        no job and commits nothing."""
        self.discarded = True
        self.live.discarded = True

    def slot(self, conn: Any) -> Any:
        """This thread's slot (zasync.workers.Slot), loaded in ``conn``."""
        return self.dispatcher.record_in(conn).slots[self.index]

    def load(self, oid: int) -> Job:
        job: Job = self.conn.get(oid_bytes(oid))
        return job

    def begin(self) -> None:
        """Begin a transaction, with no savepoint or unsaved job of an
        earlier one in hand."""
        self.tm.begin()
        self.savepoints.reset()

    # -- batches -------------------------------------------------------------

    def run(self, oids: list[int], *, loaded: bool = False) -> None:
        """Run the claimed jobs ``oids`` (in order) to completion.
        ``loaded``: they were claimed in this thread's connection, which
        has them, current, in its cache."""
        pending = list(oids)
        self.working = 0.0
        count = len(pending)
        while pending:
            if self.abandoned(pending):
                return
            ran = self._run_batch(
                pending, prefetch=len(pending) == count and not loaded
            )
            if ran is None:
                return  # stop() gave up while this thread waited at the gate
            chunk, outcomes = ran
            del pending[: len(chunk)]
            self.callbacks.after_commit(outcomes)
            if self.interrupted:
                self.fresh_cache()
        self._adapt(count, self.working)

    def _run_batch(
        self, pending: list[int], *, prefetch: bool
    ) -> tuple[list[int], Outcomes] | None:
        """Run the first jobs of ``pending`` in one transaction (one job
        at a time after a failed commit); return the oids run and their
        outcomes, or None when the dispatcher stopped meanwhile."""
        limiter = self.dispatcher.limiter
        chunk: list[int] = []
        outcomes: Outcomes = []
        fallback: Exception | None = None
        self.started_oid = None
        if not self.alone.connected() and not self.alone.wait_for_storage():
            return None  # stopping while the storage is away: start nothing
        with limiter.shared():
            if self.abandoned(pending):
                return None
            self.begin()
            if prefetch:
                # One round trip for the whole batch (ZEO, RelStorage), in
                # this transaction's view, the one that sees the claim.
                self.conn.prefetch([oid_bytes(oid) for oid in pending])
            try:
                self._fill(pending, chunk, outcomes)
                if self.discarded:
                    self.tm.abort()  # abandoned meanwhile: no longer ours
                    return None
                self.tm.commit()
                limiter.committed()
            except (UnstorableResultError, JobCommittedError) as e:
                self.tm.abort()
                fallback = e
            except TransientError as e:
                self.tm.abort()
                fallback = e
                if not is_disconnection(e):
                    limiter.conflicted()
                self._conflicted_until = time.monotonic() + CONFLICTED_SECONDS
                log.info(
                    "batch of %d jobs conflicted (%s); running them one by one",
                    len(chunk) + 1,
                    type(e).__name__,
                )
            except Exception as e:
                self.tm.abort()
                fallback = e
                log.exception("a batch of jobs could not be committed; one by one")
        if fallback is not None:
            return self._fall_back(pending, chunk, fallback)
        return chunk, outcomes

    def _fill(self, pending: list[int], chunk: list[int], outcomes: Outcomes) -> None:
        """Run jobs of ``pending`` in the current transaction, adding their
        oids to ``chunk``, until the batch's time is up. A job that may
        start once at most runs alone in its transaction."""
        started = time.monotonic()
        batch_seconds = self.dispatcher.settings.batch_seconds
        slot = self.slot(self.conn)
        for oid in pending:
            if chunk and (self.dispatcher.dead or self.discarded):
                break  # commit what ran; leave the rest (abandoned)
            job = self.load(oid)
            once = at_most_once(job)
            if once and chunk:
                break  # alone, in the next transaction
            try:
                self.execution.run_in_slot(job, slot, outcomes, first=not chunk)
            except CommitFirstError:
                break
            chunk.append(oid)
            if once or time.monotonic() - started > batch_seconds:
                break
        self.settle_all(outcomes, slot)

    def _fall_back(
        self, pending: list[int], chunk: list[int], error: Exception
    ) -> tuple[list[int], Outcomes]:
        """After a batch that could not commit: the jobs that ran (and the
        one that was running) once more one at a time, or their failures
        recorded (see zasync.alone)."""
        ran = list(chunk)
        if self.started_oid is not None and self.started_oid not in ran:
            ran.append(self.started_oid)
        if not ran:
            # Nothing had started: the first job, in a transaction of its own.
            return pending[:1], self.alone.run(pending[0])
        outcomes = self.alone.fall_back(ran, error)
        if outcomes is None:
            return ran, []  # stopping: left to recovery
        return ran, outcomes

    def abandoned(self, oids: list[int]) -> bool:
        """True when stop() gave up waiting for this thread: the jobs it
        still holds are recovered (maybe by a new dispatcher under the same
        UUID, which runs them in a slot of the same index), so it must not
        start them."""
        if self.discarded:
            return True
        if not self.dispatcher.dead:
            return False
        log.warning(
            "worker thread %d of stopped dispatcher %s leaves %d job(s) to recovery",
            self.index,
            self.dispatcher.uuid,
            len(oids),
        )
        return True

    def _adapt(self, count: int, working: float) -> None:
        # Claim as many jobs as this thread can run in about one batch
        # period: short jobs are batched, long ones are claimed one by one so
        # that other threads and workers get the rest. ``working`` is the
        # time spent in the jobs, not in loading and committing them: a
        # commit slowed by other workers is a reason for bigger batches (fewer
        # commits), never for smaller ones.
        if count == 0:
            return
        if time.monotonic() < self._conflicted_until:
            # Jobs that conflict with each other: batching them only makes
            # every conflict undo (and redo) more work.
            self.batch_limit = 1
            return
        settings = self.dispatcher.settings
        per_job = max(working / count, 1e-5)
        target = int(settings.batch_seconds / per_job)
        self.batch_limit = max(1, min(settings.max_batch, target, self.batch_limit * 4))

    # -- one job in transactions of its own ---------------------------------

    def after_conflict(self, oid: int, failure: Failure, conflicts: int) -> Any:
        """(job, its policy's Decision) after the ``conflicts``-th conflict
        in a row of job ``oid``'s transaction, the worker narrowed for it.
        The policy sees the conflicts before this one (as it sees errors):
        max_conflicts=2 retries twice."""
        self.dispatcher.limiter.conflicted()
        self.tm.begin()
        job = self.load(oid)
        job._conflicts += conflicts - 1
        decision = make_policy(job).commit_error(failure)
        self.tm.abort()
        return job, decision

    def gate(self, conflicts: int, oid: int) -> Any:
        """The limiter's gate for a job's next attempt: alone after
        SOLO_AFTER conflicts in a row, beside the others before."""
        limiter = self.dispatcher.limiter
        if conflicts < SOLO_AFTER:
            return limiter.shared()
        log.info(
            "job %s conflicted %d times in a row; running it alone in this worker",
            f"0x{oid:x}",
            conflicts,
        )
        return limiter.alone()

    def settle_all(self, outcomes: Outcomes, slot: Any) -> None:
        for job, outcome in outcomes:
            if outcome is Outcome.DONE:
                self.settle(job, slot)

    def log_failure(self, job: Job, failure: Failure) -> None:
        log.warning(
            "job %s (%s) failed: %s",
            job.id,
            job.callable_name,
            failure.getErrorMessage(),
            extra=log_extra(job, "failed"),
        )

    def settle(self, job: Job, slot: Any) -> None:
        """After the job's work: free its quotas (a member of a serial batch
        keeps them until its callbacks, which queue the next member, have
        run: no other job of its quota slips in between); a completed job
        leaves the slot's active jobs for its done jobs."""
        if not (job._status == CALLBACKS and in_serial(job)):
            release_quotas(job)
        if job._status == COMPLETED:
            oid = oid_int(job)
            if slot.active.get(oid) is job:
                del slot.active[oid]
            slot._add_done(job, to_us(job.active_end or now()))

    def completed_here(self, job: Job) -> None:
        """``job`` (a composite) completed in this thread's current
        transaction, outside its own turn: it joins the slot's done jobs,
        and its finish is announced after the commit."""
        self.slot(self.conn)._add_done(job, to_us(job.active_end or now()))
        self.finished_here.append(job)
