"""Execution: one job's turn inside a worker thread's current transaction.

A job still held by the thread is called with its savepoint (see
zasync.savepoints); an error rolls it back and asks the job's retry
policy; a result the database could not store fails the job alone. A job
past its ``begin_by`` deadline fails without running, and a composite
queues its members instead of being called.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import zope.event
from transaction.interfaces import TransientError

from zasync import local
from zasync.callables import unpicklable
from zasync.claimer import check_importable
from zasync.composite import wait_for
from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE,
    ASSIGNED,
    CALLBACKS,
    COMPLETED,
    JobRetried,
    JobStarted,
    JobTimeout,
    TimeoutError,
)
from zasync.interrupts import Body, Run
from zasync.job import Job, now
from zasync.keys import oid_int
from zasync.outcomes import (
    JobCommittedError,
    Outcome,
    Outcomes,
    UnstorableResultError,
    log_extra,
)
from zasync.recovery import at_most_once, make_policy, release_quotas
from zasync.savepoints import plain

log = logging.getLogger(__name__)


def _unstorable(job: Job, result: Any, e: Exception, *, changed: bool) -> Failure:
    what = " or an object it changed" if changed else ""
    return Failure(
        ValueError(
            f"the result of {job.callable_name} ({type(result).__name__}){what} "
            f"could not be stored: {type(e).__name__}: {e}; return picklable values"
        )
    )


class Execution:
    """The turns of the jobs of one worker thread (``runner``, a
    zasync.executor.SlotRunner)."""

    def __init__(self, runner: Any):
        self.runner = runner

    def run_in_slot(
        self, job: Job, slot: Any, outcomes: Outcomes, *, first: bool
    ) -> None:
        status = job._status
        if status == CALLBACKS:
            outcomes.append((job, Outcome.CALLBACKS))
            return
        if not self._holds(job, slot, outcomes):
            return
        started = now()
        if self._expired(job, started, outcomes):
            return
        if status == ASSIGNED and at_most_once(job):
            # Recorded before the call, so that recovery knows it may have
            # started (it is the first of its transaction).
            job._mark_started(started)
            self.runner.tm.commit()
            self.runner.begin()
        launch = getattr(job, "_launch", None)
        if launch is not None:
            self._launch(job, launch, started, slot, outcomes)
            return
        clock = time.monotonic()
        outcome = self.execute(job, started, first=first)
        self.runner.working += time.monotonic() - clock
        if outcome is Outcome.RESCHEDULED or outcome is Outcome.LAUNCHED:
            self.runner.savepoints.reusable = None
            del slot.active[oid_int(job)]
            if outcome is Outcome.LAUNCHED:
                release_quotas(job)
        # A finished job is settled (moved to the slot's done jobs) by the
        # caller just before the commit: the containers are then pickled
        # once per batch instead of at every job's savepoint.
        outcomes.append((job, outcome))

    def _holds(self, job: Job, slot: Any, outcomes: Outcomes) -> bool:
        """Whether this thread still holds ``job``; a job handed over by a
        producer elsewhere (zasync.handoff) moves from the slot's inbox to
        its active jobs, checked as a claim checks its jobs."""
        oid = oid_int(job)
        mine = job.worker == self.runner.dispatcher.uuid
        if job._status == COMPLETED and mine and slot.active.get(oid) is job:
            # Completed by a commit that reported an error, or by a job of
            # its batch that committed by itself: settled, not run again.
            outcomes.append((job, Outcome.DONE))
            return False
        if (
            job._status not in (ASSIGNED, ACTIVE)
            or not mine
            or (job.slot != self.runner.index)
        ):
            # Taken from us (our lease lapsed and another worker rescued it).
            log.warning(
                "job %s is no longer ours (%s); skipping it", job.id, job._status
            )
            self.runner.savepoints.reusable = None
            if slot.active.get(oid) is job:
                del slot.active[oid]
            return False
        inbox = slot.inbox
        if inbox and oid in inbox.jobs:
            inbox.remove(oid)
            slot.active[oid] = job
            self.runner.savepoints.reusable = (
                None  # a savepoint from before misses this
            )
            check_importable(job)
        return True

    def _expired(
        self, job: Job, started: datetime.datetime, outcomes: Outcomes
    ) -> bool:
        """Fail ``job`` when it is past its ``begin_by`` deadline."""
        deadline = job.begin_by and job.begin_after and job.begin_after + job.begin_by
        if not deadline or started <= deadline:
            return False
        self.runner.savepoints.reusable = None
        job._start(started)
        error = TimeoutError(
            f"{job.callable_name} could not start before its begin_by "
            f"deadline {deadline.isoformat()}"
        )
        job._finish(Failure(error), now())
        outcomes.append((job, Outcome.DONE))
        return True

    def _launch(
        self,
        job: Job,
        launch: Any,
        started: datetime.datetime,
        slot: Any,
        outcomes: Outcomes,
    ) -> None:
        """Start a composite: it queues its members."""
        self.runner.savepoints.reusable = None
        job._start(started)
        if zope.event.subscribers:
            zope.event.notify(JobStarted(job))
        launch()
        oid = oid_int(job)
        if oid in slot.active:
            del slot.active[oid]
        release_quotas(job)
        # An empty composite is complete at once.
        done = job._status == COMPLETED
        outcomes.append((job, Outcome.DONE if done else Outcome.LAUNCHED))

    def execute(self, job: Job, started: datetime.datetime, *, first: bool) -> Outcome:
        """Call the job inside the current transaction; leave it finished
        (COMPLETED or CALLBACKS) or rescheduled. Transient errors propagate:
        the caller aborts and tries again."""
        savepoint = self.runner.savepoints.before_job(first=first)
        # A rollback to the savepoint undoes the counts of earlier tries:
        # they are kept here and written again after each rollback.
        attempts, errors = job._attempts, job._errors
        txn = self.runner.tm.get()
        while True:
            job._attempts = attempts
            job._start(started)
            try:
                result, live = self._call(job)
            except BaseException as e:  # noqa: B036 - SystemExit too: recorded
                error = self._interrupted(job, e)
                failure = Failure(error)
                if self.runner.tm.get() is not txn:
                    raise JobCommittedError(oid_int(job), failure) from e
                if isinstance(error, TransientError):
                    raise
                if not isinstance(error, Exception):
                    log.error(
                        "job %s raised %s: recorded as a failure; the worker goes on",
                        job.id,
                        type(error).__name__,
                        extra=log_extra(job, "failed"),
                    )
                if savepoint is None:
                    raise error
                savepoint = self.runner.savepoints.rollback(savepoint)
                attempts += 1
                outcome = self._after_error(job, failure, started, attempts, errors)
                errors += 1
                if outcome is None:
                    continue
                return outcome
            if self.runner.tm.get() is not txn:
                raise JobCommittedError(oid_int(job), result)
            return self._after_success(job, result, live, started, savepoint)

    def _call(self, job: Job) -> tuple[Any, dict[str, Any]]:
        """Call the job; return its result and its live annotations. The
        watchdog (zasync.watchdog) may interrupt the callable itself, never
        the code around it."""
        runner = self.runner
        context = local.begin_job(job, runner)
        runner.started_oid = oid_int(job)
        # Read by the dispatcher's stop() to say which jobs were running.
        runner.current = (job._p_oid, job.callable)
        try:
            if zope.event.subscribers:
                zope.event.notify(JobStarted(job))
            deadline = runner.live.start_run(context)
            run = runner.last_run = Run(
                oid=oid_int(job),
                job_id=job.id,
                name=job.callable_name,
                timeout=runner.live.timeout,
                deadline=deadline,
            )
            body = runner.body
            try:
                body.enter(run)  # interruptible from here
                result = job._call()
            finally:
                body.leave()
            return result, context.live
        finally:
            local.end_job()
            runner.current = None

    def _interrupted(self, job: Job, error: BaseException) -> BaseException:
        """The error to record for ``error`` raised by the call of ``job``:
        the watchdog's for its interruption (see zasync.interrupts)."""
        run = self.runner.last_run
        found = Body.failure_of(error, run)
        if run is not None and found is run.failure:
            self.runner.interrupted = True
            log.warning(
                "job %s (%s) interrupted: %s",
                job.id,
                job.callable_name,
                found,
                extra=log_extra(job, "interrupted"),
            )
            if isinstance(found, JobTimeout):
                self.runner.live.timed_out(job)
        return found

    def _after_error(
        self,
        job: Job,
        failure: Failure,
        started: datetime.datetime,
        attempts: int,
        errors: int,
    ) -> Outcome | None:
        """What the job's policy makes of an error (after the rollback):
        None to try again at once, or the outcome."""
        job._attempts = attempts
        job._errors = errors  # the policy sees the earlier errors
        decision = make_policy(job).job_error(failure)
        job._errors = errors + 1
        if decision.retry and decision.delay <= 0:
            return None
        if decision.retry:
            release_quotas(job)
            when = now() + datetime.timedelta(seconds=decision.delay)
            job._queue.requeue(job, when=when)
            log.info(
                "job %s failed (%s); retrying after %.1f s",
                job.id,
                failure.getErrorMessage(),
                decision.delay,
                extra=log_extra(job, "retry"),
            )
            if zope.event.subscribers:
                zope.event.notify(JobRetried(job))
            return Outcome.RESCHEDULED
        job.active_start = started
        job._finish(failure, now())
        self.runner.log_failure(job, failure)
        return Outcome.DONE

    def _after_success(
        self,
        job: Job,
        result: Any,
        live: dict[str, Any],
        started: datetime.datetime,
        savepoint: Any,
    ) -> Outcome:
        if savepoint is not None and not plain(result):
            problem = unpicklable(result)
            if problem is not None:
                # Found before the savepoint pickles it, which would doom
                # the whole batch (its other jobs would run again): this
                # job fails alone.
                self.runner.savepoints.rollback(savepoint)
                job._start(started)
                failure = _unstorable(job, result, problem, changed=False)
                job._finish(failure, now())
                log.error(
                    "job %s failed: %s",
                    job.id,
                    failure.getErrorMessage(),
                    extra=log_extra(job, "failed"),
                )
                return Outcome.DONE
        if live:
            job.annotations.update(live)
        if isinstance(result, Job) and result is not job and job._callback_of is None:
            # It waits for that job and takes its result (zasync.composite).
            return Outcome.DONE if wait_for(job, result) else Outcome.LAUNCHED
        job._finish(result, now())
        if savepoint is not None:
            try:
                self.runner.savepoints.after_job(job, result, savepoint)
            except TransientError:
                raise
            except Exception as e:
                # The failed savepoint doomed the transaction: no repair in
                # it is possible (see UnstorableResultError).
                failure = _unstorable(job, result, e, changed=True)
                raise UnstorableResultError(oid_int(job), failure) from e
        return Outcome.DONE
