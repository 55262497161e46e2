"""Running claimed jobs: one SlotRunner per worker thread.

The job's writes, its result and its status commit in one transaction.
Several short jobs share a transaction, each behind a savepoint: a job that
raises is rolled back to its savepoint and recorded as failed while the
others go on. A conflict at commit falls back to one transaction per job,
retried as the job's policy says, and narrows the worker while its jobs
conflict with each other (SoloGate). Batches are bounded in time so that
latency does not suffer.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from typing import Any

import transaction
import zope.event
from transaction.interfaces import NoTransaction, TransientError

from zasync import local
from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE,
    ASSIGNED,
    CALLBACKS,
    COMPLETED,
    JobFailed,
    JobStarted,
    JobSucceeded,
    TimeoutError,
)
from zasync.job import Job, now, unpicklable
from zasync.live import LiveChannel
from zasync.recovery import make_policy, release_quotas

log = logging.getLogger(__name__)


def _is_disconnection(error: BaseException) -> bool:
    """True for a lost connection to the storage server (ZEO's
    ClientDisconnected), which is transient but is no conflict."""
    return any(cls.__name__ == "ClientDisconnected" for cls in type(error).__mro__)


def close_connection(conn, tm) -> None:
    """Abort whatever ``conn`` has pending and close it (for shutdown:
    never raises)."""
    try:
        tm.abort()
    except NoTransaction:
        pass  # an explicit manager between transactions
    except Exception:
        log.exception("aborting before closing a connection failed")
    try:
        conn.close()
    except Exception:
        log.exception("closing a connection failed")


class _CommitFirst(Exception):
    """A savepoint is impossible: commit the jobs before this one first."""


class _NotStorable(Exception):
    """The job's result (or an object it changed) could not be pickled.

    The failed savepoint doomed the whole transaction: it is aborted, the
    other jobs of the batch run again alone, and this job's ``failure`` is
    recorded in a transaction of its own (the job does not run again).
    """

    def __init__(self, oid: int, failure: Failure):
        super().__init__(failure.getErrorMessage())
        self.oid = oid
        self.failure = failure


def _savepoints_supported(txn) -> bool:
    # A savepoint() that fails dooms the whole transaction, so a resource
    # that cannot take savepoints (a mail or SQL data manager joined by a
    # job) must be found before trying; transaction has no public API for
    # the joined resources.
    return all(hasattr(rm, "savepoint") for rm in getattr(txn, "_resources", ()))


#: most jobs run in a row without a savepoint (each later job compares
#: their states with those they had when they finished)
UNSAVED_LIMIT = 64

#: result types known to pickle (with containers of them, see _plain)
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes)


def _plain(value: Any, depth: int = 0) -> bool:
    """True when ``value`` certainly pickles, with no persistent object in
    it: None, numbers, strings, bytes, and small tuples, lists and dicts of
    them. A job whose result is plain needs no savepoint to find out."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if depth >= 3 or kind not in (tuple, list, dict) or len(value) > 64:
        return False
    if kind is dict:
        return all(
            type(k) in _PLAIN_TYPES and _plain(v, depth + 1) for k, v in value.items()
        )
    return all(_plain(item, depth + 1) for item in value)


def _unstorable(job: Job, result: Any, e: Exception, *, changed: bool) -> Failure:
    what = " or an object it changed" if changed else ""
    return Failure(
        ValueError(
            f"the result of {job.callable_name} ({type(result).__name__}){what} "
            f"could not be stored: {type(e).__name__}: {e}; return picklable values"
        )
    )


def _oid_int(job: Job) -> int:
    return int.from_bytes(job._p_oid, "big")


def _us(when: datetime.datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def _extra(job: Job, action: str) -> dict:
    return {
        "action": action,
        "job_id": job.id,
        "callable": job.callable_name,
        "attempt": job._attempts,
    }


#: conflicts in a row after which a job's next attempt runs alone in its
#: worker (see SoloGate)
SOLO_AFTER = 2
#: seconds a job about to run alone waits for the transactions of the
#: worker's other threads to end
SOLO_WAIT = 5.0
#: seconds a thread waits at the gate at most (for a job running alone,
#: or for its turn in a worker narrowed by conflicts)
SOLO_HOLD = 60.0
#: commits without a conflict, per thread let in, after which a worker
#: narrowed by conflicts lets one more thread run jobs
WIDEN_AFTER = 4


class SoloGate:
    """Keeps a worker's jobs from conflicting with each other over and over.

    Jobs that all write one object (a catalog, a counter, a folder)
    conflict with each other when a worker runs them side by side, and the
    retries conflict again: most of the work is thrown away, and a job
    that lost until its policy gave up failed (W6's Plone documents, 3-4
    in 500, on a counter of CMFUid's). Every job transaction of a worker's
    threads passes ``shared()``, and says how it ended:

    - each conflict halves how many of the threads may run jobs at once
      (``cap``, down to one), and ``WIDEN_AFTER`` commits without one per
      thread let in widen it by one, back to all of them (``limit``);
    - a job that conflicted SOLO_AFTER times in a row passes ``alone()``
      for its next attempt: no new transaction starts in this worker, the
      running ones end (waited for at most ``wait`` seconds), and it runs
      by itself.

    A thread waits at the gate at most ``hold`` seconds (a job that hangs
    does not stop its worker). Other worker processes are not held: their
    jobs may still conflict with these.
    """

    def __init__(
        self, limit: int = 1, wait: float = SOLO_WAIT, hold: float = SOLO_HOLD
    ):
        self.limit = limit
        #: how many threads may run jobs at once now
        self.cap = limit
        self.wait = wait
        self.hold = hold
        self._cond = threading.Condition()
        self._running = 0  # transactions in shared()
        self._alone = 0  # jobs waiting to run alone, or running
        self._clean = 0  # commits without a conflict since the cap changed
        #: jobs that ran alone, and times the cap was halved (diagnostics)
        self.solo_runs = 0
        self.narrowed = 0

    @contextlib.contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(
                lambda: not self._alone and self._running < self.cap, self.hold
            )
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._alone, self.hold)
            self._alone += 1
            self.solo_runs += 1
            self._cond.wait_for(lambda: not self._running, self.wait)
        try:
            yield
        finally:
            with self._cond:
                self._alone -= 1
                self._cond.notify_all()

    def conflicted(self) -> None:
        """A job transaction of this worker conflicted."""
        with self._cond:
            self._clean = 0
            cap = max(1, self.cap // 2)
            if cap == self.cap:
                return
            self.cap = cap
            self.narrowed += 1
        log.info(
            "jobs conflict with each other: at most %d of %d threads run "
            "jobs at once until they commit without conflicts",
            cap,
            self.limit,
        )

    def committed(self) -> None:
        """A job transaction of this worker committed."""
        if self.cap >= self.limit:  # the usual case: no lock taken
            return
        with self._cond:
            self._clean += 1
            if self._clean < WIDEN_AFTER * self.cap or self.cap >= self.limit:
                return
            self.cap += 1
            self._clean = 0
            self._cond.notify_all()
            cap = self.cap
        if cap == self.limit:
            log.info("jobs commit without conflicts: all %d threads run jobs", cap)


class SlotRunner:
    """Runs the jobs of one slot in the calling thread's own connection and
    transaction manager (the thread's own, so that code in jobs that calls
    ``transaction.get()`` or ``transaction.savepoint()`` works on the job's
    transaction)."""

    def __init__(self, dispatcher, index: int):
        self.dispatcher = dispatcher
        self.index = index
        self.tm = None
        self.conn = None
        #: held by the dispatcher's loop while it claims in this thread's
        #: connection (see Dispatcher._claim_for_idle), and by this thread
        #: while it opens or closes the connection
        self.lock = threading.Lock()
        self.live = LiveChannel(dispatcher, index)
        #: (oid, callable) of the job being called, for stop()'s report
        self.current: tuple | None = None
        self.batch_limit = 1
        self._conflicted_until = 0.0  # no batches before then
        self._reusable = None  # a savepoint the next job may start from
        #: (job, state) of the jobs that ran since that savepoint without
        #: taking one (see _execute): a rollback to it writes them again
        self._unsaved: list[tuple[Job, dict]] = []
        self._allowed: set[int] = set()  # their ids
        #: how many of the objects changed since the savepoint were found
        #: to be those jobs, and the last of them
        self._checked: tuple[int, Any] = (0, None)
        self._working = 0.0  # seconds spent in the current run's jobs
        #: jobs completed as a side effect of the current transaction (a
        #: composite completed by its last member's callback)
        self._finished_here: list[Job] = []

    # -- connections ------------------------------------------------------

    def open(self) -> None:
        with self.lock:
            self.tm = transaction.manager.manager
            self.conn = self.dispatcher.db.open(transaction_manager=self.tm)

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                close_connection(self.conn, self.tm)
            self.conn = None
        self.live.close()

    def _slot(self, conn):
        record = self.dispatcher._record_in(conn)
        return record.slots[self.index]

    # -- batches -------------------------------------------------------------

    def run(self, oids: list[int], *, loaded: bool = False) -> None:
        """Run the claimed jobs ``oids`` (in order) to completion.
        ``loaded``: they were claimed in this thread's connection, which
        has them, current, in its cache."""
        pending = list(oids)
        batch_seconds = self.dispatcher.batch_seconds
        self._working = 0.0
        count = len(pending)
        while pending:
            if self._abandoned(pending):
                return
            started = time.monotonic()
            chunk: list[int] = []
            outcomes: list[tuple[Job, str]] = []
            # The batch's transaction passes the gate; the fallbacks below
            # pass it again, one job at a time.
            fallback: Exception | None = None
            with self.dispatcher.gate.shared():
                if self._abandoned(pending):
                    return  # stop() gave up while this thread waited at the gate
                self._begin()
                if len(pending) == count and not loaded:
                    # One round trip for the whole batch (ZEO, RelStorage),
                    # in this transaction's view, the one that sees the claim.
                    self.conn.prefetch([oid.to_bytes(8, "big") for oid in pending])
                try:
                    slot = self._slot(self.conn)
                    for oid in pending:
                        if chunk and self.dispatcher.dead:
                            break  # commit what ran; leave the rest (_abandoned)
                        job = self._load(oid)
                        try:
                            self._run_in_slot(job, slot, outcomes, first=not chunk)
                        except _CommitFirst:
                            break
                        chunk.append(oid)
                        if time.monotonic() - started > batch_seconds:
                            break
                    self._settle_all(outcomes, slot)
                    self.tm.commit()
                    self.dispatcher.gate.committed()
                except _NotStorable as e:
                    self.tm.abort()
                    fallback = e
                except TransientError as e:
                    self.tm.abort()
                    fallback = e
                    if not _is_disconnection(e):
                        self.dispatcher.gate.conflicted()
                    self._conflicted_until = time.monotonic() + 10.0
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
                if not chunk and not isinstance(fallback, _NotStorable):
                    chunk = [pending[0]]
                outcomes = []
                for oid in chunk:
                    outcomes.extend(self._run_alone(oid))
                if isinstance(fallback, _NotStorable):
                    outcomes.extend(
                        self._record_failure(fallback.oid, fallback.failure, 0)
                    )
                    chunk.append(fallback.oid)
            del pending[: len(chunk)]
            self._after_commit(outcomes)
        self._adapt(count, self._working)

    def _abandoned(self, oids: list[int]) -> bool:
        """True when stop() gave up waiting for this thread: the jobs it
        still holds are recovered (maybe by a new dispatcher under the same
        UUID, which runs them in a slot of the same index), so it must not
        start them."""
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
        per_job = max(working / count, 1e-5)
        target = int(self.dispatcher.batch_seconds / per_job)
        limit = max(1, min(self.dispatcher.max_batch, target, self.batch_limit * 4))
        self.batch_limit = limit

    def _load(self, oid: int) -> Job:
        return self.conn.get(oid.to_bytes(8, "big"))

    def _run_alone(self, oid: int) -> list[tuple[Job, str]]:
        """Run one job in transactions of its own until it is settled (by
        itself in the worker once it conflicted SOLO_AFTER times in a
        row, see SoloGate)."""
        conflicts = 0
        delay = 0.0
        while True:
            if delay:
                time.sleep(delay)  # outside the gate: the others go on
            if self._abandoned([oid]):
                return []
            with self._gate(conflicts, oid):
                if self._abandoned([oid]):
                    return []
                outcomes: list[tuple[Job, str]] = []
                self._begin()
                job = self._load(oid)
                try:
                    slot = self._slot(self.conn)
                    job._conflicts += conflicts
                    self._run_in_slot(job, slot, outcomes, first=True)
                    self._settle_all(outcomes, slot)
                    self.tm.commit()
                    self.dispatcher.gate.committed()
                    return outcomes
                except _NotStorable as e:
                    self.tm.abort()
                    return self._record_failure(oid, e.failure, conflicts)
                except TransientError as e:
                    failure = Failure(e)
                    self.tm.abort()
                    if _is_disconnection(e):
                        # Not the job's fault nor a conflict: wait for the
                        # storage to come back, then run the job again.
                        if not self._wait_for_storage():
                            return []  # stopping: the job goes to recovery
                        delay = 0.0
                        continue
                    conflicts += 1
                    job, decision = self._after_conflict(oid, failure, conflicts)
                    if decision.retry:
                        log.info(
                            "job %s conflicted (%s); trying again",
                            job.id,
                            failure.getErrorMessage(),
                            extra=_extra(job, "conflict"),
                        )
                        delay = decision.delay
                        continue
                    return self._record_failure(oid, failure, conflicts)
                except Exception as e:
                    failure = Failure(e)
                    self.tm.abort()
                    return self._record_failure(oid, failure, conflicts)

    def _after_conflict(self, oid: int, failure: Failure, conflicts: int):
        """(job, its policy's Decision) after the ``conflicts``-th conflict
        in a row of job ``oid``'s transaction, the worker narrowed for it.
        The policy sees the conflicts before this one (as it sees errors):
        max_conflicts=2 retries twice."""
        self.dispatcher.gate.conflicted()
        self.tm.begin()
        job = self._load(oid)
        job._conflicts += conflicts - 1
        decision = make_policy(job).commit_error(failure)
        self.tm.abort()
        return job, decision

    def _gate(self, conflicts: int, oid: int):
        """The dispatcher's SoloGate for a job's next attempt: alone after
        SOLO_AFTER conflicts in a row, beside the others before."""
        if conflicts < SOLO_AFTER:
            return self.dispatcher.gate.shared()
        log.info(
            "job %s conflicted %d times in a row; running it alone in this worker",
            f"0x{oid:x}",
            conflicts,
        )
        return self.dispatcher.gate.alone()

    def _wait_for_storage(self) -> bool:
        """Wait until the storage is connected again; False if the
        dispatcher stops first."""
        storage = self.dispatcher.db.storage
        is_connected = getattr(storage, "is_connected", None)
        stopping = self.dispatcher._stopping
        if is_connected is None:
            return not stopping.wait(0.5)
        logged = False
        while not is_connected():
            if not logged:
                log.warning("storage disconnected; worker thread %d waits", self.index)
                logged = True
            if stopping.wait(0.2):
                return False
        if logged:
            log.info("storage connected again; worker thread %d goes on", self.index)
        return True

    def _record_failure(self, oid: int, failure: Failure, conflicts: int):
        """Record a failure for a job whose own transaction could not
        commit, in a fresh transaction."""
        for attempt in self.tm.attempts(5):
            with attempt:
                job = self._load(oid)
                slot = self._slot(self.conn)
                job._conflicts += conflicts
                started = now()
                job._start(started)
                job._finish(failure, now())
                self._settle(job, slot)
        log.error(
            "job %s failed: %s",
            job.id,
            failure.getErrorMessage(),
            extra=_extra(job, "failed"),
        )
        return [(job, "done")]

    # -- one job -------------------------------------------------------------

    def _run_in_slot(self, job: Job, slot, outcomes: list, *, first: bool) -> None:
        status = job._status
        if status == CALLBACKS:
            outcomes.append((job, "callbacks"))
            return
        worker = self.dispatcher.uuid
        if (
            status not in (ASSIGNED, ACTIVE)
            or job._worker != worker
            or job._slot != self.index
        ):
            # Taken from us (our lease lapsed and another worker rescued it).
            log.warning("job %s is no longer ours (%s); skipping it", job.id, status)
            self._reusable = None
            if slot.active.get(_oid_int(job)) is job:
                del slot.active[_oid_int(job)]
            return
        inbox = slot.inbox
        if inbox and _oid_int(job) in inbox.jobs:
            # Handed over by a producer elsewhere (zasync.handoff): into the
            # slot, as a claimed job, and checked as claims check theirs.
            inbox.remove(_oid_int(job))
            slot.active[_oid_int(job)] = job
            self._reusable = None  # a savepoint from before misses this
            self.dispatcher._check_importable(job)
        started = now()
        deadline = job.begin_by and job.begin_after and job.begin_after + job.begin_by
        if deadline and started > deadline:
            self._reusable = None
            job._start(started)
            job._finish(
                Failure(
                    TimeoutError(
                        f"{job.callable_name} could not start before its "
                        f"begin_by deadline {deadline.isoformat()}"
                    )
                ),
                now(),
            )
            outcomes.append((job, "done"))
            return
        launch = getattr(job, "_launch", None)
        if launch is not None:
            self._reusable = None
            job._start(started)
            if zope.event.subscribers:
                zope.event.notify(JobStarted(job))
            launch()
            if _oid_int(job) in slot.active:
                del slot.active[_oid_int(job)]
            release_quotas(job)
            # An empty composite is complete at once.
            done = job._status == COMPLETED
            outcomes.append((job, "done" if done else "launched"))
            return
        clock = time.monotonic()
        kind = self._execute(job, started, first=first)
        self._working += time.monotonic() - clock
        if kind == "rescheduled":
            self._reusable = None
            del slot.active[_oid_int(job)]
            outcomes.append((job, kind))
            return
        # Settled (moved to the slot's done jobs) by the caller just before
        # the commit: the containers are then pickled once per batch
        # instead of at every job's savepoint.
        outcomes.append((job, "done"))

    def _settle_all(self, outcomes: list, slot) -> None:
        for job, kind in outcomes:
            if kind == "done":
                self._settle(job, slot)

    def _savepoint(self, *, first: bool):
        reuse, self._reusable = self._reusable, None
        if reuse is not None:
            # Nothing changed since the previous job's closing savepoint,
            # but for the jobs in _unsaved.
            return reuse
        if not _savepoints_supported(self.tm.get()):
            # A resource in this transaction cannot take savepoints.
            if first:
                self._forget_unsaved()
                return None
            raise _CommitFirst()
        savepoint = self.tm.savepoint(optimistic=False)
        self._forget_unsaved()  # the savepoint has them
        return savepoint

    def _begin(self) -> None:
        """Begin a transaction, with no savepoint or unsaved job of an
        earlier one in hand."""
        self.tm.begin()
        self._reusable = None
        self._forget_unsaved()

    def _forget_unsaved(self) -> None:
        self._unsaved = []
        self._allowed = set()
        self._checked = (0, None)

    def _rollback(self, savepoint):
        """Roll back to ``savepoint`` and write again the jobs that ran
        since without a savepoint of their own; return a savepoint that
        includes them."""
        savepoint.rollback()
        self._checked = (0, None)
        if not self._unsaved:
            return savepoint
        for job, state in self._unsaved:
            job._p_activate()
            job.__setstate__(dict(state))
            job._p_changed = True
        if not _savepoints_supported(self.tm.get()):
            return savepoint  # _unsaved kept: written again at each rollback
        fresh = self.tm.savepoint(optimistic=False)
        self._forget_unsaved()
        return fresh

    def _saves_nothing_else(self, job: Job, result: Any) -> bool:
        """True when the job just run changed no persistent object but
        itself (and the jobs in _unsaved), joined no other resource to the
        transaction and returned a plain result: a rollback to the last
        savepoint can then be undone by writing those jobs again, and this
        job needs no savepoint of its own (each costs a pickle written to
        and read back from a temporary file)."""
        if not _plain(result) or len(self._unsaved) >= UNSAVED_LIMIT:
            return False
        for other, state in self._unsaved:
            if other.__dict__ != state:
                # A job that ran earlier in the batch was changed since (by
                # this one, or one judged before it): a rollback to the
                # savepoint must not write back its older state.
                return False
        conn = self.conn
        if (
            getattr(conn, "_added", None)
            or len(getattr(self.tm.get(), "_resources", ())) != 1
        ):
            return False
        # Connection has no public API for the objects changed since the
        # last savepoint: a list, in the order they changed, whose first
        # ones were checked for the jobs before this one.
        changed = getattr(conn, "_registered_objects", (job, None))
        checked, last = self._checked
        if checked > len(changed) or (checked and changed[checked - 1] is not last):
            checked = 0  # a new list
        allowed = self._allowed
        allowed.add(id(job))
        if all(id(obj) in allowed for obj in changed[checked:]):
            self._checked = (len(changed), changed[-1] if changed else None)
            return True
        allowed.discard(id(job))
        return False

    def _execute(self, job: Job, started: datetime.datetime, *, first: bool) -> str:
        """Call the job inside the current transaction; leave it finished
        (COMPLETED or CALLBACKS) or rescheduled. Transient errors propagate:
        the caller aborts and tries again."""
        savepoint = self._savepoint(first=first)
        self._reusable = None
        # A rollback to the savepoint undoes the counts of earlier tries:
        # they are kept here and written again after each rollback.
        attempts, errors = job._attempts, job._errors
        while True:
            job._attempts = attempts
            job._start(started)
            context = local._enter(job, self)
            # Read by the dispatcher's stop() to say which jobs were running.
            self.current = (job._p_oid, job.callable)
            try:
                if zope.event.subscribers:
                    zope.event.notify(JobStarted(job))
                result = job._call()
            except TransientError:
                raise
            except BaseException as e:  # noqa: B036 - SystemExit too: recorded
                failure = Failure(e)
                if not isinstance(e, Exception):
                    log.error(
                        "job %s raised %s: recorded as a failure; the worker goes on",
                        job.id,
                        type(e).__name__,
                        extra=_extra(job, "failed"),
                    )
                if savepoint is None:
                    raise
                savepoint = self._rollback(savepoint)
                attempts += 1
                job._attempts = attempts
                job._errors = errors  # the policy sees the earlier errors
                decision = make_policy(job).job_error(failure)
                errors += 1
                job._errors = errors
                if decision.retry and decision.delay <= 0:
                    continue
                if decision.retry:
                    release_quotas(job)
                    when = now() + datetime.timedelta(seconds=decision.delay)
                    job._queue._requeue(job, when=when)
                    log.info(
                        "job %s failed (%s); retrying after %.1f s",
                        job.id,
                        failure.getErrorMessage(),
                        decision.delay,
                        extra=_extra(job, "retry"),
                    )
                    return "rescheduled"
                job._status = ACTIVE
                job.active_start = started
                job._finish(failure, now())
                self._log_failure(job, failure)
                return "done"
            finally:
                local._leave()
                self.current = None
            break
        if savepoint is not None and not _plain(result):
            problem = unpicklable(result)
            if problem is not None:
                # Found before the savepoint pickles it, which would doom
                # the whole batch (its other jobs would run again): this
                # job fails alone.
                self._rollback(savepoint)
                job._start(started)
                failure = _unstorable(job, result, problem, changed=False)
                job._finish(failure, now())
                log.error(
                    "job %s failed: %s",
                    job.id,
                    failure.getErrorMessage(),
                    extra=_extra(job, "failed"),
                )
                return "done"
        if context.live:
            job.annotations.update(context.live)
        job._finish(result, now())
        if savepoint is not None and self._saves_nothing_else(job, result):
            self._unsaved.append((job, job.__getstate__()))
            self._reusable = savepoint
            return "done"
        if savepoint is not None and _savepoints_supported(self.tm.get()):
            try:
                # Pickles the result now, while it can still be undone; the
                # next job in this transaction starts from this savepoint.
                self._reusable = self.tm.savepoint(optimistic=False)
                self._forget_unsaved()  # the savepoint has them
            except TransientError:
                raise
            except Exception as e:
                # The failed savepoint doomed the transaction: no repair in
                # it is possible (see _NotStorable).
                failure = _unstorable(job, result, e, changed=True)
                raise _NotStorable(_oid_int(job), failure) from e
        return "done"

    def _log_failure(self, job: Job, failure: Failure) -> None:
        log.warning(
            "job %s (%s) failed: %s",
            job.id,
            job.callable_name,
            failure.getErrorMessage(),
            extra=_extra(job, "failed"),
        )

    def _settle(self, job: Job, slot) -> None:
        """After the job's work: free its quotas; a completed job leaves the
        slot's active jobs for its done jobs."""
        release_quotas(job)
        if job._status == COMPLETED:
            oid = _oid_int(job)
            if slot.active.get(oid) is job:
                del slot.active[oid]
            slot._add_done(job, _us(job.active_end or now()))

    # -- after commit ----------------------------------------------------------

    def _after_commit(self, outcomes: list[tuple[Job, str]]) -> None:
        if not outcomes:
            return
        self.dispatcher._job_finished()
        self._notify_finished([job for job, kind in outcomes if kind == "done"])
        for job, _kind in outcomes:
            if job._status == CALLBACKS:
                self._run_callbacks(_oid_int(job))
        if self.dispatcher._live_written:
            self.live.clear([_oid_int(job) for job, _ in outcomes])

    def _notify_finished(self, jobs: list[Job]) -> None:
        if not jobs or not zope.event.subscribers:
            return
        try:
            for attempt in self.tm.attempts(3):
                with attempt:
                    for job in jobs:
                        result = job._result
                        if isinstance(result, Failure):
                            zope.event.notify(JobFailed(job, result))
                        else:
                            zope.event.notify(JobSucceeded(job, result))
        except Exception:
            log.exception("an event handler for finished jobs failed")

    def _run_callbacks(self, oid: int) -> None:
        """Run the pending callbacks of job ``oid``, each in a transaction
        of its own; the last one also completes the job."""
        tried: set[int] = set()
        while True:
            if self._abandoned([oid]):
                return
            self.tm.begin()
            job = self._load(oid)
            pending = job._pending_callbacks()
            if not pending:
                if job._status == COMPLETED:
                    # Completed with its last callback, in that transaction.
                    self.tm.abort()
                    return
                self._complete_after_callbacks(job)
                self.tm.commit()
                self._notify_finished([job])
                return
            callback = pending[0]
            cb_oid = self._callback_oid(callback)
            self.tm.abort()
            if cb_oid in tried:
                log.error(
                    "callback %s of job %s could not be completed; leaving it",
                    callback.id,
                    job.id,
                    extra=_extra(job, "callbacks"),
                )
                return
            tried.add(cb_oid)
            # The last callback may have callbacks of its own: then the job
            # completes in this loop, after them.
            self._run_callback(oid, cb_oid, last=len(pending) == 1)

    def _callback_oid(self, callback: Job) -> int:
        if callback._p_oid is None:
            self.conn.add(callback)
        return _oid_int(callback)

    def _complete_after_callbacks(self, job: Job) -> None:
        job._status = COMPLETED
        if job._worker == self.dispatcher.uuid and job._slot == self.index:
            self._settle(job, self._slot(self.conn))
        else:
            release_quotas(job)
            self._slot(self.conn)._add_done(job, _us(job.active_end or now()))

    def _run_callback(self, parent_oid: int, cb_oid: int, *, last: bool) -> None:
        conflicts = 0
        committed = False
        delay = 0.0
        while True:
            if delay:
                time.sleep(delay)
            with self._gate(conflicts, cb_oid):
                if self._abandoned([parent_oid]):
                    return
                self._begin()
                self._finished_here = []
                parent = self._load(parent_oid)
                callback = self._load(cb_oid)
                try:
                    callback._conflicts += conflicts
                    self._execute(callback, now(), first=True)
                    # A callback added meanwhile (it conflicted with this
                    # transaction, which then ran again) makes this one not
                    # last.
                    if (
                        last
                        and callback._status == COMPLETED
                        and not parent._pending_callbacks()
                    ):
                        self._complete_after_callbacks(parent)
                    self.tm.commit()
                    self.dispatcher.gate.committed()
                    committed = True
                    break
                except _NotStorable as e:
                    self.tm.abort()
                    self._record_callback_failure(cb_oid, e.failure)
                    break
                except TransientError as e:
                    failure = Failure(e)
                    self.tm.abort()
                    conflicts += 1
                    _, decision = self._after_conflict(cb_oid, failure, conflicts)
                    if decision.retry:
                        delay = decision.delay
                        continue
                    self._record_callback_failure(cb_oid, failure)
                    break
                except Exception as e:
                    self.tm.abort()
                    self._record_callback_failure(cb_oid, Failure(e))
                    break
        self.tm.begin()
        callback = self._load(cb_oid)
        self.tm.abort()
        finished = self._finished_here if committed else []
        self._finished_here = []
        self._notify_finished([callback, *finished])
        if callback._status == CALLBACKS:
            self._run_callbacks(cb_oid)

    def _record_callback_failure(self, cb_oid: int, failure: Failure) -> None:
        for attempt in self.tm.attempts(5):
            with attempt:
                callback = self._load(cb_oid)
                callback._start(now())
                callback._finish(failure, now())
        self._log_failure(callback, failure)
