"""Counting a process's round trips to its storage server, and the objects
its connections load, by class: the instrumentation of the enqueue rows.

:func:`install` wraps, on one opened database:

- ZEO: the client storage's calls that wait for the server (``_call``:
  ``vote``, ``new_oids``, ...; ``load_before`` on a cache miss; ``prefetch``
  with the oids it asks for; ``tpc_finish``). ``tpc_begin`` and ``storea``
  are sent without waiting and are not counted. The prefetches of
  zasync.prewarm, sent from the client's network thread as other
  clients' commits arrive, are counted apart (``prewarm``, objects asked
  for): nothing waits for them.
- RelStorage: the object mover's loads (``load_current``,
  ``load_currents``, ``load_before``, ...), each one query to PostgreSQL
  that the storage's caches did not answer, and the poll for other
  processes' commits that begins each transaction (``poll``).
- every storage: ZODB's ``Connection.setstate`` (an object loaded into a
  connection's cache, from the storage's cache or its server) and
  ``ObjectWriter.serialize`` (an object written by a commit), by class.

A count is a count of calls made, not a time: it does not depend on the
machine's load. The wrapping is done on the instances (ZEO) or the
mover's class (RelStorage, whose storages are per connection), in the
process that calls it only.
"""

from __future__ import annotations

import collections
import functools
import threading
from typing import Any

from ZODB.Connection import Connection
from ZODB.serialize import ObjectWriter

from zasync.storagekind import base_storage, storage_kind

#: the ZEO server calls that are part of a commit
COMMIT_CALLS = frozenset({"vote", "tpc_finish", "tpc_abort"})
#: what is asked of the server in the background, not in a round trip
BACKGROUND_CALLS = frozenset({"prewarm"})
#: how the name of a ZEO client's network thread ends
NETWORK_THREAD = "zeo client networking thread"
#: RelStorage object mover's loads, one query each
MOVER_LOADS = ("load_current", "load_currents", "load_before", "exists")


class Counts:
    """What one process asked of its server, and loaded into connections."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.loads: collections.Counter[str] = collections.Counter()
        self.writes: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self.enabled = True

    def call(self, name: str, n: int = 1) -> None:
        if self.enabled:
            with self._lock:
                self.calls[name] += n

    def load(self, name: str) -> None:
        if self.enabled:
            with self._lock:
                self.loads[name] += 1

    def write(self, name: str) -> None:
        if self.enabled:
            with self._lock:
                self.writes[name] += 1

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.loads.clear()
            self.writes.clear()

    def trips(self) -> int:
        """Round trips that are not a commit's own."""
        return sum(
            n
            for name, n in self.calls.items()
            if name not in COMMIT_CALLS and name not in BACKGROUND_CALLS
        )

    def commit_trips(self) -> int:
        return sum(n for name, n in self.calls.items() if name in COMMIT_CALLS)

    def summary(self, per: int) -> dict[str, Any]:
        """The counts divided by ``per`` (enqueues)."""
        per = max(per, 1)
        return {
            "round_trips": self.trips() / per,
            "commit_round_trips": self.commit_trips() / per,
            "calls": {k: v / per for k, v in sorted(self.calls.items())},
            "loads": {k: v / per for k, v in sorted(self.loads.items())},
            "objects_loaded": sum(self.loads.values()) / per,
            "writes": {k: v / per for k, v in sorted(self.writes.items())},
            "objects_written": sum(self.writes.values()) / per,
        }


def install(db: Any) -> Counts:
    """Start counting the round trips and loads of ``db`` (see the module
    docstring); return the counts, which grow from now on."""
    counts = Counts()
    _count_setstate(counts)
    kind = storage_kind(db)
    if kind == "zeo":
        _count_zeo(base_storage(db.storage), counts)
    elif kind == "relstorage":
        _count_relstorage(counts)
    return counts


_setstate_counts: list[Counts] = []


def _count_setstate(counts: Counts) -> None:
    if not _setstate_counts:
        setstate = Connection.setstate
        serialize = ObjectWriter.serialize

        @functools.wraps(setstate)
        def counting(conn: Connection, obj: Any) -> None:
            for c in _setstate_counts:
                c.load(type(obj).__name__)
            setstate(conn, obj)

        @functools.wraps(serialize)
        def counting_writes(writer: ObjectWriter, obj: Any) -> Any:
            for c in _setstate_counts:
                c.write(type(obj).__name__)
            return serialize(writer, obj)

        Connection.setstate = counting  # type: ignore[method-assign]
        ObjectWriter.serialize = counting_writes  # type: ignore[method-assign]
    _setstate_counts.append(counts)


def _count_zeo(storage: Any, counts: Counts) -> None:
    call = storage._call

    def counting_call(method: str, *args: Any, **kw: Any) -> Any:
        counts.call(method)
        return call(method, *args, **kw)

    storage._call = counting_call
    server = storage._server
    load_before = server.load_before

    # A load of an object a prefetch is fetching waits for that answer:
    # ZEO sends one request for both.
    inflight: set[bytes] = set()

    def counting_load_before(oid: bytes, tid: bytes) -> Any:
        if oid in inflight:
            inflight.discard(oid)
        else:
            counts.call("load_before")
        return load_before(oid, tid)

    server.load_before = counting_load_before
    prefetch = storage.prefetch
    cache = storage._cache

    def counting_prefetch(oids: Any, tid: bytes) -> Any:
        oids = list(oids)
        missing = [oid for oid in oids if cache.loadBefore(oid, tid) is None]
        if threading.current_thread().name.endswith(NETWORK_THREAD):
            counts.call("prewarm", len(missing))  # zasync.prewarm
        elif missing:
            counts.call("prefetch")
            inflight.update(missing)
        return prefetch(oids, tid)

    storage.prefetch = counting_prefetch
    tpc_finish = server.tpc_finish

    def counting_finish(*args: Any, **kw: Any) -> Any:
        inflight.clear()
        counts.call("tpc_finish")
        return tpc_finish(*args, **kw)

    server.tpc_finish = counting_finish


_mover_counts: list[Counts] = []


def _count_relstorage(counts: Counts) -> None:
    if not _mover_counts:
        from relstorage.adapters.mover import (  # noqa: PLC0415 - optional
            AbstractObjectMover,
        )
        from relstorage.adapters.poller import Poller  # noqa: PLC0415 - optional

        for name in MOVER_LOADS:
            method = getattr(AbstractObjectMover, name, None)
            if method is not None:
                setattr(AbstractObjectMover, name, _counted(name, method))
        Poller.poll_invalidations = _counted("poll", Poller.poll_invalidations)
    _mover_counts.append(counts)


def _counted(name: str, method: Any) -> Any:
    @functools.wraps(method)
    def counting(*args: Any, **kw: Any) -> Any:
        for c in _mover_counts:
            c.call(name)
        return method(*args, **kw)

    return counting
