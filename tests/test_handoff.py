"""zasync.handoff: a job queued alone in this process is handed to an
idle thread of a dispatcher here, in the transaction that queued it,
without a claim; everything else waits for a claim, and a transaction
that does not commit gives the thread back. FileStorage, real threads."""

from __future__ import annotations

import time

import pytest
import transaction
from ZODB.POSException import ConflictError

import jobfuncs
import zasync
from dbviews import as_of, other_connection, read, tids_of
from zasync.interfaces import ACTIVE, KEY, PENDING
from zasync.job import Job
from zasync.testing import wait_for_result, wait_until
from zasync.workers import Heartbeat


def settled(dispatcher) -> None:
    """Wait until the dispatcher's loop waits, every thread idle: nothing
    but a commit wakes it then (it polls every 30 s here)."""
    wait_until(
        lambda: (
            dispatcher.waiting.is_set()
            and not dispatcher.pool.claiming
            and len(dispatcher.pool.idle) == dispatcher.threads
        ),
        message=lambda: f"dispatcher {dispatcher.uuid} to wait with every thread idle",
    )


@pytest.fixture
def dispatcher(zasync_db, start_dispatcher, queue):
    """A dispatcher of two threads, settled after a first job ran."""
    started = start_dispatcher(threads=2, poll_interval=30)
    job = queue.put(Job(jobfuncs.noop))
    transaction.commit()
    wait_for_result(job)
    settled(started)
    return started


def test_a_job_queued_alone_is_assigned_in_the_transaction_that_queues_it(
    zasync_db, queue, dispatcher
):
    claims = dispatcher.claims_committed
    job = queue.put(Job(jobfuncs.add, 1, 2))
    transaction.commit()
    assert wait_for_result(job) == 3
    assert dispatcher.jobs_handed == 1
    assert dispatcher.claims_committed == claims
    # The producer's commit took it out of the queue and gave it to a
    # slot of the dispatcher: the job never was pending in a commit.
    first = tids_of(zasync_db, job._p_oid)[0]
    state = as_of(zasync_db, first, job._p_oid, lambda j: (j.status, j._worker, j._key))
    assert state == (ACTIVE, dispatcher.uuid, None)
    assert as_of(zasync_db, first, queue._p_oid, len) == 0
    record = dispatcher._record_oid
    assert (
        as_of(zasync_db, first, record, lambda r: r.heartbeat.lease_until) > time.time()
    )


def test_jobs_run_one_after_another_are_each_handed_over(queue, dispatcher):
    for n in range(10):
        job = queue.put(Job(jobfuncs.add, n, 1))
        transaction.commit()
        assert wait_for_result(job) == n + 1
        settled(dispatcher)
    assert dispatcher.jobs_handed == 10


def _two_jobs(queue):
    return [queue.put(Job(jobfuncs.noop)), queue.put(Job(jobfuncs.noop))]


def _with_quota(queue):
    queue.quotas.create("one", size=1)
    return [queue.put(Job(jobfuncs.noop), quota_names=("one",))]


def _behind_a_scheduled_job(queue):
    later = zasync.job.now() + zasync.job.datetime.timedelta(hours=1)
    queue.put(Job(jobfuncs.noop), begin_after=later)
    return [queue.put(Job(jobfuncs.noop))]


@pytest.mark.parametrize(
    "put",
    [_two_jobs, _with_quota, _behind_a_scheduled_job],
    ids=["two jobs in a transaction", "a job with quotas", "not alone in its queue"],
)
def test_other_jobs_wait_for_a_claim(queue, dispatcher, put):
    jobs = put(queue)
    transaction.commit()
    for job in jobs:
        wait_for_result(job)
    assert dispatcher.jobs_handed == 0
    assert dispatcher.jobs_claimed >= 1 + len(jobs)


def test_jobs_waiting_for_a_full_quota_or_a_lock_do_not_hold_back_a_hand_off(
    queue, dispatcher
):
    """Jobs in lanes (zasync.lanes) wait for their quotas and locks: a free
    job queued alone after them is handed over all the same."""
    queue.quotas.create("one", size=1)
    blocker = queue.put(
        Job(jobfuncs.signal_and_wait, "holding", "let-go"), quota_names=("one",)
    )
    transaction.commit()
    assert jobfuncs.gate("holding").wait(10)
    transaction.begin()  # a view with the claim of the blocker in it
    waiting = queue.put_many(
        [Job(jobfuncs.noop) for _ in range(50)], quota_names=("one",)
    )
    locked = queue.put_many([Job(jobfuncs.noop) for _ in range(2)], lock="l")
    transaction.commit()
    for other in locked:
        wait_for_result(other)
    wait_until(
        lambda: (
            dispatcher.waiting.is_set()
            and not dispatcher.pool.claiming
            and len(dispatcher.pool.idle) == 1
        ),
        message="the dispatcher to wait, one thread busy with the quota's job",
    )
    handed = dispatcher.jobs_handed
    job = queue.put(Job(jobfuncs.add, 1, 1))
    transaction.commit()
    assert wait_for_result(job) == 2
    assert dispatcher.jobs_handed == handed + 1
    jobfuncs.gate("let-go").set()
    assert wait_for_result(blocker) == "released"
    for other in waiting:
        wait_for_result(other)


def test_a_job_due_later_is_not_handed_over(queue, dispatcher):
    later = zasync.job.now() + zasync.job.datetime.timedelta(hours=1)
    job = queue.put(Job(jobfuncs.noop), begin_after=later)
    transaction.commit()
    settled(dispatcher)
    assert job.status == PENDING and dispatcher.jobs_handed == 0


def test_a_queue_the_dispatcher_does_not_serve(zasync_db, start_dispatcher, conn):
    zasync.install(zasync_db, queues=("other",))
    transaction.begin()
    other = start_dispatcher(threads=1, poll_interval=30, queue_names=("other",))
    settled(other)
    job = conn.root()[KEY][""].put(Job(jobfuncs.noop))
    transaction.commit()
    settled(other)
    assert other.jobs_handed == 0
    assert read(zasync_db, job._p_oid, lambda j: j.status) == PENDING


def test_with_every_thread_busy_the_job_waits(queue, dispatcher):
    blockers = [
        queue.put(Job(jobfuncs.signal_and_wait, f"started-{n}", "release"))
        for n in range(2)
    ]
    transaction.commit()
    for n in range(2):
        assert jobfuncs.gate(f"started-{n}").wait(10)
    job = queue.put(Job(jobfuncs.add, 2, 2))
    transaction.commit()
    assert dispatcher.jobs_handed == 0
    jobfuncs.gate("release").set()
    assert wait_for_result(job) == 4
    assert [wait_for_result(b) for b in blockers] == ["released"] * 2


def test_a_commit_that_fails_after_the_hand_off_gives_the_thread_back(
    queue, dispatcher
):
    queue.put(Job(jobfuncs.count, "never"))

    def refuse():
        raise RuntimeError("a later before-commit hook refuses the commit")

    transaction.get().addBeforeCommitHook(refuse)
    with pytest.raises(RuntimeError, match="refuses"):
        transaction.commit()
    assert len(dispatcher.pool.idle) == 1 and dispatcher.pool.reserved
    transaction.abort()
    assert dispatcher.pool.idle == {0, 1} and not dispatcher.pool.reserved
    job = queue.put(Job(jobfuncs.count, "committed"))
    transaction.commit()
    wait_for_result(job)
    assert dispatcher.jobs_handed == 1
    assert "never" not in jobfuncs.calls


def test_a_commit_that_conflicts_gives_the_thread_back(
    zasync_db, conn, queue, dispatcher
):
    conn.root()["other"] = 0
    transaction.commit()
    conn.root()["other"] = 1
    with other_connection(zasync_db) as (other, tm):
        other.root()["other"] = 2
        tm.commit()
    queue.put(Job(jobfuncs.count, "never"))
    with pytest.raises(ConflictError):
        transaction.commit()
    transaction.abort()
    assert dispatcher.pool.idle == {0, 1} and not dispatcher.pool.reserved
    assert dispatcher.jobs_handed == 0
    job = queue.put(Job(jobfuncs.count, "committed"))
    transaction.commit()
    wait_for_result(job)
    assert "never" not in jobfuncs.calls


def test_a_slot_changed_since_the_transaction_began_is_left_alone(
    zasync_db, queue, dispatcher
):
    """The producer's snapshot holds an older version of the slot: writing
    it would fail the producer's commit. The job waits for a claim."""
    len(queue)  # this transaction's snapshot begins here
    with other_connection(zasync_db) as (other, tm):
        ran = other.root()[KEY][""].put(Job(jobfuncs.noop))
        tm.commit()
        wait_for_result(ran)
    settled(dispatcher)
    handed = dispatcher.jobs_handed
    job = queue.put(Job(jobfuncs.add, 3, 4))
    transaction.commit()  # no ConflictError
    assert wait_for_result(job) == 7
    assert dispatcher.jobs_handed == handed


def test_a_worker_registered_after_the_transaction_began(
    zasync_db, conn, start_dispatcher
):
    queue = conn.root()[KEY][""]
    started = start_dispatcher(threads=1, poll_interval=30)
    settled(started)
    job = queue.put(Job(jobfuncs.add, 5, 5))
    transaction.commit()  # its record is not in this snapshot: no error
    assert wait_for_result(job) == 10


# -- the heartbeat that a producer's hand-off and the worker both write -------


@pytest.mark.parametrize(
    "committed, new, merged",
    [
        # Each side changed one time: both changes kept.
        ((5.0, 10.0), (1.0, 40.0), (5.0, 40.0)),
        # Both changed the lease: the later one.
        ((1.0, 50.0), (1.0, 40.0), (1.0, 50.0)),
        # A worker stopping (or starting) resets the lease: that wins.
        ((1.0, 0.0), (1.0, 40.0), (1.0, 0.0)),
    ],
    ids=["different times", "the later lease", "a reset"],
)
def test_heartbeat_changes_merge(committed, new, merged):
    """(last_seen, lease_until) from the state both began with, (1, 10)."""
    names = ("last_seen", "lease_until")
    old = dict(zip(names, (1.0, 10.0), strict=True))
    result = Heartbeat()._p_resolveConflict(
        old,
        dict(zip(names, committed, strict=True)),
        dict(zip(names, new, strict=True)),
    )
    assert result == dict(zip(names, merged, strict=True))


def test_concurrent_heartbeat_writes_both_commit(zasync_db, conn):
    conn.root()["hb"] = Heartbeat()
    transaction.commit()
    hb = conn.root()["hb"]
    hb.lease_until = 100.0
    with other_connection(zasync_db) as (other, tm):
        other.root()["hb"].last_seen = 50.0
        other.root()["hb"].lease_until = 60.0
        tm.commit()
    transaction.commit()
    assert read(zasync_db, hb._p_oid, lambda h: (h.last_seen, h.lease_until)) == (
        50.0,
        100.0,
    )
