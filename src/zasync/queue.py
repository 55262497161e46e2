"""Queues, Queue and quotas: where pending jobs wait.

A queue keeps its pending jobs in shards (zasync.shards describes their
layout, chosen so that concurrent producers and workers do not conflict)
and counts them in a ``BTrees.Length``, which resolves concurrent changes
and whose object id workers watch to wake up. Putting a job in a queue
tells the runtime through zasync.hooks; this module imports nothing of the
runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

import persistent
import transaction
import ZODB
import zope.interface
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree

from zasync.enqueue import Producing
from zasync.entries import Entries
from zasync.interfaces import (
    KEY,
    PENDING,
    ConfigurationError,
    IQueue,
)
from zasync.job import Job
from zasync.lanes import (
    Gates,
    iter_waiting,
)
from zasync.pending import NotPendingError, at_index, in_run_order, root_queues
from zasync.queue_timeout import default_timeout
from zasync.quota_merge import check_size, merge
from zasync.schedules import schedules_of
from zasync.shards import new_shard, next_due
from zasync.workers import WorkerRegistry

DEFAULT_SHARDS = 8


class Quota(persistent.Persistent):
    """At most ``size`` jobs naming this quota run at once, across all
    workers. Jobs of a full quota wait, in order. Iterating gives the jobs
    holding it; ``filled`` says whether it is full. Concurrent changes merge
    as zasync.quota_merge describes."""

    name: str = ""
    size: int = 1
    _active: tuple = ()  # oids (bytes) of the jobs holding the quota

    def __init__(self, name: str, size: int = 1):
        self.name = name
        self.size = check_size(name, size)

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def filled(self) -> bool:
        """True when as many jobs hold the quota as its size allows."""
        return len(self._active) >= self.size

    def __len__(self) -> int:
        return len(self._active)

    def __iter__(self) -> Iterator[Job]:
        """The jobs holding the quota, in the order they took it (loaded
        through the quota's connection)."""
        jar = self._p_jar
        return iter(() if jar is None else [jar.get(oid) for oid in self._active])

    def __contains__(self, job: object) -> bool:
        return getattr(job, "_p_oid", None) in self._active

    @property
    def parent(self) -> Queue | None:
        """The queue whose quotas hold this quota (zc.async's name)."""
        for queue in root_queues(self).values():
            if queue.quotas.get(self.name) is self:
                return queue
        return None

    def hold(self, oid: bytes) -> None:
        """Count job ``oid`` as holding the quota."""
        self._active = (*self._active, oid)

    def release(self, oid: bytes) -> None:
        """Job ``oid`` no longer holds the quota."""
        if oid in self._active:
            self._active = tuple(o for o in self._active if o != oid)

    def __repr__(self) -> str:
        return f"<zasync.Quota {self.name!r} {len(self._active)}/{self.size}>"

    def _p_resolveConflict(self, old: dict, committed: dict, new: dict) -> dict:  # noqa: N802 - ZODB's API
        return merge(old, committed, new, default_size=type(self).size)


class Quotas(persistent.Persistent):
    """The quotas of one queue: ``create(name, size=1)``, ``get(name)``,
    ``[name]``, ``remove(name)``, iteration over names."""

    def __init__(self) -> None:
        self._data = OOBTree()

    def create(self, name: str, size: int = 1) -> Quota:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"a quota name must be a non-empty string, got {name!r}"
            )
        if name in self._data:
            raise ValueError(f"quota {name!r} exists already; change its .size instead")
        quota = self._data[name] = Quota(name, size)
        if self._p_jar is not None:
            self._p_jar.add(quota)  # readable through it before the commit
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

    def values(self) -> Iterable[Quota]:
        return self._data.values()


@zope.interface.implementer(IQueue)
class Queue(Entries, Producing, persistent.Persistent):
    """Pending jobs, in run order. ``put()`` joins the caller's transaction."""

    name: str = ""
    _shards: tuple = ()
    _length: Length | None = None
    #: per shard, the jobs producers added to it (written by producers
    #: only, so that their commits do not load what workers change);
    #: () in queues made by earlier versions, which count in _length
    _added: tuple = ()
    #: set by __init__ in every version: None only as the class-level default
    quotas: Quotas = cast(Quotas, None)
    #: jobs finished outside a worker (end time in microseconds -> job)
    _finished: Any = None
    _schedules: Any = None  # its Schedules, stored by the first schedule added
    #: its zasync.lanes.Gates (None in queues stored by earlier versions
    #: until install() or the first gated job adds it)
    _gates: Any = None
    schedules = property(schedules_of)
    _default_timeout: float | None = None
    default_timeout = default_timeout  # seconds, see zasync.queue_timeout

    def __init__(self, name: str = "", shards: int = DEFAULT_SHARDS):
        if not isinstance(shards, int) or shards < 1:
            raise ConfigurationError(f"queue {name!r}: shards={shards!r} must be >= 1")
        self.name = name
        self._shards = tuple(new_shard() for _ in range(shards))
        self._length = Length()
        self._added = tuple(Length() for _ in range(shards))
        self.quotas = Quotas()
        self._gates = Gates()

    # -- producing: put() and put_many() (zasync.enqueue) ------------------

    @property
    def shards(self) -> tuple:
        """The BTrees of pending jobs (see zasync.shards)."""
        return self._shards

    @property
    def counter(self) -> Length:
        """The count of jobs taken out of the queue, less those added
        before each shard counted its own (``len(queue)`` is the number
        of pending jobs): a ``BTrees.Length``."""
        assert self._length is not None
        return self._length

    def counted_oids(self) -> set[bytes]:
        """The oids of the counters a commit changes when it adds or takes
        jobs: workers watch them to wake up."""
        counters = (self.counter, *self._added)
        return {c._p_oid for c in counters if c._p_oid is not None}

    @property
    def finished(self) -> Any:
        """Jobs that finished without a worker (failed or cancelled before
        they started), by end time in microseconds, or None."""
        return self._finished

    def remove(self, job: Job) -> None:
        """Remove a pending job; it becomes NEW again. NotPendingError (a
        LookupError and a BadStatusError) when it is not pending here."""
        if job._status != PENDING or job._queue is not self:
            raise NotPendingError(f"{job!r} is not pending in queue {self.name!r}")
        self.take(job)
        job._unqueued()

    def pull(self, index: int = 0) -> Job:
        """Remove and return the pending job at ``index`` in run order."""
        job = self[index]
        self.remove(job)
        return job

    def __getitem__(self, index: int) -> Job:
        """The pending job at ``index`` in run order; IndexError past the
        end. Reads the jobs before it: for the front of the queue."""
        return cast(Job, at_index(self, index, len(self), self.name))

    def __iter__(self) -> Iterator[Job]:
        return in_run_order(self._shards, iter_waiting(self._gates))

    def __len__(self) -> int:
        if self._length is None:
            return 0
        return self._length() + sum(added() for added in self._added)

    @property
    def parent(self) -> Queues | None:
        """The Queues holding this queue (zc.async's name)."""
        queues = root_queues(self)
        return queues if queues.get(self.name) is self else None

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
        return next_due(self._shards, after_us, known_stale)


class Queues(persistent.Persistent):
    """The queues of a database, by name (``''`` is the default queue), kept
    at ``root['zasync']``. Also keeps the worker registry."""

    def __init__(self) -> None:
        self._queues = OOBTree()
        self.workers = WorkerRegistry()

    workers: Any = None

    def __getitem__(self, name: str) -> Queue:
        return self._queues[name]

    def watched_oids(self) -> set[bytes]:
        """The oids a commit changes when it queues jobs (each queue's
        counter) or adds a queue (the container)."""
        oids = {oid for queue in self._queues.values() for oid in queue.counted_oids()}
        oids.add(self._queues._p_oid)
        return oids

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

    def keys(self) -> Iterable[str]:
        return self._queues.keys()

    def values(self) -> Iterable[Queue]:
        return self._queues.values()

    def items(self) -> Iterable[tuple[str, Queue]]:
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


def _install(root: Any, names: Iterable[str]) -> Queues:
    queues = root.get(KEY)
    if queues is None:
        queues = root[KEY] = Queues()
        if root._p_jar is not None:
            root._p_jar.add(queues)  # usable before the caller commits
    for name in names:
        if name not in queues:
            queues[name] = Queue(name)
    for queue in queues.values():
        if not queue._added:  # stored by an earlier version: see Queue._added
            queue._added = tuple(Length() for _ in queue.shards)
        if queue._gates is None:  # stored by an earlier version
            queue._gates = Gates()
    return queues
