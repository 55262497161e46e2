"""The Claimer: one dispatcher's claims of due jobs for its idle threads.

A claim runs in the connection of the first idle thread, which is not
using it (it waits for jobs): that thread then finds the jobs it runs,
and its slot, current in its cache, instead of loading them again after
the claim's commit changed them. With fewer due jobs than the idle threads
can take, they are shared among them; with more, each idle thread's jobs
are claimed in a transaction of their own, in its own connection. Jobs
that producers in other processes handed to idle threads (zasync.handoff)
start before the queues are read.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from typing import Any

from transaction.interfaces import TransientError

from zasync.broken import replace_unimportable
from zasync.claim import claim
from zasync.interfaces import ACTIVE, ASSIGNED, CALLBACKS, KEY
from zasync.keys import oid_int, to_us

log = logging.getLogger(__name__)

#: seconds after a claim conflict during which claims pick among the first
#: due jobs at random rather than from the front
CONTENDED_SECONDS = 10.0


@dataclasses.dataclass
class Round:
    """What one claim in one connection found."""

    #: when the next scheduled job is due (epoch seconds), if known
    next_due: float | None = None
    #: thread index -> oids of the jobs it is to run
    batches: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    #: (queue, shard index) worth compacting
    compact: list[tuple[Any, int]] = dataclasses.field(default_factory=list)
    #: claim again for the threads given nothing
    more: bool = False


def check_importable(job: Any) -> None:
    """Log, and replace by a failing stand-in, a job's callable that this
    process cannot import: it would make the claim unstorable, and stop
    this worker from claiming anything."""
    name = replace_unimportable(job)
    if name is not None:
        log.error(
            "job %s calls or is passed %s, which this worker cannot import: "
            "it will fail",
            job.id,
            name,
            extra={"action": "claim", "job_id": job.id, "callable": name},
        )


def next_due(queues: list[Any], known_stale: set) -> float | None:
    """When the first job scheduled for later is due (epoch seconds)."""
    best = None
    now_us = int(time.time() * 1_000_000)
    for queue in queues:
        due = queue.next_due(now_us, known_stale)
        if due is not None and (best is None or due < best):
            best = due
    return best


class Claimer:
    """Claims for the idle threads of ``dispatcher`` (its pool, placement,
    compactor and lease)."""

    def __init__(self, dispatcher: Any):
        self.dispatcher = dispatcher
        self.contended_until = 0.0
        #: the loop's claims: committed, given up on a conflict, and the
        #: jobs the committed ones took
        self.committed = 0
        self.conflicted = 0
        self.jobs_claimed = 0
        #: jobs handed to its threads by producers in other processes
        self.jobs_received = 0

    def claim_for(self, idle: list[int]) -> float | None:
        """Claim due jobs for the ``idle`` threads and give them their
        jobs; return when the next scheduled job is due (epoch seconds),
        if known."""
        dispatcher = self.dispatcher
        pool = dispatcher.pool
        if not idle:
            # Every thread is busy; the first to be idle wakes the loop,
            # which looks then. Nothing is read now: with other workers on
            # the queue, each of their claims wakes this loop.
            dispatcher.waker.forget_fresh()
            dispatcher.renew_lease_if_due()
            return None
        found = None
        while idle:
            runner = pool.runners[idle[0]]
            with runner.lock:
                if runner.conn is None:  # its thread has not opened it yet
                    conn, tm = dispatcher.conn, dispatcher.tm
                else:
                    conn, tm = runner.conn, runner.tm
                try:
                    found = self._claim_in(conn, tm, idle)
                except BaseException:
                    tm.abort()
                    raise
            for index, oids in found.batches.items():
                loaded = index == idle[0] and conn is not dispatcher.conn
                pool.give(index, oids, loaded=loaded)
            if found.compact:
                placement = dispatcher.placement
                dispatcher.compactor.compact(
                    dispatcher.conn,
                    dispatcher.tm,
                    [c for c in found.compact if placement.compacts(c[0].name, c[1])],
                )
            if not found.more:
                break
            idle = [index for index in idle if index not in found.batches]
        return None if found is None else found.next_due

    def _claim_in(self, conn: Any, tm: Any, idle: list[int]) -> Round:
        """Claim for the ``idle`` threads in ``conn`` (its transaction
        manager ``tm``): the connection of the first of them, or the
        loop's own."""
        dispatcher = self.dispatcher
        tm.begin()
        dispatcher.waker.prefetch_fresh(conn)
        record = dispatcher.record_in(conn)
        handed = self._handed_over(record, idle)
        if dispatcher.reconcile_due:
            dispatcher.reconcile_due = False
            for index, oids in self._held_by_idle(record, idle).items():
                handed.setdefault(index, []).extend(oids)
        if handed:
            # Started at once; the queues are read for the other threads
            # in the next round.
            tm.abort()
            return Round(batches=handed, more=True)
        queues = conn.root()[KEY]
        dispatcher.waker.watch_if_changed(queues)
        served = dispatcher.served_queues(queues)
        known_stale = dispatcher.compactor.known_stale
        if not any(len(q) for q in served):
            due = next_due(served, known_stale)
            renew = dispatcher.lease_running_out(conn)
            tm.abort()
            if renew:
                dispatcher.renew_lease()
            return Round(next_due=due)
        try:
            return self._take(conn, tm, idle, record, served)
        except TransientError as e:
            tm.abort()
            self._conflicted(e)
            return Round()

    def _take(
        self, conn: Any, tm: Any, idle: list[int], record: Any, served: list[Any]
    ) -> Round:
        dispatcher = self.dispatcher
        settings = dispatcher.settings
        runners = dispatcher.pool.runners
        known_stale = dispatcher.compactor.known_stale
        slots = [(record.slots[i], runners[i].batch_limit) for i in idle]
        now_dt = datetime.datetime.now(datetime.UTC)
        taken = claim(
            served,
            slots=slots,
            worker=dispatcher.uuid,
            now_us=to_us(now_dt),
            start_time=now_dt,
            spread=time.monotonic() < self.contended_until,
            known_stale=known_stale,
            rank=dispatcher.placement.ranking(served),
            fresh_us=settings.fresh_us,
            fill_first=conn is not dispatcher.conn,
        )
        for jobs in taken.values():
            for job in jobs:
                check_importable(job)
        if taken or dispatcher.pool.is_busy():
            record._extend_lease(time.time())
        batches = {
            index: [oid_int(job) for job in jobs] for index, jobs in taken.items()
        }
        due = next_due(served, known_stale)
        if taken.wait_until_us is not None:
            # Jobs left to the workers they are meant for: take them then
            # if those have not.
            wait = taken.wait_until_us / 1_000_000
            due = wait if due is None else min(due, wait)
        tm.commit()
        # Only now: an aborted claim leaves those entries live.
        dispatcher.compactor.remember(taken.stale_keys)
        for index, jobs in taken.items():
            if index != idle[0] or conn is dispatcher.conn:
                # The thread loads them in its own connection: ghosts here
                # leave this one's cache to the queue's buckets.
                for job in jobs:
                    job._p_deactivate()
        if taken:
            self.committed += 1
            self.jobs_claimed += sum(len(oids) for oids in batches.values())
        return Round(
            next_due=due, batches=batches, compact=taken.compact, more=taken.more
        )

    def _conflicted(self, error: Exception) -> None:
        """Somebody else claimed too: look again, and for a while pick among
        the first due jobs at random rather than from the front."""
        dispatcher = self.dispatcher
        self.conflicted += 1
        log.debug("dispatcher %s: a claim conflicted: %s", dispatcher.uuid, error)
        self.contended_until = time.monotonic() + CONTENDED_SECONDS
        dispatcher.wake()
        if time.monotonic() - dispatcher.placement.read_at > 0.1:
            # Maybe a worker this one does not know of yet (workers started
            # together each read the registry before the others had
            # registered).
            dispatcher.refresh_peers()

    def _held_by_idle(self, record: Any, idle: list[int]) -> dict[int, list[int]]:
        """{thread: oids} of the jobs the slots of ``idle`` threads hold in
        the database although their threads run nothing: claimed by a
        commit that reported an error (it may have committed all the
        same). They are given to their threads, as if just claimed."""
        found = {}
        uuid = self.dispatcher.uuid
        for index in idle:
            oids = [
                oid
                for oid, job in record.slots[index].active.items()
                if job.status in (ACTIVE, ASSIGNED, CALLBACKS)
                and job.worker == uuid
                and job.slot == index
            ]
            if oids:
                log.warning(
                    "worker thread %d holds %d job(s) it was never given "
                    "(a commit reported an error): running them",
                    index,
                    len(oids),
                )
                found[index] = oids
        return found

    def _handed_over(self, record: Any, idle: list[int]) -> dict[int, list[int]]:
        """{thread: oids} of the jobs producers in other processes handed
        to the ``idle`` threads (zasync.handoff)."""
        found = {}
        uuid = self.dispatcher.uuid
        for index in idle:
            inbox = record.slots[index].inbox
            if not inbox:
                continue
            oids = [
                oid
                for oid, job in inbox.jobs.items()
                if job.status == ACTIVE and job.worker == uuid and job.slot == index
            ]
            if oids:
                found[index] = oids
                self.jobs_received += len(oids)
        return found
