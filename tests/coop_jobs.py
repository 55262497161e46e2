"""Jobs for tests/test_backoff.py, test_cancel.py and test_timeout.py:
module-level callables (jobs store them by reference) and the registry
they share with the test thread."""

from __future__ import annotations

import threading
import time

from zasync import local
from zasync.job import Job

_lock = threading.Lock()
#: calls per key, counted in the worker thread
calls: dict[str, int] = {}
#: keys of jobs that are running their loop
running: set[str] = set()


def reset() -> None:
    with _lock:
        calls.clear()
        running.clear()


def _count(key: str) -> int:
    with _lock:
        calls[key] = calls.get(key, 0) + 1
        return calls[key]


class Flaky(Exception):
    """An application error that the tests retry."""


def raise_each_time(key: str, error: str) -> None:
    """Raise ``error`` (``os``, ``timeout``, ``key`` or ``flaky``) each
    call, counted under ``key``."""
    n = _count(key)
    errors: dict[str, type[Exception]] = {
        "os": OSError,
        "timeout": TimeoutError,
        "key": KeyError,
        "flaky": Flaky,
    }
    raise errors[error](f"{key} call {n}")


def fail_then_succeed(key: str, times: int) -> str:
    """Raise Flaky for the first ``times`` calls under ``key``."""
    n = _count(key)
    if n <= times:
        raise Flaky(f"{key} call {n}")
    return f"done after {n}"


def cooperative(key: str, how: str, seconds: float = 30.0) -> str:
    """Write to the job's annotations, then loop for up to ``seconds``
    calling ``local.check()`` (``how='check'``) or ``local.progress()``."""
    _count(key)
    job: Job = local.getJob()
    job.annotations["written"] = True
    with _lock:
        running.add(key)
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        step += 1
        if how == "check":
            local.check()
        else:
            local.progress(step)
        time.sleep(0.01)
    return "ran to its end"


def sleeper(key: str, seconds: float) -> str:
    """Sleep without checking: cancel and timeout cannot stop it."""
    _count(key)
    with _lock:
        running.add(key)
    time.sleep(seconds)
    return "slept"
