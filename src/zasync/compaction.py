"""Compaction: removing the stale entries a worker's claims leave in the
shards of busy queues (see zasync.shards), in transactions of its own.

A worker remembers the keys of the entries its claims left stale, so that
later claims skip them without loading their jobs, and forgets those that
compaction removed. A shard is compacted by one worker only (see
Placement.compacts): compaction deletes the first keys of buckets, which
BTrees do not merge with a concurrent change.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from transaction.interfaces import TransientError

from zasync.interfaces import KEY
from zasync.shards import compact

log = logging.getLogger(__name__)

#: seconds before a compaction of a shard that removed nothing is tried again
COMPACT_PAUSE = 5.0
#: most stale keys remembered (only an optimisation: bounded, about 0.6 MB)
KNOWN_STALE_LIMIT = 4096


class Compactor:
    """The stale keys one worker knows of, and the compaction of shards."""

    def __init__(self) -> None:
        #: (shard oid, key) of stale entries this worker's claims left:
        #: skipped without loading their jobs; forgotten when compacted
        self.known_stale: set[tuple[bytes, tuple]] = set()
        #: {(queue name, shard index): time.monotonic() before which a
        #: compaction that removed nothing is not tried again}
        self._pause_until: dict[tuple[str, int], float] = {}

    def compact(self, conn: Any, tm: Any, shards: list[tuple[Any, int]]) -> None:
        """Remove the stale entries in front of the shards ((queue,
        shard index)), each in a transaction of its own in ``conn``."""
        clock = time.monotonic()
        for queue, index in shards:
            name = queue.name
            if self._pause_until.get((name, index), 0.0) > clock:
                continue  # found nothing to remove a moment ago
            # Not ``with tm``: a commit that fails there leaves the
            # transaction open, and the next claim would fail too.
            try:
                tm.begin()
                queue = conn.root()[KEY][name]
                removed = compact(queue, index, known_stale=self.known_stale)
                tm.commit()
                if not removed:
                    # The stale entries claims count lie behind live jobs
                    # they cannot take yet (full quotas): not every round.
                    self._pause_until[(name, index)] = clock + COMPACT_PAUSE
                log.debug(
                    "removed %d stale entries from queue %r shard %d",
                    removed,
                    name,
                    index,
                )
            except TransientError:
                tm.abort()
                log.debug("compacting queue %r shard %d conflicted; later", name, index)
        self.trim()

    def remember(self, keys: list[tuple[bytes, tuple]]) -> None:
        """Add the stale entries a committed claim left (see ``trim``)."""
        self.known_stale.update(keys)
        self.trim()

    def trim(self) -> None:
        """Forget the stale keys when there are too many: a worker that
        does not compact a shard (another does) never sees its entries
        go, and the set would only grow. Forgetting costs a later claim a
        load of the jobs to find them stale again."""
        if len(self.known_stale) > KNOWN_STALE_LIMIT:
            self.known_stale.clear()
