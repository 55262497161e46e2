"""Placement: which live worker a job is meant for.

Every worker serving a queue reckons the same answer for a job from the
same list of live workers (rendezvous hashing of the job's and the
workers' ids), so workers share the queues out instead of racing for the
same jobs. A job just due is left to its worker for a short grace; in a
backlog, jobs are meant for workers by runs of consecutive oids, so each
worker's claims write tombstones in buckets of their own.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

#: in a backlog, jobs are meant for workers by runs of this many oids (jobs
#: queued together have consecutive oids, and sit side by side in the
#: queue): each worker's claims then write tombstones in buckets of their
#: own, where job by job they would write in every bucket the others read
BACKLOG_CHUNK = 64

#: ``rank(queue, job, backlog)``: a worker's rank for a job, 0 when it is
#: the job's own worker
Rank = Callable[[Any, Any, bool], int]


def rendezvous_rank(peers: Iterable[bytes], mine: bytes, seed: int) -> int:
    """This worker's rank (0: first) among ``peers`` for the thing ``seed``
    (a CRC-32) stands for: each peer's score is the CRC-32 of its id after
    the seed, the same for every worker that computes it."""
    score = zlib.crc32(mine, seed)
    return sum(1 for peer in peers if zlib.crc32(peer, seed) > score)


def owner_of(job_oid: bytes, peers: list[bytes]) -> bytes:
    """The id, among ``peers``, of the worker a job just queued is meant
    for (what every worker's rank 0 for it names)."""
    seed = zlib.crc32(job_oid)
    return next(p for p in peers if rendezvous_rank(peers, p, seed) == 0)


def live_peers(
    registry: Any, uuid: str, clock: float, heartbeat_interval: float
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(uuid, served queue names) of the live workers of ``registry``,
    worker ``uuid`` included, sorted."""
    return tuple(
        sorted(
            (record.uuid, tuple(record.queue_names))
            for record in registry.values()
            if record.uuid == uuid or record.is_alive(clock, heartbeat_interval)
        )
    )


class Placement:
    """One worker's view of the live workers and the queues they serve,
    read from the worker registry (``refresh``)."""

    def __init__(self, uuid: str, heartbeat_interval: float):
        self.uuid = uuid
        self.heartbeat_interval = heartbeat_interval
        self._mine = uuid.encode()
        #: (uuid, served queue names) of the live workers, this one included
        self.peers: tuple[tuple[str, tuple[str, ...]], ...] = ()
        #: oids whose change means a worker came or went
        self.registry_oids: frozenset[bytes] = frozenset()
        #: time.monotonic() of the last read
        self.read_at = 0.0
        #: set when the registry changed since it was read
        self.stale = False

    def refresh(self, registry: Any) -> None:
        """Read which workers are alive, and the queues they serve."""
        self.read_at = time.monotonic()
        self.stale = False
        try:
            self.registry_oids = registry.watched_oids()
            self.peers = live_peers(
                registry, self.uuid, time.time(), self.heartbeat_interval
            )
        except BaseException:
            self.stale = True  # read again next time
            raise

    def serving(self, name: str) -> list[bytes]:
        """The ids (bytes) of the live workers that serve queue ``name``,
        this one included."""
        return [
            uuid.encode()
            for uuid, queue_names in self.peers
            if not queue_names or name in queue_names
        ]

    def ranking(self, served: Iterable[Any]) -> Rank | None:
        """``rank(queue, job, backlog)``: this worker's rank for the job
        among the live workers serving its queue, 0 when the job is meant
        for this one (``backlog``: the job is due for longer than the
        grace, and is placed by its run of BACKLOG_CHUNK oids); or None
        when no other live worker serves these queues."""
        peers_of = {queue.name: self.serving(queue.name) for queue in served}
        if all(len(p) <= 1 for p in peers_of.values()):
            return None
        mine = self._mine

        def rank(queue: Any, job: Any, backlog: bool) -> int:
            peers = peers_of.get(queue.name, ())
            if len(peers) <= 1:
                return 0
            oid = job._p_oid
            if backlog:
                number = int.from_bytes(oid, "big") // BACKLOG_CHUNK
                oid = number.to_bytes(8, "big")
            return rendezvous_rank(peers, mine, zlib.crc32(oid))

        return rank

    def is_mine(self, queue: Any, job: Any) -> bool:
        """Whether ``job``, just queued in ``queue``, is meant for this
        worker."""
        rank = self.ranking([queue])
        return rank is None or rank(queue, job, False) == 0

    def compacts(self, queue_name: str, index: int) -> bool:
        """Whether this worker is the one (of the live workers serving the
        queue) that compacts shard ``index``: two compacting the same
        shard, or one compacting where another claims, conflict
        (compaction deletes the first keys of buckets, a change BTrees do
        not merge)."""
        peers = self.serving(queue_name)
        if len(peers) <= 1:
            return True
        seed = zlib.crc32(f"{queue_name}\0{index}".encode())
        return rendezvous_rank(peers, self._mine, seed) == 0
