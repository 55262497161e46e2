"""Helpers for tests: ``wait_until`` (poll with a deadline, never a fixed
sleep), ``wait_for_result`` and ``wait_for_start`` (wait for a job), and
pytest fixtures (``zasync_db``, ``dispatcher``) for a FileStorage database
in a temporary directory with a running dispatcher."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import ZODB
from transaction.interfaces import NoTransaction
from ZODB.FileStorage import FileStorage

from zasync.dispatcher import Dispatcher
from zasync.inprocess import completed
from zasync.interfaces import ACTIVE, CALLBACKS, COMPLETED, ZasyncError
from zasync.interfaces import TimeoutError as ZasyncTimeoutError
from zasync.job import Job
from zasync.queue import install

__all__ = [
    "ZasyncTimeoutError",
    "wait_for_result",
    "wait_for_start",
    "wait_until",
]

T = TypeVar("T")
#: what wait_until's ``message`` may be: the text, or a callable that gives
#: it once the deadline passed (a log reader, the state last seen)
Message = str | Callable[[], str] | None


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    message: Message = None,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns
    something true, and return that.

    Raises zasync.interfaces.TimeoutError once ``timeout`` seconds passed
    (by the monotonic clock), naming what was awaited: ``message`` (or what
    it returns, when callable), else the predicate's name and line. The
    predicate is called a last time at the deadline; what it raises
    propagates at once. Raises ValueError for an ``interval`` that is not
    positive (it would spin a processor)."""
    if not interval > 0:
        raise ValueError(
            f"interval must be a positive number of seconds, not {interval!r}"
        )
    return _poll(
        predicate,
        timeout=timeout,
        pause=lambda left: time.sleep(min(interval, left)),
        message=message,
    )


def _poll(
    predicate: Callable[[], T],
    *,
    timeout: float,
    pause: Callable[[float], object],
    message: Message,
) -> T:
    # The one polling loop: ``pause(seconds left)`` returns within them.
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise ZasyncTimeoutError(
                f"timed out after {timeout:g} s waiting for "
                f"{_awaited(predicate, message)}"
            )
        pause(left)


def _awaited(predicate: Callable[[], object], message: Message) -> str:
    if callable(message):
        return message()
    if message:
        return message
    name = getattr(predicate, "__qualname__", None) or repr(predicate)
    code = getattr(predicate, "__code__", None)
    if code is None:
        return name
    return f"{name} ({Path(code.co_filename).name}:{code.co_firstlineno})"


def _refresh(job: Job) -> None:
    jar = job._p_jar
    if jar is None:
        raise ZasyncError(
            f"{job!r} is not in a database: put it in a queue and commit first"
        )
    if job._p_changed or jar._registered_objects:
        raise ZasyncError(
            f"the transaction that queued {job!r} has uncommitted changes: call "
            f"transaction.commit() before waiting for the job"
        )
    tm = jar.transaction_manager
    if getattr(tm, "explicit", False):
        # An explicit manager refuses begin() inside a transaction; there
        # is nothing to lose (checked above).
        try:
            tm.abort()
        except NoTransaction:
            pass
    tm.begin()


def _until_a_job_finishes() -> Callable[[float], None]:
    # Pauses that end when a dispatcher of this process commits finished
    # jobs; growing from 2 ms to 0.1 s for dispatchers elsewhere.
    step = 0.002

    def pause(left: float) -> None:
        nonlocal step
        with completed:
            completed.wait(min(step, left))
        step = min(step * 2, 0.1)

    return pause


def _wait(job: Job, statuses: tuple[str, ...], seconds: float, what: str) -> None:
    def reached() -> bool:
        _refresh(job)
        return job.status in statuses

    _poll(
        reached,
        timeout=seconds,
        pause=_until_a_job_finishes(),
        message=lambda: (
            f"{job!r} to {what} (status {job.status}): is a dispatcher running "
            f"on this database?"
        ),
    )


def wait_for_result(job: Job, seconds: float = 30) -> Any:
    """Wait until ``job`` is COMPLETED and return its result (a value or a
    Failure). Raises zasync.interfaces.TimeoutError after ``seconds``, and
    ZasyncError when the job is not committed to a database."""
    _wait(job, (COMPLETED,), seconds, "complete")
    return job.result


def wait_for_start(job: Job, seconds: float = 30) -> None:
    """Wait until ``job`` has started (ACTIVE or later). Raises as
    wait_for_result does."""
    _wait(job, (ACTIVE, CALLBACKS, COMPLETED), seconds, "start")


# -- pytest fixtures (registered by the ``zasync.testing`` pytest plugin) --

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for fixtures
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def zasync_db(tmp_path: Path) -> Iterator[ZODB.DB]:
        """A ZODB on a FileStorage in tmp_path, with zasync installed."""
        db = ZODB.DB(FileStorage(str(tmp_path / "Data.fs")))
        install(db)
        yield db
        db.close()

    @pytest.fixture
    def dispatcher(zasync_db: ZODB.DB) -> Iterator[Dispatcher]:
        """A running Dispatcher (2 threads) on ``zasync_db``."""
        d = Dispatcher(zasync_db, threads=2, poll_interval=0.5).start()
        yield d
        d.stop(10)
