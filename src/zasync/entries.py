"""How jobs enter and leave a queue's shards and lanes: the Entries base
of zasync.queue.Queue (put back, taken out, counted), and the look-ups of
its unique keys and locks (zasync.lanes)."""

from __future__ import annotations

import datetime
from typing import Any, cast

from BTrees.LOBTree import LOBTree

from zasync import hooks
from zasync.interfaces import CALLBACKS
from zasync.job import Job, now
from zasync.keyed import holder, release_key, unique_holder
from zasync.keys import oid_int, to_us
from zasync.lanes import (
    enter,
    gate_key,
    in_lane,
    join_front,
    leave_lane,
    left_shards,
)
from zasync.pending import NotPendingError
from zasync.shards import insert, producer_shard, shard_index


class Entries:
    """The entries of a queue's pending jobs (a base of zasync.queue.Queue)."""

    name: str = ""
    _shards: tuple = ()
    _added: tuple = ()
    _finished: Any = None
    _p_jar: Any

    @property
    def counter(self) -> Any:
        raise NotImplementedError

    def count_taken(self, count: int) -> None:
        """Count ``count`` jobs a claim took out of the shards."""
        self.counter.change(-count)

    def _count_added(self, index: int, count: int) -> None:
        added = self._added
        (added[index] if added else self.counter).change(count)

    def _insert(self, job: Job, due_us: int, *, in_place: bool = False) -> None:
        """A job enters the queue: into a shard, or (needing quotas or a
        lock) into its lane when the lane is full (zasync.lanes); with
        ``in_place``, into a shard whatever its lane holds."""
        index = producer_shard(len(self._shards))
        if gate_key(job) is None or job._status == CALLBACKS or due_us > to_us(now()):
            # Scheduled jobs wait in the shards: a lane holds due jobs only.
            self._place(job, due_us, index)
        elif in_place:
            self._place(job, due_us, index)
            join_front(self, job)
        else:
            enter(self, job, due_us, lambda j, due: self._place(j, due, index))
        self._count_added(index, 1)

    def _place(self, job: Job, due_us: int, index: int | None = None) -> None:
        """Put ``job`` into a shard (this thread's, or ``index``)."""
        if index is None:
            index = producer_shard(len(self._shards))
        key = (-job.priority, due_us, oid_int(job))
        job._key = insert(self._shards[index], job, key)

    def _unplace(self, job: Job) -> bool:
        """Take a pending job out of its shard (not counted: it stays
        pending, zasync.lanes); False when no shard has it."""
        index = None if in_lane(job) else shard_index(self._shards, job)
        if index is None:
            return False
        del self._shards[index][job._key]
        job._key = None
        return True

    def _withdraw(self, job: Job) -> bool:
        """Take out a job put in this very transaction as if it had never
        been (its entry, its count; zasync.handoff), writing nothing a
        worker writes; False when it is not pending here."""
        shards = self._shards
        if in_lane(job) or gate_key(job) is not None:
            return False
        index = shard_index(shards, job, producer_shard(len(shards)))
        if job._queue is not self or index is None:
            return False
        del shards[index][job._key]
        job._key = None
        self._count_added(index, -1)
        return True

    def record_finished(self, job: Job) -> None:
        """Keep a job that finished outside a worker (cancelled, failed
        before it started) with the finished jobs, for listing and
        retention."""
        if self._finished is None:
            self._finished = LOBTree()
        release_key(self, job)
        key = to_us(job.active_end or now())
        while key in self._finished:
            key += 1
        self._finished[key] = job

    def requeue(
        self, job: Job, *, front: bool = False, when: datetime.datetime | None = None
    ) -> None:
        """Put a job back (a retry, an interruption, late callbacks)."""
        if front:
            # Before every job due in the usual way, later requeues first,
            # and never the same key twice (readers remember stale keys).
            due = -to_us(now())
        else:
            when = when or now()
            due = to_us(when)
            job.begin_after = when
        self._insert(job, due, in_place=front)
        job._requeued()
        if self._p_jar is not None:
            hooks.queues_changed(self._p_jar)

    # -- consuming ----------------------------------------------------------

    def _shard_of(self, job: Job) -> Any:
        index = shard_index(self._shards, job)
        return None if index is None else self._shards[index]

    def take(self, job: Job) -> None:
        """Remove a pending job from its shard or lane (no status change);
        its unique key is free again."""
        if not leave_lane(self, job):
            if not self._unplace(job):
                raise NotPendingError(f"{job!r} is not pending in queue {self.name!r}")
            left_shards(self, job)
        release_key(self, job)
        self.counter.change(-1)

    def unique_job(self, key: str) -> Job | None:
        """The job holding unique ``key`` in this queue (pending or
        scheduled; running, with ``unique_until="finished"``), or None."""
        return cast(Job | None, unique_holder(self, key))

    def lock_holder(self, lock: str) -> Job | None:
        """The job running (or assigned to a worker) under ``lock``, or None."""
        return cast(Job | None, holder(self, lock))
