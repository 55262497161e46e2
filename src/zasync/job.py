"""Job: a persistent call of a callable, with its status, result and
callbacks.

A job is created NEW, becomes PENDING when put in a queue, ASSIGNED when a
worker claims it, ACTIVE while it runs, CALLBACKS while its callbacks run,
and COMPLETED at the end, with its return value or a Failure as ``result``.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import pickle
import sys
from typing import Any

import persistent
import zope.interface
from persistent.mapping import PersistentMapping

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

UTC = datetime.UTC


def now() -> datetime.datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.datetime.now(UTC)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


class _Moment:
    """A timezone-aware datetime attribute of a job (read back in UTC),
    kept in the job's state as microseconds since the epoch: a datetime
    with a timezone pickles through copyreg, which works out the
    timezone's slots each time, about 8 microseconds apiece, and a job is
    pickled when it is claimed and when it ends (three such times made
    half the cost of pickling a finished job). Jobs stored by zasync 0.1
    keep the datetime itself, under the attribute's name."""

    name = stored = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.stored = f"_{name}_us"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        us = getattr(obj, self.stored)
        if us is None:
            return obj.__dict__.get(self.name)
        return _EPOCH + datetime.timedelta(microseconds=us)

    def __set__(self, obj: Any, value: datetime.datetime | None) -> None:
        obj.__dict__.pop(self.name, None)
        setattr(
            obj,
            self.stored,
            None if value is None else (value - _EPOCH) // _MICROSECOND,
        )


def _module_level(obj: Any) -> bool:
    """True when ``obj`` can be found again by its module and qualified
    name, which is how pickle stores functions and classes."""
    qualname = getattr(obj, "__qualname__", None)
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if not qualname or module is None or "<locals>" in qualname:
        return False
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


def check_callable(func: Any) -> None:
    """Raise TypeError, saying what to do instead, when ``func`` cannot be
    stored in a job: a lambda, a nested function or class, a method of an
    object that cannot be stored, or anything that is not callable."""
    if isinstance(func, Job):
        return
    if not callable(func):
        raise TypeError(
            f"a job needs something callable; got {func!r} ({type(func).__name__})"
        )
    if isinstance(func, functools.partial):
        check_callable(func.func)
        return
    if inspect.ismethod(func):
        owner = func.__self__
        if isinstance(owner, type):  # a classmethod
            check_callable(owner)
            return
        if isinstance(owner, persistent.Persistent):
            return
        _check_picklable(owner, f"the object of the method {func.__qualname__}")
        return
    if inspect.isfunction(func) or inspect.isclass(func) or inspect.isbuiltin(func):
        name = getattr(func, "__qualname__", repr(func))
        if name == "<lambda>" or "<lambda>" in name:
            raise TypeError(
                f"a lambda cannot be stored in a job ({func!r}): define a "
                f"function at module level and queue that instead"
            )
        if not _module_level(func):
            kind = "class" if inspect.isclass(func) else "function"
            raise TypeError(
                f"the {kind} {name} is nested or local and cannot be stored "
                f"in a job by reference: move it to module level (or queue a "
                f"method of a persistent object)"
            )
        return
    # An instance of a callable class: it is stored by value.
    if not isinstance(func, persistent.Persistent):
        _check_picklable(func, f"the callable {func!r}")


class _RefPickler(pickle.Pickler):
    """Pickles as ZODB would: persistent objects by reference only."""

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent) and not isinstance(obj, type):
            return id(obj)
        return None


def unpicklable(value: Any) -> Exception | None:
    """The error pickling ``value`` the way ZODB stores it (persistent
    objects by reference) raises, or None when it pickles."""
    import io

    try:
        _RefPickler(io.BytesIO(), protocol=3).dump(value)
    except Exception as e:
        return e
    return None


def _check_picklable(value: Any, what: str) -> None:
    e = unpicklable(value)
    if e is not None:
        raise TypeError(
            f"{what} cannot be stored in the database ({type(e).__name__}: "
            f"{e}); pass values that pickle (persistent objects, plain data, "
            f"module-level functions and classes)"
        ) from e


def callable_name(func: Any) -> str:
    """A readable dotted name for a job's callable."""
    if isinstance(func, functools.partial):
        return f"partial({callable_name(func.func)})"
    if inspect.ismethod(func):
        owner = func.__self__
        cls = owner if isinstance(owner, type) else type(owner)
        return f"{cls.__module__}.{cls.__qualname__}.{func.__name__}"
    qualname = getattr(func, "__qualname__", None)
    if qualname is not None:
        return f"{getattr(func, '__module__', '?')}.{qualname}"
    cls = type(func)
    return f"{cls.__module__}.{cls.__qualname__}"


@zope.interface.implementer(IJob)
class Job(persistent.Persistent):
    """``Job(callable, *args, **kwargs)``: a call to make later.

    Raises TypeError at once when the callable or an argument cannot be
    stored (a lambda, a closure, an open file...), naming it.
    """

    # Class-level defaults, so that pickles from older versions load.
    _status: str = NEW
    _result: Any = None
    callable: Any = None
    args: tuple = ()
    kwargs: dict = {}  # noqa: RUF012 - replaced per instance, never mutated
    begin_after = _Moment()
    begin_by: datetime.timedelta | None = None
    active_start = _Moment()
    active_end = _Moment()
    _begin_after_us: int | None = None
    _active_start_us: int | None = None
    _active_end_us: int | None = None
    quota_names: tuple = ()
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
    # Room for what comes next (priorities, unique keys, cancellation,
    # per-job timeouts): the queue key already sorts by priority.
    priority: int = 0

    def __init__(self, callable, *args, **kwargs):  # noqa: A002 - compat
        check_callable(callable)
        for index, arg in enumerate(args):
            _check_picklable(arg, f"argument {index} of {callable_name(callable)}")
        for name, arg in kwargs.items():
            _check_picklable(arg, f"argument {name}= of {callable_name(callable)}")
        self.callable = callable
        self.args = args
        self.kwargs = kwargs

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
        return format(int.from_bytes(oid, "big"), "x")

    @property
    def queue(self):
        """The queue the job was put in, or None."""
        return self._queue

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

    def addCallback(self, callback) -> Job:  # noqa: N802 - compat name
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

    def addCallbacks(self, success=None, failure=None) -> Job:  # noqa: N802
        """Add one callback that calls ``success(result)`` when the job
        succeeded and ``failure(Failure)`` when it failed (either may be
        None); return the callback job."""
        if success is None and failure is None:
            raise TypeError("addCallbacks() needs success=, failure= or both")
        for func in (success, failure):
            if func is not None:
                check_callable(func)
        return self.addCallback(Job(_success_or_failure, success, failure))

    def _dispatch_late_callback(self, callback: Job) -> None:
        if self._queue is not None:
            self._status = CALLBACKS
            self._queue._requeue(self, front=True)
        else:
            callback(self._result)
            self._status = COMPLETED

    def _pending_callbacks(self) -> list[Job]:
        return [cb for cb in self._callbacks if cb._status != COMPLETED]

    # -- transitions (used by the worker; each is one state change) ---------

    def _start(self, when: datetime.datetime) -> None:
        self._status = ACTIVE
        self.active_start = when
        self._attempts += 1

    def _finish(self, result: Any, when: datetime.datetime) -> None:
        self._result = result
        self.active_end = when
        self._status = CALLBACKS if self._pending_callbacks() else COMPLETED

    def _call(self) -> Any:
        """Call the callable with the job's arguments (and, for a callback,
        the result of the job it follows)."""
        if self._callback_of is not None:
            return self.callable(*self.args, self._callback_of._result, **self.kwargs)
        return self.callable(*self.args, **self.kwargs)

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
                self._queue._requeue(self, front=True)
            else:
                self._run_callbacks_here()
        elif self._queue is not None:
            self._queue._record_finished(self)

    def __call__(self, *args, **kwargs) -> Any:
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
        try:
            if self._callback_of is not None and not args:
                result = self._call()
            else:
                result = self.callable(*self.args, *args, **{**self.kwargs, **kwargs})
        except Exception:
            result = Failure()
        self._finish(result, now())
        self._run_callbacks_here()
        return result

    def _run_callbacks_here(self) -> None:
        for callback in self._pending_callbacks():
            callback._status = NEW if callback._status == PENDING else callback._status
            callback(self._result)
        self._status = COMPLETED


def _success_or_failure(success, failure, result):
    """The callable behind ``addCallbacks``."""
    if isinstance(result, Failure):
        if failure is not None:
            return failure(result)
    elif success is not None:
        return success(result)
    return result
