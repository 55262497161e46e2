"""The worker registry: who is working, and what each worker holds.

Each worker (a Dispatcher, named by its UUID) has a record with one *slot*
per thread. A slot keeps the jobs its thread has claimed (``active``) and
the jobs it finished (``done``, for the retention period). Writers are
kept apart so they never conflict:

- the claim transaction writes a slot's ``active`` only while the thread is
  idle, and the thread writes it only while busy; a producer in the
  worker's process hands a job to a thread it reserved (zasync.handoff),
  writing ``active`` only when it is unchanged since its transaction
  began; producers elsewhere write the slot's ``inbox`` instead, which
  merges their additions with the thread's removals (see Inbox);
- the heartbeat (``WorkerRecord.heartbeat``) is its own small object, written
  in the dispatcher's own transactions;
- live annotations (progress) live on the Slot object itself, written only
  by the slot's thread in side transactions;
- cancel requests for the slot's running jobs are their own small object
  (zasync.cancel_requests), which merges concurrent changes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

import persistent
from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree

from zasync.cancel_requests import CancelRequests

#: seconds a cleanly stopped worker's record stays listed before the next
#: worker to register removes it (its finished jobs go to their queues)
STOPPED_RECORD_SECONDS = 3600.0
#: finished jobs a registering worker moves out of stopped records at most
#: (the rest at the next registration, or when retention prunes them)
MOVE_LIMIT = 2000


class Heartbeat(persistent.Persistent):
    """When the worker was last seen, and until when its running jobs are
    leased (epoch seconds).

    Written by the worker's own transactions, and by a producer's that
    hands a job to one of its threads (zasync.handoff): concurrent changes
    are merged, each time to the later one, but for a reset to 0 (the
    worker starting or stopping), which wins."""

    last_seen: float = 0.0
    lease_until: float = 0.0

    def _p_resolveConflict(self, old: dict, committed: dict, new: dict) -> dict:  # noqa: N802 - ZODB API
        merged = dict(committed)
        for name in ("last_seen", "lease_until"):
            before = old.get(name, 0.0)
            theirs = committed.get(name, 0.0)
            mine = new.get(name, 0.0)
            if mine == before or mine == theirs:
                continue
            if theirs == before:
                merged[name] = mine
            elif 0.0 in (mine, theirs):
                merged[name] = 0.0
            else:
                merged[name] = max(mine, theirs)
        return merged


class Inbox(persistent.Persistent):
    """Jobs handed to a slot's thread by producers in other processes
    (zasync.handoff), by oid (int). Producers add, the worker takes out:
    concurrent changes are merged, so neither side's commit fails on the
    other's (a BTree fails to merge a change that empties it)."""

    def __init__(self) -> None:
        self.jobs: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job: Any) -> None:
        self.jobs[int.from_bytes(job._p_oid, "big")] = job
        self._p_changed = True

    def remove(self, oid: int) -> None:
        del self.jobs[oid]
        self._p_changed = True

    def _p_resolveConflict(self, old: dict, committed: dict, new: dict) -> dict:  # noqa: N802 - ZODB API
        before = old.get("jobs", {})
        mine = new.get("jobs", {})
        merged = dict(committed.get("jobs", {}))
        for oid, job in mine.items():
            if oid not in before:
                merged[oid] = job  # added here
        for oid in before:
            if oid not in mine:
                merged.pop(oid, None)  # taken out here
        return {**committed, "jobs": merged}


class Slot(persistent.Persistent):
    """One thread's jobs: ``active`` (claimed, running or waiting for
    callbacks), ``inbox`` (handed over by producers elsewhere, see Inbox;
    each goes to ``active`` when the thread runs it) and ``done``
    (finished, keyed by end time in microseconds)."""

    index: int = 0
    #: active and done: set by __init__ in every version, None only as the
    #: class-level default
    active: LOBTree = cast(LOBTree, None)
    inbox: Inbox | None = None  # None in slots stored by earlier versions
    done: LOBTree = cast(LOBTree, None)
    #: live annotations of the running jobs: {oid int: {name: value}}
    live: dict | None = None
    #: cancels requested of its running jobs (None in slots stored by
    #: earlier versions: made by the first request)
    cancel_requests: CancelRequests | None = None

    def __init__(self, index: int):
        self.index = index
        self.active = LOBTree()
        self.inbox = Inbox()
        self.done = LOBTree()
        self.live = {}
        self.cancel_requests = CancelRequests()

    def _add_done(self, job: Any, end_us: int) -> None:
        done = self.done
        while end_us in done:
            end_us += 1
        done[end_us] = job


class WorkerRecord(persistent.Persistent):
    """A worker process's entry in the registry."""

    uuid: str = ""
    #: the name people gave it (``zasync worker --name``), or None
    name: str | None = None
    hostname: str = ""
    pid: int = 0
    threads: int = 0
    queue_names: tuple = ()
    started: float = 0.0
    #: the worker's settings, for producers that hand it jobs
    #: (zasync.handoff): how long a lease runs, how often it is seen
    lease_seconds: float = 30.0
    heartbeat_interval: float = 60.0
    #: set when the worker stopped cleanly or was found dead
    stopped: float | None = None
    #: its threads abandoned in a stuck job that still run it: {job id:
    #: stuck since (epoch seconds)}, kept by its watchdog (zasync.watchdog)
    stuck: dict | None = None
    #: set by __init__ in every version: None only as the class-level default
    heartbeat: Heartbeat = cast(Heartbeat, None)
    slots: tuple = ()

    def __init__(self, uuid: str):
        self.uuid = uuid
        self.heartbeat = Heartbeat()

    def _begin(
        self,
        threads: int,
        queue_names: tuple[str, ...],
        clock: float,
        *,
        lease_seconds: float = 30.0,
        heartbeat_interval: float = 60.0,
        name: str | None = None,
    ) -> None:
        self.name = name
        self.hostname = socket.gethostname()
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.pid = os.getpid()
        self.threads = threads
        self.queue_names = tuple(queue_names)
        self.started = clock
        self.stopped = None
        if len(self.slots) < threads:
            self.slots = self.slots + tuple(
                Slot(i) for i in range(len(self.slots), threads)
            )
        for slot in self.slots:
            if slot.inbox is None:
                slot.inbox = Inbox()
        hb = self.heartbeat
        hb.last_seen = clock
        hb.lease_until = 0.0

    def _extend_lease(self, clock: float) -> None:
        """Lease the jobs the worker holds for ``lease_seconds`` from
        ``clock``, unless two thirds of that are still to run."""
        heartbeat = self.heartbeat
        if heartbeat.lease_until - clock < self.lease_seconds * 2 / 3:
            heartbeat.lease_until = clock + self.lease_seconds
            heartbeat.last_seen = clock

    def iter_active(self) -> Iterator[tuple[Slot, Any]]:
        """(slot, job) of the jobs it holds, handed over ones included."""
        for slot in self.slots:
            for job in slot.active.values():
                yield slot, job
            if slot.inbox:
                for job in slot.inbox.jobs.values():
                    yield slot, job

    def active_count(self) -> int:
        return sum(len(slot.active) + len(slot.inbox or ()) for slot in self.slots)

    @property
    def label(self) -> str:
        """What people call it: its name, else ``hostname:pid``."""
        return self.name or f"{self.hostname}:{self.pid}"

    def stopped_cleanly(self) -> bool:
        """Stopped by a clean stop (not found dead): it gave up its lease
        and holds no jobs, within three heartbeats of its last one."""
        stopped = self.stopped
        heartbeat = self.heartbeat
        return (
            stopped is not None
            and not heartbeat.lease_until
            and stopped <= heartbeat.last_seen + 3 * self.heartbeat_interval
            and not self.active_count()
        )

    def is_alive(self, clock: float, heartbeat_interval: float) -> bool:
        """Alive: not stopped, and its lease still running; a worker that
        holds no jobs is also alive when seen within three heartbeats. A
        worker that holds jobs past its lease is dead: its jobs are
        rescued."""
        if self.stopped is not None:
            return False
        hb = self.heartbeat
        if clock <= hb.lease_until:
            return True
        if self.active_count():
            return False
        return clock <= hb.last_seen + 3 * heartbeat_interval

    def __repr__(self) -> str:
        return f"<zasync.WorkerRecord {self.uuid} {self.label}>"


class MaintenanceLease(persistent.Persistent):
    """Which worker runs maintenance (rescue, pruning) until when. A
    ConflictError arbitrates two workers taking it at once."""

    holder: str | None = None
    until: float = 0.0


class WorkerRegistry(persistent.Persistent):
    """Worker records by UUID."""

    #: set by __init__ in every version: None only as the class-level default
    maintenance: MaintenanceLease = cast(MaintenanceLease, None)

    def __init__(self) -> None:
        self._records = OOBTree()
        self.maintenance = MaintenanceLease()

    def get(self, uuid: str) -> WorkerRecord | None:
        return self._records.get(uuid)

    def __getitem__(self, uuid: str) -> WorkerRecord:
        return self._records[uuid]

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records.keys())

    def __len__(self) -> int:
        return len(self._records)

    def values(self) -> Iterable[WorkerRecord]:
        return self._records.values()

    def register(self, uuid: str, *, now: float | None = None) -> WorkerRecord:
        """The record of ``uuid``, made if new. Records of workers that
        stopped cleanly more than :data:`STOPPED_RECORD_SECONDS` before
        ``now`` (default: the time) go first (see :meth:`prune_stopped`)."""
        self.prune_stopped(clock() if now is None else now, keep=uuid)
        record = self._records.get(uuid)
        if record is None:
            record = self._records[uuid] = WorkerRecord(uuid)
        return record

    def prune_stopped(
        self,
        now: float,
        *,
        older_than: float = STOPPED_RECORD_SECONDS,
        limit: int = MOVE_LIMIT,
        keep: str | None = None,
    ) -> list[str]:
        """Remove the records of workers that stopped cleanly more than
        ``older_than`` seconds before ``now`` (but ``keep``'s); return their
        UUIDs. Their finished jobs move to their queues' finished jobs
        (listed and pruned as before), ``limit`` jobs at most: a record
        left with finished jobs stays for the next call. Records of dead
        workers stay (maintenance rescues their jobs, then expires them)."""
        removed = []
        for record in list(self._records.values()):
            if (
                record.uuid == keep
                or not record.stopped_cleanly()
                or now - (record.stopped or now) <= older_than
            ):
                continue
            limit -= _move_done(record, limit)
            if any(len(slot.done) for slot in record.slots):
                break
            del self._records[record.uuid]
            removed.append(record.uuid)
        return removed

    def remove(self, uuid: str) -> None:
        del self._records[uuid]

    def watched_oids(self) -> frozenset:
        """The oids a commit changes when a worker registers, starts or
        stops: the records' tree, its buckets and the records (heartbeats
        and leases are objects of their own, and do not count)."""
        oids = {self._records._p_oid}
        bucket = self._records._firstbucket
        while bucket is not None:
            oids.add(bucket._p_oid)  # None while the tree holds its only bucket
            bucket = bucket._next
        oids.update(record._p_oid for record in self._records.values())
        oids.discard(None)
        return frozenset(oids)


def _move_done(record: WorkerRecord, limit: int) -> int:
    """Move up to ``limit`` of ``record``'s finished jobs to their queues'
    finished jobs (a job whose queue is gone is forgotten); return how
    many."""
    moved = 0
    for slot in record.slots:
        while moved < limit and len(slot.done):
            key = slot.done.minKey()
            job = slot.done.pop(key)
            queue = getattr(job, "queue", None)
            if queue is not None:
                queue.record_finished(job)
            moved += 1
    return moved


def clock() -> float:
    return time.time()
