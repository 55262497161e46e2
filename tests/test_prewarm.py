"""zasync.prewarm: what a producer's hand-off reads of the worker (its
slots' trees and inboxes, its heartbeat), reloaded into its ZEO client
cache as soon as another client's commit changes it, so that the next
enqueue loads nothing from the server; forgotten once an enqueue is not
handed over.

A real ZEO server; the producer and the worker each have a database
object of their own, as two processes do."""

from __future__ import annotations

import logging

import pytest
import transaction
from benchmarks import roundtrips
from ZODB.utils import load_current

import jobfuncs
import zasync
from zasync import prewarm
from zasync.interfaces import KEY
from zasync.storage import open_db
from zasync.testing import wait_until

pytestmark = pytest.mark.zeo


@pytest.fixture
def producer(worker_and_producer):
    """(dispatcher, the producer's connection, its transaction manager),
    once the producer sees the worker."""
    dispatcher, producer_db = worker_and_producer
    tm = transaction.TransactionManager(explicit=True)
    conn = producer_db.open(transaction_manager=tm)
    try:
        wait_until(lambda: _sees_worker(conn, tm), timeout=30)
        yield dispatcher, conn, tm
    finally:
        conn.close()


def _sees_worker(conn, tm) -> bool:
    tm.begin()
    try:
        return len(conn.root()[KEY].workers) == 1
    finally:
        tm.abort()


def _put(conn, tm, key: str) -> zasync.Job:
    tm.begin()
    job = conn.root()[KEY][""].put(zasync.Job(jobfuncs.count, key))
    tm.commit()
    return job


def _idle(dispatcher) -> bool:
    return len(dispatcher.pool.idle) == dispatcher.threads


def _warm(warmer, producer_db, worker_db) -> bool:
    """Whether the producer's client cache holds the current state of
    every object kept warm (what the server gives the worker)."""
    cache = producer_db.storage.base._cache
    for oid in warmer.watched():
        cached = cache.load(oid)
        if cached is None or cached[1] != load_current(worker_db.storage, oid)[1]:
            return False
    return True


def test_what_a_hand_off_read_is_reloaded_when_the_worker_changes_it(
    producer,
):
    dispatcher, conn, tm = producer
    producer_db = conn.db()
    warmer = prewarm.prewarmer_of(producer_db)
    assert warmer is not None
    job = _put(conn, tm, "warm")
    assert job._worker == dispatcher.uuid  # handed over
    wait_until(lambda: jobfuncs.calls["warm"] == 1 and _idle(dispatcher))
    tm.begin()
    record = conn.root()[KEY].workers[dispatcher.uuid]
    slot = record.slots[job._slot]
    assert {slot.active._p_oid, slot.inbox._p_oid, record.heartbeat._p_oid} <= (
        warmer.watched()
    )
    tm.abort()
    # The worker rewrote the slot's inbox and tree of active jobs as it
    # started and ended the job: the producer's cache got them back
    # without the producer asking.
    wait_until(lambda: _warm(warmer, producer_db, dispatcher.db), timeout=10)
    assert warmer.loads >= 2


def test_once_warm_an_enqueue_makes_no_round_trip_besides_its_commit(
    producer,
):
    dispatcher, conn, tm = producer
    producer_db = conn.db()
    counts = roundtrips.install(producer_db)
    warmer = prewarm.prewarmer_of(producer_db)
    for i in range(3):  # the first ones load the queue and the worker's record
        _put(conn, tm, "first")
        wait_until(lambda i=i: jobfuncs.calls["first"] > i and _idle(dispatcher))
    handed = 0
    for i in range(20):
        wait_until(lambda: _warm(warmer, producer_db, dispatcher.db), timeout=10)
        counts.reset()
        job = _put(conn, tm, "counted")
        handed += job._worker is not None
        trips = {k: n for k, n in counts.calls.items() if k != "new_oids"}
        assert counts.trips() - counts.calls["new_oids"] == 0, trips
        wait_until(lambda i=i: jobfuncs.calls["counted"] > i and _idle(dispatcher))
    assert handed == 20
    assert counts.calls["prewarm"] > 0  # the last job's changes, coming in


def test_objects_are_kept_warm_for_a_while_after_the_last_hand_off(
    producer, monkeypatch
):
    """A producer that stopped queueing asks the server for nothing more."""
    monkeypatch.setattr(prewarm, "WATCH_SECONDS", 0.5)
    dispatcher, conn, tm = producer
    warmer = prewarm.prewarmer_of(conn.db())
    _put(conn, tm, "before")
    wait_until(lambda: jobfuncs.calls["before"] == 1 and _idle(dispatcher))
    wait_until(lambda: not warmer.watched(), timeout=5)
    loads = warmer.loads
    # The worker's slots change again (a job it queues itself): nothing is
    # loaded for the producer any more, and its watch list is emptied.
    worker_tm = transaction.TransactionManager(explicit=True)
    worker_conn = dispatcher.db.open(transaction_manager=worker_tm)
    try:
        worker_tm.begin()
        job = worker_conn.root()[KEY][""].put(zasync.Job(jobfuncs.count, "after"))
        worker_tm.commit()
        wait_until(lambda: jobfuncs.calls["after"] == 1 and _idle(dispatcher))
        assert job._p_jar is worker_conn
    finally:
        worker_conn.close()
    # Once the worker's commits have reached the producer's client:
    last = dispatcher.db.storage.lastTransaction()
    wait_until(lambda: conn.db().storage.lastTransaction() >= last, timeout=10)
    assert warmer.loads == loads
    assert not warmer._watched  # forgotten as the commits came in


def test_an_enqueue_not_handed_over_forgets_what_was_kept_warm(
    producer,
):
    """Every thread busy: the job waits for a claim, and the worker's
    slots, which change at each of its jobs, are no longer reloaded."""
    dispatcher, conn, tm = producer
    warmer = prewarm.prewarmer_of(conn.db())
    _put(conn, tm, "handed")
    wait_until(lambda: jobfuncs.calls["handed"] == 1 and _idle(dispatcher))
    assert warmer.watched()
    gate = jobfuncs.gate("busy")
    for _ in range(2):
        tm.begin()
        conn.root()[KEY][""].put(zasync.Job(jobfuncs.wait_for, "busy"))
        tm.commit()
    wait_until(lambda: not dispatcher.pool.idle)
    waiting = _put(conn, tm, "waits")
    assert waiting._worker is None  # left to a claim
    assert not warmer.watched()
    loads = warmer.loads
    gate.set()
    wait_until(lambda: jobfuncs.calls["waits"] == 1 and _idle(dispatcher))
    last = dispatcher.db.storage.lastTransaction()
    wait_until(lambda: conn.db().storage.lastTransaction() >= last, timeout=10)
    assert warmer.loads == loads  # the worker's commits since: none reloaded


def test_only_zeo_clients_have_a_prewarmer(zasync_db, pg_uri):
    assert prewarm.prewarmer_of(zasync_db) is None  # FileStorage
    rs_db = open_db(pg_uri)
    try:
        assert prewarm.prewarmer_of(rs_db) is None  # polls instead
    finally:
        rs_db.close()


def test_while_disconnected_nothing_is_asked(zeo_server, caplog):
    """The server gone, an invalidation (one that was on its way) asks
    nothing and logs no error; a closed database neither."""
    db = open_db(zeo_server.uri)
    warmer = prewarm.prewarmer_of(db)
    assert warmer is not None
    conn = db.open()
    oid = conn.root()._p_oid
    conn.close()
    warmer.watch([oid])
    zeo_server.stop()
    wait_until(lambda: not db.storage.base.is_connected(), timeout=10)
    with caplog.at_level(logging.DEBUG):
        warmer._changed(b"\0" * 7 + b"\1", [oid])
        db.close()
        warmer._changed(b"\0" * 7 + b"\2", [oid])
    assert warmer.loads == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
