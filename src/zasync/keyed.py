"""The locks held in a queue and its unique keys (kept on its
zasync.lanes.Gates): who holds a lock, taking and giving it back; who
holds a unique key, and freeing it."""

from __future__ import annotations

from typing import Any

from ZODB.POSException import POSKeyError

from zasync.interfaces import ACTIVE, ASSIGNED, PENDING
from zasync.lanes import gates_of

# -- locks ------------------------------------------------------------------


def holder(queue: Any, lock: str) -> Any:
    """The job running under ``lock`` (assigned or active), or None."""
    return _running(queue, lock, _holder_oid(gates_of(queue), lock))


def _running(queue: Any, lock: str, oid: bytes | None) -> Any:
    """The job ``oid`` when it runs under ``lock`` (assigned or active)."""
    if oid is None or queue._p_jar is None:
        return None
    try:
        job = queue._p_jar.get(oid)
        status = job._status
    except (POSKeyError, KeyError):
        return None
    if status not in (ASSIGNED, ACTIVE) or job.lock != lock:
        return None
    if status == ACTIVE and hasattr(job, "_launch"):
        return None  # a batch, launched: its members run on their own
    return job


def lock_free(queue: Any, lock: str, job: Any) -> bool:
    """Whether ``job`` may take ``lock``: nobody holds it, or ``job`` does
    (put back after an interruption), or the job that took it no longer
    runs (it finished, or was put back in its queue). A job's own
    transaction never writes its lock: the entry stays until the next
    holder takes it or the maintenance worker removes it
    (zasync.lanerepair)."""
    oid = _holder_oid(gates_of(queue), lock)
    if oid is None or oid == job._p_oid:
        return True
    return _running(queue, lock, oid) is None


def hold_lock(queue: Any, job: Any) -> None:
    gates = gates_of(queue, create=True)
    assert gates is not None
    # Always a new value, also when the job took the lock before (it was
    # put back after an interruption): two claims taking one lock at once
    # must both write its entry, so that one of them conflicts.
    entry = gates.held.get(job.lock)
    takes = entry[1] + 1 if entry is not None else 0
    gates.held[job.lock] = (job._p_oid, takes)


def _holder_oid(gates: Any, lock: str) -> bytes | None:
    """The oid of the job that last took ``lock``, or None."""
    entry = gates.held.get(lock) if gates is not None else None
    return None if entry is None else entry[0]


# -- unique keys --------------------------------------------------------------


def holds_key(queue: Any, job: Any, key: str) -> bool:
    """Whether ``job`` holds unique ``key`` in ``queue``: pending or
    scheduled there, or (``unique_until="finished"``) running."""
    if job.unique_key != key or job._queue is not queue:
        return False
    status = job._status
    if status == PENDING:
        return True
    return job.unique_until == "finished" and status in (ASSIGNED, ACTIVE)


def unique_holder(queue: Any, key: str) -> Any:
    """The job holding unique ``key`` in ``queue``, or None."""
    gates = gates_of(queue)
    entry = gates.unique.get(key) if gates is not None else None
    if entry is None:
        return None
    job = entry[0]
    return job if holds_key(queue, job, key) else None


def touch_key(queue: Any, key: str) -> None:
    """Rewrite the entry of a held key, so that this transaction conflicts
    with one that frees the key meanwhile (see zasync.lanes)."""
    gates = gates_of(queue)
    assert gates is not None
    job, writes = gates.unique[key]
    gates.unique[key] = (job, writes + 1)


def hold_key(queue: Any, job: Any) -> None:
    gates = gates_of(queue, create=True)
    assert gates is not None
    gates.unique[job.unique_key] = (job, 0)


def release_key(queue: Any, job: Any) -> None:
    """Free ``job``'s unique key if it holds the entry."""
    key = job.unique_key
    gates = gates_of(queue)
    if not key or gates is None:
        return
    entry = gates.unique.get(key)
    if entry is not None and entry[0] is job:
        del gates.unique[key]
