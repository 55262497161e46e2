"""Locks and unique keys given back on the paths other than a plain run:
a job that fails, is cancelled or removed while it waits its turn, or is
retried after a delay; with a dispatcher's real threads on a FileStorage
database. A lock or key that stayed taken would hold its jobs back for
good: each test waits for the jobs that would be stuck.
"""

from __future__ import annotations

import datetime

import pytest
import transaction

import jobfuncs
from zasync.admin import cancel
from zasync.interfaces import COMPLETED, NEW, PENDING
from zasync.job import Job
from zasync.retry import RetryWithDelay
from zasync.testing import wait_until

UTC = datetime.UTC


def settled(*jobs: Job) -> bool:
    transaction.begin()
    return all(job.status == COMPLETED for job in jobs)


def ran(*keys: str) -> list[str]:
    """The keys counted by jobfuncs, in the order their calls started."""
    return [key for key, _thread in jobfuncs.trace if key in keys]


def test_a_lock_passes_on_when_its_holder_fails(queue, start_dispatcher):
    failing = queue.put(Job(jobfuncs.boom, "planned"), lock="L")
    after = queue.put(Job(jobfuncs.count, "after"), lock="L")
    transaction.commit()
    start_dispatcher(threads=2)
    wait_until(lambda: settled(failing, after), timeout=20, message="both jobs")
    assert failing.result.type_name == "builtins.RuntimeError"
    assert jobfuncs.calls["after"] == 1
    assert queue.lock_holder("L") is None


def test_cancelled_and_removed_jobs_of_a_lock_let_the_next_ones_run(
    queue, start_dispatcher
):
    """A lock held by a running job; of the jobs waiting for it, the next
    one is cancelled and a later one removed: when the holder completes,
    the others run, in the order queued."""
    start_dispatcher(threads=2)
    holder = queue.put(Job(jobfuncs.wait_for, "holder"), lock="L")
    transaction.commit()
    wait_until(lambda: jobfuncs.calls["holder"] == 1, message="the holder to start")
    transaction.begin()
    waiting = [queue.put(Job(jobfuncs.count, f"job-{n}"), lock="L") for n in range(5)]
    transaction.commit()
    assert queue.lock_holder("L") is holder
    assert [job.status for job in waiting] == [PENDING] * 5
    assert cancel(waiting[0]) == "cancelled"
    queue.remove(waiting[2])
    transaction.commit()
    assert waiting[2].status == NEW
    jobfuncs.gate("holder").set()
    left = [waiting[1], waiting[3], waiting[4]]
    wait_until(lambda: settled(holder, *left), timeout=20, message="the jobs left")
    assert ran(*(f"job-{n}" for n in range(5))) == ["job-1", "job-3", "job-4"]
    assert waiting[0].result.type_name.endswith("CancelledError")
    assert queue.lock_holder("L") is None


def test_a_lock_holder_retried_after_a_delay_lets_the_next_job_run_meanwhile(
    queue, start_dispatcher
):
    """A job that fails and is retried in an hour gives its lock back
    meanwhile (it is pending again, not running): the next job of the lock
    runs."""
    retried = queue.put(
        Job(jobfuncs.fail_times, "retried", 1),
        lock="L",
        retry_policy_factory=RetryWithDelay.configure(error_delay=3600),
    )
    after = queue.put(Job(jobfuncs.count, "after"), lock="L")
    transaction.commit()
    start_dispatcher(threads=2)
    wait_until(lambda: settled(after), timeout=20, message="the next job")
    transaction.begin()
    assert retried.status == PENDING and jobfuncs.calls["retried"] == 1
    assert queue.lock_holder("L") is None


def test_a_cancelled_or_removed_holder_of_a_unique_key_frees_it(queue):
    later = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    first = queue.put(Job(jobfuncs.noop), begin_after=later, unique_key="k")
    other = queue.put(Job(jobfuncs.noop), begin_after=later, unique_key="m")
    transaction.commit()
    assert queue.put(Job(jobfuncs.noop), unique_key="k") is first
    assert cancel(first) == "cancelled"
    queue.remove(other)
    transaction.commit()
    again = queue.put(Job(jobfuncs.noop), unique_key="k")
    assert again is not first and queue.unique_job("k") is again
    assert queue.put(Job(jobfuncs.noop), unique_key="m") is not other
    transaction.commit()


def test_a_unique_key_held_until_finished_is_free_once_its_job_failed(
    queue, start_dispatcher
):
    failing = queue.put(
        Job(jobfuncs.boom, "planned"), unique_key="k", unique_until="finished"
    )
    transaction.commit()
    start_dispatcher(threads=1)
    wait_until(lambda: settled(failing), timeout=20, message="the job to fail")
    assert queue.unique_job("k") is None
    again = queue.put(Job(jobfuncs.noop), unique_key="k", unique_until="finished")
    assert again is not failing
    transaction.commit()


@pytest.mark.parametrize("until", ["started", "finished"])
def test_a_job_waiting_to_be_retried_holds_its_key_only_until_finished(
    queue, start_dispatcher, until
):
    """A job that failed and waits an hour to be retried is pending again:
    with ``unique_until="finished"`` it still holds its key; with
    ``"started"`` it gave the key up when it started, and does not take it
    back (docs/guarantees.md): a put queues a new job."""
    retried = queue.put(
        Job(jobfuncs.fail_times, "retried", 1),
        unique_key="k",
        unique_until=until,
        retry_policy_factory=RetryWithDelay.configure(error_delay=3600),
    )
    transaction.commit()
    start_dispatcher(threads=1)

    def rescheduled() -> bool:
        transaction.begin()
        return retried.status == PENDING and retried.attempts == 1

    wait_until(rescheduled, timeout=20, message="the job to be rescheduled")
    put = queue.put(Job(jobfuncs.noop), unique_key="k", unique_until=until)
    if until == "finished":
        assert queue.unique_job("k") is retried and put is retried
    else:
        assert put is not retried and queue.unique_job("k") is put
    transaction.abort()
