"""Claiming: moving due jobs from queues into a worker's slots.

Runs inside a transaction of the dispatcher's own; the caller commits. Two
workers that claim the same job conflict on the job and its shard bucket,
and one of them claims again: a job is never claimed twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from zasync.interfaces import ACTIVE, ASSIGNED, CALLBACKS, PENDING
from zasync.queue import HEAD, SENTINEL, Queue
from zasync.workers import Slot

_AFTER_ANY_DUE = 2**63  # sorts after every due time in a priority rank


def due_items(shard, now_us: int) -> Iterator[tuple[tuple, Any]]:
    """(key, job) of the due jobs of one shard, in key order."""
    low = HEAD
    while True:
        first = next(iter(shard.keys(min=low, excludemin=True)), SENTINEL)
        if first == SENTINEL:
            return
        rank = first[0]
        yield from shard.items(
            min=(rank, -_AFTER_ANY_DUE, 0), max=(rank, now_us, _AFTER_ANY_DUE)
        )
        low = (rank, _AFTER_ANY_DUE, 0)


def iter_due(queue: Queue, now_us: int) -> Iterator[tuple[tuple, Any, Any]]:
    """(key, job, shard) of a queue's due jobs, in run order."""

    def tagged(shard):
        for key, job in due_items(shard, now_us):
            yield key, job, shard

    return heapq.merge(*(tagged(s) for s in queue._shards), key=lambda t: t[0])


def claim(
    queues: Iterable[Queue],
    *,
    slots: list[tuple[Slot, int]],
    worker: str,
    now_us: int,
    start_time=None,
) -> dict[int, list]:
    """Take up to the slots' capacities of due jobs, in run order, honouring
    quotas (a job whose quota is full waits, and so do the later jobs of
    that quota, so a quota of size 1 keeps strict order).

    ``slots`` is a list of (slot, capacity). Returns {slot index: [jobs]}.
    Jobs given to a slot are ASSIGNED to it, except the first, which the
    slot's thread starts at once and which is marked ACTIVE.
    """
    total = sum(capacity for _, capacity in slots)
    taken: list = []
    removals: list = []
    for queue in queues:
        if len(taken) >= total:
            break
        quotas = queue.quotas
        room: dict[str, int] = {}
        blocked: set[str] = set()
        for key, job, shard in iter_due(queue, now_us):
            status = job._status
            if status not in (PENDING, CALLBACKS):
                continue  # not ours to take; recovery puts such jobs right
            names = job.quota_names if status == PENDING else ()
            if names:
                if blocked.intersection(names):
                    blocked.update(names)
                    continue
                free = True
                for name in names:
                    if name not in room:
                        quota = quotas.get(name)
                        room[name] = 2**31 if quota is None else quota.size - len(quota)
                    if room[name] <= 0:
                        free = False
                if not free:
                    blocked.update(names)
                    continue
                oid = job._p_oid
                for name in names:
                    quota = quotas.get(name)
                    if quota is not None:
                        quota._add(oid)
                    room[name] -= 1
            # Removed after the scan: a BTree must not change under its
            # iterator.
            removals.append((shard, key, queue))
            taken.append(job)
            if len(taken) >= total:
                break
        for shard, key, queue in removals:
            del shard[key]
            queue._length.change(-1)
        removals.clear()
    for job in taken:
        job._key = None
    # Round-robin over the slots, within each one's capacity.
    result: dict[int, list] = {slot.index: [] for slot, _ in slots}
    order = [(slot, capacity) for slot, capacity in slots if capacity > 0]
    i = 0
    for job in taken:
        while True:
            slot, capacity = order[i % len(order)]
            i += 1
            if len(result[slot.index]) < capacity:
                break
        jobs = result[slot.index]
        if not jobs and job._status == PENDING:
            job._status = ACTIVE
            job.active_start = start_time
        elif job._status == PENDING:
            job._status = ASSIGNED
        job._worker = worker
        job._slot = slot.index
        slot.active[int.from_bytes(job._p_oid, "big")] = job
        jobs.append(job)
    return {index: jobs for index, jobs in result.items() if jobs}
