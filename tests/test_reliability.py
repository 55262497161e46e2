"""Faults inside a worker: commits that report errors, jobs that commit by
themselves, NeverRetry's one start at most, and every start counted.

The faults are real: a resource joined to the transaction whose commit
fails in its vote (nothing committed) or in its second phase (the
database's part committed all the same), as a storage whose connection
dies in tpc_finish does."""

from __future__ import annotations

import persistent
import pytest
import transaction

import reliability_jobs
import zasync
import zasync.claimer as claimer_module
from reliability_jobs import FailsToCommit, calls
from zasync.job import Job
from zasync.testing import wait_for_result, wait_until


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()
    yield
    calls.clear()


class Counter(persistent.Persistent):
    value = 0


def _batched(start_dispatcher, size: int):
    """A worker of one thread that takes ``size`` jobs per transaction."""
    dispatcher = start_dispatcher(threads=1, maintenance_interval=60)
    dispatcher.pool.runners[0].batch_limit = size
    return dispatcher


def test_a_claim_whose_commit_reported_an_error_has_its_jobs_run_at_once(
    queue, start_dispatcher, monkeypatch, caplog
):
    """The claim's commit raised after the database committed it (the
    second phase failed): the worker finds the jobs its slots hold but no
    thread runs, and runs them, once each (they were stuck for good)."""
    real_claim = claimer_module.claim
    injected = []

    def claim_then_fail_at_finish(queues, **kw):
        taken = real_claim(queues, **kw)
        if taken and not injected:
            injected.append(sum(len(jobs) for jobs in taken.values()))
            txn = queues[0]._p_jar.transaction_manager.get()
            txn.join(FailsToCommit("finish", "the claim's second phase failed"))
        return taken

    monkeypatch.setattr(claimer_module, "claim", claim_then_fail_at_finish)
    jobs = [queue.put(Job(reliability_jobs.counted, f"c{n}")) for n in range(3)]
    transaction.commit()
    start_dispatcher(threads=1, maintenance_interval=60)
    assert [wait_for_result(job, 10) for job in jobs] == ["c0", "c1", "c2"]
    assert injected
    assert calls == {"c0": 1, "c1": 1, "c2": 1}
    transaction.begin()
    assert [job.attempts for job in jobs] == [1, 1, 1]
    assert "holds 1 job(s) it was never given" in caplog.text


def test_a_never_retry_job_whose_commit_fails_starts_once(queue, start_dispatcher):
    job = queue.put(
        Job(reliability_jobs.commit_fails, "once", "vote"),
        retry_policy_factory=zasync.NeverRetry,
    )
    transaction.commit()
    start_dispatcher(threads=1)
    failure = wait_for_result(job, 10)
    assert "injected commit failure" in failure.getErrorMessage()
    assert calls == {"once": 1}
    transaction.begin()
    assert job.attempts == 1


def test_a_job_whose_commit_fails_again_and_again_counts_every_run(
    queue, start_dispatcher
):
    """The default policy runs it once more alone after the failed batch,
    then gives up on an error that is no conflict: two runs, two
    attempts."""
    job = queue.put(Job(reliability_jobs.commit_fails, "twice", "vote"))
    transaction.commit()
    start_dispatcher(threads=1)
    failure = wait_for_result(job, 10)
    assert "injected commit failure" in failure.getErrorMessage()
    assert calls == {"twice": 2}
    transaction.begin()
    assert job.attempts == 2


def test_a_never_retry_job_never_shares_a_transaction(queue, start_dispatcher):
    """Batched with others, a NeverRetry job whose commit fails would undo
    theirs and be run again with them: it runs alone, once."""
    dispatcher = _batched(start_dispatcher, 3)
    jobs = [
        queue.put(Job(reliability_jobs.counted, "before")),
        queue.put(
            Job(reliability_jobs.commit_fails, "alone", "vote"),
            retry_policy_factory=zasync.NeverRetry,
        ),
        queue.put(Job(reliability_jobs.counted, "after")),
    ]
    transaction.commit()
    results = [wait_for_result(job, 10) for job in jobs]
    assert results[0] == "before" and results[2] == "after"
    assert "injected commit failure" in results[1].getErrorMessage()
    assert calls == {"before": 1, "alone": 1, "after": 1}
    transaction.begin()
    assert [job.attempts for job in jobs] == [1, 1, 1]
    wait_until(lambda: dispatcher.jobs_run == 3, message="the worker to count 3 jobs")


def test_a_job_that_commits_by_itself_then_raises_fails_with_its_own_error(
    queue, conn, start_dispatcher
):
    counter = conn.root()["counter"] = Counter()
    _batched(start_dispatcher, 3)
    jobs = [
        queue.put(Job(reliability_jobs.counted, "first")),
        queue.put(Job(reliability_jobs.commits_then_raises, "self", counter)),
        queue.put(Job(reliability_jobs.counted, "last")),
    ]
    transaction.commit()
    results = [wait_for_result(job, 10) for job in jobs]
    assert results[0] == "first" and results[2] == "last"
    assert results[1].type is ValueError
    assert "its own error, after its own commit" in results[1].getErrorMessage()
    assert calls == {"first": 1, "self": 1, "last": 1}
    transaction.begin()
    assert counter.value == 1  # what it committed stays committed
    assert [job.attempts for job in jobs] == [1, 1, 1]


def test_a_job_that_commits_by_itself_keeps_its_result(queue, conn, start_dispatcher):
    counter = conn.root()["counter"] = Counter()
    job = queue.put(Job(reliability_jobs.commits_then_returns, "self", counter))
    transaction.commit()
    start_dispatcher(threads=1)
    assert wait_for_result(job, 10) == "self done"
    assert calls == {"self": 1}
    transaction.begin()
    assert counter.value == 1 and job.attempts == 1
