"""One job in transactions of its own: after a batch that could not commit,
and while its commits conflict.

Every run of a job counts in its ``attempts``, the runs whose transaction
was then aborted too. A job whose policy allows one start at most
(``NeverRetry``) is never run again once it may have started: its failure
is recorded instead. While the storage is away (ZEO's ClientDisconnected)
nothing runs; the thread waits for it to come back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from transaction.interfaces import TransientError

from zasync.failure import Failure
from zasync.interfaces import ACTIVE, ASSIGNED, COMPLETED
from zasync.job import Job, now
from zasync.outcomes import (
    JobCommittedError,
    Outcome,
    Outcomes,
    UnstorableResultError,
    log_extra,
)
from zasync.recovery import at_most_once
from zasync.txn import is_disconnection

log = logging.getLogger(__name__)

#: seconds between looks at a storage that is away
STORAGE_POLL = 0.2


class Alone:
    """The one-job transactions of a worker thread (``runner``, a
    zasync.executor.SlotRunner)."""

    def __init__(self, runner: Any):
        self.runner = runner

    def fall_back(self, ran: list[int], error: Exception) -> Outcomes | None:
        """After a batch transaction that could not commit (``error``):
        each job of ``ran`` (those that may have started in it) once more
        in a transaction of its own, or its failure recorded. None when the
        dispatcher stops before the storage is back (the jobs are left to
        recovery)."""
        if is_disconnection(error) and not self.wait_for_storage():
            return None
        failure = Failure(error)
        outcomes: Outcomes = []
        for oid in ran:
            if isinstance(error, UnstorableResultError) and oid == error.oid:
                outcomes.extend(self.record(oid, error.failure, lost_runs=1))
            elif isinstance(error, JobCommittedError):
                # The jobs before it committed with it: settled, not run.
                if oid == error.oid:
                    outcomes.extend(self.record(oid, error.value))
                else:
                    outcomes.extend(self.run(oid))
            else:
                outcomes.extend(self._rerun(oid, failure, own=len(ran) == 1))
        return outcomes

    def run(
        self,
        oid: int,
        *,
        lost_runs: int = 0,
        failure: Failure | None = None,
        conflicts: int = 0,
        delay: float = 0.0,
    ) -> Outcomes:
        """Run job ``oid`` in transactions of its own until it is settled
        (by itself in the worker once it conflicted SOLO_AFTER times in a
        row, see ConflictLimiter). ``lost_runs``: runs of it whose
        transaction was aborted (``failure`` says why); ``conflicts``: the
        job's conflicts so far, its policy asked; ``delay``: seconds to wait
        first."""
        runner = self.runner
        while True:
            if delay:
                time.sleep(delay)  # outside the gate: the others go on
            if runner.abandoned([oid]):
                return []
            with runner.gate(conflicts, oid):
                if runner.abandoned([oid]):
                    return []
                if lost_runs and failure is not None and self._once_only(oid):
                    return self.record(
                        oid, failure, conflicts=conflicts, lost_runs=lost_runs
                    )
                outcome = self._attempt(oid, conflicts, lost_runs)
            if isinstance(outcome, list):
                return outcome
            failure = outcome
            if runner.started_oid == oid:
                lost_runs += 1  # it ran: a start to count (and to never repeat)
            error = failure.value
            if isinstance(error, BaseException) and is_disconnection(error):
                # Not the job's fault nor a conflict: no run while the
                # storage is away.
                if not self.wait_for_storage():
                    return []  # stopping: the job goes to recovery
                delay = 0.0
                continue
            if not failure.check(TransientError):
                return self.record(
                    oid, failure, conflicts=conflicts, lost_runs=lost_runs
                )
            conflicts += 1
            job, decision = runner.after_conflict(oid, failure, conflicts)
            if not decision.retry:
                return self.record(
                    oid, failure, conflicts=conflicts, lost_runs=lost_runs
                )
            log.info(
                "job %s conflicted (%s); trying again",
                job.id,
                failure.getErrorMessage(),
                extra=log_extra(job, "conflict"),
            )
            delay = decision.delay

    def _rerun(self, oid: int, failure: Failure, *, own: bool) -> Outcomes:
        """Job ``oid`` once more after a batch transaction that ``failure``
        aborted. A conflict of a batch that ran this job alone (``own``)
        is the job's first conflict, which its policy may not retry: a job
        runs at most 1 + max_conflicts times."""
        error = failure.value
        if not (own and isinstance(error, TransientError)) or is_disconnection(error):
            return self.run(oid, lost_runs=1, failure=failure)
        _, decision = self.runner.after_conflict(oid, failure, 1)
        if not decision.retry:
            return self.record(oid, failure, conflicts=1, lost_runs=1)
        return self.run(
            oid, lost_runs=1, failure=failure, conflicts=1, delay=decision.delay
        )

    def _once_only(self, oid: int) -> bool:
        """Whether job ``oid`` may start once at most (read afresh)."""
        runner = self.runner
        runner.begin()
        try:
            return at_most_once(runner.load(oid))
        finally:
            runner.tm.abort()

    def _attempt(self, oid: int, conflicts: int, lost_runs: int) -> Outcomes | Failure:
        """One transaction of job ``oid``: its outcomes once committed, or
        the Failure that aborted it (the job may have run)."""
        runner = self.runner
        outcomes: Outcomes = []
        runner.started_oid = None
        try:
            runner.begin()
            job = runner.load(oid)
            slot = runner.slot(runner.conn)
            if self._held(job):
                job._conflicts += conflicts
                job._attempts += lost_runs
            runner.execution.run_in_slot(job, slot, outcomes, first=True)
            runner.settle_all(outcomes, slot)
            runner.tm.commit()
            runner.dispatcher.limiter.committed()
            return outcomes
        except UnstorableResultError as e:
            runner.tm.abort()
            return self.record(
                oid, e.failure, conflicts=conflicts, lost_runs=lost_runs + 1
            )
        except JobCommittedError as e:
            runner.tm.abort()
            return self.record(oid, e.value, conflicts=conflicts)
        except Exception as e:
            failure = Failure(e)
            runner.tm.abort()
            if not isinstance(e, TransientError):
                log.exception("job 0x%x could not be committed", oid)
            return failure

    def connected(self) -> bool:
        """False when the storage says it is disconnected (ZEO)."""
        is_connected = getattr(self.runner.dispatcher.db.storage, "is_connected", None)
        return is_connected is None or bool(is_connected())

    def wait_for_storage(self) -> bool:
        """Wait until the storage is connected again; False if the
        dispatcher stops first."""
        runner = self.runner
        storage = runner.dispatcher.db.storage
        is_connected = getattr(storage, "is_connected", None)
        stopping = runner.dispatcher.stopping
        if is_connected is None:
            return not stopping.wait(0.5)
        logged = False
        while not is_connected():
            if not logged:
                log.warning(
                    "storage disconnected; worker thread %d waits", runner.index
                )
                logged = True
            if stopping.wait(STORAGE_POLL):
                return False
        if logged:
            log.info("storage connected again; worker thread %d goes on", runner.index)
        return True

    def record(
        self, oid: int, value: Any, *, conflicts: int = 0, lost_runs: int = 0
    ) -> Outcomes:
        """Finish job ``oid`` with ``value`` (a Failure, or the result of a
        job that committed by itself) without running it, in a fresh
        transaction; its ``lost_runs`` runs whose transaction was aborted
        are counted. A job that is no longer this thread's is left as it
        is (one completed by a commit that reported an error is settled)."""
        runner = self.runner
        for attempt in runner.tm.attempts(5):
            with attempt:
                job: Job = runner.load(oid)
                slot = runner.slot(runner.conn)
                if not self._held(job):
                    if job.status == COMPLETED and slot.active.get(oid) is job:
                        runner.settle(job, slot)
                    return []
                job._conflicts += conflicts
                job._attempts += lost_runs
                if job.active_start is None:
                    job.active_start = now()
                job._finish(value, now())
                runner.settle(job, slot)
        if isinstance(value, Failure):
            log.error(
                "job %s failed: %s",
                job.id,
                value.getErrorMessage(),
                extra=log_extra(job, "failed"),
            )
        return [(job, Outcome.DONE)]

    def _held(self, job: Job) -> bool:
        runner = self.runner
        return (
            job.status in (ASSIGNED, ACTIVE)
            and job.worker == runner.dispatcher.uuid
            and job.slot == runner.index
        )
