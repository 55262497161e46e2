"""Handing a job just queued to an idle thread of a dispatcher in the
producer's own process, in the producer's own transaction.

Otherwise a job queued in an empty queue waits for the dispatcher's
claim: a wake-up, a transaction that reads the queue, and a commit of its
own (about 1 ms on FileStorage). Instead, just before the producer's
transaction commits, the job is taken out of its queue and assigned to
the idle thread's slot, as a claim would do; once the commit is done, the
thread runs it. Two workers still never run the same job: it is assigned
in the committed transaction that queued it, and no other worker ever
sees it in the queue. A commit that fails leaves the thread idle again.

Only when nothing else is disturbed, else the job waits for a claim:

- the transaction queues this one job, due now, without quotas, in a
  queue that holds no other (no job queued earlier is overtaken);
- the dispatcher serves the queue and is the live worker the job is
  meant for (see Dispatcher._ranking);
- the thread's slot is unchanged since the producer's transaction began
  (writing an older version of it would fail the producer's commit).

As a claim does, the hand-off extends the worker's lease on its running
jobs; the heartbeat merges concurrent changes (see
zasync.workers.Heartbeat), so the worker's own writes to it never fail
the producer's commit.
"""

from __future__ import annotations

import logging
import time

import zope.interface
from transaction.interfaces import IDataManager
from ZODB.POSException import POSKeyError, ReadConflictError
from ZODB.utils import load_current

from zasync.interfaces import PENDING, BadStatusError
from zasync.job import now

log = logging.getLogger(__name__)

_OFFERED = object()  # transaction data: the (queue, job) put in it


def offer(queue, job) -> None:
    """Called when ``job`` is put in ``queue``: hand it to an idle thread
    of this process when the transaction commits, if it can be."""
    from zasync.dispatcher import local_dispatchers

    jar = queue._p_jar
    db = jar.db()
    if not local_dispatchers(db):
        return
    txn = jar.transaction_manager.get()
    try:
        offered = txn.data(_OFFERED)
    except KeyError:
        offered = []
        txn.set_data(_OFFERED, offered)
        txn.addBeforeCommitHook(_before_commit, (offered, db, txn))
    offered.append((queue, job))


def _before_commit(offered: list, db, txn) -> None:
    if len(offered) != 1:
        return  # several jobs: a claim shares them among the idle threads
    queue, job = offered[0]
    if job._status != PENDING or job.quota_names or job._key is None:
        return
    key = job._key
    if key[1] > int(time.time() * 1_000_000) or len(queue) != 1:
        return
    from zasync.dispatcher import local_dispatchers

    for dispatcher in local_dispatchers(db):
        index = dispatcher._reserve(queue, job)
        if index is None:
            continue
        handed = _Handed(dispatcher, index, job)
        try:
            assigned = _hand(dispatcher, index, queue, job)
        except BaseException:
            handed.release()
            raise
        if assigned:
            txn.join(handed)
            txn.addAfterCommitHook(handed.after_commit)
            return
        handed.release()


def _hand(dispatcher, index: int, queue, job) -> bool:
    """Take ``job`` out of ``queue`` and assign it to the dispatcher's slot
    ``index``, in the job's transaction, as a claim does; False when that
    cannot be done without risk (nothing is changed then)."""
    from zasync.claim import _assign as assign  # zasync.claim imports queue

    conn = job._p_jar
    try:
        record = conn.get(dispatcher._record_oid)
        slot = record.slots[index]
        slot.active._p_activate()
    except (ReadConflictError, POSKeyError, IndexError):
        return False  # the worker registered after this transaction began
    _data, serial = load_current(conn.db().storage, slot.active._p_oid)
    if serial != slot.active._p_serial:
        return False  # changed since this transaction began
    try:
        queue._take(job)
    except BadStatusError:
        return False
    assign([job], [(slot, 1)], dispatcher.uuid, now())
    # As a claim does: the heartbeat's changes merge with the worker's own.
    dispatcher._extend_lease(record)
    return True


@zope.interface.implementer(IDataManager)
class _Handed:
    """A job assigned to a reserved thread in a producer's transaction:
    started once the transaction has committed, and the thread released
    when it is aborted instead."""

    def __init__(self, dispatcher, index: int, job):
        self.dispatcher = dispatcher
        self.index = index
        self.oid = int.from_bytes(job._p_oid, "big")
        self.transaction_manager = job._p_jar.transaction_manager

    def release(self) -> None:
        self.dispatcher._release(self.index)

    def after_commit(self, committed: bool) -> None:
        if committed:
            self.dispatcher._start_reserved(self.index, self.oid)
        else:
            self.release()

    # IDataManager: nothing to store, only the thread to give back when
    # the transaction does not commit.
    def abort(self, txn) -> None:
        self.release()

    def tpc_begin(self, txn) -> None:
        pass

    def commit(self, txn) -> None:
        pass

    def tpc_vote(self, txn) -> None:
        pass

    def tpc_finish(self, txn) -> None:
        pass

    def tpc_abort(self, txn) -> None:
        self.release()

    def sortKey(self) -> str:  # noqa: N802 - transaction's API
        return f"zasync.handoff:{id(self)}"
