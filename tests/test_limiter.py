"""A job that keeps conflicting with the jobs beside it runs alone in its
worker (zasync.limiter.ConflictLimiter): the gate's rules with real threads, and
a dispatcher whose four threads all write one object."""

from __future__ import annotations

import logging
import threading

import pytest
import transaction

import jobfuncs
import zasync
from zasync.job import Job
from zasync.limiter import SOLO_AFTER, WIDEN_AFTER, ConflictLimiter
from zasync.retry import RetryPolicy
from zasync.testing import wait_for_result, wait_until

#: long enough for a thread that is not held to get through the gate
WINDOW = 0.3


class GiveUpAtSoloAfter(RetryPolicy):
    """Retries a conflict SOLO_AFTER times: the last try is the one that
    runs alone, so without the gate jobs fail."""

    max_conflicts = SOLO_AFTER


def _in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _hold(context, entered: threading.Event, release: threading.Event):
    def run():
        with context:
            entered.set()
            release.wait(10)

    return _in_thread(run)


def _assert_waits_for(first, second) -> None:
    """The gate's context ``second``, entered after ``first``, is entered
    only once ``first`` is left."""
    entered_first, release_first = threading.Event(), threading.Event()
    _hold(first, entered_first, release_first)
    assert entered_first.wait(5)
    entered_second, release_second = threading.Event(), threading.Event()
    _hold(second, entered_second, release_second)
    assert not entered_second.wait(WINDOW)
    release_first.set()
    assert entered_second.wait(5)
    release_second.set()


@pytest.mark.parametrize(
    "first, second",
    [("shared", "alone"), ("alone", "shared"), ("alone", "alone")],
    ids=[
        "a job runs alone once the running transactions end",
        "no transaction starts while a job runs alone",
        "one job at a time runs alone",
    ],
)
def test_who_waits_for_whom(first, second):
    gate = ConflictLimiter(limit=4)
    _assert_waits_for(getattr(gate, first)(), getattr(gate, second)())
    wait_until(
        lambda: gate._alone == 0 and gate._running == 0,
        message="the gate to be left by both",
    )
    assert gate.solo_runs == [first, second].count("alone")


def test_the_waits_are_bounded():
    """A transaction that does not end does not keep a job from running
    alone for longer than ``wait``, and one running alone that does not
    end holds the others for at most ``hold``."""
    gate = ConflictLimiter(wait=0.05, hold=0.05)
    stuck, never = threading.Event(), threading.Event()
    _hold(gate.shared(), stuck, never)
    assert stuck.wait(5)
    alone, alone_never = threading.Event(), threading.Event()
    _hold(gate.alone(), alone, alone_never)
    assert alone.wait(5)  # after `wait`, the stuck one still running
    beside, release = threading.Event(), threading.Event()
    _hold(gate.shared(), beside, release)
    assert beside.wait(5)  # after `hold`
    release.set()
    never.set()
    alone_never.set()


def test_conflicts_halve_the_threads_let_in_and_clean_commits_widen_it():
    gate = ConflictLimiter(limit=4)
    gate.conflicted()
    assert gate.cap == 2
    gate.conflicted()
    gate.conflicted()
    assert gate.cap == 1 and gate.narrowed == 2
    _assert_waits_for(gate.shared(), gate.shared())  # one at a time
    for _ in range(WIDEN_AFTER):
        gate.committed()
    assert gate.cap == 2
    entered, release = threading.Event(), threading.Event()
    _hold(gate.shared(), entered, release)
    assert entered.wait(5)
    _assert_waits_for(gate.shared(), gate.shared())  # two at a time
    release.set()
    for _ in range(WIDEN_AFTER * 2 + WIDEN_AFTER * 3):
        gate.committed()
    assert gate.cap == 4
    gate.committed()
    assert gate.cap == 4  # never wider than the threads


def test_jobs_that_conflict_narrow_their_worker(queue, start_dispatcher, caplog):
    """The same jobs, the worker narrowed by their conflicts: they run
    about one at a time, and few of them conflict at all (without the
    narrowing, 29-33 conflicts for these 40 jobs)."""
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    jobs = [queue.put(Job(jobfuncs.increment_and_linger, counter)) for _ in range(40)]
    transaction.commit()
    with caplog.at_level(logging.INFO, logger="zasync"):
        dispatcher = start_dispatcher(threads=4)
        for job in jobs:
            wait_for_result(job, 60)
    transaction.begin()
    assert not [job.result for job in jobs if job.failed]
    assert counter.value == 40
    assert dispatcher.limiter.narrowed >= 1
    assert sum(job._conflicts for job in jobs) < 10
    assert "at most 1 of 4 threads run jobs at once" in caplog.text


def test_a_job_that_keeps_conflicting_runs_alone(
    queue, start_dispatcher, caplog, monkeypatch
):
    """Four threads, jobs that each write one counter and keep their
    transaction open, the worker not narrowed by their conflicts (below):
    they conflict with each other at every turn. A job that lost
    SOLO_AFTER times runs alone and commits, so none gives up (their
    policy allows no more tries) and no increment is lost."""
    monkeypatch.setattr(ConflictLimiter, "conflicted", lambda self: None)
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    jobs = []
    for _ in range(24):
        job = Job(jobfuncs.increment_and_linger, counter)
        job.retry_policy_factory = GiveUpAtSoloAfter
        jobs.append(queue.put(job))
    transaction.commit()
    with caplog.at_level(logging.INFO, logger="zasync.executor"):
        dispatcher = start_dispatcher(threads=4)
        for job in jobs:
            wait_for_result(job, 60)
    failed = [job.result for job in jobs if job.failed]
    assert not failed, failed
    transaction.begin()
    assert counter.value == 24
    assert max(job._conflicts for job in jobs) >= SOLO_AFTER  # they did conflict
    assert dispatcher.limiter.solo_runs >= 1
    assert "running it alone in this worker" in caplog.text


def test_callbacks_that_keep_conflicting_run_alone(
    queue, start_dispatcher, monkeypatch
):
    """Callbacks run in transactions of their own and pass the gate too
    (the worker not narrowed, as above)."""
    monkeypatch.setattr(ConflictLimiter, "conflicted", lambda self: None)
    counter = queue._p_jar.root()["counter"] = jobfuncs.Counter()
    jobs, callbacks = [], []
    for _ in range(16):
        job = queue.put(Job(jobfuncs.noop))
        callback = job.addCallback(Job(jobfuncs.increment_after, counter))
        callback.retry_policy_factory = GiveUpAtSoloAfter
        jobs.append(job)
        callbacks.append(callback)
    transaction.commit()
    start_dispatcher(threads=4)
    for job in jobs:
        wait_for_result(job, 60)
    transaction.begin()
    failed = [cb.result for cb in callbacks if cb.failed]
    assert not failed, failed
    assert counter.value == 16


def test_a_thread_held_at_the_gate_past_a_stop_leaves_its_jobs_to_recovery(
    queue, start_dispatcher
):
    """stop(timeout) gives up on a thread that waits at the gate (a job
    runs alone); when the gate opens the thread must not start the jobs
    it holds: recovery runs them (else they would run twice)."""
    dispatcher = start_dispatcher(threads=1)
    holding, release = threading.Event(), threading.Event()
    _hold(dispatcher.limiter.alone(), holding, release)
    assert holding.wait(5)
    job = queue.put(Job(jobfuncs.count, "held"))
    transaction.commit()
    wait_until(lambda: dispatcher.pool.busy)  # the thread has it, at the gate
    assert dispatcher.stop(0.2) is False  # gave up on that thread
    release.set()
    for thread in dispatcher.pool.threads:
        thread.join(10)
        assert not thread.is_alive()
    assert jobfuncs.calls["held"] == 0
    transaction.begin()
    assert job.status in (zasync.ACTIVE, zasync.ASSIGNED)  # left to recovery
