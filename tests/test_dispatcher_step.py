"""The dispatcher's loop one round at a time: ``start(loop=False)``, then
``step(now)`` with a clock of the test's own (monotonic seconds)."""

from __future__ import annotations

import time

import pytest
import transaction

import jobfuncs
import zasync
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY
from zasync.testing import wait_for_result, wait_until


@pytest.fixture
def stepped(zasync_db):
    dispatcher = Dispatcher(
        zasync_db,
        threads=1,
        heartbeat_interval=60,
        maintenance_interval=5,
        poll_interval=1,
    ).start(loop=False)
    yield dispatcher
    dispatcher.stop(10)


@pytest.fixture
def conn(zasync_db):
    connection = zasync_db.open()
    yield connection
    transaction.abort()
    connection.close()


def _record(conn, dispatcher):
    transaction.begin()
    return conn.root()[KEY].workers[dispatcher.uuid]


def test_queued_jobs_wait_for_a_step_to_claim_them(stepped, conn):
    # Two jobs in one transaction: no hand-off to the idle thread (that is
    # for a job queued alone), so they wait for a claim.
    queue = conn.root()[KEY][""]
    jobs = [queue.put(zasync.Job(jobfuncs.add, n, 2)) for n in (1, 2)]
    transaction.commit()
    transaction.begin()
    assert [job.status for job in jobs] == [zasync.PENDING] * 2
    stepped.step()  # one idle thread, claiming one job at first
    assert wait_for_result(jobs[0], 10) == 3
    transaction.begin()
    assert jobs[1].status == zasync.PENDING
    wait_until(lambda: stepped.pool.idle, message="the thread to be idle again")
    stepped.step()
    assert wait_for_result(jobs[1], 10) == 4


def test_a_job_queued_alone_is_handed_to_the_idle_thread_without_a_step(stepped, conn):
    job = conn.root()[KEY][""].put(zasync.Job(jobfuncs.add, 1, 2))
    transaction.commit()
    assert wait_for_result(job, 10) == 3
    assert stepped.jobs_handed == 1 and stepped.claims_committed == 0


def test_the_heartbeat_is_written_when_the_clock_says_it_is_due(stepped, conn):
    start = time.monotonic()
    stepped.step(now=start)  # the first round: maintenance, no heartbeat
    seen = _record(conn, stepped).heartbeat.last_seen
    stepped.step(now=start + 59)
    assert _record(conn, stepped).heartbeat.last_seen == seen
    stepped.step(now=start + 61)
    assert _record(conn, stepped).heartbeat.last_seen > seen
    later = _record(conn, stepped).heartbeat.last_seen
    stepped.step(now=start + 62)  # the next is due a minute after that one
    assert _record(conn, stepped).heartbeat.last_seen == later


def test_maintenance_runs_when_due_and_rescues_a_dead_worker(stepped, conn, zasync_db):
    start = time.monotonic()
    stepped.step(now=start)  # the first round's maintenance
    # A worker that died holding a job: its lease ran out long ago.
    dead = Dispatcher(zasync_db, uuid="dead-worker", threads=1)
    registry = conn.root()[KEY].workers
    record = registry.register(dead.uuid)
    record._begin(1, (), time.time() - 3600)
    queue = conn.root()[KEY][""]
    job = queue.put(zasync.Job(jobfuncs.add, 2, 3))
    queue.take(job)
    job._assign(dead.uuid, 0, None, first=False)
    record.slots[0].active[int.from_bytes(job._p_oid, "big")] = job
    transaction.commit()
    stepped.step(now=start + 1)  # maintenance not due yet
    transaction.begin()
    assert job.status == zasync.ASSIGNED and job.worker == dead.uuid
    stepped.step(now=start + 6)  # due: rescued, back in its queue
    transaction.begin()
    assert job.status == zasync.PENDING
    stepped.step(now=start + 7)  # and claimed by this one
    assert wait_for_result(job, 10) == 5


def test_the_wait_between_rounds_is_the_poll_interval_or_the_heartbeat(stepped):
    start = time.monotonic()
    stepped.step(now=start)
    heartbeat_due = stepped._next_heartbeat
    assert stepped.wait_seconds(heartbeat_due - 10) == 1  # the poll interval
    assert stepped.wait_seconds(heartbeat_due - 0.25) == pytest.approx(0.25)
    assert stepped.wait_seconds(heartbeat_due + 5) == 0
