"""Jobs for tests/test_watchdog.py: jobs that never check, module-level
(jobs store their callable by reference), and the registry they share
with the test thread."""

from __future__ import annotations

import threading
import time

from zasync import local
from zasync.job import Job

_lock = threading.Lock()
#: calls per key, counted in the worker thread
calls: dict[str, int] = {}
#: keys of the jobs that started
running: set[str] = set()
#: keys of the jobs whose call ended, and how
ended: dict[str, str] = {}
#: set by the test to let ``blocked`` jobs return
release = threading.Event()


def reset() -> None:
    with _lock:
        calls.clear()
        running.clear()
        ended.clear()
    release.set()  # let any job still blocked go
    release.clear()


def _started(key: str) -> None:
    with _lock:
        calls[key] = calls.get(key, 0) + 1
        running.add(key)


def _ended(key: str, how: str) -> None:
    with _lock:
        ended[key] = how


def busy_loop(key: str, seconds: float = 60.0) -> str:
    """Write to the job's annotations, then spin in pure Python for up to
    ``seconds`` without ever calling zasync.local."""
    _started(key)
    local.getJob().annotations["written"] = True
    deadline = time.monotonic() + seconds
    total = 0
    try:
        while time.monotonic() < deadline:
            total += 1
    except BaseException as e:
        _ended(key, type(e).__name__)
        raise
    _ended(key, "returned")
    return "looped to its end"


def sleep_forever(key: str) -> str:
    """Block in C code for an hour: nothing reaches it."""
    _started(key)
    time.sleep(3600)
    return "woke"  # pragma: no cover - never in a test run


def blocked(key: str, marker: object = None) -> str:
    """Write to the job's annotations and to a root object, then block in C
    code (an Event's lock) until the test sets ``release``; swallow the
    interruption that reaches it then (as careless code does), and return."""
    _started(key)
    job: Job = local.getJob()
    job.annotations["late"] = True
    job._p_jar.root()["late write"] = key
    try:
        release.wait(3600)
    except Exception as e:
        _ended(f"{key} swallowed", type(e).__name__)
    _ended(key, "returned")
    return "late result"


def until(key: str, seconds: float) -> str:
    """Spin in pure Python until ``seconds`` after the job's start, then
    return (about when the watchdog interrupts it)."""
    _started(key)
    started = local.getJob().active_start.timestamp()
    while time.time() < started + seconds:
        pass
    return "done"


def quick(key: str) -> str:
    _started(key)
    _ended(key, "returned")
    return "quick"
