"""Queue.put_many: many jobs in the caller's transaction, all or nothing,
each item checked (with its index in the message) before any is queued;
and against a worker claiming from the same shard meanwhile."""

from __future__ import annotations

import contextlib
import datetime

import pytest
import transaction
from transaction.interfaces import NoTransaction
from ZODB.POSException import ConflictError

import jobfuncs
import zasync
from dbviews import other_connection, tids_of
from zasync.interfaces import COMPLETED, KEY, NEW, PENDING, BadStatusError
from zasync.testing import wait_until

UTC = datetime.UTC


def test_put_many_queues_every_item_in_its_order(queue):
    jobs = queue.put_many(
        [zasync.Job(jobfuncs.add, i, 1) for i in range(5)] + [jobfuncs.noop]
    )
    assert [job.status for job in jobs] == [PENDING] * 6
    assert jobs[-1].callable is jobfuncs.noop  # a callable: wrapped in a Job
    assert len(queue) == 6
    assert list(queue) == jobs  # run order is the order given
    transaction.commit()
    assert len(queue) == 6


def test_put_many_commits_in_one_transaction_and_aborts_whole(zasync_db, queue):
    jobs = queue.put_many([zasync.Job(jobfuncs.add, i, 1) for i in range(3)])
    transaction.commit()
    tids = {tids_of(zasync_db, job._p_oid)[0] for job in jobs}
    assert len(tids) == 1
    queue.put_many([zasync.Job(jobfuncs.add, i, 2) for i in range(3)])
    assert len(queue) == 6
    transaction.abort()
    assert len(queue) == 3


def test_put_many_gives_every_job_the_options(queue):
    queue.quotas.create("mail", size=2)
    later = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    jobs = queue.put_many(
        [zasync.Job(jobfuncs.add, i, 1) for i in range(3)],
        begin_after=later,
        begin_by=datetime.timedelta(minutes=5),
        quota_names=("mail",),
        timeout=30,
    )
    for job in jobs:
        assert job.begin_after == later
        assert job.begin_by == datetime.timedelta(minutes=5)
        assert job.quota_names == ("mail",)
        assert job.timeout == 30.0


def _unchanged(queue, jobs, length):
    assert len(queue) == length
    for job in jobs:
        assert job.status == NEW and job._p_jar is None and job._queue is None


def test_a_callable_that_cannot_be_stored_is_refused_by_index(queue):
    good = [zasync.Job(jobfuncs.add, i, 1) for i in range(2)]
    with pytest.raises(TypeError, match=r"^items\[2\]: a lambda cannot be stored"):
        queue.put_many([*good, lambda: 1])
    _unchanged(queue, good, 0)


def test_a_job_that_is_not_new_is_refused_by_index(queue):
    queued = queue.put(zasync.Job(jobfuncs.add, 1, 1))
    good = zasync.Job(jobfuncs.add, 2, 1)
    with pytest.raises(BadStatusError) as info:
        queue.put_many([good, queued])
    message = str(info.value)
    assert message.startswith("items[1]: ")
    assert "pending-status" in message and "queue a new Job instead" in message
    _unchanged(queue, [good], 1)


def test_a_job_given_twice_is_refused(queue):
    job = zasync.Job(jobfuncs.add, 1, 1)
    with pytest.raises(ValueError, match=r"^items\[2\]: .* is items\[0\] too"):
        queue.put_many([job, zasync.Job(jobfuncs.add, 2, 1), job])
    _unchanged(queue, [job], 0)


def test_a_quota_the_queue_lacks_is_refused_with_the_fix(queue):
    good = zasync.Job(jobfuncs.add, 1, 1)
    named = zasync.Job(jobfuncs.add, 2, 1)
    named.quota_names = ("nightly",)
    with pytest.raises(ValueError) as info:
        queue.put_many([good, named])
    message = str(info.value)
    assert message.startswith("items[1]: ")
    assert "queue.quotas.create('nightly', size=1)" in message
    _unchanged(queue, [good], 0)
    assert named.quota_names == ("nightly",)


def test_bad_options_are_refused_before_any_item(queue):
    jobs = [zasync.Job(jobfuncs.add, i, 1) for i in range(2)]
    with pytest.raises(ValueError, match="timeout=0"):
        queue.put_many(jobs, timeout=0)
    with pytest.raises(ValueError, match="is naive"):
        queue.put_many(jobs, begin_after=datetime.datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="quota_names='mail' is a string"):
        queue.put_many(jobs, quota_names="mail")
    _unchanged(queue, jobs, 0)


def test_one_job_instead_of_a_sequence_is_refused_with_the_fix(queue):
    job = zasync.Job(jobfuncs.add, 1, 1)
    with pytest.raises(TypeError, match=r"use put\(\) for one job"):
        queue.put_many(job)
    with pytest.raises(TypeError, match=r"use put\(\) for one job"):
        queue.put_many(jobfuncs.noop)
    _unchanged(queue, [job], 0)


def test_an_empty_sequence_queues_nothing(queue):
    assert queue.put_many([]) == []
    assert len(queue) == 0


def test_put_many_while_a_worker_claims_from_the_same_shard(
    zasync_db, start_dispatcher
):
    """A worker claims (and compacts) the jobs of the producer's shard
    while a put_many of the same thread is open: the producer's commit
    either merges or raises ConflictError, and retried in a new
    transaction it queues every job once; every job runs once."""
    first, second = 300, 400
    tm = transaction.TransactionManager(explicit=True)
    conn = zasync_db.open(transaction_manager=tm)
    try:
        with tm:
            queue = conn.root()[KEY][""]
            queue.put_many(
                [zasync.Job(jobfuncs.count, "runs", ("a", i)) for i in range(first)]
            )
        attempts = 0
        for attempt in tm.attempts(5):
            with attempt:
                attempts += 1
                queue = conn.root()[KEY][""]
                jobs = queue.put_many(
                    [
                        zasync.Job(jobfuncs.count, "runs", ("b", i))
                        for i in range(second)
                    ]
                )
                if attempts == 1:
                    # The worker claims the first jobs from the same shard
                    # and commits while this transaction is open.
                    dispatcher = start_dispatcher(threads=2)
                    wait_until(lambda: jobfuncs.calls["runs"] >= first // 2, timeout=30)
        assert attempts <= 2
        wait_until(lambda: jobfuncs.calls["runs"] >= first + second, timeout=60)
        assert dispatcher.stop(10)
        assert jobfuncs.calls["runs"] == first + second  # each once
        with other_connection(zasync_db) as (view, _tm):
            assert len(view.root()[KEY][""]) == 0
            assert all(view.get(job._p_oid).status == COMPLETED for job in jobs)
    except ConflictError:  # pragma: no cover - attempts gave up
        pytest.fail("put_many conflicted five times in a row")
    finally:
        conn.close()


def test_put_many_conflicts_with_a_change_of_its_shards_tree(zasync_db):
    """Another transaction empties whole buckets of the producer's shard
    (as a compaction of claimed entries does: the shard's tree changes)
    while a put_many that splits buckets is open: the producer's commit
    raises ConflictError, and the transaction retried queues every job
    once."""
    tm = transaction.TransactionManager(explicit=True)
    conn = zasync_db.open(transaction_manager=tm)
    try:
        with tm:
            conn.root()[KEY][""].put_many(
                [zasync.Job(jobfuncs.count, "first") for _ in range(300)]
            )
        tm.begin()
        conn.root()[KEY][""].put_many(
            [zasync.Job(jobfuncs.count, "more") for _ in range(400)]
        )
        with other_connection(zasync_db) as (other, other_tm):
            queue = other.root()[KEY][""]
            for job in list(queue):
                queue.remove(job)
            other_tm.commit()
        with pytest.raises(ConflictError):
            tm.commit()
        tm.abort()
        for attempt in tm.attempts(3):
            with attempt:
                conn.root()[KEY][""].put_many(
                    [zasync.Job(jobfuncs.count, "more") for _ in range(400)]
                )
        assert len(_view_queue(zasync_db)) == 400
    finally:
        with contextlib.suppress(NoTransaction):
            tm.abort()
        conn.close()


def _view_queue(db):
    with other_connection(db) as (view, _tm):
        return list(view.root()[KEY][""])
