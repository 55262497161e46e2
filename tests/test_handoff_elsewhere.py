"""zasync.handoff, producer and worker in different processes: a job
queued alone goes, in the producer's transaction, to the inbox of an idle
thread of the worker it is meant for, which starts it without a claim.

Each side has a database object of its own on a real ZEO server (or
PostgreSQL for RelStorage): two ZEO clients, as two processes are. The
worker processes of tests/test_multiprocess.py cover kill -9."""

from __future__ import annotations

import threading
import time

import pytest
import transaction

import jobfuncs
import zasync
from dbviews import other_connection
from test_handoff import settled
from zasync.interfaces import ACTIVE, KEY, PENDING
from zasync.storage import open_db
from zasync.testing import wait_for_result, wait_until
from zasync.workers import Inbox


class Producer:
    """A connection to a database of its own, on its own transaction
    manager: another process's view."""

    def __init__(self, uri: str):
        self.db = open_db(uri)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)

    def queue(self, name: str = ""):
        return self.conn.root()[KEY][name]

    def put(self, job, name: str = ""):
        self.tm.begin()
        self.queue(name).put(job)
        self.tm.commit()
        return job

    def record(self, uuid: str):
        self.tm.begin()
        return self.conn.root()[KEY].workers[uuid]

    def sees(self, dispatcher) -> None:
        """Wait until this view has the worker's record: ZEO tells the
        other clients of its registration a moment after it commits."""

        def seen() -> bool:
            self.tm.begin()
            return dispatcher.uuid in self.conn.root()[KEY].workers

        wait_until(seen, timeout=10)

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()


@pytest.fixture
def databases(request):
    """(worker's database, producer) on one server: ZEO, or PostgreSQL
    for RelStorage when the test is parametrized so."""
    if getattr(request, "param", "zeo") == "zeo":
        uri = request.getfixturevalue("zeo_server").uri
    else:
        uri = request.getfixturevalue("pg_uri")
    worker_db = open_db(uri)
    zasync.install(worker_db, ("", "mail"))
    producer = Producer(uri)
    yield worker_db, producer
    producer.close()
    worker_db.close()


@pytest.fixture
def worker(databases, start_dispatcher):
    """A dispatcher of two threads on the worker's database, idle after a
    first job (queued by the producer) ran."""
    worker_db, producer = databases
    dispatcher = start_dispatcher(db=worker_db, threads=2, poll_interval=30)
    producer.sees(dispatcher)
    wait_for_result(producer.put(zasync.Job(jobfuncs.noop)))
    settled(dispatcher)
    return dispatcher


@pytest.mark.parametrize("databases", ["zeo", "relstorage"], indirect=True)
def test_a_job_queued_elsewhere_goes_to_an_idle_thread_of_its_worker(databases, worker):
    _worker_db, producer = databases
    claims, received = worker.claims_committed, worker.jobs_received
    job = producer.put(zasync.Job(jobfuncs.add, 1, 2))
    # Committed with the job: ACTIVE in the inbox of one of the worker's
    # threads, and out of the queue.
    assert job.status == ACTIVE and job._worker == worker.uuid
    inbox = producer.record(worker.uuid).slots[job._slot].inbox
    assert list(inbox.jobs) == [int.from_bytes(job._p_oid, "big")]
    assert len(producer.queue()) == 0
    assert wait_for_result(job) == 3
    assert worker.jobs_received == received + 1
    assert worker.claims_committed == claims  # no claim
    # The thread moved it from the inbox to its slot, then to done.
    slot = producer.record(worker.uuid).slots[job._slot]
    assert not slot.inbox and not slot.active
    assert list(slot.done.values())[-1] is job


def test_jobs_queued_one_after_another_are_each_handed_over(databases, worker):
    _worker_db, producer = databases
    claims, received = worker.claims_committed, worker.jobs_received
    for n in range(10):
        job = producer.put(zasync.Job(jobfuncs.add, n, 1))
        assert wait_for_result(job) == n + 1
        settled(worker)
    assert worker.jobs_received == received + 10
    assert worker.claims_committed == claims


def test_with_every_thread_busy_the_job_waits_in_the_queue(databases, worker):
    _worker_db, producer = databases
    gate = jobfuncs.gate("hold")
    held = [producer.put(zasync.Job(jobfuncs.wait_for, "hold")) for _ in range(2)]
    wait_until(lambda: len(worker.pool.idle) == 0)
    job = producer.put(zasync.Job(jobfuncs.add, 2, 2))
    assert job.status == PENDING and job._worker is None
    assert len(producer.queue()) == 1
    gate.set()
    assert wait_for_result(job) == 4
    for other in held:
        wait_for_result(other)


def test_a_queue_the_worker_does_not_serve(databases, start_dispatcher):
    worker_db, producer = databases
    dispatcher = start_dispatcher(db=worker_db, queue_names=("",), poll_interval=30)
    producer.sees(dispatcher)
    wait_for_result(producer.put(zasync.Job(jobfuncs.noop)))
    job = producer.put(zasync.Job(jobfuncs.noop), "mail")
    assert job.status == PENDING and len(producer.queue("mail")) == 1
    assert dispatcher.jobs_received == 1  # the first job only


def test_a_stopped_worker_is_handed_nothing(databases, start_dispatcher):
    worker_db, producer = databases
    dispatcher = start_dispatcher(db=worker_db, poll_interval=30)
    producer.sees(dispatcher)
    wait_for_result(producer.put(zasync.Job(jobfuncs.noop)))
    dispatcher.stop(10)
    # ZEO tells the producer of the stop a moment after it commits (a job
    # handed to the worker then is rescued: test_multiprocess.py).
    wait_until(lambda: producer.record(dispatcher.uuid).stopped is not None)
    job = producer.put(zasync.Job(jobfuncs.noop))
    assert job.status == PENDING and len(producer.queue()) == 1


def test_a_worker_not_seen_for_three_heartbeats_is_handed_nothing(
    databases, start_dispatcher
):
    worker_db, producer = databases
    dispatcher = start_dispatcher(db=worker_db, poll_interval=30)
    producer.sees(dispatcher)
    wait_for_result(producer.put(zasync.Job(jobfuncs.noop)))
    settled(dispatcher)
    # As if it had died silently 181 s ago (3 heartbeats of 60 s).
    with other_connection(worker_db) as (conn, tm):
        heartbeat = conn.root()[KEY].workers[dispatcher.uuid].heartbeat
        heartbeat.last_seen = heartbeat.lease_until = time.time() - 181
        tm.commit()
    wait_until(
        lambda: producer.record(dispatcher.uuid).heartbeat.last_seen < time.time() - 180
    )
    job = producer.put(zasync.Job(jobfuncs.noop))
    assert job.status == PENDING and job._worker is None


def test_each_job_goes_to_the_worker_it_is_meant_for(databases, start_dispatcher):
    """Two workers elsewhere: each job goes to its rendezvous owner, the
    one the other leaves it to."""
    import zlib

    worker_db, producer = databases
    workers = [
        start_dispatcher(db=worker_db, maintenance_interval=0.05) for _ in range(2)
    ]
    wait_until(lambda: all(len(w.placement.peers) == 2 for w in workers))
    received = [w.jobs_received for w in workers]
    for n in range(12):  # all 12 on one worker: one chance in 2,048
        job = producer.put(zasync.Job(jobfuncs.add, n, 0))
        seed = zlib.crc32(job._p_oid)
        owner = max(workers, key=lambda w: zlib.crc32(w.uuid.encode(), seed))
        assert job._worker == owner.uuid
        assert wait_for_result(job) == n
        for w in workers:
            settled(w)
    assert all(w.jobs_received > r for w, r in zip(workers, received, strict=True))


def test_a_worker_that_stops_before_starting_a_handed_job_requeues_it(
    databases, start_dispatcher
):
    """The inbox of a thread busy in memory (its slot already emptied) can
    receive a job the stopping worker never starts: the clean stop puts it
    back at the front of its queue, as not started (no interruption)."""
    worker_db, producer = databases
    dispatcher = start_dispatcher(db=worker_db, threads=1, poll_interval=30)
    producer.sees(dispatcher)
    gate = jobfuncs.gate("hold")
    held = producer.put(zasync.Job(jobfuncs.wait_for, "hold"))
    wait_until(lambda: len(dispatcher.pool.idle) == 0)
    # What a producer's hand-off writes, into the busy thread's inbox.
    job = zasync.Job(jobfuncs.noop)
    producer.tm.begin()
    producer.queue().put(job)
    producer.queue().take(job)
    job._status, job._worker, job._slot = ACTIVE, dispatcher.uuid, 0
    producer.conn.root()[KEY].workers[dispatcher.uuid].slots[0].inbox.add(job)
    producer.tm.commit()
    stopper = threading.Thread(target=dispatcher.stop, args=(20,))
    stopper.start()
    wait_until(lambda: dispatcher.stopping.is_set())
    gate.set()  # the thread ends its job, then finds the stop message
    stopper.join(30)
    assert wait_for_result(held) is None
    producer.tm.begin()
    assert job.status == PENDING and job._interruptions == 0
    assert len(producer.queue()) == 1
    assert not producer.record(dispatcher.uuid).slots[0].inbox


@pytest.mark.parametrize(
    ("committed", "new", "merged"),
    [
        ({1, 2, 4}, {1, 2, 3}, {1, 2, 3, 4}),  # both added
        (set(), {1, 3}, {3}),  # the worker took 1 and 2; a producer added 3
        ({1, 2, 4}, {2}, {2, 4}),  # a producer added 4; the worker took 1
    ],
    ids=["both add", "emptied and added", "added and taken"],
)
def test_inbox_changes_merge(committed, new, merged):
    """Job oids in the state both began with: {1, 2}."""

    def state(oids):
        return {"jobs": {oid: f"job {oid}" for oid in oids}}

    result = Inbox()._p_resolveConflict(state({1, 2}), state(committed), state(new))
    assert result == state(merged)


def test_concurrent_inbox_writes_both_commit(zeo_server):
    """A producer adds while the worker takes out, through the server's
    conflict resolution."""
    db = open_db(zeo_server.uri)
    try:
        with other_connection(db) as (conn, tm):
            conn.root()["inbox"] = inbox = Inbox()
            for n in (1, 2):
                job = conn.root()[f"job{n}"] = zasync.Job(jobfuncs.noop)
                conn.add(job)
                inbox.add(job)
            tm.commit()
            oid = inbox._p_oid
        with other_connection(db) as (worker, worker_tm):
            with other_connection(db) as (producer, producer_tm):
                job = producer.root()["job3"] = zasync.Job(jobfuncs.noop)
                producer.add(job)
                producer.root()["inbox"].add(job)
                taking = worker.root()["inbox"]
                taking.remove(int.from_bytes(worker.root()["job1"]._p_oid, "big"))
                worker_tm.commit()
                producer_tm.commit()
        with other_connection(db) as (conn, _tm):
            assert set(conn.get(oid).jobs.values()) == {
                conn.root()["job2"],
                conn.root()["job3"],
            }
    finally:
        db.close()
