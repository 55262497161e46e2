"""What a claim may take and how it takes it: the room left in a queue's
quotas and locks while a claim chooses jobs, and the writes that take the
chosen jobs out of the queue (zasync.claim)."""

from __future__ import annotations

from typing import Any

from zasync.interfaces import PENDING
from zasync.keyed import hold_lock, lock_free, release_key
from zasync.lanes import left_shards
from zasync.shards import near_end_keys


class QuotaRoom:
    """The room left in a queue's quotas and locks while a claim chooses
    jobs, as if all the jobs admitted so far were taken. A job of a full
    quota or a held lock waits, and so do the later jobs in the shards of
    that quota or lock. With the lanes (zasync.lanes) a quota of size 1 and
    a lock keep strict run order; in a larger quota, a job of higher
    priority may send the last of its lane's front back to wait, and a job
    of another lane of that quota may then start before it."""

    def __init__(self, queue: Any):
        self.queue = queue
        self.quotas = queue.quotas
        self.room: dict[str, int] = {}
        self.blocked: set[str] = set()
        self.locks: set[str] = set()  # taken or blocked in this claim
        #: jobs refused in a row
        self.refused = 0

    def block(self, names: tuple[str, ...], lock: str | None = None) -> None:
        self.blocked.update(names)
        if lock:
            self.locks.add(lock)

    def admit(self, names: tuple[str, ...], job: Any = None) -> bool:
        lock = job.lock if job is not None else None
        if (names and (self.blocked.intersection(names) or not self._fits(names))) or (
            lock and (lock in self.locks or not lock_free(self.queue, lock, job))
        ):
            self.block(names, lock)
            self.refused += 1
            return False
        for name in names:
            self.room[name] -= 1
        if lock:
            self.locks.add(lock)
        self.refused = 0
        return True

    def _fits(self, names: tuple[str, ...]) -> bool:
        room = self.room
        for name in names:
            if name not in room:
                quota = self.quotas.get(name)
                room[name] = 2**31 if quota is None else quota.size - len(quota)
        return all(room[name] > 0 for name in names)


def take(queue: Any, chosen: list, taken: list, left_stale: list) -> None:
    """Take the ``chosen`` entries ((key, job, shard, quota names)) out of
    ``queue``: count them in their quotas, remove them from the shards,
    add their jobs to ``taken`` and the entries left stale to
    ``left_stale`` ((shard oid, key))."""
    quotas = queue.quotas
    for _key, job, _shard, names in chosen:
        for name in names:
            quota = quotas.get(name)
            if quota is not None:
                quota.hold(job._p_oid)
        if job._status == PENDING:
            if job.lock:
                hold_lock(queue, job)
            if job.unique_key and job.unique_until == "started":
                release_key(queue, job)
    # Where producers add (the shard's last entries), the shard is not
    # written: the entry goes stale when the job stops naming it. Further
    # from the end a tombstone is cheaper for later readers (they need not
    # load the job to skip it). See zasync.shards.
    near_end = near_end_keys(chosen)
    for key, job, shard, _names in chosen:
        if (id(shard), key) not in near_end:
            shard[key] = None
        else:
            left_stale.append((shard._p_oid, key))
        job._key = None
        taken.append(job)
    for _key, job, _shard, _names in chosen:
        if job._status == PENDING:
            # The next jobs of its lane join the shards (zasync.lanes).
            left_shards(queue, job)
    if chosen:
        queue.count_taken(len(chosen))
