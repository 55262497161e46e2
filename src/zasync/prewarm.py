"""Keeping what a producer's hand-off reads in its ZEO client cache.

A hand-off to a worker in another process (zasync.handoff) reads that
worker's slots: their trees of active jobs and their inboxes, which the
worker rewrites as it starts and ends each job, and its heartbeat. By
the producer's next enqueue they have changed, and loading them again
was a server round trip inside the producer's commit (1.5-2 ms on ZEO,
more than the commit itself).

:class:`Prewarmer` watches the slots and the heartbeat of the worker the
producer's last hand-off went to. When ZEO tells the producer's client
that a commit changed one of them, the prewarmer asks the server for its
new state at once, from the client's network thread, without waiting for
the answer: the next enqueue finds it in the client cache. They are
watched for :data:`WATCH_SECONDS` after the last hand-off, and no longer
once an enqueue is not handed over (jobs wait in the queue, or the worker
is busy: the next would not be either), so a producer that stopped
queueing, or queues into a backlog, asks for nothing; while they are
watched, each commit that changes one costs the server one load, in the
background.

Only ZEO clients opened through zasync.wakeup.NotifyingStorage
(zasync.storage.open_db, ``<zasyncnotify>``) can be told; RelStorage
learns of commits when it polls, at the start of the producer's
transaction, so it has nothing to do ahead of time.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from zasync import wakeup

#: how long an object is kept warm after the last hand-off that read it
WATCH_SECONDS = 60.0


class Prewarmer:
    """The objects one database's hand-offs read, reloaded into its ZEO
    client cache when another client's commit changes them."""

    def __init__(self, notifying: Any):
        self._notifying = notifying
        #: oid -> time.monotonic() until which it is kept warm
        self._watched: dict[bytes, float] = {}
        self._lock = threading.Lock()
        #: loads asked of the server so far (for benchmarks and tests)
        self.loads = 0
        notifying.add_tid_listener(self._changed)

    def watch(self, oids: Iterable[bytes]) -> None:
        """Keep ``oids`` warm for the next WATCH_SECONDS."""
        until = time.monotonic() + WATCH_SECONDS
        with self._lock:
            for oid in oids:
                self._watched[oid] = until

    def forget(self) -> None:
        """Keep nothing warm any more (until the next watch())."""
        if self._watched:
            with self._lock:
                self._watched.clear()

    def watched(self) -> set[bytes]:
        """The oids kept warm now."""
        clock = time.monotonic()
        with self._lock:
            return {oid for oid, until in self._watched.items() if until >= clock}

    def _changed(self, tid: bytes, oids: Iterable[bytes]) -> None:
        """Called in the ZEO client's network thread: commit ``tid``
        changed ``oids``."""
        if not self._watched:
            return
        clock = time.monotonic()
        with self._lock:
            # The ones past their time are dropped as the news comes in.
            self._watched = {o: u for o, u in self._watched.items() if u >= clock}
            hits = [oid for oid in oids if oid in self._watched]
        if hits and self._notifying.prefetch_as_of(tid, hits):
            self.loads += len(hits)


_prewarmers: weakref.WeakKeyDictionary[Any, Prewarmer | None] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def prewarmer_of(db: Any) -> Prewarmer | None:
    """The prewarmer of ``db``, made on first use; None when its storage is
    not a ZEO client wrapped in a NotifyingStorage."""
    try:
        return _prewarmers[db]
    except KeyError:
        pass
    with _lock:
        if db not in _prewarmers:
            notifying = wakeup.find_notifying(db.storage)
            usable = notifying is not None and notifying.can_prefetch
            _prewarmers[db] = Prewarmer(notifying) if usable else None
        return _prewarmers[db]


def forget(db: Any) -> None:
    """Keep nothing of ``db`` warm any more (a producer that never handed
    a job over has no prewarmer, and none is made for it)."""
    warmer = _prewarmers.get(db)
    if warmer is not None:
        warmer.forget()
