"""What code ported from zc.async meets in zasync's queues (issue #20):
indexing and truth of a queue, LookupError from remove(), a job put back
after a pull, quota occupancy, ``parent``, SystemExit in a job, and a
database that still holds zc.async's root object."""

from __future__ import annotations

import datetime
import sys
import types

import persistent
import pytest
import transaction
import ZODB
from ZODB.broken import Broken
from ZODB.FileStorage import FileStorage

import jobfuncs
import zasync
from dbviews import other_connection
from zasync.interfaces import KEY, NEW, BadStatusError
from zasync.job import Job
from zasync.queue import NotPendingError
from zasync.testing import wait_for_result, wait_until

UTC = datetime.UTC


def now():
    return datetime.datetime.now(UTC)


# -- a queue as a sequence --------------------------------------------------


def test_a_queue_is_indexable_in_run_order(queue):
    jobs = [queue.put(Job(jobfuncs.identity, i)) for i in range(3)]
    assert queue[0] is jobs[0] and queue[2] is jobs[2] and queue[-1] is jobs[2]
    assert [queue[i] for i in range(len(queue))] == list(queue)
    with pytest.raises(IndexError, match="no job at index 3"):
        queue[3]
    with pytest.raises(IndexError):
        queue[-4]
    assert queue[0].status == "pending-status"  # reading takes nothing out


def test_an_empty_queue_is_false(queue):
    assert not queue and len(queue) == 0
    job = queue.put(jobfuncs.noop)
    assert queue
    queue.remove(job)
    assert not queue


def test_remove_of_a_job_not_pending_raises_lookup_error(queue):
    job = Job(jobfuncs.noop)
    with pytest.raises(LookupError, match="is not pending in queue ''"):
        queue.remove(job)
    with pytest.raises(BadStatusError):
        queue.remove(job)
    assert issubclass(NotPendingError, LookupError)
    assert issubclass(NotPendingError, BadStatusError)


# -- a job pulled and put back ----------------------------------------------


def test_a_job_pulled_and_put_back_goes_behind_the_jobs_queued_since(queue):
    first = queue.put(Job(jobfuncs.identity, "first"))
    queued_at = first.begin_after
    assert queue.pull() is first and first.status == NEW
    second = queue.put(Job(jobfuncs.identity, "second"))
    queue.put(first)
    assert list(queue) == [second, first]
    assert first.begin_after >= second.begin_after > queued_at


def test_a_job_put_back_keeps_a_later_schedule(queue):
    later = now() + datetime.timedelta(hours=1)
    job = queue.put(Job(jobfuncs.noop), begin_after=later)
    queue.put(queue.pull())
    assert job.begin_after == later
    assert queue.put(Job(jobfuncs.noop)) is queue[0]


def test_a_begin_after_in_the_past_counts_as_queued_now(queue):
    """As in zc.async: ``put(job, begin_after=<the past>)`` keeps that time
    on the job but queues it behind the jobs queued before it."""
    first = queue.put(Job(jobfuncs.noop))
    when = now() - datetime.timedelta(1)
    backdated = queue.put(Job(jobfuncs.noop), begin_after=when)
    assert list(queue) == [first, backdated]
    assert backdated.begin_after == when


# -- quotas and parents -----------------------------------------------------


def test_a_quota_iterates_over_the_jobs_holding_it(zasync_db, queue, start_dispatcher):
    quota = queue.quotas.create("db", size=2)
    job = queue.put(Job(jobfuncs.signal_and_wait, "held", "go"), quota_names=("db",))
    waiting = queue.put(Job(jobfuncs.noop), quota_names=("db",))
    transaction.commit()
    assert list(quota) == [] and not quota.filled
    start_dispatcher()
    assert jobfuncs.gate("held").wait(10)
    with other_connection(zasync_db) as (conn, _tm):
        seen = conn.root()[KEY][""].quotas["db"]
        wait_until(lambda: (conn.sync(), len(seen))[1] == 1, message="quota held")
        assert [j._p_oid for j in seen] == [job._p_oid]
        assert conn.get(job._p_oid) in seen and conn.get(waiting._p_oid) not in seen
        assert not seen.filled
        seen.size = 1
        assert seen.filled
    jobfuncs.gate("go").set()
    assert wait_for_result(job) == "released"


def test_queues_and_quotas_know_their_parent(conn, queue):
    queues = conn.root()[KEY]
    quota = queue.quotas.create("db")
    assert queue.parent is queues
    assert quota.parent is queue
    assert zasync.Queue().parent is None


# -- SystemExit in a job ----------------------------------------------------


def test_system_exit_in_a_job_is_a_failure_and_the_worker_goes_on(
    queue, start_dispatcher
):
    """zc.async treated it as an interruption; zasync records a failure (a
    job cannot stop its worker)."""
    exits = queue.put(Job(jobfuncs.raise_system_exit, 4))
    after = queue.put(Job(jobfuncs.add, 1, 2))
    transaction.commit()
    dispatcher = start_dispatcher(threads=1)
    failure = wait_for_result(exits)
    assert failure.check(SystemExit) and exits.attempts == 1
    assert wait_for_result(after) == 3
    assert not dispatcher.dead


# -- a database that held zc.async -----------------------------------------


@pytest.fixture
def zc_async_root(tmp_path, monkeypatch):
    """A FileStorage whose root holds ``root['zc.async']`` of a class Python 3
    cannot import (``zc.async.queue.Queues``), as a database of a zc.async
    site does; returns its path."""
    module = types.ModuleType("zc.async.queue")

    class Queues(persistent.Persistent):
        pass

    Queues.__module__, Queues.__qualname__ = module.__name__, "Queues"
    module.Queues = Queues  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    (tmp_path / "zc.async").mkdir()
    path = str(tmp_path / "zc.async" / "Data.fs")
    db = ZODB.DB(FileStorage(path))
    with db.transaction() as conn:
        conn.root()["zc.async"] = old = Queues()
        old.legacy = {"": "a zc.async queue"}
    db.close()
    monkeypatch.delitem(sys.modules, module.__name__)
    return path


def test_a_leftover_zc_async_root_loads_broken_and_zasync_works(
    zc_async_root, start_dispatcher
):
    db = ZODB.DB(FileStorage(zc_async_root))
    try:
        zasync.install(db)
        dispatcher = start_dispatcher(db=db)
        with other_connection(db) as (conn, tm):
            assert isinstance(conn.root()["zc.async"], Broken)
            job = conn.root()[KEY][""].put(Job(jobfuncs.add, 40, 2))
            tm.commit()
            assert wait_for_result(job) == 42
            # Removing it is an ordinary delete; a pack drops its record.
            del conn.root()["zc.async"]
            tm.commit()
        dispatcher.stop(10)
        db.pack()
        with other_connection(db) as (conn, _tm):
            assert sorted(conn.root()) == [KEY]
    finally:
        db.close()
