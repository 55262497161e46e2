"""Putting lanes and locks right, and tidying them: a front entry whose
job left the shards without telling its lane is repaired, and jobs left
waiting behind a front with room (which development versions could leave
when a claim emptied a front as a job was queued to wait in it) are moved
on; the entries of
locks whose holders no longer run and the tombstones promotions leave in
the waiting tree are removed (zasync.lanes, zasync.keyed). The
maintenance worker checks and does it, in transactions of its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ZODB.POSException import POSKeyError

from zasync.interfaces import PENDING
from zasync.keyed import holder
from zasync.keys import oid_bytes
from zasync.lanes import (
    AFTER_LANE,
    GATE_HEAD,
    GATE_SENTINEL,
    NAME_HEAD,
    NAME_SENTINEL,
    capacity,
    count_gated,
    front_of,
    gates_of,
    lanes_waiting,
    promote,
    waiting_of,
)

# -- repair -------------------------------------------------------------------


def _front_entry_lost(queue: Any, entry: tuple) -> bool:
    """Whether a front entry ((shard key, oid int)) no longer stands for a
    job pending in the queue's shards under that key."""
    key, oid = entry
    try:
        job = queue._p_jar.get(oid_bytes(oid))
        return job._status != PENDING or job._key != key or job._queue is not queue
    except (POSKeyError, KeyError):
        return True


def needs_repair(queue: Any) -> bool:
    """Whether a lane of ``queue`` holds room for waiting jobs that no job
    of its front will give (a job that left the shards without passing
    through Queue.take or a claim), or a lock is held by a job that no
    longer runs. Reads only."""
    gates = gates_of(queue)
    if gates is None or queue._p_jar is None:
        return False
    for gate, front in gates.front.items(min=GATE_HEAD, excludemin=True):
        if gate == GATE_SENTINEL:
            break
        if any(_front_entry_lost(queue, entry) for entry in front):
            return True
    for lock in gates.held.keys(min=NAME_HEAD, excludemin=True):
        if lock != NAME_SENTINEL and holder(queue, lock) is None:
            return True
    if any(True for _ in _held_back(queue, gates)):
        return True
    return any(True for _ in _tombstones(gates, 1))


def _held_back(queue: Any, gates: Any) -> Iterator[tuple]:
    """The lanes whose front has room while jobs wait in them."""
    for gate in lanes_waiting(gates):
        if len(front_of(gates, gate)) < capacity(queue, gate) and next(
            waiting_of(gates, gate), None
        ):
            yield gate


#: tombstones of the waiting tree removed per repair
TOMBSTONES_PER_REPAIR = 5000


def _tombstones(gates: Any, limit: int) -> Iterator[tuple]:
    """Keys of the tombstones at the head of each lane of the waiting tree
    (where promotions leave them), up to ``limit``."""
    tree = gates.waiting
    found = 0
    for gate in lanes_waiting(gates):
        for key, job in tree.items(min=(gate,), max=(gate, AFTER_LANE)):
            if job is not None or found >= limit:
                break
            found += 1
            yield key
        if found >= limit:
            return


def repair(queue: Any) -> tuple[int, int]:
    """Drop the lost entries of the fronts (and promote the jobs waiting
    behind them), move on the jobs waiting behind a front with room, drop
    the locks held by jobs that no longer run and the tombstones; return
    how many front entries were dropped or jobs moved on, and how many
    lock entries and tombstones were removed."""
    gates = gates_of(queue)
    if gates is None:
        return 0, 0
    dropped = freed = 0
    fronts = list(gates.front.items(min=GATE_HEAD, excludemin=True))
    for gate, front in fronts:
        if gate == GATE_SENTINEL:
            break
        kept = tuple(e for e in front if not _front_entry_lost(queue, e))
        if len(kept) < len(front):
            dropped += len(front) - len(kept)
            count_gated(gates, len(kept) - len(front))
            promote(queue, gates, gate, kept)
    for gate in list(_held_back(queue, gates)):
        dropped += promote(queue, gates, gate, front_of(gates, gate))
    for lock in list(gates.held.keys(min=NAME_HEAD, excludemin=True)):
        if lock != NAME_SENTINEL and holder(queue, lock) is None:
            del gates.held[lock]
            freed += 1
    for key in list(_tombstones(gates, TOMBSTONES_PER_REPAIR)):
        del gates.waiting[key]
        freed += 1
    return dropped, freed
