"""Claiming: moving due jobs from queues into a worker's slots.

Runs inside a transaction of the dispatcher's own; the caller commits. Two
workers that claim the same job conflict on the job and its shard bucket,
and one of them claims again: a job is never claimed twice.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from zasync.interfaces import ACTIVE, ASSIGNED, CALLBACKS, PENDING
from zasync.queue import AFTER_ANY_DUE, SENTINEL, Queue, live, ranks, walk_buckets
from zasync.workers import Slot

#: stale entries and tombstones met in front of due jobs before a shard is
#: worth compacting (each compaction may fail a producer's commit once)
COMPACT_AFTER = 256


def due_buckets(shard, now_us: int) -> Iterator[list[tuple[tuple, Any]]]:
    """(key, value) of the due entries of one shard, in key order, a list
    per bucket, stale entries and tombstones included (see zasync.queue)."""
    for rank in ranks(shard):
        yield from walk_buckets(
            shard, (rank, -AFTER_ANY_DUE, 0), (rank, now_us, AFTER_ANY_DUE)
        )


def iter_due(
    queue: Queue,
    now_us: int,
    known_stale: set | None = None,
    skipped: dict[int, int] | None = None,
) -> Iterator[tuple[tuple, Any, Any]]:
    """(key, job, shard) of a queue's due entries, in run order. Stale
    entries are included: check them with ``zasync.queue.live`` once the
    jobs are loaded (so that they can be loaded many at a time).

    Tombstones and the entries in ``known_stale`` ((shard oid, key)) are
    left out, and counted by shard index in ``skipped``: a bucket at a
    time, in each shard, before the shards are merged (a worker passes
    over the stale entries of its claims near a shard's end at every claim
    until they are compacted)."""
    known = known_stale if known_stale is not None else frozenset()
    if skipped is None:
        skipped = {}

    def tagged(index, shard):
        oid = shard._p_oid
        for items in due_buckets(shard, now_us):
            keep = [
                (key, job, shard)
                for key, job in items
                if job is not None and (oid, key) not in known
            ]
            if len(keep) < len(items):
                skipped[index] = skipped.get(index, 0) + len(items) - len(keep)
            yield from keep

    shards = [tagged(i, s) for i, s in enumerate(queue._shards)]
    return heapq.merge(*shards, key=lambda t: t[0])


#: entries before the sentinel within which claims leave entries stale
#: rather than write tombstones: about two buckets, where producers insert
NEAR_END = 64


def _near_end(shard, key) -> bool:
    for count, following in enumerate(shard.keys(min=key, excludemin=True)):
        if following == SENTINEL:
            return True
        if count >= NEAR_END:
            return False
    return True


def _near_end_keys(chosen: list) -> set:
    """(id(shard), key) of the chosen entries near their shard's end. Being
    near the end is monotonic in a shard's key order, so each shard's keys
    are checked from the last one back, until one is not near the end."""
    by_shard: dict[int, tuple[Any, list]] = {}
    for key, _job, shard, _names in chosen:
        by_shard.setdefault(id(shard), (shard, []))[1].append(key)
    found = set()
    for shard_id, (shard, keys) in by_shard.items():
        for key in sorted(keys, reverse=True):
            if not _near_end(shard, key):
                break
            found.add((shard_id, key))
    return found


#: consecutive jobs blocked by full quotas after which a claim stops looking
#: (a job without quotas further back waits until some of them have run)
BLOCKED_SCAN_LIMIT = 256


def _windows(items: Iterator, size: int, conn) -> Iterator:
    """The items in windows of ``size``, each window's jobs fetched from
    the storage in one round trip (ZEO, RelStorage) before they are read."""
    while True:
        window = list(itertools.islice(items, size))
        if not window:
            return
        if conn is not None:
            conn.prefetch(
                [
                    job
                    for _key, job, _shard in window
                    if job is not None and job._p_changed is None
                ]
            )
        yield from window


#: a claim passes over at most this many times as many jobs meant for other
#: workers as it wants, plus a chunk (with four workers a quarter of the
#: jobs are its own)
OTHERS_FACTOR = 8

#: in a backlog, jobs are meant for workers by runs of this many oids (jobs
#: queued together have consecutive oids, and sit side by side in the
#: queue): each worker's claims then write tombstones in buckets of their
#: own, where job by job they would write in every bucket the others read
BACKLOG_CHUNK = 64


def _mine(items, queue, rank, now_us: int, fresh_us: int, others, waits, cap):
    """The entries of ``items`` meant for this worker; the others go to
    ``others`` with this worker's rank for them (due for longer than
    ``fresh_us``; the entries end when there are ``cap`` of them) or only
    say in ``waits`` when this worker may take them (due more recently)."""
    for key, job, shard in items:
        if now_us - key[1] < fresh_us:
            if rank(queue, job, False) == 0:
                yield key, job, shard
            else:
                waits.append(key[1] + fresh_us)
        else:
            order = rank(queue, job, True)
            if order == 0:
                yield key, job, shard
            else:
                others.append((order, key, job, shard))
                if len(others) >= cap:
                    return


def _fill(others: list, count: int, conn, found_stale: set) -> list:
    """Up to ``count`` takeable jobs of ``others`` ((rank, key, job,
    shard)), as candidates (key, job, shard, quota names): those this
    worker ranks best, the last first (their workers take them from the
    front). Workers whose own jobs ran short rank each job differently, so
    they do not all take the same ones. Entries gone stale (their jobs
    claimed) are passed over, a window at a time, and added to
    ``found_stale`` ((shard oid, key))."""
    order = sorted(range(len(others)), key=lambda i: (others[i][0], -i))
    found = []
    for start in range(0, len(order), count):
        window = [others[i] for i in order[start : start + count]]
        if conn is not None:
            conn.prefetch([job for _r, _k, job, _s in window if job._p_changed is None])
        for _rank, key, job, shard in window:
            if not live(key, job):
                found_stale.add((shard._p_oid, key))
                continue
            if job._status not in (PENDING, CALLBACKS):
                continue  # claimed since
            found.append((key, job, shard, ()))
            if len(found) >= count:
                return found
    return found


class Claimed(dict):
    """{slot index: [jobs]}, and ``compact``: (queue, shard index) pairs
    whose stale entries are worth removing; ``wait_until_us``: when the
    first job left to the worker it is meant for may be taken (or None)."""

    compact: list
    stale_keys: list
    wait_until_us: int | None = None
    #: only the first slot's jobs were taken, with more due for the others
    more: bool = False


def claim(
    queues: Iterable[Queue],
    *,
    slots: list[tuple[Slot, int]],
    worker: str,
    now_us: int,
    start_time=None,
    spread: bool = False,
    known_stale: set | None = None,
    rank: Callable[[Queue, Any, bool], int] | None = None,
    fresh_us: int = 0,
    fill_first: bool = False,
) -> Claimed:
    """Take up to the slots' capacities of due jobs, in run order, honouring
    quotas (a job whose quota is full waits, and so do the later jobs of
    that quota, so a quota of size 1 keeps strict order).

    ``known_stale`` is a set of (shard oid, key) of stale entries this
    worker knows of: they are skipped without loading their jobs. Those
    the claim finds stale (loading their jobs) are added to it; those it
    leaves stale are in the result's ``stale_keys``: add them to the set
    once the claim has committed (a shard never reuses a key).

    ``slots`` is a list of (slot, capacity). With ``spread`` (other workers
    are claiming too), jobs without quotas are picked at random among the
    first due ones instead of strictly from the front, so that workers
    claiming at once rarely want the same jobs.

    ``rank(queue, job, backlog)`` is this worker's rank for a job among the
    workers serving the queue: 0 when the job is meant for it (see
    Dispatcher._ranking; ``backlog``: the job is due for longer than
    ``fresh_us`` microseconds). A job just due that is not is left to its
    worker, which wakes for it as this one does, and the jobs after it are
    considered; the result's ``wait_until_us`` says when this worker may
    take the first job it left, if its worker has not. In a backlog the
    claim takes its own jobs first, and the others' (those it ranks best
    of the ones it passed over, the last first, as their workers take
    theirs from the front) only when its own run short; jobs under quotas
    are taken in their turn, whoever they are meant for. In a queue
    without quotas the others' jobs are passed over without being
    loaded.

    With ``fill_first``, when there are due jobs enough to fill the first
    slot and give each of the others one, only the first slot's are
    taken, and the result's ``more`` is True (the caller claims for the
    others in transactions of their own); otherwise the jobs are shared
    among the slots, in turn.

    Returns {slot index: [jobs]}. Jobs given to a slot are ASSIGNED to it,
    except the first, which the slot's thread starts at once and which is
    marked ACTIVE.
    """
    total = sum(capacity for _, capacity in slots)
    fill_first = fill_first and len(slots) > 1
    if fill_first:
        # Enough to tell whether each of the others would get a job too:
        # the jobs looked at beyond the first slot's are loaded for nothing.
        total = min(total, slots[0][1] + len(slots) - 1)
    taken: list = []
    picks: list = []  # (queue, chosen entries)
    count = 0  # jobs in picks
    compact: list = []
    left_stale: list = []
    # Entries found stale (their jobs claimed or moved by others) join the
    # known ones: a shard never reuses a key, so they stay stale whatever
    # becomes of this claim.
    known: set = known_stale if known_stale is not None else set()
    wait_until = None
    for queue in queues:
        if count >= total:
            break
        conn = queue._p_jar
        quotas = queue.quotas
        room: dict[str, int] = {}
        blocked: set[str] = set()
        stale: dict[int, int] = {}  # stale entries met, by shard
        index_of = {id(shard): i for i, shard in enumerate(queue._shards)}
        # (key, job, shard, quota names) of the jobs that may be taken,
        # in run order; quota room is counted as if all were taken.
        candidates: list = []
        wanted = total - count
        # Jobs meant for other workers (see ``rank``), due for longer
        # than ``fresh_us``: taken only when this worker's own run short.
        others: list = []
        others_cap = (wanted + BACKLOG_CHUNK) * OTHERS_FACTOR
        spread_here = spread and rank is None
        limit = wanted * 4 if spread_here else wanted
        items = iter_due(queue, now_us, known, stale)
        if rank is not None and not len(quotas):
            # No quotas: which jobs are this worker's is known from their
            # oids alone, so the others' are passed over without loading.
            waits: list = []
            items = _mine(
                items, queue, rank, now_us, fresh_us, others, waits, others_cap
            )
            split_loaded = False
        else:
            waits = []
            split_loaded = rank is not None
        blocked_run = 0
        for key, job, shard in _windows(items, max(16, wanted), conn):
            if job._key != key:
                index = index_of[id(shard)]
                stale[index] = stale.get(index, 0) + 1
                known.add((shard._p_oid, key))
                continue
            if blocked_run >= BLOCKED_SCAN_LIMIT:
                break
            status = job._status
            if status not in (PENDING, CALLBACKS):
                continue  # not ours to take; recovery puts such jobs right
            fresh = now_us - key[1] < fresh_us
            order = rank(queue, job, not fresh) if split_loaded else 0
            if order and status == PENDING:
                if fresh:
                    waits.append(key[1] + fresh_us)
                    # Left, but still first in its quotas: the jobs after
                    # it in them wait (a quota of 1 keeps strict order).
                    blocked.update(job.quota_names)
                    continue
                if not job.quota_names:
                    others.append((order, key, job, shard))
                    if len(others) >= others_cap:
                        break
                    continue
                # A job under quotas is taken in its turn by whoever
                # claims first: its quotas keep their order.
            names = job.quota_names if status == PENDING else ()
            if names:
                if blocked.intersection(names):
                    blocked.update(names)
                    blocked_run += 1
                    continue
                ok = True
                for name in names:
                    if name not in room:
                        quota = quotas.get(name)
                        room[name] = 2**31 if quota is None else quota.size - len(quota)
                    if room[name] <= 0:
                        ok = False
                if not ok:
                    blocked.update(names)
                    blocked_run += 1
                    continue
                for name in names:
                    room[name] -= 1
            blocked_run = 0
            candidates.append((key, job, shard, names))
            if len(candidates) >= limit:
                break
        if waits:
            until = min(waits)
            wait_until = until if wait_until is None else min(wait_until, until)
        if spread_here and len(candidates) > wanted:
            # Quota jobs keep their order; the others are taken from one of
            # the window's segments, chosen at random: two workers claiming
            # at once then want the same jobs (and conflict) about once in
            # four times, where random picks over the whole window nearly
            # always shared one.
            keep = [c for c in candidates[:wanted] if c[3]]
            free = [c for c in candidates if not c[3]]
            count = min(len(free), wanted - len(keep))
            segments = max(1, len(free) // max(1, count))
            start = random.randrange(segments) * count
            picks = free[start : start + count]
            chosen = sorted(keep + picks, key=lambda c: c[0])
        else:
            chosen = candidates[:wanted]
            if len(chosen) < wanted and others:
                # This worker's own jobs ran short (the end of a backlog, or
                # a worker that does not claim): the others' last ones, as
                # their workers take theirs from the front.
                chosen += _fill(others, wanted - len(chosen), conn, known)
                chosen.sort(key=lambda c: c[0])
        picks.append((queue, chosen))
        count += len(chosen)
        for index, stale_count in stale.items():
            if stale_count >= COMPACT_AFTER:
                compact.append((queue, index))
    more = fill_first and count >= total
    if more:
        # The first slot's only: each of the others is then claimed for
        # in its own thread's connection.
        slots = slots[:1]
        room = slots[0][1]
        for i, (queue, chosen) in enumerate(picks):
            picks[i] = (queue, chosen[:room])
            room -= len(picks[i][1])
    for queue, chosen in picks:
        _take(queue, chosen, taken, left_stale)
    result = Claimed(_assign(taken, slots, worker, start_time))
    result.more = more
    result.compact = compact
    result.wait_until_us = wait_until
    result.stale_keys = left_stale
    return result


def _take(queue: Queue, chosen: list, taken: list, left_stale: list) -> None:
    """Take the ``chosen`` entries ((key, job, shard, quota names)) out of
    ``queue``: count them in their quotas, remove them from the shards,
    add their jobs to ``taken`` and the entries left stale to
    ``left_stale`` ((shard oid, key))."""
    quotas = queue.quotas
    for _key, job, _shard, names in chosen:
        for name in names:
            quota = quotas.get(name)
            if quota is not None:
                quota._add(job._p_oid)
    # Where producers add (the shard's last entries), the shard is not
    # written: the entry goes stale when the job stops naming it. Further
    # from the end a tombstone is cheaper for later readers (they need not
    # load the job to skip it). See zasync.queue.
    near_end = _near_end_keys(chosen)
    for key, job, shard, _names in chosen:
        if (id(shard), key) not in near_end:
            shard[key] = None
        else:
            left_stale.append((shard._p_oid, key))
        job._key = None
        taken.append(job)
    if chosen:
        queue._length.change(-len(chosen))


def _assign(taken: list, slots, worker: str, start_time) -> dict[int, list]:
    """Round-robin over the slots, within each one's capacity."""
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
        _give(job, slot, worker, start_time, first=not jobs)
        slot.active[int.from_bytes(job._p_oid, "big")] = job
        jobs.append(job)
    return {index: jobs for index, jobs in result.items() if jobs}


def _give(job, slot, worker: str, start_time, *, first: bool) -> None:
    """Mark ``job`` as the ``slot``'s of ``worker``: a pending job is
    ACTIVE, started at ``start_time``, when it is the ``first`` of the
    slot (its thread starts it at once), else ASSIGNED."""
    if job._status == PENDING:
        if first:
            job._status = ACTIVE
            job.active_start = start_time
        else:
            job._status = ASSIGNED
    job._worker = worker
    job._slot = slot.index
