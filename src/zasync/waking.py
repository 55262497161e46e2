"""What wakes a dispatcher's loop: commits that queue jobs for it.

In this process, an after-commit hook (zasync.hooks, zasync.inprocess);
from other processes, the storage's news of their commits: ZEO's
invalidations of the objects a commit that queues a job changes (queue
counters, the container of queues, this worker's inboxes), seen through
zasync.wakeup.NotifyingStorage, or PostgreSQL's NOTIFY for RelStorage.
Where the storage can tell neither, the loop polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from zasync import wakeup
from zasync.storagekind import storage_kind

log = logging.getLogger(__name__)

#: most object ids prefetched after a wake-up: a commit that changed more
#: (many jobs queued at once, or other workers' claims) is left to the
#: claim, which fetches the jobs it considers in windows
PREFETCH_LIMIT = 64


class Waker:
    """The wake-up event of one dispatcher's loop, and the listeners that
    set it. ``registry_changed`` is called when a worker came or went."""

    def __init__(self, registry_changed: Callable[[Iterable[bytes] | None], bool]):
        self.event = threading.Event()
        self._registry_changed = registry_changed
        #: oids whose change means jobs were queued for this worker
        self._watched: set[bytes] = set()
        self._watched_count = -1
        self._inbox_oids: frozenset[bytes] = frozenset()
        #: oids changed by the commits that woke the loop (prefetched)
        self.fresh_oids: set[bytes] = set()
        self._notifying: Any = None
        self._listener: Any = None
        #: on_commit asked for what the commit being told of changed
        self._asked = False

    def wake(self) -> None:
        self.event.set()

    def listen(
        self,
        db: Any,
        queues: Any,
        inbox_oids: frozenset[bytes],
        who: str,
        poll_interval: float,
    ) -> None:
        """Listen to the storage of ``db`` for commits that change
        ``queues`` or the inboxes ``inbox_oids``; log that the dispatcher
        ``who`` polls when the storage cannot tell."""
        self._inbox_oids = inbox_oids
        self.watch(queues)
        self._notifying = wakeup.find_notifying(db.storage)
        if self._notifying is not None:
            if self._notifying.can_prefetch:
                self._notifying.add_tid_listener(self.on_commit)
            self._notifying.add_listener(self.on_invalidation)
            return
        dsn = wakeup.dsn_of(db)
        if dsn is not None:
            self._listener = wakeup.PostgresListener(dsn, self.wake).start()
            return
        if storage_kind(db) != "file":
            log.info(
                "dispatcher %s polls every %.1f s for jobs queued by other "
                "processes: open the database with zasync.storage.open_db, or "
                "wrap the storage in <zasyncnotify> in its ZConfig, to wake at once",
                who,
                poll_interval,
            )

    def close(self) -> None:
        if self._notifying is not None:
            self._notifying.remove_tid_listener(self.on_commit)
            self._notifying.remove_listener(self.on_invalidation)
        if self._listener is not None:
            self._listener.stop()

    def watch(self, queues: Any) -> None:
        """Watch the job counters of the queues there are now, the
        container of queues (a queue added wakes the loop, which calls this
        again), and this worker's inboxes (jobs handed over, see
        zasync.handoff)."""
        self._watched = queues.watched_oids() | self._inbox_oids
        self._watched_count = len(queues)

    def watch_if_changed(self, queues: Any) -> None:
        """Watch again when queues were added or removed."""
        if len(queues) != self._watched_count:
            self.watch(queues)

    def on_commit(self, tid: bytes, oids: Iterable[bytes]) -> None:
        """ZEO's network thread says commit ``tid`` changed ``oids``
        (before on_invalidation): when it queued jobs for this worker,
        what it changed is asked of the server at once, as of ``tid``, and
        the loop finds it in the client cache (or on its way) when it
        wakes."""
        if self._watched.isdisjoint(oids):
            return
        oids = list(oids)
        if len(oids) <= PREFETCH_LIMIT and self._notifying.prefetch_as_of(tid, oids):
            self._asked = True

    def on_invalidation(self, oids: Iterable[bytes] | None) -> None:
        """The storage says a commit changed ``oids`` (None: anything)."""
        if self._registry_changed(oids):
            self.event.set()
        if oids is None or self._watched.isdisjoint(oids):
            return
        if self._asked:
            self._asked = False  # asked for by on_commit already
            self.event.set()
            return
        # A commit that queued jobs: the claim will load what it changed
        # (the queue's counter, the shard's bucket, the jobs), so fetch
        # it now, all at once, rather than in a round trip each.
        fresh = self.fresh_oids
        oids = set(oids)
        if len(fresh) + len(oids) <= PREFETCH_LIMIT:
            fresh.update(oids)
        self.event.set()

    def prefetch_fresh(self, conn: Any) -> None:
        """Start loading into ``conn`` what the commits that woke the loop
        changed (ZEO loads them in parallel; the claim's reads wait for
        them)."""
        fresh, self.fresh_oids = self.fresh_oids, set()
        if fresh:
            conn.prefetch(list(fresh))

    def forget_fresh(self) -> None:
        self.fresh_oids = set()
