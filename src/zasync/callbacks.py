"""Callbacks: what runs after a job's transaction committed.

The finished jobs' events (JobSucceeded, JobFailed), then each pending
callback of a job in a transaction of its own, in order, then the job's
completion in a transaction of its own: a callback's transaction does not
write the job, so that a callback added meanwhile (which writes the job)
never makes a running callback conflict and run again. A composite's
advance, which must complete its member with it and has no effect outside
the database, is the exception (``completes_job``). A callback that
conflicts is retried as its policy says, alone in its worker after
repeated conflicts (zasync.limiter).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import zope.event
from transaction.interfaces import TransientError

from zasync import inprocess
from zasync.failure import Failure
from zasync.interfaces import CALLBACKS, COMPLETED, JobFailed, JobSucceeded
from zasync.job import Job, now
from zasync.keyed import release_key
from zasync.keys import oid_int, to_us
from zasync.outcomes import Outcome, Outcomes, UnstorableResultError, log_extra
from zasync.recovery import release_quotas

log = logging.getLogger(__name__)
#: transactions tried to free the unique keys of finished jobs
FREE_KEY_TRIES = 10

#: times the completion of a job whose callbacks ran is tried again after
#: a conflict (a callback added meanwhile, which then runs first)
COMPLETION_TRIES = 20


def completes_job(callback: Job) -> bool:
    """Whether ``callback``, when it is the last of its job's, completes
    the job in its own transaction (a composite's advance, marked by its
    callable's ``zasync_completes_job``)."""
    return bool(getattr(callback.callable, "zasync_completes_job", False))


class Callbacks:
    """The callbacks of the jobs one worker thread (``runner``, a
    zasync.executor.SlotRunner) ran, in its connection."""

    def __init__(self, runner: Any):
        self.runner = runner

    def after_commit(self, outcomes: Outcomes) -> None:
        """The jobs of ``outcomes`` committed: announce the finished ones,
        run pending callbacks, forget live annotations."""
        if not outcomes:
            return
        runner = self.runner
        inprocess.job_finished()
        finished = [job for job, kind in outcomes if kind is Outcome.DONE]
        self.free_keys(finished)
        self.notify_finished(finished)
        for job, _kind in outcomes:
            if job._status == CALLBACKS:
                self.run_pending(oid_int(job))
        if runner.live.written:
            runner.live.clear([oid_int(job) for job, _ in outcomes])

    def free_keys(self, jobs: list[Job]) -> None:
        """Free the unique keys ``jobs`` held until they finished, in a
        transaction of its own: a producer that found the key held rewrote
        its entry, and this write, were it in the job's transaction, would
        make the job run again. Should it fail, the key is free all the
        same (its job no longer holds it, zasync.keyed.holds_key); the
        entry goes when the key is used again."""
        keyed = [j for j in jobs if j.unique_key and j.unique_until == "finished"]
        tm = self.runner.tm
        error: Exception | None = None
        for attempt in range(FREE_KEY_TRIES):
            if not keyed:
                return
            try:
                with tm:
                    for job in keyed:
                        if job.queue is not None:
                            release_key(job.queue, job)
                return
            except TransientError as e:
                tm.abort()
                error = e
                # Producers busy with the same keys: let them through.
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        log.warning(
            "could not free the unique keys of %d finished jobs (%s); they are "
            "free all the same, their entries go when the keys are used again",
            len(keyed),
            type(error).__name__,
        )

    def notify_finished(self, jobs: list[Job]) -> None:
        """JobSucceeded or JobFailed for each of ``jobs``, in a transaction
        (event handlers may write)."""
        if not jobs or not zope.event.subscribers:
            return
        try:
            for attempt in self.runner.tm.attempts(3):
                with attempt:
                    for job in jobs:
                        result = job.result
                        if isinstance(result, Failure):
                            zope.event.notify(JobFailed(job, result))
                        else:
                            zope.event.notify(JobSucceeded(job, result))
        except Exception:
            log.exception("an event handler for finished jobs failed")

    def run_pending(self, oid: int) -> None:
        """Run the pending callbacks of job ``oid``, each in a transaction
        of its own; the last one also completes the job."""
        runner = self.runner
        tried: set[int] = set()
        completions = 0
        while True:
            if runner.abandoned([oid]):
                return
            runner.tm.begin()
            job = runner.load(oid)
            pending = job._pending_callbacks()
            if not pending:
                if job._status == COMPLETED:
                    # Completed with its last callback, in that transaction.
                    runner.tm.abort()
                    return
                completions += 1
                if self._completed(job):
                    self.notify_finished([job])
                    return
                if completions >= COMPLETION_TRIES:
                    log.error(
                        "job %s could not be completed after its callbacks",
                        job.id,
                        extra=log_extra(job, "callbacks"),
                    )
                    return
                continue
            callback = pending[0]
            cb_oid = self._callback_oid(callback)
            runner.tm.abort()
            if cb_oid in tried:
                log.error(
                    "callback %s of job %s could not be completed; leaving it",
                    callback.id,
                    job.id,
                    extra=log_extra(job, "callbacks"),
                )
                return
            tried.add(cb_oid)
            # The last callback may have callbacks of its own: then the job
            # completes in this loop, after them.
            last = len(pending) == 1 and completes_job(callback)
            self._run_one(oid, cb_oid, last=last)

    def _completed(self, job: Job) -> bool:
        """Complete ``job``, whose callbacks have run, and commit; False
        after a conflict (a callback added meanwhile, most likely)."""
        runner = self.runner
        self._complete(job)
        try:
            runner.tm.commit()
        except TransientError:
            runner.tm.abort()
            return False
        return True

    def _callback_oid(self, callback: Job) -> int:
        if callback._p_oid is None:
            self.runner.conn.add(callback)
        return oid_int(callback)

    def _complete(self, job: Job) -> None:
        """The job's callbacks have all run: it is complete."""
        runner = self.runner
        job._callbacks_done()
        slot = runner.slot(runner.conn)
        if job.worker == runner.dispatcher.uuid and job.slot == runner.index:
            runner.settle(job, slot)
        else:
            release_quotas(job)
            slot._add_done(job, to_us(job.active_end or now()))

    def _run_one(self, parent_oid: int, cb_oid: int, *, last: bool) -> None:
        runner = self.runner
        committed = self._attempt(parent_oid, cb_oid, last=last)
        if committed is None:
            return  # abandoned: left to recovery
        runner.tm.begin()
        callback = runner.load(cb_oid)
        runner.tm.abort()
        finished = runner.finished_here if committed else []
        runner.finished_here = []
        self.notify_finished([callback, *finished])
        if callback._status == CALLBACKS:
            self.run_pending(cb_oid)

    def _attempt(self, parent_oid: int, cb_oid: int, *, last: bool) -> bool | None:
        """Run callback ``cb_oid`` of job ``parent_oid`` until it committed
        (True) or its failure is recorded (False); None when the dispatcher
        stopped meanwhile."""
        runner = self.runner
        conflicts = 0
        delay = 0.0
        while True:
            if delay:
                time.sleep(delay)
            with runner.gate(conflicts, cb_oid):
                if runner.abandoned([parent_oid]):
                    return None
                runner.begin()
                runner.finished_here = []
                parent = runner.load(parent_oid)
                callback = runner.load(cb_oid)
                try:
                    callback._conflicts += conflicts
                    runner.execution.execute(callback, now(), first=True)
                    # A callback added meanwhile (it conflicted with this
                    # transaction, which then ran again) makes this one not
                    # last.
                    if (
                        last
                        and callback._status == COMPLETED
                        and not parent._pending_callbacks()
                    ):
                        self._complete(parent)
                    runner.tm.commit()
                    runner.dispatcher.limiter.committed()
                    return True
                except UnstorableResultError as e:
                    runner.tm.abort()
                    self._record_failure(cb_oid, e.failure)
                    return False
                except TransientError as e:
                    failure = Failure(e)
                    runner.tm.abort()
                    conflicts += 1
                    _, decision = runner.after_conflict(cb_oid, failure, conflicts)
                    if decision.retry:
                        delay = decision.delay
                        continue
                    self._record_failure(cb_oid, failure)
                    return False
                except Exception as e:
                    runner.tm.abort()
                    self._record_failure(cb_oid, Failure(e))
                    return False

    def _record_failure(self, cb_oid: int, failure: Failure) -> None:
        runner = self.runner
        for attempt in runner.tm.attempts(5):
            with attempt:
                callback = runner.load(cb_oid)
                callback._start(now())
                callback._finish(failure, now())
        runner.log_failure(callback, failure)
