"""The shards of a queue: BTrees of pending jobs, and how to read them.

A queue keeps its pending jobs in several BTrees (shards), laid out so
that concurrent producers and workers do not conflict:

- each producer thread writes to its own shard (:func:`producer_shard`),
  workers take from the front of all of them, so inserts and removals
  rarely touch the same bucket;
- keys are ``(priority rank, due time in microseconds, oid)``: iteration in
  key order is run order, and a job queued later never overtakes one queued
  earlier with the same due time;
- each shard keeps a sentinel key after every possible job key, so no
  bucket is ever emptied by a worker while a producer adds to it (BTree
  conflict resolution refuses an emptied bucket), and a head key before
  them all, so a worker taking the front job does not delete the first key
  of the shard's first bucket (refused too: "Delete of first key");
- a worker that claims a job near the end of a shard (where producers
  insert) does not write the shard: it only writes the job (``_key =
  None``), so the entry goes stale. Further from the end, a claim leaves a
  tombstone (None), which later readers skip without loading the job. An
  entry whose job no longer names it (``job._key != key``) is stale;
  readers skip it, and stale entries and tombstones are removed in bulk
  from time to time (:func:`compact`).

An entry is live when its value is a job whose ``_key`` is the entry's key
(:func:`live`); head and sentinel have None as their value.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

from BTrees.OOBTree import OOBTree

#: sorts after every job key in a shard (see the module docstring)
SENTINEL = (2**62, 2**62, 2**62)
#: sorts before every job key in a shard (see the module docstring)
HEAD = (-(2**62), -(2**62), -(2**62))
#: sorts after every due time within a priority rank
AFTER_ANY_DUE = 2**63


def ranks(shard: Any) -> Iterator[int]:
    """The priority ranks a shard has entries in, in key order (one key
    look-up each, however many entries a rank has)."""
    low = HEAD
    while True:
        first = next(iter(shard.keys(min=low, excludemin=True)), SENTINEL)
        if first == SENTINEL:
            return
        yield first[0]
        low = (first[0], AFTER_ANY_DUE, 0)


#: most leaf buckets :func:`walk` asks the storage for in one go
WALK_AHEAD = 64


def walk(tree: Any, lo: Any, hi: Any) -> Iterator[tuple[Any, Any]]:
    """``tree.items(min=lo, max=hi)``, with the leaf buckets fetched ahead
    (see :func:`walk_buckets`)."""
    for items in walk_buckets(tree, lo, hi):
        yield from items


def walk_buckets(tree: Any, lo: Any, hi: Any) -> Iterator[list[tuple[Any, Any]]]:
    """The (key, value) items of ``tree`` from ``lo`` to ``hi``, in key
    order, a list per leaf bucket (a reader can filter a list in one
    comprehension, where a generator costs a call per item). The buckets
    are fetched from the storage ahead of reading them, in growing windows
    (4, 8, ... up to WALK_AHEAD buckets): iterating a BTree loads each
    bucket it has not got, or that another worker changed, with a round
    trip of its own, and the claims of several workers walking the front
    of a long queue spent most of their time waiting for them."""
    jar = tree._p_jar
    if jar is None:
        items = iter(tree.items(min=lo, max=hi))
        while chunk := list(itertools.islice(items, 64)):
            yield chunk
        return
    leaves = _leaves(tree, lo, hi)
    ahead: collections.deque = collections.deque()
    window = 4
    exhausted = False
    while True:
        if not exhausted and len(ahead) <= window // 2:
            batch = list(itertools.islice(leaves, window))
            exhausted = len(batch) < window
            ghosts = [b for b in batch if b._p_changed is None and b._p_oid]
            if ghosts:
                jar.prefetch(ghosts)
            ahead.extend(batch)
            window = min(2 * window, WALK_AHEAD)
        if not ahead:
            return
        yield list(ahead.popleft().items(min=lo, max=hi))


def _leaves(node: Any, lo: Any, hi: Any) -> Iterator[Any]:
    """The buckets of a BTree (node) that may hold keys from lo to hi, in
    key order; the tree itself when it keeps its few items inline."""
    state = node.__getstate__()
    if state is None:
        return
    if len(state) == 1:  # one bucket's worth, kept in the tree itself
        yield node
        return
    children = state[0]
    separators = children[1::2]  # child i holds keys >= separators[i - 1]
    first = bisect.bisect_right(separators, lo)
    last = bisect.bisect_right(separators, hi)
    for child in children[0::2][first : last + 1]:
        if isinstance(child, type(node)):  # an inner node: its own buckets
            yield from _leaves(child, lo, hi)
        else:
            yield child


def live(key: tuple, job: Any) -> bool:
    """True when a shard entry stands for a pending job (not the head, the
    sentinel, or a stale entry of a job claimed or moved since)."""
    return job is not None and job._key == key


#: consecutive live entries after which compaction stops: the stale entries
#: claims leave are at the front of a shard, or near its end
COMPACT_LIVE_RUN = 64


def compact(
    queue: Any,
    shard_index: int,
    *,
    limit: int = 2000,
    known_stale: set | None = None,
) -> int:
    """Delete stale entries from the front of a shard, in the caller's
    transaction; return how many. It looks at up to ``limit`` entries, and
    stops after COMPACT_LIVE_RUN live ones in a row (telling a live entry
    from a stale one loads its job: a long queue behind the stale entries
    is not read). Entries in ``known_stale`` ((shard oid, key)) are known
    to be stale (their jobs are not loaded); those deleted leave the set."""
    known = known_stale if known_stale is not None else set()
    shard = queue.shards[shard_index]
    oid = shard._p_oid
    jar = queue._p_jar
    items = itertools.dropwhile(
        lambda item: item[0] == HEAD, walk(shard, HEAD, SENTINEL)
    )
    dead = []
    scanned = live_run = 0
    while scanned < limit and live_run < COMPACT_LIVE_RUN:
        window = []
        for key, job in itertools.islice(items, COMPACT_LIVE_RUN):
            if key == SENTINEL:
                break
            window.append((key, job))
        if not window:
            break
        scanned += len(window)
        if jar is not None:  # one round trip for the window's jobs
            jar.prefetch(
                [j for k, j in window if j is not None and (oid, k) not in known]
            )
        for key, job in window:
            if (oid, key) in known or not live(key, job):
                dead.append(key)
                live_run = 0
            else:
                live_run += 1
                if live_run >= COMPACT_LIVE_RUN:
                    break
        if len(window) < COMPACT_LIVE_RUN:
            break  # the sentinel, or the shard's end
    for key in dead:
        del shard[key]
    known.difference_update((oid, key) for key in dead)
    return len(dead)


def new_shard() -> OOBTree:
    shard = OOBTree()
    shard[HEAD] = None
    shard[SENTINEL] = None
    return shard


def insert(shard: Any, job: Any, key: tuple) -> tuple:
    """Put ``job`` in ``shard`` under ``key``, or the first key after it
    that no entry has: the stale entry of a job's last time here keeps its
    key (workers remember the keys they know are stale). Return the key."""
    while key in shard:
        key = (key[0], key[1] + 1, key[2])
    shard[key] = job
    return key


def shard_index(shards: tuple, job: Any, first: int = 0) -> int | None:
    """The index of the shard whose entry under ``job._key`` is ``job``,
    looking at shard ``first`` first; None when no shard has it."""
    key = job._key
    for index in (first, *(i for i in range(len(shards)) if i != first)):
        if key is not None and shards[index].get(key) is job:
            return index
    return None


_shard_local = threading.local()
_shard_turns = itertools.count()


def producer_shard(count: int) -> int:
    # Each producer thread keeps to one shard: producers in different
    # threads and processes write different trees. The threads of a process
    # take the shards in turn (a hash of their ids made neighbours share a
    # shard, and conflict, about a third of the time); the process id
    # offsets the turns of different processes.
    index = getattr(_shard_local, "index", None)
    if index is None:
        index = _shard_local.index = os.getpid() + next(_shard_turns)
    return index % count


def due_buckets(shard: Any, now_us: int) -> Iterator[list[tuple[tuple, Any]]]:
    """(key, value) of the due entries of one shard, in key order, a list
    per bucket, stale entries and tombstones included (see the module docstring)."""
    for rank in ranks(shard):
        yield from walk_buckets(
            shard, (rank, -AFTER_ANY_DUE, 0), (rank, now_us, AFTER_ANY_DUE)
        )


def iter_due(
    queue: Any,
    now_us: int,
    known_stale: set | None = None,
    skipped: dict[int, int] | None = None,
) -> Iterator[tuple[tuple, Any, Any]]:
    """(key, job, shard) of a queue's due entries, in run order. Stale
    entries are included: check them with ``live`` once the
    jobs are loaded (so that they can be loaded many at a time).

    Tombstones and the entries in ``known_stale`` ((shard oid, key)) are
    left out, and counted by shard index in ``skipped``: a bucket at a
    time, in each shard, before the shards are merged (a worker passes
    over the stale entries of its claims near a shard's end at every claim
    until they are compacted)."""
    known = known_stale if known_stale is not None else frozenset()
    if skipped is None:
        skipped = {}

    def tagged(index: int, shard: Any) -> Iterator[tuple[tuple, Any, Any]]:
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

    shards = [tagged(i, s) for i, s in enumerate(queue.shards)]
    return heapq.merge(*shards, key=lambda t: t[0])


#: entries before the sentinel within which claims leave entries stale
#: rather than write tombstones: about two buckets, where producers insert
NEAR_END = 64


def near_end(shard: Any, key: tuple) -> bool:
    """Whether ``key`` is among the last NEAR_END entries of ``shard``,
    where producers insert."""
    for count, following in enumerate(shard.keys(min=key, excludemin=True)):
        if following == SENTINEL:
            return True
        if count >= NEAR_END:
            return False
    return True


def next_due(
    shards: tuple, after_us: int, known_stale: set | frozenset = frozenset()
) -> float | None:
    """The earliest due time (epoch seconds) later than ``after_us``
    (microseconds) of the entries of ``shards``, read from the keys alone
    (see Queue.next_due)."""
    best = None
    for shard in shards:
        oid = shard._p_oid
        for rank in ranks(shard):
            later = shard.items(min=(rank, after_us, AFTER_ANY_DUE))
            for key, job in later:
                if key[0] != rank or key == SENTINEL:
                    break
                if job is None or (oid, key) in known_stale:
                    continue
                due = key[1] / 1_000_000
                if best is None or due < best:
                    best = due
                break
    return best


def near_end_keys(chosen: list) -> set:
    """(id(shard), key) of the ``chosen`` entries ((key, job, shard, ...))
    near their shard's end. Being
    near the end is monotonic in a shard's key order, so each shard's keys
    are checked from the last one back, until one is not near the end."""
    by_shard: dict[int, tuple[Any, list]] = {}
    for key, _job, shard, _names in chosen:
        by_shard.setdefault(id(shard), (shard, []))[1].append(key)
    found = set()
    for shard_id, (shard, keys) in by_shard.items():
        for key in sorted(keys, reverse=True):
            if not near_end(shard, key):
                break
            found.add((shard_id, key))
    return found
