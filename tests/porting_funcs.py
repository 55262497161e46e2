"""Job functions for the tests of what code ported from zc.async meets
(tests/test_local.py, tests/test_porting_queues.py): importable by module,
as a job's callable must be."""

from __future__ import annotations

from jobfuncs import gate
from zasync import local


def wait_for_annotation(name: str, timeout: float) -> object:
    """Wait (polling) for ``job.annotations[name]`` written by other code."""
    gate("waiting-for-" + name).set()
    return local.getLiveAnnotation(name, "none", timeout, 0.05)


def queue_and_job() -> tuple[str, bool]:
    """What zasync.local.getQueue() says inside a job."""
    return local.getQueue().name, local.getQueue() is local.getJob().queue


def add(a: int, b: int) -> int:
    return a + b
