"""Contracts of zasync: statuses, errors, events and the interfaces of the
persistent objects.

The prose of each interface is the specification; the implementations in
``job.py``, ``queue.py`` and ``dispatcher.py`` follow it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zope.interface
from zope.interface import Attribute, Interface

if TYPE_CHECKING:  # both import this module
    from zasync.failure import Failure
    from zasync.job import Job

#: The key under which :func:`zasync.install` keeps the Queues in the root.
KEY = "zasync"

# Statuses are plain strings, exactly as zc.async spelled them.
NEW = "new-status"
PENDING = "pending-status"
ASSIGNED = "assigned-status"
ACTIVE = "active-status"
CALLBACKS = "callback-status"
COMPLETED = "completed-status"

STATUSES = (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)


class ZasyncError(Exception):
    """The root of every error zasync raises."""


class ZasyncWarning(UserWarning):
    """The root of every warning zasync emits."""


class BadStatusError(ZasyncError):
    """The job is not in a status that allows this operation."""


class TimeoutError(ZasyncError):  # shadows the builtin: zc.async's name
    """The job could not start before its ``begin_by`` deadline, or ran past
    its timeout."""


class AbortedError(ZasyncError):
    """The job was interrupted (its worker died or stopped) and its retry
    policy chose not to run it again."""


class CancelledError(ZasyncError):
    """The job was cancelled before it completed."""


class JobCancelled(CancelledError):  # noqa: N818 - the name users expect (Celery, Dramatiq)
    """A cancel of the running job was requested (``zasync.admin.cancel``):
    raised by ``zasync.local.check()`` and ``progress()`` in the job, or in
    its thread by the worker's watchdog once it did not stop within the
    grace period. Its work is rolled back and it completes with this
    failure, never retried."""


class JobTimeout(TimeoutError):  # noqa: N818 - the name users expect (Celery, Dramatiq)
    """The running job ran past its ``timeout``: raised by
    ``zasync.local.check()`` and ``progress()`` in the job, or in its thread
    by the worker's watchdog once it did not stop within the grace period.
    Its work is rolled back; its retry policy decides whether it runs again
    (RetryPolicy: only when ``retry_on`` names JobTimeout)."""


class ConfigurationError(ZasyncError):
    """A setting has a value that cannot work; the message names the setting
    and what to use instead."""


class NotInJobError(ZasyncError):
    """A ``zasync.local`` function was called outside a running job."""


class WorkerError(ZasyncError):
    """A dispatcher could not start or run."""


class IFailure(Interface):
    """A picklable record of an exception."""

    type = Attribute("The exception class (or a stand-in when unimportable)")
    value = Attribute("The exception instance (or a stand-in)")

    def getTraceback(elideFrameworkCode=0, detail="default"):  # noqa: N802, N803
        """The formatted traceback, as text, starting with a line that
        begins with "Traceback" (also for an exception never raised). The
        arguments (Twisted's) change nothing."""

    def printTraceback(file=None, elideFrameworkCode=0, detail="default"):  # noqa: N802, N803
        """Write the traceback to ``file`` (default: sys.stderr)."""

    def getErrorMessage():  # noqa: N802 - compat name
        """``str()`` of the exception."""

    def check(*types):
        """The first of ``types`` that the exception is an instance of, or
        None."""

    def trap(*types):
        """The first of ``types`` that the exception is an instance of;
        if none, raise the recorded exception again."""

    def raiseException():  # noqa: N802 - compat name
        """Raise the recorded exception again."""


class IJob(Interface):
    """A persistent call of a callable with arguments."""

    status = Attribute("One of the status strings (NEW ... COMPLETED)")
    result = Attribute("The return value, a Failure, or None before the end")
    callable = Attribute("What is called")
    args = Attribute(
        "Positional arguments: a list changed in place (``job.args.append(x)``)"
        " and stored with the job, in its own record"
    )
    kwargs = Attribute(
        "Keyword arguments: a mapping changed in place (``job.kwargs[k] = v``)"
        " and stored with the job, in its own record"
    )
    begin_after = Attribute("A timezone-aware datetime, or None for now")
    begin_by = Attribute("A timedelta after begin_after; past it, the job fails")
    active_start = Attribute("When the job started, timezone-aware, or None")
    active_end = Attribute("When the job ended, timezone-aware, or None")
    quota_names = Attribute(
        "Names of the queue's quotas this job needs: a tuple of strings, set "
        "while the job is new or pending (a pending job's queue must have them)"
    )
    annotations = Attribute("A persistent mapping for the application's notes")
    callbacks = Attribute("The callback jobs, run after this job completes")
    retry_policy_factory = Attribute("Makes the job's retry policy")
    timeout = Attribute(
        "Seconds the job may run (None: no limit), set by ``queue.put(..., "
        "timeout=)``; past it, ``zasync.local.check()`` raises JobTimeout"
    )
    failed = Attribute("True when the result is a Failure")

    def addCallback(callback):  # noqa: N802 - compat name
        """Add a callback (a callable or a Job) that gets the result; return
        the callback job."""

    def addCallbacks(success=None, failure=None):  # noqa: N802 - compat name
        """Add callbacks for success and failure; return the callback job."""

    def fail(e=None):
        """Fail a job that has not started yet (default: AbortedError)."""

    def getRetryPolicy():  # noqa: N802 - compat name
        """The job's retry policy (an IRetryPolicy), made by its
        ``retry_policy_factory`` (default: zasync.retry.RetryPolicy) each
        time it is asked for; not stored."""


class IQueue(Interface):
    """Where pending jobs wait."""

    name = Attribute("The queue's name in its Queues")
    quotas = Attribute("The queue's quotas (``create(name, size=1)``)")

    def put(item, begin_after=None, begin_by=None):
        """Queue a job (or a callable, wrapped in a job); return the job.
        Joins the caller's transaction."""

    def pull(index=0):
        """Remove and return the pending job at ``index`` in run order."""

    def remove(job):
        """Remove a pending job."""

    def __len__():
        """The number of pending jobs."""

    def __iter__():
        """The pending jobs, in run order."""


class IRetryPolicy(Interface):
    """Decides what happens to a job after a transient error, an application
    error, or an interruption. Made for one job by its
    ``retry_policy_factory(job)``; each answer is a zasync.retry.Decision
    (``retry``: whether to run the job again; ``delay``: after how many
    seconds). A zc.async policy (``jobError(failure, data_cache)``,
    ``commitError(failure, data_cache)``, ``interrupted()`` answering True,
    False, a timedelta or a datetime) is wrapped to answer these
    (zasync.retry.ZcAsyncPolicy)."""

    job = Attribute("The job the policy decides for")

    def job_error(failure):
        """The job's callable raised ``failure`` (its work was rolled back):
        retry (at once or after ``delay``), or record the failure. A
        JobCancelled failure must be recorded: a job cancelled while it ran
        never runs again (RetryPolicy and ZcAsyncPolicy see to it; a policy
        of your own should subclass RetryPolicy or do the same)."""

    def commit_error(failure):
        """The job's transaction could not commit (a ConflictError,
        usually): retry, or record the failure."""

    def interrupted():
        """The job's worker died or stopped while it ran: retry (back at the
        front of its queue), or fail it with AbortedError."""


class IJobEvent(Interface):
    job = Attribute("The job")


class IJobStarted(IJobEvent):
    """A worker is about to call the job."""


class IJobSucceeded(IJobEvent):
    """The job completed with a result (its transaction committed)."""

    result = Attribute("The result")


class IJobFailed(IJobEvent):
    """The job completed with a Failure (its failure was committed)."""

    failure = Attribute("The Failure")


@zope.interface.implementer(IJobEvent)
class JobEvent:
    def __init__(self, job: Job):
        self.job = job

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.job!r}>"


@zope.interface.implementer(IJobStarted)
class JobStarted(JobEvent):
    pass


@zope.interface.implementer(IJobSucceeded)
class JobSucceeded(JobEvent):
    def __init__(self, job: Job, result: Any):
        super().__init__(job)
        self.result = result


@zope.interface.implementer(IJobFailed)
class JobFailed(JobEvent):
    def __init__(self, job: Job, failure: Failure):
        super().__init__(job)
        self.failure = failure


@zope.interface.implementer(IJobEvent)
class JobRetried(JobEvent):
    """A job failed and was put back in its queue to be tried again later
    (notified in the job's transaction, before it commits)."""


class WorkerHeartbeat:
    """A worker's heartbeat was committed (``uuid`` names the worker)."""

    def __init__(self, uuid: str):
        self.uuid = uuid

    def __repr__(self) -> str:
        return f"<WorkerHeartbeat {self.uuid}>"
