"""zasync: a durable, transactional job queue that lives in ZODB."""

# The runtime's enqueue hooks, wired whenever zasync is imported.
from zasync import wiring as _wiring  # noqa: F401
from zasync.composite import parallel, serial
from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE,
    ASSIGNED,
    CALLBACKS,
    COMPLETED,
    KEY,
    NEW,
    PENDING,
    AbortedError,
    BadStatusError,
    JobCancelled,
    JobTimeout,
    ZasyncError,
)
from zasync.job import Job
from zasync.queue import Queue, Queues, install
from zasync.retry import NeverRetry, RetryPolicy, RetryWithDelay

__all__ = [
    # jobs and their results
    "Job",
    "Failure",
    "serial",
    "parallel",
    # queues
    "Queue",
    "Queues",
    "install",
    "KEY",
    # retry policies
    "RetryPolicy",
    "NeverRetry",
    "RetryWithDelay",
    # statuses
    "NEW",
    "PENDING",
    "ASSIGNED",
    "ACTIVE",
    "CALLBACKS",
    "COMPLETED",
    # errors
    "ZasyncError",
    "BadStatusError",
    "AbortedError",
    "JobCancelled",
    "JobTimeout",
]
