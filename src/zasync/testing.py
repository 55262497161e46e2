"""Helpers for tests: ``wait_for_result``, ``wait_for_start``, and pytest
fixtures (``zasync_db``, ``dispatcher``) for a FileStorage database in a
temporary directory with a running dispatcher."""

from __future__ import annotations

import time
from typing import Any

from transaction.interfaces import NoTransaction

from zasync.interfaces import ACTIVE, CALLBACKS, COMPLETED, ZasyncError
from zasync.interfaces import TimeoutError as ZasyncTimeoutError


def _refresh(job) -> None:
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


def _wait(job, statuses, seconds: float, what: str) -> None:
    from zasync.dispatcher import completed

    deadline = time.monotonic() + seconds
    step = 0.002
    while True:
        _refresh(job)
        if job.status in statuses:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ZasyncTimeoutError(
                f"{job!r} did not {what} within {seconds} s (status {job.status}); "
                f"is a dispatcher running on this database?"
            )
        with completed:
            completed.wait(min(step, remaining))
        step = min(step * 2, 0.1)


def wait_for_result(job, seconds: float = 30) -> Any:
    """Wait until ``job`` is COMPLETED and return its result (a value or a
    Failure). Raises zasync.interfaces.TimeoutError after ``seconds``."""
    _wait(job, (COMPLETED,), seconds, "complete")
    return job.result


def wait_for_start(job, seconds: float = 30) -> None:
    """Wait until ``job`` has started (ACTIVE or later)."""
    _wait(job, (ACTIVE, CALLBACKS, COMPLETED), seconds, "start")


# -- pytest fixtures (registered by the ``zasync.testing`` pytest plugin) --

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for fixtures
    pytest = None

if pytest is not None:

    @pytest.fixture
    def zasync_db(tmp_path):
        """A ZODB on a FileStorage in tmp_path, with zasync installed."""
        import ZODB
        from ZODB.FileStorage import FileStorage

        from zasync.queue import install

        db = ZODB.DB(FileStorage(str(tmp_path / "Data.fs")))
        install(db)
        yield db
        db.close()

    @pytest.fixture
    def dispatcher(zasync_db):
        """A running Dispatcher (2 threads) on ``zasync_db``."""
        from zasync.dispatcher import Dispatcher

        d = Dispatcher(zasync_db, threads=2, poll_interval=0.5).start()
        yield d
        d.stop(10)
