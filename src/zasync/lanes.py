"""The gates of a queue: where jobs under quotas or a lock wait their
turn, which locks are held, and which unique keys.

A queue's shards (zasync.shards) hold the jobs a claim may take. A job
that needs quotas or a lock (a *gated* job) joins them only when its lane
has room. A job's lane is its quota names and lock (its *gate key*); at
most ``capacity`` jobs of a lane (the smallest size of its quotas; 1 with
a lock) are in the shards at once: the lane's *front*. The others wait in
the ``waiting`` tree, in run order within their lane. When a claim takes
a job of a front, or the job is removed, the next waiting job of its lane
joins the shards in the same transaction, under the key it was queued
with. So a claim meets at most ``capacity`` jobs of a full quota, however
many wait behind them, and its cost grows neither with that backlog nor
with the number of lanes.

Only jobs due when they are queued go through lanes: a scheduled job
waits in the shards (its quotas are checked when it is due, as for any
job in the shards), so that it never holds back the due jobs of its lane.

The front is soft: a job put back at the front of its queue (a retry, a
recovery) goes into the shards at once, and two producers filling an idle
lane at the same moment may both add theirs. A claim checks every quota
and lock all the same (zasync.claim), so this only lets a few more
blocked jobs into the shards.

The trees, kept on one Gates object per queue, each with a head and a
sentinel entry, so that no bucket is emptied or loses its first key while
other transactions change it (as in zasync.shards):

- ``waiting``: (gate key, -priority, due us, oid int) -> job; a job moved
  on to the shards leaves a tombstone (None), removed in bulk by the
  maintenance worker (zasync.lanerepair);
- ``front``: gate key -> (shard key, oid int) of its jobs in the shards,
  in run order;
- ``lanes``: gate key -> its Lane, written when the lane goes idle (its
  front empty, nobody waiting) and by each producer that queues a job to
  wait behind its front. The two conflict, whichever commits first: when
  a claim takes the last job of the front at the same moment, seeing
  nobody waiting, one of them tries again, and the job either goes into
  the shards or is moved on by the claim, instead of waiting behind an
  empty front that nobody would move on (and that the lane's next job
  would pass). Producers waiting in one lane merge with each other, and
  do not conflict with claims that move the lane on;
- ``held``: lock -> (the oid (bytes) of the job that took it last, how
  many times it was taken before): a claim always writes a new value, so
  that two claims taking a lock at once conflict; the lock is free once
  that job no longer runs (zasync.keyed);
- ``unique``: unique key -> (job, writes). A producer that finds the key
  held rewrites the entry, so that its commit conflicts with one that
  frees the key meanwhile (it then tries again, and queues its own job).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import persistent
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

from zasync.interfaces import PENDING
from zasync.keys import oid_bytes, oid_int

#: the gate keys before and after every real one: (quota names, lock)
GATE_HEAD: tuple = ((), "")
GATE_SENTINEL: tuple = (("\U0010ffff",), "")
#: the string keys before and after every lock and unique key
NAME_HEAD = ""
NAME_SENTINEL = "\U0010ffff"
#: after every (-priority, ...) within a lane
AFTER_LANE = 2**62
#: the capacity of a lane whose quotas are all gone
UNLIMITED = 2**31


def _tree(head: Any, sentinel: Any, empty: Any) -> OOBTree:
    tree = OOBTree()
    tree[head] = empty
    tree[sentinel] = empty
    return tree


class Gates(persistent.Persistent):
    """The waiting jobs, fronts, held locks and unique keys of a queue, and
    ``gated``: how many jobs wait in lanes or are in fronts (a
    ``BTrees.Length``; a job queued alone is handed over past them,
    zasync.handoff)."""

    gated: Length | None = None
    lanes: Any = None

    def __init__(self) -> None:
        self.gated = Length()
        self.waiting = _tree((GATE_HEAD,), (GATE_SENTINEL,), None)
        self.front = _tree(GATE_HEAD, GATE_SENTINEL, ())
        self.lanes = _tree(GATE_HEAD, GATE_SENTINEL, None)
        self.held = _tree(NAME_HEAD, NAME_SENTINEL, None)
        self.unique = _tree(NAME_HEAD, NAME_SENTINEL, None)


class Lane(persistent.Persistent):
    """A lane in use (see the module docstring): written when it goes idle,
    and by the producers that queue a job to wait in it."""

    idle: bool = False
    #: how many jobs were queued to wait behind the front
    waits: int = 0

    def _p_resolveConflict(self, old: dict, committed: dict, new: dict) -> dict:  # noqa: N802 - ZODB's API
        """Producers that queued jobs to wait merge; a lane that went idle
        meanwhile conflicts with them (see the module docstring)."""
        old, committed, new = old or {}, committed or {}, new or {}
        idle = old.get("idle", False)
        if committed.get("idle", False) != idle or new.get("idle", False) != idle:
            raise ConflictError("a lane went idle while a job was queued to wait in it")
        waits = committed.get("waits", 0) + new.get("waits", 0) - old.get("waits", 0)
        return {**committed, "waits": waits}


def front_of(gates: Gates, gate: tuple) -> tuple:
    """The (shard key, oid int) of lane ``gate``'s jobs in the shards."""
    return gates.front.get(gate, ())


def _set_front(gates: Gates, gate: tuple, front: tuple) -> None:
    """Store lane ``gate``'s front; with an empty front the lane goes idle
    (its Lane written, so that a producer that read it tries again)."""
    lanes = gates.lanes
    if front:
        if gates.front.get(gate) != front:
            gates.front[gate] = front
        if lanes is not None and gate not in lanes:
            lanes[gate] = Lane()
        return
    if gate in gates.front:
        del gates.front[gate]
    lane = lanes.get(gate) if lanes is not None else None
    if lane is not None:
        lane.idle = True
        del lanes[gate]


def gates_of(queue: Any, *, create: bool = False) -> Gates | None:
    """The queue's Gates (made when ``create`` and missing: a queue stored
    by an earlier version)."""
    gates = getattr(queue, "_gates", None)
    if gates is None and create:
        gates = queue._gates = Gates()
        if queue._p_jar is not None:
            queue._p_jar.add(gates)
    return gates


def gate_key(job: Any) -> tuple | None:
    """The lane of a job: (quota names, lock or ""); None for a job that
    needs neither."""
    names = job.quota_names
    lock = job.lock
    if not names and not lock:
        return None
    return (tuple(names), lock or "")


def capacity(queue: Any, gate: tuple) -> int:
    """How many jobs of lane ``gate`` may be in the shards at once."""
    names, lock = gate
    sizes = [
        quota.size for name in names if (quota := queue.quotas.get(name)) is not None
    ]
    if lock:
        sizes.append(1)
    return max(1, min(sizes, default=UNLIMITED))


def in_lane(job: Any) -> bool:
    """Whether a pending job waits in its lane (not in the shards)."""
    key = job._key
    return key is not None and len(key) == 4


def waiting_of(gates: Gates, gate: tuple) -> Iterator[tuple[tuple, Any]]:
    """(key, job) of the jobs waiting in lane ``gate``, in run order
    (tombstones left out: see promote)."""
    items = gates.waiting.items(min=(gate,), max=(gate, AFTER_LANE))
    return ((key, job) for key, job in items if job is not None)


#: puts a job into a shard under its due time (Queue._place)
Place = Callable[[Any, int], None]


def enter(queue: Any, job: Any, due_us: int, place: Place) -> None:
    """Queue a gated ``job``, due now: into the shards (through
    ``place(job, due_us)``) when it is among the first ``capacity`` jobs
    of its lane (the last of those then goes back to wait in the lane),
    else at its place in the lane."""
    gate = gate_key(job)
    assert gate is not None
    gates = gates_of(queue, create=True)
    assert gates is not None
    front = front_of(gates, gate)
    key = (-job.priority, due_us, oid_int(job))
    count_gated(gates, 1)
    if front and (
        len(front) >= capacity(queue, gate) or next(waiting_of(gates, gate), None)
    ):
        if key >= front[-1][0] or not _demote(queue, gates, gate, front):
            # The job waits because of what this transaction read of the
            # front: a claim that empties it meanwhile conflicts with this
            # commit, and the retry sees the room.
            lane = gates.lanes.get(gate) if gates.lanes is not None else None
            if lane is not None:
                lane.waits += 1
            gates.waiting[(gate, *key)] = job
            job._key = (gate, *key)
            return
        front = front[:-1]
    place(job, due_us)
    _set_front(gates, gate, _with(front, job))


def _with(front: tuple, job: Any) -> tuple:
    """``front`` ((shard key, oid int), in run order) with ``job`` in it."""
    oid = oid_int(job)
    return tuple(sorted((*(e for e in front if e[1] != oid), (job._key, oid))))


def _demote(queue: Any, gates: Gates, gate: tuple, front: tuple) -> bool:
    """Send the last job of a lane's front back to wait in the lane (a
    better job is queued); False when it cannot be found pending in the
    shards (it is then left alone)."""
    key, oid = front[-1]
    jar = queue._p_jar
    job = jar.get(oid_bytes(oid)) if jar is not None else None
    if job is None or job._status != PENDING or job._key != key:
        return False
    if not queue._unplace(job):
        return False
    gates.waiting[(gate, *key)] = job
    job._key = (gate, *key)
    return True


def join_front(queue: Any, job: Any) -> None:
    """Count a gated job put straight into the shards (put back at the
    front of its queue) in its lane's front."""
    gate = gate_key(job)
    gates = gates_of(queue, create=True)
    if gate is None or gates is None:
        return
    front = front_of(gates, gate)
    if all(entry[1] != oid_int(job) for entry in front):
        count_gated(gates, 1)
    _set_front(gates, gate, _with(front, job))


def count_gated(gates: Gates, change: int) -> None:
    if gates.gated is not None:
        gates.gated.change(change)


def gated_counter(queue: Any) -> Length | None:
    """The queue's count of jobs in lanes and fronts (see Gates)."""
    gates = gates_of(queue)
    return None if gates is None else gates.gated


def left_shards(queue: Any, job: Any) -> None:
    """A gated job left the shards (claimed, removed): its lane's next
    waiting jobs join them, as many as its front has room for."""
    gates = gates_of(queue)
    gate = gate_key(job)
    if gates is None or gate is None:
        return
    front = front_of(gates, gate)
    oid = oid_int(job)
    if all(entry[1] != oid for entry in front):
        return
    count_gated(gates, -1)
    promote(queue, gates, gate, tuple(e for e in front if e[1] != oid))


def promote(queue: Any, gates: Gates, gate: tuple, front: tuple) -> int:
    """Move the first waiting jobs of lane ``gate`` into the shards while
    its ``front`` has room (under the keys they were queued with, through
    ``queue._place``); store the front. Returns how many moved."""
    room = capacity(queue, gate) - len(front)
    moving = []
    if room > 0:
        for key, job in waiting_of(gates, gate):
            moving.append((key, job))
            if len(moving) >= room:
                break
    for key, job in moving:
        # A tombstone, not a delete: a claim then changes no bucket's
        # shape, and merges with producers adding to the same buckets
        # (zasync.lanerepair removes tombstones in bulk).
        gates.waiting[key] = None
        if job._key != key or job._status != PENDING:
            count_gated(gates, -1)
            continue  # not pending here any more
        queue._place(job, key[2])
        front = _with(front, job)
    _set_front(gates, gate, front)
    return len(moving)


def leave_lane(queue: Any, job: Any) -> bool:
    """Take a pending job out of its lane (removed before it ran); False
    when it does not wait in one."""
    gates = gates_of(queue)
    key = job._key
    if gates is None or not in_lane(job) or gates.waiting.get(key) is not job:
        return False
    del gates.waiting[key]
    job._key = None
    count_gated(gates, -1)
    return True


def any_front(gates: Gates | None) -> bool:
    """Whether gated jobs may be in the shards (read from one key)."""
    if gates is None:
        return False
    first = next(iter(gates.front.keys(min=GATE_HEAD, excludemin=True)), None)
    return first is not None and first != GATE_SENTINEL


def lanes_waiting(gates: Gates) -> Iterator[tuple]:
    """The gate keys of the lanes with entries in the waiting tree (jobs or
    tombstones), in order: one key look-up per lane."""
    low: tuple = (GATE_HEAD, AFTER_LANE)
    while True:
        first = next(iter(gates.waiting.keys(min=low, excludemin=True)), None)
        if first is None or first[0] == GATE_SENTINEL:
            return
        yield first[0]
        low = (first[0], AFTER_LANE)


def iter_waiting(gates: Gates | None) -> list[Iterator[tuple[tuple, Any]]]:
    """For each lane, (run-order key, job) of its waiting jobs, in run
    order."""
    if gates is None:
        return []
    return [_live_waiting(waiting_of(gates, gate)) for gate in lanes_waiting(gates)]


def _live_waiting(items: Iterator[tuple[tuple, Any]]) -> Iterator[tuple[tuple, Any]]:
    for key, job in items:
        if job is not None and job._key == key:
            yield key[1:], job
