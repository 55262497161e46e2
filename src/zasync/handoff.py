"""Handing a job just queued to an idle worker thread in the producer's
own transaction, instead of leaving it to a claim.

Otherwise a job queued in an empty queue waits for the dispatcher's
claim: a wake-up, a transaction that reads the queue, and a commit of its
own. Instead, just before the producer's transaction commits, the job is taken
out of its queue and assigned to an idle thread's slot, as a claim would
do. Two workers still never run the same job: it is assigned in the
committed transaction that queued it, and no other worker ever sees it in
the queue.

The job goes to the worker it is meant for (see zasync.placement: the
one the others leave a job just queued to), in one of two ways:

- that worker runs in the producer's process: an idle thread is reserved
  for the job in memory, the job is marked ACTIVE, and the thread starts
  it once the transaction has committed (a commit that fails gives the
  thread back);
- it runs elsewhere (another process on the same ZEO or RelStorage
  database): the job goes, ACTIVE, to the inbox of a slot of its that
  holds no jobs (zasync.workers.Inbox, which merges the producers' and
  the worker's concurrent changes). The commit reaches the worker as an
  invalidation of the inbox (ZEO) or as the producers' NOTIFY
  (RelStorage); its loop looks at its idle threads' inboxes before it
  claims, and the thread moves the job to its slot as it starts it.

Only when nothing else is disturbed, else the job waits for a claim:

- the transaction queues this one job, due now, without quotas, lock or
  unique key, in a queue that holds no other but jobs of quotas and locks
  (zasync.lanes: no job queued earlier is overtaken but those, which take
  their turn when their quotas and locks allow);
- the worker serves the queue, is live (not stopped, seen within three of
  its heartbeats or its lease running) and is the one the job is meant
  for; in this process, it has an idle thread; elsewhere, a slot without
  jobs;
- in this process, the slot is unchanged since the producer's
  transaction began (writing an older version of it could fail the
  producer's commit); elsewhere, the slot and its inbox hold no jobs in
  the producer's view (were the thread busy after all, the job waits for
  it: the inbox merges, nothing fails).

As a claim does, the hand-off extends the worker's lease on its jobs;
the heartbeat merges concurrent changes (see zasync.workers.Heartbeat),
so the worker's own writes to it never fail the producer's commit. A
worker killed without stopping looks live for up to three heartbeats: a
job handed to it then runs when its lease has run out and another worker
rescues it (lease_seconds and maintenance_interval), or when it restarts
under its UUID.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

import zope.interface
from transaction.interfaces import IDataManager
from ZODB.POSException import POSKeyError, ReadConflictError
from ZODB.utils import load_current

from zasync import inprocess, prewarm
from zasync.interfaces import KEY, PENDING
from zasync.job import now
from zasync.keys import now_us, oid_int
from zasync.lanes import gated_counter
from zasync.placement import owner_of

log = logging.getLogger(__name__)

_OFFERED = object()  # transaction data: the (queue, job) put in it


def offer(queue: Any, job: Any) -> None:
    """Called when ``job`` is put in ``queue``: hand it to an idle thread
    of the worker it is meant for when the transaction commits, if it can
    be."""
    jar = queue._p_jar
    db = jar.db()
    txn = jar.transaction_manager.get()
    try:
        offered = txn.data(_OFFERED)
    except KeyError:
        offered = []
        txn.set_data(_OFFERED, offered)
        txn.addBeforeCommitHook(_before_commit, (offered, db, txn))
    offered.append((queue, job))


def _before_commit(offered: list[tuple[Any, Any]], db: Any, txn: Any) -> None:
    if len(offered) != 1:
        return  # several jobs: a claim shares them among the idle threads
    queue, job = offered[0]
    if job.status != PENDING or job.quota_names or job._key is None:
        return
    if job.lock or job.unique_key:
        return  # a claim takes locks and frees unique keys
    if job._key[1] > now_us():
        return
    local = inprocess.serving(db)
    if local and _alone(queue):
        for dispatcher in local:
            if _hand_here(dispatcher, queue, job, txn):
                return
    try:
        handed = _hand_elsewhere(queue, job, {dispatcher.uuid for dispatcher in local})
    except (ReadConflictError, POSKeyError):
        handed = False  # a worker's record not readable here: a claim takes it
    if not handed:
        # Jobs waiting, or the worker busy: the next enqueue would not be
        # handed over either, and reloading its slots meanwhile is waste.
        prewarm.forget(db)


def _hand_here(dispatcher: Any, queue: Any, job: Any, txn: Any) -> bool:
    """Hand ``job`` to an idle thread of ``dispatcher`` (in this process),
    reserved until the transaction ends; False when it cannot be."""
    names = dispatcher.settings.queue_names
    if names is not None and queue.name not in names:
        return False
    if dispatcher.stopping.is_set() or not dispatcher.placement.is_mine(queue, job):
        return False
    index = dispatcher.pool.reserve()
    if index is None:
        return False
    handed = _Handed(dispatcher.pool, index, job)
    try:
        assigned = _assign_here(dispatcher, index, queue, job)
    except BaseException:
        handed.release()
        raise
    if not assigned:
        handed.release()
        return False
    txn.join(handed)
    txn.addAfterCommitHook(handed.after_commit)
    return True


def _assign_here(dispatcher: Any, index: int, queue: Any, job: Any) -> bool:
    """Take ``job`` out of ``queue`` and assign it to the dispatcher's slot
    ``index``, in the job's transaction, as a claim does; False when that
    cannot be done without risk (nothing is changed then)."""
    conn = job._p_jar
    try:
        record = dispatcher.record_in(conn)
        slot = record.slots[index]
        slot.active._p_activate()
    except (ReadConflictError, POSKeyError, IndexError):
        return False  # the worker registered after this transaction began
    _data, serial = load_current(conn.db().storage, slot.active._p_oid)
    if serial != slot.active._p_serial:
        return False  # changed since this transaction began
    if not queue._withdraw(job):
        return False
    job._assign(dispatcher.uuid, slot.index, now(), first=True)
    slot.active[oid_int(job)] = job
    # As a claim does: the heartbeat's changes merge with the worker's own.
    record._extend_lease(time.time())
    return True


def _hand_elsewhere(queue: Any, job: Any, local: set[str]) -> bool:
    """Hand ``job`` to a slot without jobs of the worker it is meant for,
    when that worker runs in another process (not one of ``local``)."""
    conn = job._p_jar
    # The queue's counts: claims change them. Up to date in this view, they
    # tell at no cost whether another job waits; else they are fetched
    # with the slots, in the one round trip the choice makes.
    gated = gated_counter(queue)
    counters = (queue.counter, *queue._added, *([gated] if gated is not None else []))
    stale = [c for c in counters if _ghost(c)]
    if not stale:
        _seen[queue.counter] = (queue.counter(), time.monotonic())
        if not _alone(queue):
            return False  # another job waits: not to be overtaken
    if stale and _waits_surely(queue, stale):
        return False
    queues = conn.root().get(KEY)
    if queues is None:
        return False
    clock = time.time()
    name = queue.name
    peers = [
        record
        for record in queues.workers.values()
        if (not record.queue_names or name in record.queue_names)
        and _live(record, clock)
    ]
    if not peers:
        return False
    mine = owner_of(job._p_oid, [record.uuid.encode() for record in peers])
    owner = next(r for r in peers if r.uuid.encode() == mine)
    if owner.uuid in local:
        return False  # its own threads were asked (_hand_here)
    slots = [slot for slot in owner.slots[: owner.threads] if slot.inbox is not None]
    objs = stale + [obj for slot in slots for obj in (slot.active, slot.inbox)]
    conn.prefetch([obj for obj in objs if _ghost(obj)])
    _seen[queue.counter] = (queue.counter(), time.monotonic())
    if not _alone(queue):
        return False
    for slot in slots:
        if not slot.active and not slot.inbox:
            if not queue._withdraw(job):
                return False
            job._assign(owner.uuid, slot.index, now(), first=True)
            slot.inbox.add(job)
            owner._extend_lease(time.time())
            _keep_warm(conn, slots, owner)
            return True
    return False


def _keep_warm(conn: Any, slots: list[Any], owner: Any) -> None:
    """After a hand-off: the worker's slots, which it rewrites at each
    job, and its heartbeat are reloaded as soon as they change, for the
    next one (zasync.prewarm). Not the queue's counters: they change at
    nearly every commit while producers queue and workers claim."""
    warmer = prewarm.prewarmer_of(conn.db())
    if warmer is not None:
        kept = [obj for slot in slots for obj in (slot.active, slot.inbox)]
        kept.append(owner.heartbeat)
        warmer.watch(obj._p_oid for obj in kept if obj._p_oid is not None)


#: the value of a queue's counter of jobs taken that this process last
#: read, and when (time.monotonic()), by the counter object (per connection)
_seen: weakref.WeakKeyDictionary[Any, tuple[int, float]] = weakref.WeakKeyDictionary()
#: how long such a value stands in for a load
SEEN_SECONDS = 0.005


def _waits_surely(queue: Any, stale: list[Any]) -> bool:
    """Whether another job surely waits in ``queue``, though its counter of
    jobs taken changed since this view read it (claims took jobs out): that
    counter only goes down (a queue with counters per shard), so its value
    read a moment ago and the current counts of the shards bound the
    queue's length from above. Only for a moment (SEEN_SECONDS): producers
    queueing back to back load the counter once every few enqueues instead
    of after every claim; one queueing now and then reads it afresh."""
    counter = queue.counter
    if stale != [counter] or not queue._added:
        return False
    seen = _seen.get(counter)
    if seen is None or time.monotonic() - seen[1] > SEEN_SECONDS:
        return False
    upper = seen[0] + sum(added() for added in queue._added)
    return upper - _gated(queue) > 1


def _alone(queue: Any) -> bool:
    """Whether the job just queued is the only one in ``queue`` a claim
    could take before it: jobs waiting in lanes, or at the front of one,
    wait for their quotas or locks (zasync.lanes), and are not overtaken
    in their own turn."""
    return len(queue) - _gated(queue) == 1


def _gated(queue: Any) -> int:
    """How many of ``queue``'s pending jobs are in lanes or their fronts."""
    gated = gated_counter(queue)
    return gated() if gated is not None else 0


def _ghost(obj: Any) -> bool:
    """Whether ``obj`` must be loaded (changed by another commit since this
    connection read it, or never read)."""
    return obj._p_oid is not None and obj._p_changed is None


def _live(record: Any, clock: float) -> bool:
    """Whether a worker looks live to a producer: not stopped, its lease
    running or seen within three heartbeats. (WorkerRecord.is_alive also
    reads every slot, to call a worker that holds jobs past its lease
    dead; the hand-off extends the lease of the one it picks.)"""
    if record.stopped is not None:
        return False
    heartbeat = record.heartbeat
    seen_until = heartbeat.last_seen + 3 * record.heartbeat_interval
    return bool(clock <= max(heartbeat.lease_until, seen_until))


@zope.interface.implementer(IDataManager)
class _Handed:
    """A job assigned to a reserved thread in a producer's transaction:
    started once the transaction has committed, and the thread released
    when it is aborted instead."""

    def __init__(self, pool: Any, index: int, job: Any):
        self.pool = pool
        self.index = index
        self.oid = oid_int(job)
        self.transaction_manager = job._p_jar.transaction_manager

    def release(self) -> None:
        self.pool.release(self.index)

    def after_commit(self, committed: bool) -> None:
        if committed:
            self.pool.start_reserved(self.index, self.oid)
        else:
            self.release()

    # IDataManager: nothing to store, only the thread to give back when
    # the transaction does not commit.
    def abort(self, txn: Any) -> None:
        self.release()

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        pass

    def tpc_finish(self, txn: Any) -> None:
        pass

    def tpc_abort(self, txn: Any) -> None:
        self.release()

    def sortKey(self) -> str:  # noqa: N802 - transaction's API
        return f"zasync.handoff:{id(self)}"
