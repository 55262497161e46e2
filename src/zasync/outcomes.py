"""How a job's turn in a worker thread's transaction ended, and the
fields of log records about a job."""

from __future__ import annotations

import enum
from typing import Any

from zasync.failure import Failure
from zasync.job import Job


class Outcome(enum.StrEnum):
    """How a job's turn in a thread's transaction ended."""

    #: finished (COMPLETED, or CALLBACKS with callbacks to run)
    DONE = "done"
    #: failed, and put back in its queue to be tried again later
    RESCHEDULED = "rescheduled"
    #: found with callbacks to run (its own work was done before)
    CALLBACKS = "callbacks"
    #: a composite that queued its members
    LAUNCHED = "launched"


class UnstorableResultError(Exception):
    """The job's result (or an object it changed) could not be pickled.

    The failed savepoint doomed the whole transaction: it is aborted, the
    other jobs of the batch run again alone, and this job's ``failure`` is
    recorded in a transaction of its own (the job does not run again).
    """

    def __init__(self, oid: int, failure: Failure):
        super().__init__(failure.getErrorMessage())
        self.oid = oid
        self.failure = failure


class JobCommittedError(Exception):
    """The job committed (or aborted) the transaction itself: its savepoint
    is gone, and what it wrote before is committed. It is not run again:
    its own ``value`` (its result, or the Failure of its exception) is
    recorded in a transaction of its own."""

    def __init__(self, oid: int, value: Any):
        super().__init__(f"job 0x{oid:x} committed its transaction itself")
        self.oid = oid
        self.value = value


def log_extra(job: Job, action: str) -> dict[str, Any]:
    """The ``extra`` of a log record about ``job``."""
    return {
        "action": action,
        "job_id": job.id,
        "callable": job.callable_name,
        "attempt": job.attempts,
        "queue": getattr(job.queue, "name", None),
        "worker": job.worker,
    }


Outcomes = list[tuple[Job, Outcome]]
