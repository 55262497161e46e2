"""Running jobs in a dispatcher's threads (zasync.executor), on a
FileStorage database: one transaction per job's work, result and status;
exceptions, conflicts, results that cannot be stored, SystemExit, resources
without savepoints, begin_by, and callbacks."""

from __future__ import annotations

import datetime
import logging

import pytest
import transaction

import jobfuncs
from dbviews import as_of, oids_written_by, tids_of
from zasync.interfaces import (
    ACTIVE,
    ASSIGNED,
    CALLBACKS,
    COMPLETED,
    PENDING,
    AbortedError,
)
from zasync.interfaces import TimeoutError as ZasyncTimeoutError
from zasync.job import Job
from zasync.testing import wait_for_result, wait_until

UTC = datetime.UTC


def now():
    return datetime.datetime.now(UTC)


def commit():
    transaction.commit()


def test_runs_jobs_of_every_kind_of_callable(queue, start_dispatcher):
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    jobs = [
        queue.put(Job(jobfuncs.add, 1, 2)),
        queue.put(Job(jobfuncs.Point, 1, 2)),
        queue.put(Job(jobfuncs.Multiplier(4), 5)),
        queue.put(Job(counter.increment, 7)),
    ]
    commit()
    start_dispatcher()
    assert [wait_for_result(job, 10) for job in jobs] == [
        3,
        jobfuncs.Point(1, 2),
        20,
        7,
    ]
    assert counter.value == 7
    for job in jobs:
        assert job.status == COMPLETED and not job.failed
        assert job.active_start <= job.active_end
        assert job.attempts == 1


def test_writes_result_and_status_commit_in_one_transaction(
    zasync_db, queue, start_dispatcher
):
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    job = queue.put(Job(jobfuncs.write_then_return, counter, 5))
    commit()
    start_dispatcher()
    assert wait_for_result(job) == 5
    *_, before, write = tids_of(zasync_db, counter._p_oid)
    written = oids_written_by(zasync_db, write)
    assert {job._p_oid, counter._p_oid, counter.log._p_oid} <= written
    assert as_of(zasync_db, write, job._p_oid, lambda j: (j.status, j.result)) == (
        COMPLETED,
        5,
    )
    assert as_of(zasync_db, write, counter._p_oid, lambda c: c.value) == 5
    # Just before that transaction the job was not finished and nothing of
    # its work was visible.
    job_before = tids_of(zasync_db, job._p_oid)[-2]
    assert as_of(zasync_db, job_before, job._p_oid, lambda j: j.status) in (
        ACTIVE,
        ASSIGNED,
        PENDING,
    )
    assert as_of(zasync_db, before, counter._p_oid, lambda c: c.value) == 0


@pytest.mark.parametrize(
    "func", [jobfuncs.write_then_raise, jobfuncs.raise_unpicklable_after_write]
)
def test_an_exception_aborts_the_writes_and_stores_a_failure(
    queue, start_dispatcher, func
):
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    job = queue.put(Job(func, counter))
    after = queue.put(Job(jobfuncs.write_then_return, counter, 1))
    commit()
    start_dispatcher(threads=1)
    failure = wait_for_result(job)
    assert job.failed and failure.getErrorMessage() in (
        "after a write",
        "wrote, then raised",
    )
    assert "Traceback" in failure.getTraceback()
    assert wait_for_result(after) == 1
    assert counter.value == 1
    assert list(counter.log) == [1]


@pytest.mark.parametrize("retry", [False, True])
def test_a_failure_after_jobs_without_savepoints_keeps_their_results(
    zasync_db, queue, start_dispatcher, retry
):
    """Jobs that change nothing but themselves and return plain values run
    without a savepoint each; when a later job of the same batch fails,
    the rollback to the savepoint before them undoes them too, and they
    are written again: each ran once and keeps its result, while the
    failing job's writes are undone (``retry``: it is retried at once in
    the same transaction, and its last try's write stays)."""
    from zasync.retry import RetryWithDelay

    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    plain, failing = [], []
    for n in range(60):
        if n % 10 == 7:
            if retry:
                job = Job(jobfuncs.write_then_fail_times, counter, f"f{n}", 2)
                job.retry_policy_factory = RetryWithDelay.configure(
                    max_errors=3, error_delay=0
                )
            else:
                job = Job(jobfuncs.write_then_raise, counter)
            failing.append(queue.put(job))
        else:
            value = {"n": n, "items": [n, str(n), None, 1.5]}
            plain.append(queue.put(Job(jobfuncs.count, f"p{n}", value)))
    commit()
    start_dispatcher(threads=1)
    for job in plain:
        n = job.args[1]["n"]
        assert wait_for_result(job, 10) == {"n": n, "items": [n, str(n), None, 1.5]}
        assert jobfuncs.calls[f"p{n}"] == 1
        assert job.status == COMPLETED and job.attempts == 1
    for job in failing:
        if retry:
            assert wait_for_result(job, 10) == 3 and job.attempts == 3
        else:
            assert wait_for_result(job, 10).getErrorMessage() == "after a write"
    assert counter.value == (len(failing) if retry else 0)
    # What this is about happened: a failing job committed in the same
    # transaction as jobs that ran before it (one thread: in queue order).
    tid = {job._p_oid: tids_of(zasync_db, job._p_oid)[-1] for job in plain + failing}
    assert any(
        tid[f._p_oid] == tid[p._p_oid] and p._p_oid < f._p_oid
        for f in failing
        for p in plain
    )


def test_a_change_to_a_job_that_ran_earlier_in_the_batch_survives_a_failure(
    queue, start_dispatcher
):
    """A job that changes another job, which ran before it in the same
    batch without a savepoint, takes a savepoint: a later failure in the
    batch does not write the other job's older state back."""
    pairs = []
    for n in range(20):
        first = queue.put(Job(jobfuncs.count, f"first{n}", n))
        pairs.append((first, queue.put(Job(jobfuncs.mark_job, first, n))))
        queue.put(Job(jobfuncs.boom))
    commit()
    start_dispatcher(threads=1)
    for n, (first, mark) in enumerate(pairs):
        assert wait_for_result(mark, 10) == n
        assert wait_for_result(first, 10) == n
        assert first.marked == n


def test_a_job_that_writes_elsewhere_keeps_its_writes_when_the_next_one_fails(
    queue, start_dispatcher
):
    """A job that changes another object takes its savepoint: the next
    job's failure in the same batch undoes only that job's writes."""
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    for n in range(1, 21):
        queue.put(Job(jobfuncs.write_then_return, counter, n))
        last = queue.put(Job(jobfuncs.write_then_raise, counter))
    commit()
    start_dispatcher(threads=1)
    assert wait_for_result(last, 10).check(RuntimeError)
    assert list(counter.log) == list(range(1, 21))
    assert counter.value == sum(range(1, 21))


def test_method_of_a_persistent_object_that_raises_leaves_it_unchanged(
    queue, start_dispatcher
):
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    job = queue.put(Job(counter.fail_after_increment))
    commit()
    start_dispatcher()
    assert wait_for_result(job).check(RuntimeError)
    assert counter.value == 0


def test_a_job_whose_commit_conflicts_is_retried_and_writes_once(
    queue, start_dispatcher
):
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    job = queue.put(Job(jobfuncs.write_with_commit_conflict, counter, "w"))
    commit()
    start_dispatcher(threads=1)
    assert wait_for_result(job) == 101
    assert jobfuncs.calls["w"] == 2  # ran again after the conflict
    assert counter.value == 101  # the other commit's 100, this job's 1
    assert list(counter.log) == ["w"]  # the job's writes appear once
    assert not job.failed


@pytest.mark.parametrize("threads", [1, 2])
def test_an_unpicklable_result_becomes_a_failure(queue, start_dispatcher, threads):
    """Alone or in a batch with other jobs: the job fails with a message
    that says what to do, once, and the other jobs commit."""
    before = queue.put(Job(jobfuncs.count, "before", 1))
    bad = queue.put(Job(jobfuncs.return_lock))
    good = queue.put(Job(jobfuncs.count, "after", 2))
    commit()
    dispatcher = start_dispatcher(threads=threads)
    for runner in dispatcher.pool.runners:
        runner.batch_limit = 3  # the three jobs in one batch
    failure = wait_for_result(bad)
    assert bad.failed
    assert "could not be stored" in failure.getErrorMessage()
    assert "return picklable values" in failure.getErrorMessage()
    assert bad.attempts == 1
    assert wait_for_result(before) == 1
    assert wait_for_result(good) == 2
    # Each ran once: the bad result did not undo the batch it was in.
    assert jobfuncs.calls["before"] == 1 and jobfuncs.calls["after"] == 1


def test_an_unpicklable_result_in_a_batch_fails_that_job_alone(queue, start_dispatcher):
    """Jobs before it in its batch keep their results and ran once; it
    ran once and failed, saying what to do."""
    good, bad = [], []
    for n in range(40):
        if n % 10 == 9:
            bad.append(queue.put(Job(jobfuncs.count_then_return_lock, f"bad{n}")))
        else:
            good.append(queue.put(Job(jobfuncs.count, f"good{n}", n)))
    commit()
    start_dispatcher(threads=1)
    for job in bad:
        failure = wait_for_result(job, 10)
        assert "return picklable values" in failure.getErrorMessage()
        assert jobfuncs.calls[job.args[0]] == 1 and job.attempts == 1
    for job in good:
        assert wait_for_result(job, 10) == job.args[1]
        assert jobfuncs.calls[job.args[0]] == 1


@pytest.mark.parametrize(
    "func, kind",
    [
        (jobfuncs.raise_system_exit, SystemExit),
        (jobfuncs.raise_keyboard_interrupt, KeyboardInterrupt),
    ],
)
def test_system_exit_or_keyboard_interrupt_is_a_logged_failure(
    queue, start_dispatcher, caplog, func, kind
):
    dispatcher = start_dispatcher(threads=1)
    with caplog.at_level(logging.ERROR, logger="zasync"):
        job = queue.put(Job(func))
        commit()
        assert wait_for_result(job).check(kind) is kind
    assert any(kind.__name__ in r.getMessage() for r in caplog.records)
    # The same (only) thread goes on running jobs.
    after = queue.put(Job(jobfuncs.thread_name))
    commit()
    assert wait_for_result(after) == dispatcher.pool.threads[0].name
    assert all(thread.is_alive() for thread in dispatcher.pool.threads)


def test_jobs_using_a_resource_without_savepoints(queue, start_dispatcher):
    """A job may join a data manager that cannot take savepoints (mail, some
    SQL bridges): it still commits, once, with its result."""
    jobs = [queue.put(Job(jobfuncs.deliver, f"m{i}")) for i in range(3)]
    jobs.append(queue.put(Job(jobfuncs.add, 1, 2)))
    commit()
    dispatcher = start_dispatcher(threads=1)
    dispatcher.pool.runners[0].batch_limit = 4
    assert [wait_for_result(job) for job in jobs] == [
        "queued m0",
        "queued m1",
        "queued m2",
        3,
    ]
    assert sorted(jobfuncs.delivered) == ["m0", "m1", "m2"]


def test_slow_commits_make_batches_bigger_not_smaller(queue, start_dispatcher):
    """Quick jobs whose transactions commit slowly (a busy storage, a
    remote resource): a thread claims more of them per transaction, so that
    fewer commits are paid for, instead of one job per commit."""
    jobs = [queue.put(Job(jobfuncs.commit_slowly, 0.08)) for _ in range(40)]
    commit()
    dispatcher = start_dispatcher(threads=1)
    assert [wait_for_result(job) for job in jobs] == [0.08] * 40
    assert dispatcher.pool.runners[0].batch_limit > 4
    # 1, 4, 16, then the rest: far fewer commits than jobs.
    assert len(jobfuncs.slow_commits) <= 8


# -- begin_by -----------------------------------------------------------------


def test_begin_by_fails_a_job_that_could_not_start_in_time(queue, start_dispatcher):
    late = queue.put(
        Job(jobfuncs.count, "late"),
        begin_after=now() - datetime.timedelta(seconds=10),
        begin_by=datetime.timedelta(seconds=1),
    )
    in_time = queue.put(
        Job(jobfuncs.count, "in-time", "ran"),
        begin_by=datetime.timedelta(minutes=5),
    )
    commit()
    start_dispatcher()
    failure = wait_for_result(late)
    assert failure.check(ZasyncTimeoutError) is ZasyncTimeoutError
    assert "begin_by deadline" in failure.getErrorMessage()
    assert "late" not in jobfuncs.calls
    assert wait_for_result(in_time) == "ran"


def test_begin_by_fails_a_job_held_back_by_a_quota(queue, start_dispatcher):
    queue.quotas.create("one")
    holder = queue.put(Job(jobfuncs.signal_and_wait, "held", "release"))
    holder.quota_names = ("one",)
    waiting = Job(jobfuncs.count, "waiting")
    waiting.quota_names = ("one",)
    waiting = queue.put(waiting, begin_by=datetime.timedelta(seconds=0.2))
    commit()
    start_dispatcher()
    assert jobfuncs.gate("held").wait(10)
    deadline = waiting.begin_after + waiting.begin_by
    # The clock, not the worker, is waited for.
    wait_until(lambda: now() > deadline, message="the begin_by deadline to pass")
    jobfuncs.gate("release").set()
    assert wait_for_result(holder) == "released"
    assert wait_for_result(waiting).check(ZasyncTimeoutError)
    assert "waiting" not in jobfuncs.calls


# -- callbacks ----------------------------------------------------------------


def test_callbacks_run_in_the_worker_after_the_job_each_in_its_own_transaction(
    zasync_db, queue, start_dispatcher
):
    job = queue.put(Job(jobfuncs.add, 1, 2))
    first = job.addCallback(jobfuncs.thread_name)
    second = job.addCallback(jobfuncs.describe)
    commit()
    start_dispatcher()
    assert wait_for_result(job) == 3
    assert first.result.startswith("zasync-")
    assert second.result == ("value", 3)
    assert first.active_start >= job.active_end
    assert second.active_start >= first.active_end

    def tid_of_status(oid, status):
        for tid in tids_of(zasync_db, oid):
            if as_of(zasync_db, tid, oid, lambda j: j.status) == status:
                return tid
        raise AssertionError(f"never {status}")

    result_tid = tid_of_status(job._p_oid, CALLBACKS)
    first_tid = tid_of_status(first._p_oid, COMPLETED)
    second_tid = tid_of_status(second._p_oid, COMPLETED)
    assert result_tid < first_tid < second_tid


def test_callbacks_get_the_failure(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.boom))
    either = job.addCallbacks(success=jobfuncs.on_success, failure=jobfuncs.on_failure)
    plain = job.addCallback(jobfuncs.describe)
    commit()
    start_dispatcher()
    assert wait_for_result(job).check(RuntimeError)
    assert either.result == ("failure", "FooBared")
    assert plain.result == ("failure", "builtins.RuntimeError", "FooBared")


def test_a_failing_callback_does_not_stop_the_next(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.add, 1, 1))
    bad = job.addCallback(jobfuncs.boom)
    good = job.addCallback(jobfuncs.describe)
    commit()
    start_dispatcher()
    assert wait_for_result(job) == 2
    assert bad.failed and good.result == ("value", 2)


def test_a_callback_with_an_unpicklable_result_fails_and_the_job_completes(
    queue, start_dispatcher
):
    job = queue.put(Job(jobfuncs.add, 1, 1))
    bad = job.addCallback(jobfuncs.return_lock)
    commit()
    start_dispatcher()
    assert wait_for_result(job) == 2
    assert "could not be stored" in bad.result.getErrorMessage()


def test_a_callback_added_to_a_completed_job_still_runs(queue, start_dispatcher):
    start_dispatcher()
    job = queue.put(Job(jobfuncs.add, 2, 2))
    commit()
    assert wait_for_result(job) == 4
    late = job.addCallback(jobfuncs.thread_name)
    commit()
    assert wait_for_result(late).startswith("zasync-")
    assert wait_for_result(job) == 4
    assert job.status == COMPLETED


def test_a_callback_of_a_callback_runs_and_the_job_completes(
    queue, start_dispatcher, zasync_events
):
    job = queue.put(Job(jobfuncs.add, 1, 2))
    inner = job.addCallback(jobfuncs.describe)
    innermost = inner.addCallback(jobfuncs.identity)
    commit()
    start_dispatcher()
    assert wait_for_result(job, 10) == 3
    assert inner.result == ("value", 3)
    assert innermost.result == ("value", 3)
    assert innermost.status == inner.status == COMPLETED


def test_a_job_failed_before_it_ran_is_not_run(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.count, "never"))
    commit()
    job.fail()
    commit()
    start_dispatcher()
    other = queue.put(Job(jobfuncs.noop))
    commit()
    wait_for_result(other)
    assert wait_for_result(job).check(AbortedError)
    assert "never" not in jobfuncs.calls
    assert job.status == COMPLETED
