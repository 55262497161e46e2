"""Cooperative cancel of a running job (issue #21): zasync.admin.cancel
records a request the job sees at its next local.check() or progress();
it stops with JobCancelled, its writes rolled back, never retried (jobs
that do not check: tests/test_watchdog.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import transaction

import coop_jobs
from zasync import admin
from zasync.cancel_requests import CancelRequests
from zasync.interfaces import BadStatusError, CancelledError, JobCancelled
from zasync.job import Job
from zasync.keys import oid_int
from zasync.retry import RetryPolicy
from zasync.testing import wait_for_result, wait_until


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    coop_jobs.reset()
    yield
    coop_jobs.reset()


def cancel_from_another_connection(db, job: Job) -> tuple[str, float]:
    """Cancel ``job`` in a connection and transaction of its own; return
    what cancel said and when it committed."""
    tm = transaction.TransactionManager(explicit=True)
    other = db.open(transaction_manager=tm)
    try:
        with tm:
            said = admin.cancel(other.get(job._p_oid))
        return said, time.monotonic()
    finally:
        other.close()


@pytest.mark.parametrize("how", ["check", "progress"])
def test_a_running_job_stops_at_its_next_check(how, zasync_db, queue, start_dispatcher):
    job = queue.put(
        Job(coop_jobs.cooperative, how, how),
        # Even a policy that retries every error does not run it again.
        retry_policy_factory=RetryPolicy.configure(max_errors=3, retry_on=Exception),
    )
    transaction.commit()
    start_dispatcher()
    wait_until(lambda: how in coop_jobs.running, message="the job did not start")
    said, requested = cancel_from_another_connection(zasync_db, job)
    assert said == "requested"
    failure = wait_for_result(job, 10)
    assert time.monotonic() - requested < 2.0
    assert failure.check(JobCancelled) and failure.check(CancelledError)
    assert "was cancelled while it ran" in failure.getErrorMessage()
    assert job._annotations is None  # its writes were rolled back
    assert coop_jobs.calls[how] == 1
    assert job.attempts == 1
    # The request is forgotten once the job's end is committed.
    slot = queue._p_jar.root()["zasync"].workers[job.worker].slots[job.slot]
    wait_until(
        lambda: transaction.begin() and not slot.cancel_requests,
        message="the request was not cleared",
    )


def test_a_job_that_returns_within_the_grace_keeps_its_result(
    zasync_db, queue, start_dispatcher
):
    """A job that does not check is interrupted only after the worker's
    interrupt_grace: one that ends before keeps its result."""
    job = queue.put(Job(coop_jobs.sleeper, "deaf", 0.5))
    transaction.commit()
    start_dispatcher(interrupt_grace=5)
    wait_until(lambda: "deaf" in coop_jobs.running, message="the job did not start")
    assert cancel_from_another_connection(zasync_db, job)[0] == "requested"
    assert wait_for_result(job, 10) == "slept"


def test_a_pending_job_is_cancelled_at_once(queue):
    job = queue.put(Job(coop_jobs.sleeper, "never", 0.1))
    transaction.commit()
    assert admin.cancel(job) == "cancelled"
    transaction.commit()
    assert job.result.check(CancelledError)
    assert not job.result.check(JobCancelled)
    with pytest.raises(BadStatusError, match="only pending, scheduled or running"):
        admin.cancel(job)


def test_requests_name_the_run_they_are_for():
    requests = CancelRequests()
    requests.add(7, 2)
    assert requests.wanted(7, 2)
    assert not requests.wanted(7, 3)  # a later run of the job
    assert not requests.wanted(8, 2)
    requests.forget([7])
    assert not requests


def test_concurrent_requests_merge(zasync_db):
    tm1 = transaction.TransactionManager(explicit=True)
    tm2 = transaction.TransactionManager(explicit=True)
    one = zasync_db.open(transaction_manager=tm1)
    two = zasync_db.open(transaction_manager=tm2)
    try:
        with tm1:
            one.root()["requests"] = CancelRequests()
            one.root()["requests"].add(1, 0)
        tm1.begin()
        tm2.begin()
        one.root()["requests"].add(2, 0)
        two.root()["requests"].add(3, 5)
        two.root()["requests"].forget([1])
        tm1.commit()
        tm2.commit()
        tm1.begin()
        assert one.root()["requests"].jobs == {2: 0, 3: 5}
        tm1.abort()
    finally:
        one.close()
        two.close()


def test_cancel_does_not_write_the_job(zasync_db, queue, start_dispatcher):
    job = queue.put(Job(coop_jobs.cooperative, "quiet", "check"))
    transaction.commit()
    start_dispatcher()
    wait_until(lambda: "quiet" in coop_jobs.running, message="the job did not start")
    tm = transaction.TransactionManager(explicit=True)
    other = zasync_db.open(transaction_manager=tm)
    try:
        with tm:
            mine = other.get(job._p_oid)
            admin.cancel(mine)
            assert not mine._p_changed
            assert (
                oid_int(mine)
                in other.root()["zasync"]
                .workers[mine.worker]
                .slots[mine.slot]
                .cancel_requests.jobs
            )
    finally:
        other.close()
    assert wait_for_result(job, 10).check(JobCancelled)
