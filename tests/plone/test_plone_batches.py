"""Serial and parallel batches, the ``default`` quota (service jobs run one
at a time, in order, across workers and threads) and delayed jobs."""

from __future__ import annotations

import datetime
import uuid

import pytest
import transaction
from tests.plone.helpers import WAIT, service

from plone import api
from zasync.interfaces import COMPLETED, TimeoutError
from zasync.plone.service import makeJob
from zasync.plone.testing import start_dispatcher
from zasync.plone.tests import funcs, jobs
from zasync.testing import wait_for_result

UTC = datetime.UTC


@pytest.fixture
def more_threads(functional):
    """A worker with 4 threads instead of the layer's one: enough threads
    for a quota to be what holds jobs back. (The layer's single thread
    could also claim several due jobs at once, in one batch, and run them
    one after the other.)"""
    functional["dispatcher"].stop(10)
    dispatcher = start_dispatcher(functional["zodbDB"], threads=4)
    yield dispatcher
    dispatcher.stop(10)


def test_a_serial_batch_runs_its_jobs_in_order(functional):
    folder = functional["test-folder"]
    batch = service().queueSerialJobs(
        makeJob(funcs.createDocument, folder, "a", "A", "", "body"),
        makeJob(funcs.submitObject, folder, "a"),
    )
    transaction.commit()
    created, submitted = wait_for_result(batch, WAIT)
    assert created.result == "a" and submitted.status == COMPLETED
    assert api.content.get_state(folder["a"]) == "pending"
    # Each job of the batch holds the quota; the batch holds it only while
    # it queues them (at its own place in the line).
    assert batch.quota_names == ("default",)
    assert created.quota_names == submitted.quota_names == ("default",)


def test_a_job_queued_after_a_serial_batch_runs_after_all_its_jobs(
    functional, more_threads
):
    """plone.app.async's promise, "in the order queued": a job queued after
    a serial batch does not run between the batch's jobs, though each is
    queued only when the one before it completed."""
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    batch = service().queueSerialJobs(
        *(
            makeJob(funcs.createDocument, folder, f"{token}-{n}", "T", "", "b")
            for n in range(3)
        )
    )
    after = service().queueJob(
        funcs.createDocument, folder, f"{token}-after", "T", "", "b"
    )
    transaction.commit()
    members = wait_for_result(batch, WAIT)
    wait_for_result(after, WAIT)
    ended = [m.active_end for m in members]
    assert ended == sorted(ended)
    assert after.active_start >= ended[-1]


def test_a_parallel_batch_without_quota_runs_its_jobs_at_once(functional, more_threads):
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    batch = service().queueParallelJobsInQueue(
        "", (), makeJob(jobs.meet, folder, token), makeJob(jobs.meet, folder, token)
    )
    transaction.commit()
    results = [job.result for job in wait_for_result(batch, WAIT)]
    assert [r["met"] for r in results] == [True, True]


def test_a_parallel_batch_under_the_default_quota_runs_one_job_at_a_time(
    functional, more_threads
):
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    batch = service().queueParallelJobs(
        *(makeJob(jobs.probe, folder, token, i) for i in range(3))
    )
    transaction.commit()
    assert [job.result for job in wait_for_result(batch, WAIT)] == [0, 1, 2]
    assert jobs.most_running[token] == 1


def test_the_default_quota_runs_service_jobs_one_at_a_time_in_order(
    functional, more_threads
):
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    queued = [service().queueJob(jobs.probe, folder, token, i) for i in range(5)]
    transaction.commit()
    for job in queued:
        wait_for_result(job, WAIT)
    assert jobs.order[token] == [0, 1, 2, 3, 4]
    assert jobs.most_running[token] == 1
    # and without a quota the same jobs do run side by side
    free = uuid.uuid4().hex
    queued = [
        service().queueJobInQueue("", (), jobs.probe, folder, free, i, 5.0)
        for i in range(2)
    ]
    transaction.commit()
    for job in queued:
        wait_for_result(job, WAIT)
    assert jobs.most_running[free] == 2


def test_a_delayed_job_starts_after_begin_after(functional):
    folder = functional["test-folder"]
    begin_after = datetime.datetime.now(UTC) + datetime.timedelta(seconds=1)
    job = service().queueJobWithDelay(None, begin_after, funcs.addNumbers, folder, 1, 1)
    assert job.begin_after == begin_after
    transaction.commit()
    assert wait_for_result(job, WAIT) == 2
    assert job.active_start >= begin_after


def test_a_job_not_started_within_begin_by_fails(functional):
    folder = functional["test-folder"]
    begin_after = datetime.datetime.now(UTC) - datetime.timedelta(minutes=10)
    job = service().queueJobInQueueWithDelay(
        datetime.timedelta(minutes=1),
        begin_after,
        "",
        None,
        funcs.addNumbers,
        folder,
        1,
        1,
    )
    transaction.commit()
    failure = wait_for_result(job, WAIT)
    assert failure.check(TimeoutError)
    assert "begin_by" in failure.getErrorMessage()
