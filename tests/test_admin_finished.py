"""Jobs finished outside a worker (cancelled, failed before they started)
are listed, retried with their callbacks, and pruned like the others."""

import datetime

import transaction

import jobfuncs
from zasync import admin
from zasync.interfaces import COMPLETED, KEY, NEW
from zasync.job import Job
from zasync.overview import summary


def _queues(db):
    conn = db.open()
    return conn, conn.root()[KEY]


def _cancelled_job(queues):
    """A job queued, committed, then cancelled (and committed)."""
    job = queues[""].put(Job(jobfuncs.add, 1, 2))
    transaction.commit()
    admin.cancel(job)
    transaction.commit()
    return job


def test_a_cancelled_job_without_callbacks_is_listed_as_failed(zasync_db):
    conn, queues = _queues(zasync_db)
    job = _cancelled_job(queues)
    assert job.status == COMPLETED
    assert admin.list_jobs(queues, status=("failed",)) == [job]
    assert summary(queues)["throughput"]["1m"]["failed"] == 1
    conn.close()


def test_a_cancelled_job_can_be_retried_and_removed(zasync_db):
    conn, queues = _queues(zasync_db)
    job = _cancelled_job(queues)
    admin.retry(job)
    transaction.commit()
    assert job.status == "pending-status"
    assert admin.list_jobs(queues, status=("failed",)) == []
    admin.cancel(job)
    admin.remove(job)
    transaction.commit()
    assert admin.list_jobs(queues, status=("failed",)) == []
    conn.close()


def test_retry_resets_the_callbacks_so_they_run_again(zasync_db, dispatcher):
    from zasync.testing import wait_for_result

    conn, queues = _queues(zasync_db)
    job = queues[""].put(Job(jobfuncs.boom, "no luck"))
    callback = job.addCallback(Job(jobfuncs.identity))
    transaction.commit()
    wait_for_result(job)
    first_end = callback.active_end
    assert callback.status == COMPLETED
    admin.retry(job)
    assert callback.status == NEW
    transaction.commit()
    wait_for_result(job)
    assert callback.status == COMPLETED
    assert callback.active_end > first_end
    conn.close()


def test_prune_removes_old_jobs_finished_outside_workers(zasync_db):
    conn, queues = _queues(zasync_db)
    _cancelled_job(queues)
    assert admin.prune(queues, older_than=datetime.timedelta(days=1)) == 0
    assert admin.prune(queues, older_than=datetime.timedelta(0)) == 1
    transaction.commit()
    assert admin.list_jobs(queues, status=("failed",)) == []
    conn.close()


def test_a_search_reads_at_most_scan_limit_finished_jobs(zasync_db):
    conn, queues = _queues(zasync_db)
    queue = queues[""]
    jobs = [queue.put(Job(jobfuncs.add, i, 0)) for i in range(5)]
    transaction.commit()
    for job in jobs:
        admin.cancel(job)
    transaction.commit()
    never = admin.list_jobs(queues, match=lambda job: False, scan_limit=3)
    assert never == [] and never.truncated
    some = admin.list_jobs(queues, status=("failed",), limit=2, scan_limit=3)
    assert len(some) == 2 and not some.truncated
    everything = admin.list_jobs(queues, match=lambda job: True)
    assert len(everything) == 5 and not everything.truncated
    conn.close()
