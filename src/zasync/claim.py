"""Claiming: moving due jobs from queues into a worker's slots.

Runs inside a transaction of the dispatcher's own; the caller commits. Two
workers that claim the same job conflict on the job and its shard bucket,
and one of them claims again: a job is never claimed twice.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Any

from zasync.admission import QuotaRoom, take
from zasync.interfaces import CALLBACKS, PENDING
from zasync.keys import oid_int
from zasync.lanes import any_front, gate_key, gates_of
from zasync.placement import BACKLOG_CHUNK, Rank
from zasync.queue import Queue
from zasync.shards import iter_due, live
from zasync.workers import Slot

#: stale entries and tombstones met in front of due jobs before a shard is
#: worth compacting (each compaction may fail a producer's commit once)
COMPACT_AFTER = 256


#: consecutive jobs blocked by full quotas after which a claim stops looking
#: (a job without quotas further back waits until some of them have run)
BLOCKED_SCAN_LIMIT = 256


def _windows(items: Iterator, size: int, conn: Any) -> Iterator:
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


def _mine(
    items: Iterable[tuple[tuple, Any, Any]],
    queue: Queue,
    rank: Rank,
    now_us: int,
    fresh_us: int,
    others: list,
    waits: list,
    cap: int,
) -> Iterator[tuple[tuple, Any, Any]]:
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


def _fill(others: list, count: int, conn: Any, found_stale: set) -> list:
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
            if job._status == PENDING and gate_key(job) is not None:
                continue  # quotas and locks are checked in their turn
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


class _Left(enum.Enum):
    """Whether a job is left to another worker (see _left_to_others)."""

    NO = 0
    WAITED_FOR = 1
    PASSED_OVER = 2


@dataclasses.dataclass
class _Scan:
    """What a claim found in one queue, in run order."""

    #: (key, job, shard, quota names) of the jobs that may be taken
    candidates: list = dataclasses.field(default_factory=list)
    #: (rank, key, job, shard) of jobs meant for other workers, due for
    #: longer than the grace: taken only when this worker's own run short
    others: list = dataclasses.field(default_factory=list)
    #: when jobs left to their own workers may be taken (microseconds)
    waits: list = dataclasses.field(default_factory=list)
    #: stale entries met, by shard index
    stale: dict = dataclasses.field(default_factory=dict)


def claim(
    queues: Iterable[Queue],
    *,
    slots: list[tuple[Slot, int]],
    worker: str,
    now_us: int,
    start_time: Any = None,
    spread: bool = False,
    known_stale: set | None = None,
    rank: Rank | None = None,
    fresh_us: int = 0,
    fill_first: bool = False,
) -> Claimed:
    """Take up to the slots' capacities of due jobs, in run order, honouring
    quotas and locks (a job whose quota is full or whose lock is held
    waits, and so do the later jobs of that quota or lock in the shards;
    see zasync.admission.QuotaRoom for the order they keep).

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
    workers serving the queue (zasync.placement): 0 when the job is meant
    for it (``backlog``: the job is due for longer than ``fresh_us``
    microseconds). A job just due that is not is left to its worker, which
    wakes for it as this one does, and the jobs after it are considered;
    the result's ``wait_until_us`` says when this worker may take the
    first job it left, if its worker has not. In a backlog the claim takes
    its own jobs first, and the others' (those it ranks best of the ones
    it passed over, the last first, as their workers take theirs from the
    front) only when its own run short; jobs under quotas are taken in
    their turn, whoever they are meant for. In a queue without quotas the
    others' jobs are passed over without being loaded.

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
    # Entries found stale (their jobs claimed or moved by others) join the
    # known ones: a shard never reuses a key, so they stay stale whatever
    # becomes of this claim.
    known: set = known_stale if known_stale is not None else set()
    spread = spread and rank is None
    picks: list[tuple[Queue, list]] = []
    count = 0  # jobs in picks
    compact: list = []
    waits: list[int] = []
    for queue in queues:
        if count >= total:
            break
        wanted = total - count
        scan = _scan(queue, wanted, now_us, known, rank, fresh_us, spread=spread)
        waits.extend(scan.waits)
        chosen = _choose(scan, wanted, queue._p_jar, known, spread=spread)
        picks.append((queue, chosen))
        count += len(chosen)
        compact.extend(
            (queue, index) for index, n in scan.stale.items() if n >= COMPACT_AFTER
        )
    more = fill_first and count >= total
    if more:
        # The first slot's only: each of the others is then claimed for in
        # its own thread's connection.
        slots = slots[:1]
        picks = _first_only(picks, slots[0][1])
    taken: list = []
    left_stale: list = []
    for queue, chosen in picks:
        take(queue, chosen, taken, left_stale)
    result = Claimed(_assign(taken, slots, worker, start_time))
    result.more = more
    result.compact = compact
    result.wait_until_us = min(waits) if waits else None
    result.stale_keys = left_stale
    return result


def _scan(
    queue: Queue,
    wanted: int,
    now_us: int,
    known: set,
    rank: Rank | None,
    fresh_us: int,
    *,
    spread: bool,
) -> _Scan:
    """The due jobs of ``queue`` this claim may take (up to ``wanted``, or
    four times as many to pick among with ``spread``)."""
    scan = _Scan()
    stale = scan.stale
    index_of = {id(shard): i for i, shard in enumerate(queue.shards)}
    room = QuotaRoom(queue)
    others_cap = (wanted + BACKLOG_CHUNK) * OTHERS_FACTOR
    limit = wanted * 4 if spread else wanted
    items = iter_due(queue, now_us, known, stale)
    split_loaded = rank is not None
    if rank is not None and not len(room.quotas) and not any_front(gates_of(queue)):
        # No quotas or locks: which jobs are this worker's is known from
        # their oids alone, so the others' are passed over without loading.
        items = _mine(
            items, queue, rank, now_us, fresh_us, scan.others, scan.waits, others_cap
        )
        split_loaded = False
    for key, job, shard in _windows(items, max(16, wanted), queue._p_jar):
        if job._key != key:
            index = index_of[id(shard)]
            stale[index] = stale.get(index, 0) + 1
            known.add((shard._p_oid, key))
            continue
        if room.refused >= BLOCKED_SCAN_LIMIT:
            break
        status = job._status
        if status not in (PENDING, CALLBACKS):
            continue  # not ours to take; recovery puts such jobs right
        if split_loaded and status == PENDING:
            assert rank is not None
            left = _left_to_others(
                scan, room, queue, key, job, shard, rank, now_us, fresh_us
            )
            if left is _Left.PASSED_OVER and len(scan.others) >= others_cap:
                break
            if left is not _Left.NO:
                continue
        if status == PENDING:
            if not room.admit(job.quota_names, job):
                continue
            names = job.quota_names
        else:
            names = ()
        scan.candidates.append((key, job, shard, names))
        if len(scan.candidates) >= limit:
            break
    return scan


def _left_to_others(
    scan: _Scan,
    room: QuotaRoom,
    queue: Queue,
    key: tuple,
    job: Any,
    shard: Any,
    rank: Rank,
    now_us: int,
    fresh_us: int,
) -> _Left:
    """Whether a loaded pending job is left to the worker it is meant for:
    one just due waits for it (and blocks its quotas, which keep their
    order); one of a backlog without quotas is passed over, into
    ``scan.others``. A job under quotas is taken in its turn by whoever
    claims first."""
    fresh = now_us - key[1] < fresh_us
    order = rank(queue, job, not fresh)
    if not order:
        return _Left.NO
    if fresh:
        scan.waits.append(key[1] + fresh_us)
        room.block(job.quota_names, job.lock)
        return _Left.WAITED_FOR
    if job.quota_names or job.lock:
        return _Left.NO
    scan.others.append((order, key, job, shard))
    return _Left.PASSED_OVER


def _choose(scan: _Scan, wanted: int, conn: Any, known: set, *, spread: bool) -> list:
    """The candidates a claim takes from one queue."""
    candidates = scan.candidates
    if spread and len(candidates) > wanted:
        return _spread(candidates, wanted)
    chosen = candidates[:wanted]
    if len(chosen) < wanted and scan.others:
        # This worker's own jobs ran short (the end of a backlog, or a
        # worker that does not claim): the others' last ones, as their
        # workers take theirs from the front.
        chosen += _fill(scan.others, wanted - len(chosen), conn, known)
        chosen.sort(key=lambda c: c[0])
    return chosen


def _spread(candidates: list, wanted: int) -> list:
    """Quota jobs keep their order; the others are taken from one of the
    window's segments, chosen at random: two workers claiming at once then
    want the same jobs (and conflict) about once in four times, where
    random picks over the whole window nearly always shared one."""
    keep = [c for c in candidates[:wanted] if c[3]]
    free = [c for c in candidates if not c[3]]
    size = min(len(free), wanted - len(keep))
    segments = max(1, len(free) // max(1, size))
    start = random.randrange(segments) * size
    return sorted(keep + free[start : start + size], key=lambda c: c[0])


def _first_only(picks: list[tuple[Queue, list]], room: int) -> list[tuple[Queue, list]]:
    """``picks`` cut down to the first ``room`` jobs."""
    trimmed = []
    for queue, chosen in picks:
        trimmed.append((queue, chosen[:room]))
        room -= len(trimmed[-1][1])
    return trimmed


def _assign(
    taken: list, slots: list[tuple[Slot, int]], worker: str, start_time: Any
) -> dict[int, list]:
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
        job._assign(worker, slot.index, start_time, first=not jobs)
        slot.active[oid_int(job)] = job
        jobs.append(job)
    return {index: jobs for index, jobs in result.items() if jobs}
