"""Job: a persistent call of a callable, with its status, result and
callbacks.

A job is created NEW, becomes PENDING when put in a queue, ASSIGNED when a
worker claims it, ACTIVE while it runs, CALLBACKS while its callbacks run,
and COMPLETED at the end, with its return value or a Failure as ``result``.
The transitions are the methods under "transitions" below, each checking
the status it starts from; nothing else assigns a job's status.
"""

from __future__ import annotations

import datetime
from typing import Any

import persistent
import transaction
import zope.interface
from persistent.mapping import PersistentMapping

from zasync.callables import (
    by_reference,
    callable_name,
    check_callable,
    stored_argument,
)
from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE,
    ASSIGNED,
    CALLBACKS,
    COMPLETED,
    NEW,
    PENDING,
    AbortedError,
    BadStatusError,
    IJob,
)
from zasync.jobfields import JobFields, Moment
from zasync.jobopts import JobOptions
from zasync.keys import hex_id
from zasync.retry import policy_for

__all__ = ["Job", "callable_name", "check_callable", "now"]

UTC = datetime.UTC


def now() -> datetime.datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.datetime.now(UTC)


@zope.interface.implementer(IJob)
class Job(JobFields, JobOptions, persistent.Persistent):
    """``Job(callable, *args, **kwargs)``: a call to make later.

    Raises TypeError at once when the callable or an argument cannot be
    stored (a lambda, a closure, an open file...), naming it.
    """

    # Class-level defaults, so that pickles from older versions load.
    _status: str = NEW
    _result: Any = None
    callable: Any = None
    begin_after = Moment()
    begin_by: datetime.timedelta | None = None
    active_start = Moment()
    active_end = Moment()
    _begin_after_us: int | None = None
    _active_start_us: int | None = None
    _active_end_us: int | None = None
    retry_policy_factory: Any = None
    _annotations: PersistentMapping | None = None
    _callbacks: tuple = ()
    #: the job whose result this callback job receives
    _callback_of: Job | None = None
    #: the composite (serial/parallel) this job is part of
    _parent: Any = None
    _queue: Any = None
    _key: tuple | None = None
    _worker: str | None = None
    _slot: int | None = None
    # Counters the retry policy reads.
    _attempts: int = 0
    _conflicts: int = 0
    _errors: int = 0
    _interruptions: int = 0
    #: seconds the job may run before check()/progress() raise JobTimeout
    timeout: float | None = None

    def __init__(self, callable: Any, *args: Any, **kwargs: Any) -> None:
        check_callable(callable)
        stored = list(args)
        for index, arg in enumerate(stored):
            stored[index] = stored_argument(arg, callable, index)
        for name, arg in kwargs.items():
            kwargs[name] = stored_argument(arg, callable, name)
        self.callable = by_reference(callable)
        self._args = stored
        self._kwargs = kwargs

    # -- reading ------------------------------------------------------------

    @property
    def status(self) -> str:
        return self._status

    @property
    def result(self) -> Any:
        return self._result

    @property
    def failed(self) -> bool:
        """True when the job completed with a Failure."""
        return isinstance(self._result, Failure)

    @property
    def callbacks(self) -> tuple:
        return self._callbacks

    @property
    def annotations(self) -> PersistentMapping:
        """A persistent mapping for the application's notes (made on first
        use, which writes the job)."""
        if self._annotations is None:
            self._annotations = PersistentMapping()
        return self._annotations

    @property
    def id(self) -> str | None:
        """The job's id in its database (hex of its oid), None before it is
        added to one."""
        oid = self._p_oid
        if oid is None:
            return None
        return hex_id(oid)

    @property
    def queue(self) -> Any:
        """The queue the job was put in, or None."""
        return self._queue

    @property
    def worker(self) -> str | None:
        """The UUID of the worker that holds the job (claimed, running or
        running its callbacks), or None."""
        return self._worker

    @property
    def parent(self) -> Any:
        """What the job belongs to, as zc.async's ``parent``: the job whose
        callback it is, else the composite it is a member of, else its
        queue (None for a new job)."""
        return self._callback_of or self._parent or self._queue

    @property
    def slot(self) -> int | None:
        """The index of the worker thread that holds the job, or None."""
        return self._slot

    @property
    def attempts(self) -> int:
        """How many times a worker started the job."""
        return self._attempts

    @property
    def callable_name(self) -> str:
        """The dotted name of what the job calls. A wrapper callable (such
        as zasync.plone's run_as_user) names the function it wraps by
        having a ``zasync_describe(job)`` attribute."""
        describe = getattr(self.callable, "zasync_describe", None)
        if describe is not None:
            try:
                return describe(self)
            except Exception:  # a description must never break a listing
                pass
        return callable_name(self.callable)

    def __repr__(self) -> str:
        return (
            f"<zasync.Job {self.id or 'unsaved'} ``{self.callable_name}()`` "
            f"{self._status}>"
        )

    # -- callbacks ------------------------------------------------------------

    def addCallback(self, callback: Any) -> Job:  # noqa: N802 - compat name
        """Add a callable (or Job) to be called with this job's result when
        the job completes, in a transaction of its own; return the callback
        job. Added to a completed job, it runs at once (queued in the job's
        queue when it has one, else called here)."""
        if not isinstance(callback, Job):
            callback = Job(callback)
        if callback._status != NEW:
            raise BadStatusError(
                f"{callback!r} is {callback._status}: only a new job can be a callback"
            )
        callback._callback_of = self
        self._callbacks = (*self._callbacks, callback)
        if self._status == COMPLETED:
            self._dispatch_late_callback(callback)
        return callback

    def addCallbacks(self, success: Any = None, failure: Any = None) -> Job:  # noqa: N802 - compat name
        """Add one callback that calls ``success(result)`` when the job
        succeeded and ``failure(Failure)`` when it failed (either may be
        None); return the callback job."""
        if success is None and failure is None:
            raise TypeError("addCallbacks() needs success=, failure= or both")
        for func in (success, failure):
            if func is not None:
                check_callable(func)
        return self.addCallback(
            SuccessFailureJob(_success_or_failure, success, failure)
        )

    def getRetryPolicy(self) -> Any:  # noqa: N802 - compat name
        """The job's retry policy, made by its ``retry_policy_factory``
        (default: zasync.retry.RetryPolicy) each time it is asked for: it
        reads the job's counters and is not stored."""
        return policy_for(self)

    def _dispatch_late_callback(self, callback: Job) -> None:
        if self._queue is not None:
            self._reopen()
            self._queue.requeue(self, front=True)
        else:
            callback(self._result)

    def _pending_callbacks(self) -> list[Job]:
        return [cb for cb in self._callbacks if cb._status != COMPLETED]

    # -- transitions: the only code that assigns ``_status`` ----------------

    def _move(self, to: str, allowed: tuple[str, ...]) -> None:
        if self._status not in allowed:
            raise BadStatusError(f"{self!r} is {self._status}: it cannot become {to}")
        self._status = to

    def _queued(self) -> None:
        """Put in a queue (``Queue.put``): NEW to PENDING."""
        self._move(PENDING, (NEW,))

    def _requeued(self) -> None:
        """Back in its queue (a retry, an interruption, a worker that
        stopped): PENDING again; a job with callbacks still to run stays
        CALLBACKS. No worker holds it any more."""
        if self._status != CALLBACKS:
            self._move(PENDING, (PENDING, ASSIGNED, ACTIVE))
        self._worker = self._slot = None

    def _unqueued(self) -> None:
        """Taken out of its queue before it ran (``Queue.remove``): NEW."""
        self._move(NEW, (PENDING,))
        self._queue = None

    def _assign(self, worker: str, slot: int, when: Any, *, first: bool) -> None:
        """Claimed by ``worker`` for its thread ``slot``: the ``first`` job
        of a thread is ACTIVE from ``when`` (the thread starts it at once),
        the others ASSIGNED. A job with callbacks to run stays CALLBACKS."""
        if self._status != CALLBACKS:
            if first:
                self._move(ACTIVE, (PENDING,))
                self.active_start = when
            else:
                self._move(ASSIGNED, (PENDING,))
        self._worker = worker
        self._slot = slot

    def _mark_started(self, when: datetime.datetime) -> None:
        """About to start, recorded in a commit of its own before the call
        (a job that may start once at most): ACTIVE from ``when``, so that
        recovery knows it may have started."""
        self._move(ACTIVE, (ASSIGNED, ACTIVE))
        self.active_start = when

    def _unstarted(self) -> None:
        """Handed to a thread that never started it: ASSIGNED, so that
        recovery requeues it as a job that did not run."""
        self._move(ASSIGNED, (ACTIVE, ASSIGNED))

    def _start(self, when: datetime.datetime) -> None:
        """Started (counted in ``attempts``)."""
        self._move(ACTIVE, (NEW, PENDING, ASSIGNED, ACTIVE))
        self.active_start = when
        self._attempts += 1

    def _finish(self, result: Any, when: datetime.datetime) -> None:
        """Ended with ``result`` (a value or a Failure): CALLBACKS when
        callbacks are to run, else COMPLETED."""
        done = CALLBACKS if self._pending_callbacks() else COMPLETED
        self._move(done, (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS))
        self._result = result
        self.active_end = when

    def _fail_interrupted(self, error: BaseException, when: datetime.datetime) -> None:
        """Ended by an interruption its policy does not retry: the start
        that was interrupted was counted already."""
        if self.active_start is None:
            self.active_start = when
        self._finish(Failure(error), when)

    def _callbacks_done(self) -> None:
        """Its callbacks have run: COMPLETED."""
        self._move(COMPLETED, (CALLBACKS, COMPLETED))

    def _reopen(self) -> None:
        """A callback added to a completed job: CALLBACKS again."""
        self._move(CALLBACKS, (COMPLETED,))

    def _reset(self) -> None:
        """A finished job made new again, to be queued once more (a retry
        asked for by a user): its result and counters are cleared."""
        self._move(NEW, (COMPLETED, NEW))
        self._result = None
        self.active_start = self.active_end = None
        self._conflicts = self._errors = self._interruptions = 0
        self._worker = self._slot = None

    # -- running ----------------------------------------------------------------

    def _call(self) -> Any:
        """Call the callable with the job's arguments (and, for a callback,
        the result of the job it follows)."""
        args: Any = self._args
        if args is None:
            args = self._stored_args()
        kwargs: Any = self._kwargs
        if kwargs is None:
            kwargs = self._stored_kwargs()
        if self._callback_of is not None:
            return self.callable(*args, self._callback_of._result, **kwargs)
        return self.callable(*args, **kwargs)

    def fail(self, e: BaseException | None = None) -> None:
        """Complete a job that has not started with a Failure of ``e``
        (default: AbortedError). Its callbacks still run."""
        if self._status in (ASSIGNED, ACTIVE, CALLBACKS, COMPLETED):
            raise BadStatusError(
                f"{self!r} is {self._status}: fail() is for jobs that have not started"
            )
        if e is None:
            e = AbortedError(f"{self.callable_name} was failed before it started")
        queue = self._queue
        if self._status == PENDING and queue is not None:
            queue.remove(self)
            # Kept, so that a worker of that queue runs the callbacks (and
            # late callbacks), each in a transaction of its own.
            self._queue = queue
        self._finish(Failure(e), now())
        if self._status == CALLBACKS:
            if self._queue is not None:
                self._queue.requeue(self, front=True)
            else:
                self._run_callbacks_here()
        elif self._queue is not None:
            self._queue.record_finished(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the job here and now, in the caller's transaction (for tests
        and for jobs that are not queued); return the result or Failure.
        Extra arguments are added to the stored ones."""
        if self._status not in (NEW, PENDING):
            raise BadStatusError(
                f"{self!r} is {self._status}: only a new or pending job can be called"
            )
        if self._status == PENDING and self._queue is not None:
            self._queue.remove(self)
        self._start(now())
        # What the callable writes before it raises is rolled back; the
        # caller's earlier writes stay in its transaction.
        savepoint = _savepoint(self)
        try:
            if self._callback_of is not None and not args:
                result = self._call()
            else:
                result = self.callable(
                    *self._stored_args(), *args, **{**self._stored_kwargs(), **kwargs}
                )
        except Exception:
            result = Failure()
            if savepoint is not None:
                savepoint.rollback()
        if isinstance(result, Job) and result is not self:
            # A job returned: its result is this job's (a new one not in a
            # queue is called here; see zasync.composite.wait_for).
            if result._status == NEW and result._queue is None:
                result()
            if result._status == COMPLETED:
                result = result._result
        self._finish(result, now())
        self._run_callbacks_here()
        return result

    def _run_callbacks_here(self) -> None:
        for callback in self._pending_callbacks():
            if callback._status == PENDING:
                callback._unqueued()
            callback(self._result)
        if self._status == CALLBACKS:
            self._callbacks_done()


class SuccessFailureJob(Job):
    """The callback job of ``addCallbacks(success, failure)``: it calls
    ``success(result)`` or ``failure(Failure)``, named by its ``success``
    and ``failure`` attributes (the callables, or None)."""

    @property
    def success(self) -> Any:
        return self._stored_args()[0]

    @property
    def failure(self) -> Any:
        return self._stored_args()[1]


def _savepoint(job: Job) -> Any:
    """A savepoint of the transaction ``job`` is called in, or None when a
    resource in it cannot take savepoints."""
    jar = job._p_jar
    manager = jar.transaction_manager if jar is not None else transaction.manager
    try:
        return manager.savepoint()
    except TypeError:  # a data manager without savepoints
        return None


def _success_or_failure(success: Any, failure: Any, result: Any) -> Any:
    """The callable behind ``addCallbacks``."""
    if isinstance(result, Failure):
        if failure is not None:
            return failure(result)
    elif success is not None:
        return success(result)
    return result
