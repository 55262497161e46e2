"""Jobs that do not check (issue #21): the watchdog interrupts a job
cancelled or past its timeout that did not stop within the grace period,
and abandons (and replaces) a thread stuck in one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import transaction

import watchdog_jobs
from zasync import admin
from zasync.interfaces import (
    COMPLETED,
    ConfigurationError,
    JobCancelled,
    JobTimeout,
)
from zasync.job import Job
from zasync.retry import NeverRetry, RetryPolicy
from zasync.settings import DispatcherSettings
from zasync.stuck import stuck_since
from zasync.testing import wait_for_result, wait_until

GRACE = 0.5


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    watchdog_jobs.reset()
    yield
    watchdog_jobs.reset()


def cancel_elsewhere(db, job: Job) -> float:
    """Cancel ``job`` in a connection of its own; when it committed."""
    tm = transaction.TransactionManager(explicit=True)
    other = db.open(transaction_manager=tm)
    try:
        with tm:
            assert admin.cancel(other.get(job._p_oid)) == "requested"
        return time.monotonic()
    finally:
        other.close()


def started(key: str) -> None:
    wait_until(lambda: key in watchdog_jobs.running, message=f"{key} to start")


@pytest.mark.parametrize(
    ("name", "value"), [("interrupt_grace", -1), ("stuck_delay", 0)]
)
def test_settings_refuse_values_that_cannot_work(name, value):
    with pytest.raises(ConfigurationError, match=rf"Dispatcher\({name}="):
        DispatcherSettings(**{name: value})


def test_a_busy_loop_is_interrupted_after_a_cancel(zasync_db, queue, start_dispatcher):
    job = queue.put(
        Job(watchdog_jobs.busy_loop, "cancelled"),
        # Even a policy that retries every error does not run it again.
        retry_policy_factory=RetryPolicy.configure(max_errors=3, retry_on=Exception),
    )
    transaction.commit()
    start_dispatcher(interrupt_grace=GRACE)
    started("cancelled")
    requested = cancel_elsewhere(zasync_db, job)
    failure = wait_for_result(job, 10)
    assert time.monotonic() - requested < GRACE + 2.0
    assert failure.check(JobCancelled)
    assert "was cancelled while it ran and did not stop within 0.5 s" in (
        failure.getErrorMessage()
    )
    assert watchdog_jobs.ended["cancelled"] == "AsyncCancel"
    assert job._annotations is None  # its writes were rolled back
    assert watchdog_jobs.calls["cancelled"] == 1
    assert stuck_since(job) is None


def test_a_busy_loop_is_interrupted_past_its_timeout(queue, start_dispatcher):
    dispatcher = start_dispatcher(threads=1, interrupt_grace=GRACE)
    runner = dispatcher.pool.runners[0]
    wait_until(lambda: runner.conn is not None)
    cache = runner.conn._cache
    job = queue.put(Job(watchdog_jobs.busy_loop, "late"), timeout=0.5)
    transaction.commit()
    failure = wait_for_result(job, 10)
    assert failure.check(JobTimeout)
    assert "ran past its timeout of 0.5 s and did not stop within 0.5 s" in (
        failure.getErrorMessage()
    )
    past = job.active_end.timestamp() - (job.active_start.timestamp() + 0.5)
    assert GRACE <= past < GRACE + 2.0
    assert job._annotations is None
    assert watchdog_jobs.ended["late"] == "AsyncTimeout"
    # The interruption may have hit the job while it loaded objects: the
    # thread's connection starts again with an empty cache.
    wait_until(lambda: runner.conn._cache is not cache)


def test_the_retry_policy_decides_on_an_interrupted_timeout(queue, start_dispatcher):
    job = queue.put(
        Job(watchdog_jobs.busy_loop, "again"),
        timeout=0.3,
        retry_policy_factory=RetryPolicy.configure(
            max_errors=1, base_delay=0.01, retry_on=(JobTimeout,)
        ),
    )
    transaction.commit()
    start_dispatcher(interrupt_grace=0.2)
    assert wait_for_result(job, 15).check(JobTimeout)
    assert watchdog_jobs.calls["again"] == 2
    assert job.attempts == 2


def test_a_never_retry_job_interrupted_is_never_started_again(
    zasync_db, queue, start_dispatcher
):
    job = queue.put(
        Job(watchdog_jobs.busy_loop, "once"),
        timeout=0.3,
        retry_policy_factory=NeverRetry,
    )
    transaction.commit()
    dispatcher = start_dispatcher(interrupt_grace=0.2)
    assert wait_for_result(job, 10).check(JobTimeout)
    dispatcher.stop(10)
    # Started once, and a new worker on the same database does not run it.
    after = queue.put(Job(watchdog_jobs.quick, "after"))
    transaction.commit()
    start_dispatcher(interrupt_grace=0.2)
    assert wait_for_result(after, 10) == "quick"
    assert watchdog_jobs.calls["once"] == 1
    transaction.begin()
    assert job.status == COMPLETED and job.attempts == 1


def test_a_job_blocked_in_c_code_is_abandoned_and_its_thread_replaced(
    zasync_db, queue, start_dispatcher
):
    job = queue.put(Job(watchdog_jobs.sleep_forever, "asleep"), timeout=1)
    transaction.commit()
    began = time.monotonic()
    dispatcher = start_dispatcher(threads=1, interrupt_grace=GRACE, stuck_delay=1)
    started("asleep")
    stuck_thread = dispatcher.pool.threads[0]
    failure = wait_for_result(job, 15)
    assert time.monotonic() - began < 1 + GRACE + 1 + 3
    assert failure.check(JobTimeout)
    assert "its worker thread was abandoned and replaced" in failure.getErrorMessage()
    since = stuck_since(job)
    assert since is not None
    assert job.active_start.timestamp() + 1 + GRACE <= since.timestamp() + 0.2
    wait_until(
        lambda: stuck_thread in dispatcher.pool.abandoned,
        message="the thread to be abandoned",
    )
    assert stuck_thread.is_alive()  # still asleep, abandoned
    assert dispatcher.pool.threads[0] is not stuck_thread
    # The worker kept its capacity: a job queued after it runs.
    after = queue.put(Job(watchdog_jobs.quick, "after"))
    transaction.commit()
    assert wait_for_result(after, 10) == "quick"
    # The stop does not wait for the abandoned thread.
    stopping = time.monotonic()
    assert dispatcher.stop(10)
    assert time.monotonic() - stopping < 5


def test_the_late_work_of_an_abandoned_thread_never_commits(
    zasync_db, queue, start_dispatcher, caplog
):
    job = queue.put(
        Job(watchdog_jobs.blocked, "late"),
        timeout=0.5,
        # Retried if the policy were asked: it is not, its thread may still run.
        retry_policy_factory=RetryPolicy.configure(
            max_errors=3, base_delay=0.01, retry_on=Exception
        ),
    )
    transaction.commit()
    dispatcher = start_dispatcher(threads=1, interrupt_grace=0.2, stuck_delay=0.5)
    started("late")
    abandoned = dispatcher.pool.threads[0]
    assert wait_for_result(job, 10).check(JobTimeout)
    wait_until(lambda: abandoned in dispatcher.pool.abandoned)
    # The worker's record names the stuck thread's job while it runs.
    record = queue._p_jar.root()["zasync"].workers[dispatcher.uuid]
    transaction.begin()
    assert record.stuck == {job.id: pytest.approx(stuck_since(job).timestamp())}
    watchdog_jobs.release.set()  # the old thread's job returns
    abandoned.join(10)
    assert not abandoned.is_alive()  # it ended
    wait_until(
        lambda: transaction.begin() and not record.stuck,
        message="the ended thread to leave the worker's record",
    )
    assert watchdog_jobs.ended["late swallowed"] == "AsyncTimeout"
    assert watchdog_jobs.ended["late"] == "returned"
    transaction.begin()
    assert "late write" not in queue._p_jar.root()
    assert job.result.check(JobTimeout)  # not its late result
    assert "late" not in job.annotations
    assert watchdog_jobs.calls["late"] == 1
    # The new thread goes on.
    after = queue.put(Job(watchdog_jobs.quick, "after"))
    transaction.commit()
    assert wait_for_result(after, 10) == "quick"


def test_a_cancelled_job_stuck_in_c_code_completes_cancelled(
    zasync_db, queue, start_dispatcher
):
    job = queue.put(Job(watchdog_jobs.blocked, "deaf"))
    transaction.commit()
    dispatcher = start_dispatcher(threads=1, interrupt_grace=0.2, stuck_delay=0.5)
    started("deaf")
    cancel_elsewhere(zasync_db, job)
    failure = wait_for_result(job, 10)
    assert failure.check(JobCancelled)
    assert stuck_since(job) is not None
    wait_until(lambda: len(dispatcher.pool.abandoned) == 1)


def callback_of(result: object) -> str:
    return f"callback saw {type(result).__name__}"


def test_the_callbacks_of_an_abandoned_job_run(zasync_db, queue, start_dispatcher):
    job = queue.put(Job(watchdog_jobs.blocked, "with callback"), timeout=0.3)
    callback = job.addCallback(callback_of)
    transaction.commit()
    start_dispatcher(threads=1, interrupt_grace=0.2, stuck_delay=0.5)
    assert wait_for_result(callback, 10) == "callback saw Failure"
    # Completed once its callbacks ran (in the new thread).
    assert wait_for_result(job, 10).check(JobTimeout)
    assert job.status == COMPLETED


def test_interrupts_at_the_deadline_never_land_in_the_bookkeeping(
    zasync_db, queue, start_dispatcher, caplog
):
    """Jobs that return just when the watchdog interrupts them: each ends
    returned or timed out, and the worker's state stays sound."""
    timeout, grace = 0.1, 0.05
    jobs = [
        queue.put(
            Job(watchdog_jobs.until, f"edge {i}", timeout + grace - 0.1 + i * 0.02),
            timeout=timeout,
        )
        for i in range(20)
    ]
    transaction.commit()
    dispatcher = start_dispatcher(threads=2, interrupt_grace=grace, stuck_delay=5)
    threads = list(dispatcher.pool.threads)
    results = [wait_for_result(job, 30) for job in jobs]
    for result in results:
        assert result == "done" or result.check(JobTimeout), result
    # Some returned before the deadline, some were interrupted after it.
    assert "done" in results
    assert any(r != "done" for r in results)
    assert not dispatcher.pool.abandoned
    assert not any(r.discarded for r in dispatcher.pool.runners)
    transaction.begin()
    record = queue._p_jar.root()["zasync"].workers[dispatcher.uuid]
    assert all(not slot.active for slot in record.slots)
    assert all(runner.body.run is None for runner in dispatcher.pool.runners)
    # No error outside the jobs (the worker's own code was never hit).
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], (
        caplog.text
    )
    after = queue.put(Job(watchdog_jobs.quick, "after"))
    transaction.commit()
    assert wait_for_result(after, 10) == "quick"
    # The same two threads ran every job: none was abandoned or replaced.
    assert threads == dispatcher.pool.threads
    assert all(thread.is_alive() for thread in threads)


def test_a_queue_default_timeout_interrupts_too(queue, start_dispatcher):
    queue.default_timeout = 0.3
    job = queue.put(Job(watchdog_jobs.busy_loop, "queue default"))
    transaction.commit()
    start_dispatcher(interrupt_grace=0.2)
    failure = wait_for_result(job, 10)
    assert failure.check(JobTimeout)
    assert "ran past its timeout of 0.3 s and did not stop within 0.2 s" in (
        failure.getErrorMessage()
    )


def test_stuck_threads_of_an_earlier_run_are_forgotten(zasync_db, start_dispatcher):
    """A worker restarted under its UUID has none of the threads its
    record said were stuck."""
    first = start_dispatcher(threads=1)
    first.stop(10)
    tm = transaction.TransactionManager(explicit=True)
    conn = zasync_db.open(transaction_manager=tm)
    try:
        with tm:
            conn.root()["zasync"].workers[first.uuid].stuck = {"1a": 1.0}
        start_dispatcher(uuid=first.uuid, threads=1)

        def forgotten() -> bool:
            with tm:
                return not conn.root()["zasync"].workers[first.uuid].stuck

        wait_until(forgotten, message="the earlier run's stuck threads forgotten")
    finally:
        conn.close()


def test_a_never_retry_job_abandoned_is_never_started_again(
    zasync_db, queue, start_dispatcher
):
    job = queue.put(
        Job(watchdog_jobs.blocked, "once stuck"),
        timeout=0.3,
        retry_policy_factory=NeverRetry,
    )
    transaction.commit()
    dispatcher = start_dispatcher(threads=1, interrupt_grace=0.2, stuck_delay=0.5)
    assert wait_for_result(job, 10).check(JobTimeout)
    wait_until(lambda: dispatcher.pool.abandoned, message="the abandonment")
    watchdog_jobs.release.set()  # its thread returns: nothing of it commits
    dispatcher.pool.abandoned[0].join(10)
    dispatcher.stop(10)
    start_dispatcher(threads=1)  # recovery of this database: nothing to rerun
    after = queue.put(Job(watchdog_jobs.quick, "after"))
    transaction.commit()
    assert wait_for_result(after, 10) == "quick"
    transaction.begin()
    assert watchdog_jobs.calls["once stuck"] == 1
    assert job.status == COMPLETED and job.result.check(JobTimeout)
    assert job.attempts == 1


def test_the_watchdog_of_an_idle_worker_sleeps_until_a_job_starts(
    queue, start_dispatcher
):
    """An idle worker costs no wake-ups: its watchdog waits for a job to
    start, watches it (and interrupts it past its timeout) while it runs,
    and sleeps again once it is done."""
    dispatcher = start_dispatcher(threads=1, interrupt_grace=GRACE)
    watchdog = dispatcher.pool.watchdog
    wait_until(lambda: watchdog.asleep, message="the idle watchdog to sleep")
    job = queue.put(Job(watchdog_jobs.busy_loop, "woken"), timeout=0.5)
    transaction.commit()
    started("woken")
    wait_until(lambda: not watchdog.asleep, message="the watchdog to wake")
    assert wait_for_result(job, 10).check(JobTimeout)  # watched, interrupted
    wait_until(lambda: watchdog.asleep, message="the watchdog to sleep again")
