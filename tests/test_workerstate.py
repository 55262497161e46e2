"""A worker's state (alive, stopped, dead) read from its record: real
WorkerRecords, a real Dispatcher stopped cleanly, and records as
maintenance leaves the workers it finds dead."""

from __future__ import annotations

import time

import transaction

from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY
from zasync.queue import install
from zasync.storage import open_db
from zasync.workers import WorkerRecord
from zasync.workerstate import WorkerState, state_of

HEARTBEAT = 60.0


def started(clock: float) -> WorkerRecord:
    record = WorkerRecord("w")
    record._begin(2, ("",), clock, heartbeat_interval=HEARTBEAT)
    return record


def test_a_worker_seen_lately_is_alive():
    record = started(1000.0)
    assert state_of(record, 1000.0 + HEARTBEAT, HEARTBEAT) is WorkerState.ALIVE


def test_a_worker_not_seen_for_three_heartbeats_is_dead():
    record = started(1000.0)
    later = 1000.0 + 3 * HEARTBEAT + 1
    assert state_of(record, later, HEARTBEAT) is WorkerState.DEAD
    # and stays dead once maintenance marks it
    record.stopped = later
    assert state_of(record, later + 1, HEARTBEAT) is WorkerState.DEAD


def test_a_worker_whose_lease_ran_out_is_dead():
    record = started(1000.0)
    record._extend_lease(1000.0)  # it held jobs
    found = record.heartbeat.lease_until + 1
    record.stopped = found  # as maintenance marks it, its lease as it ran out
    assert state_of(record, found, HEARTBEAT) is WorkerState.DEAD


def test_a_dispatcher_stopped_cleanly_is_stopped():
    db = open_db("memory://")
    install(db)
    dispatcher = Dispatcher(db, threads=1).start()
    dispatcher.stop(10)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        record = conn.root()[KEY].workers[dispatcher.uuid]
        assert state_of(record, time.time(), HEARTBEAT) is WorkerState.STOPPED
        assert WorkerState.STOPPED == "stopped"
    finally:
        tm.abort()
        conn.close()
        db.close()
