"""Queues, Queue and quotas: where pending jobs wait.

Layout, chosen so that concurrent producers and workers do not conflict:

- a queue keeps its pending jobs in several BTrees (shards); each producer
  thread writes to its own shard, workers take from the front of all of
  them, so inserts and removals rarely touch the same bucket;
- keys are ``(priority rank, due time in microseconds, oid)``: iteration in
  key order is run order, and a job queued later never overtakes one queued
  earlier with the same due time;
- each shard keeps a sentinel key after every possible job key, so no
  bucket is ever emptied by a worker while a producer adds to it (BTree
  conflict resolution refuses an emptied bucket), and a head key before
  them all, so a worker taking the front job does not delete the first key
  of the shard's first bucket (refused too: "Delete of first key"), which
  made every claim conflict with a producer adding to a short queue;
- a worker that claims a job near the end of a shard (its last two
  buckets or so, where producers insert) does not write the shard: it only
  writes the job (``_key = None``), so the entry goes stale; a claim that
  changed a bucket a producer was splitting failed the producer's commit.
  Further from the end, where no producer writes, a claim leaves a
  tombstone (None), which later readers skip without loading the job. An
  entry whose job no longer names it (``job._key != key``) is stale;
  readers skip it, and stale entries and tombstones are removed in bulk
  from time to time (:func:`compact`);
- the number of pending jobs is a ``BTrees.Length``, which resolves
  concurrent changes, and whose object id workers watch to wake up.

An entry is live when its value is a job whose ``_key`` is the entry's key
(:func:`live`); head and sentinel have None as their value.
"""

from __future__ import annotations

import bisect
import collections
import datetime
import heapq
import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

import persistent
import transaction
import zope.interface
from BTrees.Length import Length
from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree

from zasync import handoff
from zasync.interfaces import (
    CALLBACKS,
    KEY,
    NEW,
    PENDING,
    BadStatusError,
    ConfigurationError,
    IQueue,
)
from zasync.job import Job, now

UTC = datetime.UTC
DEFAULT_SHARDS = 8
#: sorts after every job key in a shard (see the module docstring)
SENTINEL = (2**62, 2**62, 2**62)
#: sorts before every job key in a shard (see the module docstring)
HEAD = (-(2**62), -(2**62), -(2**62))
#: sorts after every due time within a priority rank
AFTER_ANY_DUE = 2**63


def _front_due() -> int:
    # The due time of a job put back at the front of its queue: before
    # every job due in the usual way, later requeues first, and never the
    # same key twice (readers may remember keys they know are stale).
    return -_us(now())


def _us(when: datetime.datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def _oid_int(job: Job) -> int:
    return int.from_bytes(job._p_oid, "big")


def check_begin_after(begin_after: Any) -> datetime.datetime | None:
    """Return ``begin_after`` if it is None or timezone-aware; raise
    ValueError naming the problem otherwise."""
    if begin_after is None:
        return None
    if not isinstance(begin_after, datetime.datetime):
        raise TypeError(
            f"begin_after must be a timezone-aware datetime, got {begin_after!r}"
        )
    if begin_after.tzinfo is None or begin_after.utcoffset() is None:
        raise ValueError(
            f"begin_after={begin_after!r} is naive: give it a timezone, for "
            f"example datetime.datetime.now(datetime.timezone.utc) + delay"
        )
    return begin_after


def check_begin_by(begin_by: Any) -> datetime.timedelta | None:
    if begin_by is None:
        return None
    if not isinstance(begin_by, datetime.timedelta):
        raise TypeError(f"begin_by must be a datetime.timedelta, got {begin_by!r}")
    if begin_by <= datetime.timedelta(0):
        raise ValueError(f"begin_by={begin_by!r} must be positive")
    return begin_by


class Quota(persistent.Persistent):
    """At most ``size`` jobs naming this quota run at once, across all
    workers. Jobs of a full quota wait, in order.

    Concurrent changes are merged only when that cannot exceed the size: a
    job releasing the quota (in its own transaction) merges with a claim
    taking it, so the job does not run again for a conflict on this
    bookkeeping; two claims that would together pass the size conflict, and
    one of them claims again.
    """

    name: str = ""
    size: int = 1
    _active: tuple = ()  # oids (bytes) of the jobs holding the quota

    def __init__(self, name: str, size: int = 1):
        self.name = name
        self.size = _check_size(name, size)

    @property
    def active(self) -> int:
        return len(self._active)

    def __len__(self) -> int:
        return len(self._active)

    def _add(self, oid: bytes) -> None:
        self._active = (*self._active, oid)

    def _discard(self, oid: bytes) -> None:
        if oid in self._active:
            self._active = tuple(o for o in self._active if o != oid)

    def __repr__(self) -> str:
        return f"<zasync.Quota {self.name!r} {len(self._active)}/{self.size}>"

    def _p_resolveConflict(self, old: dict, committed: dict, new: dict) -> dict:
        from ZODB.POSException import ConflictError

        merged = dict(committed)
        for name in ("name", "size"):
            mine, theirs = new.get(name), committed.get(name)
            if mine != theirs:
                if theirs != old.get(name) and mine != old.get(name):
                    raise ConflictError(f"quota {name} changed twice")
                merged[name] = mine if theirs == old.get(name) else theirs
        before = old.get("_active", ())
        ours, theirs = new.get("_active", ()), committed.get("_active", ())
        added = [oid for oid in ours if oid not in before]
        removed = {oid for oid in before if oid not in ours}
        active = [oid for oid in theirs if oid not in removed]
        active += [oid for oid in added if oid not in active]
        size = merged.get("size", type(self).size)
        if added and len(active) > size and any(o not in before for o in theirs):
            raise ConflictError("two claims would exceed the quota together")
        merged["_active"] = tuple(active)
        return merged


def _check_size(name: str, size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigurationError(
            f"quota {name!r}: size={size!r} must be a whole number >= 1"
        )
    return size


class Quotas(persistent.Persistent):
    """The quotas of one queue: ``create(name, size=1)``, ``get(name)``,
    ``[name]``, ``remove(name)``, iteration over names."""

    def __init__(self):
        self._data = OOBTree()

    def create(self, name: str, size: int = 1) -> Quota:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"a quota name must be a non-empty string, got {name!r}"
            )
        if name in self._data:
            raise ValueError(f"quota {name!r} exists already; change its .size instead")
        quota = self._data[name] = Quota(name, size)
        return quota

    def get(self, name: str, default: Any = None) -> Quota | None:
        return self._data.get(name, default)

    def __getitem__(self, name: str) -> Quota:
        return self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def remove(self, name: str) -> None:
        del self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data.keys())

    def __len__(self) -> int:
        return len(self._data)

    def values(self):
        return self._data.values()


@zope.interface.implementer(IQueue)
class Queue(persistent.Persistent):
    """Pending jobs, in run order. ``put()`` joins the caller's transaction."""

    name: str = ""
    _shards: tuple = ()
    _length: Length | None = None
    quotas: Quotas | None = None
    #: jobs finished outside a worker (end time in microseconds -> job)
    _finished: Any = None

    def __init__(self, name: str = "", shards: int = DEFAULT_SHARDS):
        if not isinstance(shards, int) or shards < 1:
            raise ConfigurationError(f"queue {name!r}: shards={shards!r} must be >= 1")
        self.name = name
        self._shards = tuple(_new_shard() for _ in range(shards))
        self._length = Length()
        self.quotas = Quotas()

    # -- producing -------------------------------------------------------

    def put(
        self,
        item: Any,
        begin_after: datetime.datetime | None = None,
        begin_by: datetime.timedelta | None = None,
        *,
        quota_names: tuple[str, ...] | None = None,
        retry_policy_factory: Any = None,
    ) -> Job:
        """Queue ``item`` (a Job, or a callable wrapped in a new Job) in the
        caller's transaction and return the job.

        Raises TypeError for a callable that cannot be stored, ValueError for
        a naive ``begin_after`` or a quota this queue does not have,
        BadStatusError for a job that is not new.
        """
        job = item if isinstance(item, Job) else Job(item)
        if job._status != NEW:
            raise BadStatusError(
                f"{job!r} is {job._status}: only a new job can be put in "
                f"queue {self.name!r}"
            )
        begin_after = check_begin_after(begin_after)
        begin_by = check_begin_by(begin_by)
        if quota_names is not None:
            job.quota_names = tuple(quota_names)
        for name in job.quota_names:
            if name not in self.quotas:
                raise ValueError(
                    f"{job!r} names quota {name!r}, which queue "
                    f"{self.name!r} does not have; create it with "
                    f"queue.quotas.create({name!r}, size=1)"
                )
        if retry_policy_factory is not None:
            job.retry_policy_factory = retry_policy_factory
        jar = self._p_jar
        if jar is None:
            raise ConfigurationError(
                f"queue {self.name!r} is not in a database: get it from "
                f"zasync.install(db) or root['{KEY}'], not a new Queue()"
            )
        if job._p_jar is None:
            jar.add(job)
        if begin_after is not None:
            job.begin_after = begin_after
        elif job.begin_after is None:
            job.begin_after = now()
        if begin_by is not None:
            job.begin_by = begin_by
        job._queue = self
        self._insert(job, _us(job.begin_after))
        job._status = PENDING
        _wake_after_commit(jar)
        handoff.offer(self, job)
        return job

    def _insert(self, job: Job, due_us: int) -> None:
        key = (-job.priority, due_us, _oid_int(job))
        shard = self._shards[_shard_index(len(self._shards))]
        while key in shard:
            # A stale entry of this job's last time here: never reuse a key
            # (workers remember the keys they know are stale).
            key = (key[0], key[1] + 1, key[2])
        shard[key] = job
        job._key = key
        self._length.change(1)

    def _record_finished(self, job: Job) -> None:
        """Keep a job that finished outside a worker (cancelled, failed
        before it started) with the finished jobs, for listing and
        retention."""
        if self._finished is None:
            self._finished = LOBTree()
        key = _us(job.active_end or now())
        while key in self._finished:
            key += 1
        self._finished[key] = job

    def _requeue(self, job: Job, *, front: bool = False, when=None) -> None:
        """Put a job back (a retry, an interruption, late callbacks)."""
        if front:
            due = _front_due()
        else:
            due = _us(when or now())
            job.begin_after = when or now()
        status = job._status
        self._insert(job, due)
        job._worker = job._slot = None
        # A job with callbacks still to run keeps its status.
        job._status = CALLBACKS if status == CALLBACKS else PENDING
        if self._p_jar is not None:
            _wake_after_commit(self._p_jar)

    # -- consuming ----------------------------------------------------------

    def _shard_of(self, job: Job):
        key = job._key
        for shard in self._shards:
            if key in shard and shard[key] is job:
                return shard
        return None

    def _take(self, job: Job) -> None:
        """Remove a pending job from its shard (no status change)."""
        shard = self._shard_of(job)
        if shard is None:
            raise BadStatusError(f"{job!r} is not pending in queue {self.name!r}")
        del shard[job._key]
        job._key = None
        self._length.change(-1)

    def remove(self, job: Job) -> None:
        """Remove a pending job; it becomes NEW again."""
        if job._status != PENDING or job._queue is not self:
            raise BadStatusError(f"{job!r} is not pending in queue {self.name!r}")
        self._take(job)
        job._status = NEW
        job._queue = None

    def pull(self, index: int = 0) -> Job:
        """Remove and return the pending job at ``index`` in run order."""
        if index < 0:
            index += len(self)
        for i, job in enumerate(self):
            if i == index:
                self.remove(job)
                return job
        raise IndexError(f"queue {self.name!r} has no job at index {index}")

    def _iter_keys(self) -> Iterator[tuple[tuple, Job, Any]]:
        """(key, job, shard) for pending jobs in run order."""

        def items(shard):
            for key, job in shard.items():
                if live(key, job):
                    yield key, job, shard

        return heapq.merge(*(items(s) for s in self._shards), key=lambda t: t[0])

    def __iter__(self) -> Iterator[Job]:
        for _key, job, _shard in self._iter_keys():
            yield job

    def __len__(self) -> int:
        return self._length() if self._length is not None else 0

    def __bool__(self) -> bool:
        return True

    def next_due(
        self, after_us: int, known_stale: set | frozenset = frozenset()
    ) -> float | None:
        """The earliest due time (epoch seconds) later than ``after_us``
        (microseconds) of this queue's entries: when a scheduled job
        becomes due. Read from the keys alone, without loading jobs: an
        entry gone stale meanwhile (rare after ``after_us``: a job is
        claimed once due) costs a dispatcher one look for nothing.
        Tombstones and entries in ``known_stale`` ((shard oid, key)) are
        skipped."""
        best = None
        for shard in self._shards:
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


def ranks(shard) -> Iterator[int]:
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


def walk(tree, lo, hi) -> Iterator[tuple[Any, Any]]:
    """``tree.items(min=lo, max=hi)``, with the leaf buckets fetched ahead
    (see :func:`walk_buckets`)."""
    for items in walk_buckets(tree, lo, hi):
        yield from items


def walk_buckets(tree, lo, hi) -> Iterator[list[tuple[Any, Any]]]:
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


def _leaves(node, lo, hi) -> Iterator[Any]:
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
    queue: Queue,
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
    shard = queue._shards[shard_index]
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


def _new_shard() -> OOBTree:
    shard = OOBTree()
    shard[HEAD] = None
    shard[SENTINEL] = None
    return shard


_shard_local = threading.local()
_shard_turns = itertools.count()


def _shard_index(count: int) -> int:
    # Each producer thread keeps to one shard: producers in different
    # threads and processes write different trees. The threads of a process
    # take the shards in turn (a hash of their ids made neighbours share a
    # shard, and conflict, about a third of the time); the process id
    # offsets the turns of different processes.
    index = getattr(_shard_local, "index", None)
    if index is None:
        index = _shard_local.index = os.getpid() + next(_shard_turns)
    return index % count


class Queues(persistent.Persistent):
    """The queues of a database, by name (``''`` is the default queue), kept
    at ``root['zasync']``. Also keeps the worker registry."""

    def __init__(self):
        self._queues = OOBTree()
        from zasync.workers import WorkerRegistry

        self.workers = WorkerRegistry()

    workers: Any = None

    def __getitem__(self, name: str) -> Queue:
        return self._queues[name]

    def get(self, name: str, default: Any = None) -> Queue | None:
        return self._queues.get(name, default)

    def __setitem__(self, name: str, queue: Queue) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queues[{name!r}] must be a zasync.queue.Queue")
        queue.name = name
        self._queues[name] = queue
        if queue._p_jar is None and self._p_jar is not None:
            # So that jobs can be put in it before the transaction commits.
            self._p_jar.add(queue)

    def __delitem__(self, name: str) -> None:
        queue = self._queues[name]
        if len(queue):
            raise ValueError(
                f"queue {name!r} still has {len(queue)} pending jobs; remove "
                f"or run them first"
            )
        del self._queues[name]

    def __contains__(self, name: object) -> bool:
        return name in self._queues

    def __iter__(self) -> Iterator[str]:
        return iter(self._queues.keys())

    def __len__(self) -> int:
        return len(self._queues)

    def keys(self):
        return self._queues.keys()

    def values(self):
        return self._queues.values()

    def items(self):
        return self._queues.items()


def install(db_or_connection: Any, queues: tuple[str, ...] = ("",)) -> Queues:
    """Make sure ``root['zasync']`` holds a Queues with the named queues.

    Idempotent. Given a DB, it commits in a transaction of its own and
    returns the Queues as loaded by a connection it closed (use it for
    reading only); given a connection, it joins that connection's current
    transaction and leaves the commit to the caller.
    """
    if isinstance(queues, str):
        raise TypeError(f"queues must be a sequence of names, e.g. ({queues!r},)")
    import ZODB

    if isinstance(db_or_connection, ZODB.DB):
        tm = transaction.TransactionManager(explicit=True)
        conn = db_or_connection.open(transaction_manager=tm)
        try:
            for attempt in tm.attempts(5):
                with attempt:
                    result = _install(conn.root(), queues)
            return result
        finally:
            conn.close()
    return _install(db_or_connection.root(), queues)


def _install(root, names) -> Queues:
    queues = root.get(KEY)
    if queues is None:
        queues = root[KEY] = Queues()
        if root._p_jar is not None:
            root._p_jar.add(queues)  # usable before the caller commits
    for name in names:
        if name not in queues:
            queues[name] = Queue(name)
    return queues


def _wake_after_commit(jar) -> None:
    """Wake this process's dispatchers when the caller's transaction
    commits (once per transaction)."""
    txn = jar.transaction_manager.get()
    try:
        dbs = txn.data(_WAKE)
    except KeyError:
        dbs = set()
        txn.set_data(_WAKE, dbs)
        txn.addAfterCommitHook(_after_commit_wake, (dbs,))
    dbs.add(jar.db())


_WAKE = object()  # marks a transaction that will wake dispatchers


def _after_commit_wake(committed: bool, dbs) -> None:
    if committed:
        from zasync.dispatcher import wake_local
        from zasync.wakeup import notify_postgres

        for db in dbs:
            wake_local(db)
            notify_postgres(db)
