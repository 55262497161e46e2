"""Interrupting a job that does not check: an exception raised in its
thread from outside (CPython's ``PyThreadState_SetAsyncExc``).

Such an exception is delivered only while the thread runs Python
bytecode: a thread blocked in C code (``time.sleep``, a socket read, a
lock) gets it when that call returns, if ever. It is raised only while the
thread is inside the job's callable (``Body``): never in the worker's own
bookkeeping, nor in the side transactions of ``zasync.local`` functions,
which the job leaves the body for while they run.

CPython delivers a class, not an instance: the worker raises a marker
class (``AsyncTimeout``, ``AsyncCancel``) and records the job's failure
with the message the watchdog built (``Body.failure_of``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from zasync.interfaces import JobCancelled, JobTimeout

log = logging.getLogger(__name__)

_set_async_exc: Any = getattr(
    getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None
)
#: whether this Python can interrupt a thread (CPython)
AVAILABLE = _set_async_exc is not None


class AsyncTimeout(JobTimeout):
    """Raised in a job's thread that ran past its timeout and its grace."""


class AsyncCancel(JobCancelled):
    """Raised in a job's thread whose cancel was requested, after its grace."""


def _raise_in(thread_id: int, exc_type: type[BaseException] | None) -> bool:
    """Raise ``exc_type`` in thread ``thread_id`` when it next runs
    bytecode (None: forget one not delivered yet); True when the thread
    was found."""
    if _set_async_exc is None:
        return False
    argument = ctypes.py_object(exc_type) if exc_type is not None else None
    found = int(_set_async_exc(ctypes.c_ulong(thread_id), argument))
    if found > 1:  # cannot happen with a thread's own id: undo it
        _set_async_exc(ctypes.c_ulong(thread_id), None)
        log.error("async exception reached %d threads; undone", found)
        return False
    return found == 1


class Run:
    """What the watchdog knows of one call of a job (read from other
    threads: plain values, never the persistent job)."""

    __slots__ = (
        "oid",
        "job_id",
        "name",
        "timeout",
        "deadline",
        "thread_id",
        "entered",
        "interrupted_at",
        "failure",
    )

    def __init__(
        self,
        *,
        oid: int,
        job_id: str | None,
        name: str,
        timeout: float | None,
        deadline: float,
    ):
        self.oid = oid
        self.job_id = job_id
        self.name = name
        self.timeout = timeout
        #: time.monotonic() when its timeout expires (math.inf: none)
        self.deadline = deadline
        self.thread_id = threading.get_ident()
        self.entered = time.monotonic()
        #: time.monotonic() when the watchdog interrupted it, and the error
        #: it is to fail with
        self.interrupted_at: float | None = None
        self.failure: BaseException | None = None


class Body:
    """Whether a worker thread is inside a job's callable, and the
    interruption raised in it. One per worker thread (SlotRunner)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = False
        #: the current call (None between jobs); read by the watchdog
        self.run: Run | None = None
        #: set when a call starts: the watchdog's wake-up (zasync.pool)
        self.entered: threading.Event | None = None

    def enter(self, run: Run) -> None:
        """The thread is about to call the job of ``run``."""
        with self._lock:
            self.run = run
            self._inside = True
        if self.entered is not None:
            self.entered.set()

    def leave(self) -> None:
        """The job's callable returned or raised: no interruption reaches
        the thread after this returns (one raised in this very call may
        propagate from it instead: the job failed with it)."""
        try:
            with self._lock:
                run, self.run = self.run, None
                self._inside = False
                if run is not None and run.failure is not None:
                    _raise_in(threading.get_ident(), None)  # if not delivered
        finally:
            # Delivered above, before it was forgotten: it was the only one
            # (raised once per call), so this runs to its end.
            self._inside = False
            self.run = None

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Around zasync's own work inside a job (``zasync.local``): no
        interruption while it runs; one raised before is raised at the
        start instead."""
        return self._outside(raise_pending=True)

    def shielded(self) -> contextlib.AbstractContextManager[None]:
        """Around cleanup inside a job (a ``finally`` that must run to its
        end): no interruption starts while it runs; one that the watchdog
        raises meanwhile is raised when it is done. Unlike :meth:`paused`,
        one delivered before is not raised again at the start."""
        return self._outside(raise_pending=False)

    @contextlib.contextmanager
    def _outside(self, *, raise_pending: bool) -> Iterator[None]:
        """The block runs outside the job's own code (see paused and
        shielded)."""
        with self._lock:
            inside, run = self._inside, self.run
            self._inside = False
            interrupted = raise_pending and run is not None and run.failure is not None
            if interrupted:
                _raise_in(threading.get_ident(), None)  # if not delivered
        if interrupted:
            assert run is not None and run.failure is not None
            raise run.failure
        try:
            yield
        finally:
            with self._lock:
                self._inside = (
                    inside
                    and run is not None
                    and self.run is run
                    and run.failure is None
                )
        if inside and run is not None and run.failure is not None:
            raise run.failure  # interrupted meanwhile

    def interrupt(self, run: Run, failure: BaseException) -> bool:
        """Raise ``failure``'s kind in the thread of ``run`` if it is still
        inside that call; True when raised. Once per call."""
        with self._lock:
            if self.run is not run or run.failure is not None:
                return False
            run.failure = failure
            run.interrupted_at = time.monotonic()
            if not self._inside:
                return True  # in zasync's own code: raised when it is done
            self._inside = False
            marker = AsyncCancel if isinstance(failure, JobCancelled) else AsyncTimeout
            return _raise_in(run.thread_id, marker)

    @staticmethod
    def failure_of(error: BaseException, run: Run | None) -> BaseException:
        """The error to record for ``error`` caught from the call of
        ``run``: the watchdog's, with the marker's traceback, for a
        marker; else ``error`` itself."""
        if isinstance(error, AsyncTimeout | AsyncCancel) and run is not None:
            failure = run.failure
            if failure is not None:
                return failure.with_traceback(error.__traceback__)
        return error
