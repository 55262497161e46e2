"""A worker's state (alive, stopped, dead) read from its record: real
WorkerRecords, a real Dispatcher stopped cleanly, and records as
maintenance leaves the workers it finds dead."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import transaction
import ZODB
from ZODB.FileStorage import FileStorage

from zasync import admin
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_for_result
from zasync.workers import STOPPED_RECORD_SECONDS, WorkerRecord
from zasync.workerstate import WorkerState, state_of

V0_1 = Path(__file__).parent / "fixtures" / "v0_1.fs"
V0_1_WORKER = "00000000-0000-4000-8000-000000000001"

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


# --- names ---


def test_a_record_of_an_earlier_version_has_no_name_and_reads_as_host_pid(tmp_path):
    copy = tmp_path / "Data.fs"
    shutil.copyfile(V0_1, copy)
    db = ZODB.DB(FileStorage(str(copy)))
    conn = db.open()
    try:
        record = conn.root()[KEY].workers[V0_1_WORKER]
        assert record.name is None
        assert record.label == f"{record.hostname}:{record.pid}"
        assert record.hostname and record.pid
    finally:
        transaction.abort()
        conn.close()
        db.close()


def test_a_named_dispatcher_keeps_its_name_in_its_record():
    db = open_db("memory://")
    install(db)
    named = Dispatcher(db, threads=1, name="reports").start()
    unnamed = Dispatcher(db, threads=1).start()
    try:
        conn = db.open()
        workers = conn.root()[KEY].workers
        assert workers[named.uuid].name == "reports"
        assert workers[named.uuid].label == "reports"
        assert workers[unnamed.uuid].name is None
        assert workers[unnamed.uuid].label == f"{socket.gethostname()}:{os.getpid()}"
        conn.close()
    finally:
        named.stop(10)
        unnamed.stop(10)
        db.close()


# --- stopped records pruned ---


def ran_one_job_and_stopped(db: ZODB.DB, value: int) -> tuple[str, Job]:
    """A dispatcher that ran ``abs(value)`` then stopped cleanly: its UUID
    and the job."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    job = conn.root()[KEY][""].put(Job(abs, value))
    tm.commit()
    dispatcher = Dispatcher(db, threads=1, poll_interval=0.1).start()
    try:
        assert wait_for_result(job) == abs(value)
    finally:
        assert dispatcher.stop(10)
    conn.close()
    return dispatcher.uuid, job


def registry_after(db: ZODB.DB, seconds: float, **prune: object) -> tuple:
    """Register a new worker ``seconds`` after now; the UUIDs listed then,
    and the ids of the finished jobs the admin lists."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    workers = conn.root()[KEY].workers
    if prune:
        workers.prune_stopped(time.time() + seconds, **prune)
    else:
        workers.register("newcomer", now=time.time() + seconds)
    tm.commit()
    listed = set(workers)
    finished = {job.id for job in admin.list_jobs(conn.root()[KEY], limit=100)}
    conn.close()
    return listed, finished


def test_a_stopped_record_stays_listed_for_a_while():
    db = open_db("memory://")
    install(db)
    uuid, job = ran_one_job_and_stopped(db, -3)
    listed, finished = registry_after(db, STOPPED_RECORD_SECONDS - 60)
    assert uuid in listed and job.id in finished
    db.close()


def test_a_stopped_record_goes_when_a_worker_registers_later_its_jobs_stay_listed():
    db = open_db("memory://")
    install(db)
    uuid, job = ran_one_job_and_stopped(db, -3)
    listed, finished = registry_after(db, STOPPED_RECORD_SECONDS + 60)
    assert uuid not in listed and "newcomer" in listed
    # its finished job is with its queue's now: listed, and pruned by retention
    assert job.id in finished
    conn = db.open()
    assert list(conn.root()[KEY][""].finished.values())[0].id == job.id
    conn.close()
    db.close()


def test_a_stopped_record_with_more_finished_jobs_than_the_limit_goes_in_parts():
    db = open_db("memory://")
    install(db)
    first, job_1 = ran_one_job_and_stopped(db, -1)
    second, job_2 = ran_one_job_and_stopped(db, -2)
    later = STOPPED_RECORD_SECONDS + 60
    listed, finished = registry_after(db, later, limit=1)
    assert len({first, second} & listed) == 1  # one moved, the other kept
    assert {job_1.id, job_2.id} <= finished
    listed, finished = registry_after(db, later, limit=1)
    assert not {first, second} & listed
    assert {job_1.id, job_2.id} <= finished
    db.close()


def test_a_dead_record_stays_until_its_jobs_are_recovered():
    db = open_db("memory://")
    install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    workers = conn.root()[KEY].workers
    record = workers.register("crashed")
    record._begin(1, (), time.time() - 2 * STOPPED_RECORD_SECONDS)
    job = conn.root()[KEY][""].put(Job(abs, 1))
    record.slots[0].active[1] = job  # it held a job when it died
    record.stopped = time.time() - 2 * STOPPED_RECORD_SECONDS  # found dead
    tm.commit()
    conn.close()
    listed, _finished = registry_after(db, 60)
    assert "crashed" in listed
    conn = db.open()
    record = conn.root()[KEY].workers["crashed"]
    assert state_of(record, time.time(), HEARTBEAT) is WorkerState.DEAD
    conn.close()
    db.close()
