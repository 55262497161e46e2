"""Stopping a dispatcher with jobs unfinished, and recovering them when a
dispatcher starts again under the same UUID (zasync.recovery), on a
FileStorage database with real threads."""

from __future__ import annotations

import threading
import uuid

import transaction

import jobfuncs
from dbviews import read
from zasync.interfaces import ACTIVE, COMPLETED, PENDING, AbortedError
from zasync.job import Job
from zasync.retry import NeverRetry
from zasync.testing import wait_for_result


def commit():
    transaction.commit()


def test_stop_waits_for_running_jobs(zasync_db, queue, start_dispatcher):
    dispatcher = start_dispatcher(threads=1)
    job = queue.put(Job(jobfuncs.signal_and_wait, "started", "go"))
    commit()
    assert jobfuncs.gate("started").wait(10)
    threading.Timer(0.1, jobfuncs.gate("go").set).start()
    assert dispatcher.stop(10) is True
    assert read(zasync_db, job._p_oid, lambda j: j.status) == COMPLETED


def test_stop_leaves_unfinished_jobs_that_a_restart_recovers(
    zasync_db, queue, start_dispatcher
):
    name = str(uuid.uuid4())
    first = start_dispatcher(uuid=name, threads=1)
    stuck = queue.put(Job(jobfuncs.wait_first_time, "stuck"))
    commit()
    assert jobfuncs.gate("stuck-started").wait(10)
    waiting = queue.put(Job(jobfuncs.add, 1, 2))
    commit()
    assert first.stop(0.2) is False  # the job still runs
    assert read(zasync_db, stuck._p_oid, lambda j: j.status) == ACTIVE
    assert read(zasync_db, waiting._p_oid, lambda j: j.status) == PENDING

    start_dispatcher(uuid=name, threads=1)
    assert wait_for_result(stuck) == 2  # the second call
    assert wait_for_result(waiting) == 3
    # The abandoned thread finishes its call: it must not overwrite the
    # completed job.
    jobfuncs.gate("stuck").set()
    first.pool.threads[0].join(10)
    assert not first.pool.threads[0].is_alive()
    assert read(zasync_db, stuck._p_oid, lambda j: (j.status, j.result)) == (
        COMPLETED,
        2,
    )


def test_an_interrupted_job_with_never_retry_fails_on_restart(queue, start_dispatcher):
    name = str(uuid.uuid4())
    first = start_dispatcher(uuid=name, threads=1)
    job = Job(jobfuncs.wait_first_time, "once")
    job.retry_policy_factory = NeverRetry
    job = queue.put(job)
    commit()
    assert jobfuncs.gate("once-started").wait(10)
    assert first.stop(0.1) is False
    start_dispatcher(uuid=name, threads=1)
    failure = wait_for_result(job)
    assert failure.check(AbortedError) is AbortedError
    assert "interrupted" in failure.getErrorMessage()
    assert jobfuncs.calls["once"] == 1


def test_an_interrupted_callback_runs_after_restart(queue, start_dispatcher):
    name = str(uuid.uuid4())
    first = start_dispatcher(uuid=name, threads=1)
    job = queue.put(Job(jobfuncs.add, 1, 1))
    callback = job.addCallback(Job(jobfuncs.wait_first_time, "cb"))
    commit()
    assert jobfuncs.gate("cb-started").wait(10)
    assert first.stop(0.1) is False
    start_dispatcher(uuid=name, threads=1)
    assert wait_for_result(job) == 2
    assert callback.result == 2  # its second call
    jobfuncs.gate("cb").set()
    first.pool.threads[0].join(10)


def test_clean_stop_then_restart_runs_what_was_left(queue, start_dispatcher):
    name = str(uuid.uuid4())
    start_dispatcher(uuid=name).stop(5)
    job = queue.put(Job(jobfuncs.add, 2, 3))
    commit()
    start_dispatcher(uuid=name)
    assert wait_for_result(job) == 5


def test_a_thread_left_running_by_stop_runs_nothing_more(queue, start_dispatcher):
    """stop(timeout) cannot kill a thread stuck in a job. When that job
    returns, the thread must not go on with the rest of its batch: a restart
    under the same UUID recovered it and runs it in the same slot."""
    name = str(uuid.uuid4())
    first = start_dispatcher(uuid=name, threads=1)
    first.pool.runners[0].batch_limit = 2  # the next claim takes both jobs
    a = queue.put(Job(jobfuncs.wait_first_time, "a"))
    b = queue.put(Job(jobfuncs.wait_first_time, "b"))
    commit()
    assert jobfuncs.gate("a-started").wait(10)
    assert first.stop(0.1) is False
    start_dispatcher(uuid=name, threads=1)
    # Recovery requeues a, then b, each at the front of the queue, where the
    # later requeue comes first (Queue.requeue with front=True): the new thread
    # runs b, then a.
    assert jobfuncs.gate("b-started").wait(10)  # the new thread runs b
    assert jobfuncs.calls["a"] == 1  # not yet run again: b holds the thread
    jobfuncs.gate("a").set()  # the abandoned thread gets its job back
    first.pool.threads[0].join(10)
    assert not first.pool.threads[0].is_alive()
    jobfuncs.gate("b").set()
    assert wait_for_result(b) == 1
    assert wait_for_result(a) == 2  # the new thread's call, not the abandoned one's
    assert jobfuncs.calls == {"a": 2, "b": 1}
