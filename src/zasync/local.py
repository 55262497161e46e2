"""What a running job can ask about itself: ``getJob()``, ``getQueue()``,
``getDispatcher()``, live annotations (visible to other processes before
the job commits), progress. Outside a job these raise NotInJobError.

Live annotations are kept apart from ``job.annotations`` while the job
runs, in its worker thread's record (zasync.live_channel): writing the
job's own annotations from a side transaction would conflict with the
job's commit and make it run again. Other processes read them with
:func:`live_annotations`; they are copied into ``job.annotations`` when
the job commits.

A job that runs long should call :func:`check` (or :func:`progress`) now
and then: that is where a cancel requested by ``zasync.admin.cancel`` and
the job's ``timeout`` stop it. A job that does not check is interrupted
by its worker's watchdog after a grace period (see zasync.watchdog); these
functions' own database work is never interrupted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from zasync.interfaces import KEY, NotInJobError
from zasync.keys import oid_int

_state = threading.local()


class _Context:
    """Set by the worker around each job call."""

    __slots__ = ("job", "runner", "live", "last_progress")

    def __init__(self, job: Any, runner: Any):
        self.job = job
        self.runner = runner
        self.live: dict[str, Any] = {}
        self.last_progress = 0.0


def _current() -> _Context:
    context = getattr(_state, "context", None)
    if context is None:
        raise NotInJobError(
            "not inside a running zasync job: zasync.local functions work only "
            "in code a worker calls for a job"
        )
    return context


def getJob() -> Any:  # noqa: N802 - compat name
    """The job being run by this thread."""
    return _current().job


def getQueue() -> Any:  # noqa: N802 - compat name
    """The queue of the job being run by this thread."""
    return _current().job.queue


def getDispatcher() -> Any:  # noqa: N802 - compat name
    """The dispatcher running this job."""
    return _current().runner.dispatcher


def setLiveAnnotation(name: str, value: Any, job: Any = None) -> None:  # noqa: N802 - compat name
    """Store ``value`` under ``name`` for the running job, committed at once
    in a transaction of its own, so other processes see it while the job
    still runs. The last values are also kept in ``job.annotations`` when
    the job commits."""
    context = _current()
    if job is not None and job is not context.job:
        raise NotInJobError("setLiveAnnotation() can only annotate the running job")
    context.live[name] = value
    with context.runner.body.paused():
        context.runner.live.write(context.job, dict(context.live))


def getLiveAnnotation(  # noqa: N802 - compat name
    name: str,
    default: Any = None,
    timeout: float = 0,
    poll: float = 0.5,
    job: Any = None,
) -> Any:
    """The annotation ``name`` of the running job (or of ``job``) as
    committed now: a live annotation, else ``job.annotations[name]`` as
    another transaction (any process) committed it. Waits up to ``timeout``
    seconds for it to appear, reading again at most every ``poll`` seconds
    (sooner at first); ``default`` when it does not appear."""
    context = _current()
    target = job if job is not None else context.job
    deadline = time.monotonic() + timeout
    poll = max(poll, 0.001)
    delay = min(0.01, poll)
    while True:
        with context.runner.body.paused():
            value = context.runner.live.read(target).get(name, _missing)
        if value is not _missing or time.monotonic() >= deadline:
            return default if value is _missing else value
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, poll)


_missing = object()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run the block to its end even if the job is interrupted meanwhile
    (a cancel or timeout it did not check for): for cleanup that must not
    stop halfway, such as restoring the thread's site and user. The
    interruption is raised when the block is done. Outside a job, only the
    block runs."""
    context = getattr(_state, "context", None)
    if context is None:
        yield
        return
    with context.runner.body.shielded():
        yield


def check() -> None:
    """Raise JobCancelled when a cancel of the running job was requested
    (``zasync.admin.cancel``), JobTimeout once it ran past its ``timeout``;
    else return. Let them propagate: the job's work is rolled back and it
    completes with that failure (a cancelled job is never run again; a
    timed-out one as its retry policy says). Reads the database at most
    five times a second; cheap to call in a loop."""
    context = _current()
    with context.runner.body.paused():
        context.runner.live.check(context)


def progress(
    done: float, total: float | None = None, message: str | None = None
) -> None:
    """Report progress of the running job (shown by ``zasync status``, the
    control panel and ``live_annotations(job)``). Writes at most twice a
    second, except the final report (``done == total``). Checks first as
    :func:`check` does, raising JobCancelled or JobTimeout."""
    context = _current()
    with context.runner.body.paused():
        context.runner.live.check(context)
        clock = time.monotonic()
        final = total is not None and done >= total
        value = {"done": done, "total": total, "message": message, "time": time.time()}
        context.live["progress"] = value
        if final or clock - context.last_progress >= 0.5:
            context.last_progress = clock
            context.runner.live.write(context.job, dict(context.live))


def live_annotations(job: Any) -> dict[str, Any]:
    """The live annotations of ``job`` as committed now, read through the
    job's own connection (begin a new transaction first to see the latest).
    Empty when the job is not running."""
    worker, index = job._worker, job._slot
    jar = job._p_jar
    if worker is None or index is None or jar is None:
        return {}
    queues = jar.root().get(KEY)
    record = queues.workers.get(worker) if queues is not None else None
    if record is None or index >= len(record.slots):
        return {}
    live = record.slots[index].live or {}
    return dict(live.get(oid_int(job), {}))


def current_runner() -> Any:
    """The worker thread's runner (zasync.executor.SlotRunner) of the job
    running in this thread, or None outside a job."""
    context = getattr(_state, "context", None)
    return None if context is None else context.runner


def begin_job(job: Any, runner: Any) -> _Context:
    """Called by the worker around each job call: ``job`` runs in this
    thread, in ``runner``."""
    context = _state.context = _Context(job, runner)
    return context


def end_job() -> None:
    _state.context = None
