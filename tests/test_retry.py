"""Retry policies (zasync.retry): their decisions, and what a dispatcher
does with them on a FileStorage database."""

from __future__ import annotations

import pickle
import time

import pytest
import transaction
from ZODB.POSException import ConflictError

import jobfuncs
import zasync
from zasync.failure import Failure
from zasync.job import Job
from zasync.retry import (
    CONFLICT_DELAY_BASE,
    CONFLICT_DELAY_CAP,
    NeverRetry,
    RetryPolicy,
    RetryWithDelay,
)
from zasync.testing import wait_for_result


def commit():
    transaction.commit()


def conflict():
    return Failure(ConflictError("conflict"))


def app_error():
    return Failure(ValueError("bad"))


# -- decisions ----------------------------------------------------------------


def test_default_retries_conflicts_with_growing_jitter_and_then_gives_up():
    job = Job(jobfuncs.noop)
    delays = []
    for n in range(RetryPolicy.max_conflicts):
        job._conflicts = n
        decision = RetryPolicy(job).commit_error(conflict())
        assert decision.retry
        assert (
            0 <= decision.delay <= min(CONFLICT_DELAY_CAP, CONFLICT_DELAY_BASE * 2**n)
        )
        delays.append(decision.delay)
        assert RetryPolicy(job).job_error(conflict()).retry
    assert len(set(delays)) > 1  # jitter: not a fixed delay
    job._conflicts = RetryPolicy.max_conflicts
    assert not RetryPolicy(job).commit_error(conflict()).retry


def test_default_does_not_retry_application_errors():
    assert not RetryPolicy(Job(jobfuncs.noop)).job_error(app_error()).retry
    assert not RetryPolicy(Job(jobfuncs.noop)).commit_error(app_error()).retry


def test_default_requeues_an_interrupted_job_a_few_times():
    job = Job(jobfuncs.noop)
    for n in range(RetryPolicy.max_interruptions):
        job._interruptions = n
        assert RetryPolicy(job).interrupted().retry
    job._interruptions = RetryPolicy.max_interruptions
    assert not RetryPolicy(job).interrupted().retry


def test_never_retry_gives_up_on_everything():
    policy = NeverRetry(Job(jobfuncs.noop))
    assert not policy.commit_error(conflict()).retry
    assert not policy.job_error(conflict()).retry
    assert not policy.job_error(app_error()).retry
    assert not policy.interrupted().retry


def test_retry_with_delay_doubles_the_delay_up_to_max_errors():
    job = Job(jobfuncs.noop)
    decisions = []
    for errors in range(4):
        job._errors = errors  # the errors before this one
        decisions.append(RetryWithDelay(job).job_error(app_error()))
    assert [(d.retry, d.delay) for d in decisions] == [
        (True, 30.0),
        (True, 60.0),
        (True, 120.0),
        (False, 0.0),
    ]


def test_configure_makes_a_picklable_factory():
    factory = RetryWithDelay.configure(max_errors=5, error_delay=1.5)
    policy = factory(Job(jobfuncs.noop))
    assert isinstance(policy, RetryWithDelay)
    assert (policy.max_errors, policy.error_delay) == (5, 1.5)
    assert pickle.loads(pickle.dumps(factory)) == factory
    assert repr(factory) == "RetryWithDelay.configure(error_delay=1.5, max_errors=5)"


def test_configure_refuses_unknown_or_negative_settings():
    with pytest.raises(TypeError, match=r"unknown settings \['retries'\]"):
        RetryWithDelay.configure(retries=3)
    with pytest.raises(ValueError, match="use a number >= 0"):
        RetryWithDelay.configure(error_delay=-1)


def test_public_names():
    assert zasync.NeverRetry is NeverRetry
    assert zasync.RetryWithDelay is RetryWithDelay
    assert zasync.RetryPolicy is RetryPolicy


# -- with a dispatcher ---------------------------------------------------------------


def test_a_job_raising_a_conflict_is_retried_by_default(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.raise_conflict_once, "c"))
    commit()
    start_dispatcher()
    assert wait_for_result(job) == "done"
    assert jobfuncs.calls["c"] == 2


def test_a_conflicting_job_gives_up_after_max_conflicts(queue, start_dispatcher):
    job = Job(jobfuncs.raise_conflict_always, "always")
    job.retry_policy_factory = RetryWithDelay.configure(max_conflicts=2)
    job = queue.put(job)
    commit()
    start_dispatcher(threads=1)
    assert wait_for_result(job).check(ConflictError)
    # One run, then max_conflicts retries (the first run's conflict counts).
    assert jobfuncs.calls["always"] == 3


def test_never_retry_fails_a_conflicting_job(queue, start_dispatcher):
    job = Job(jobfuncs.raise_conflict_always, "never")
    job.retry_policy_factory = NeverRetry
    job = queue.put(job)
    commit()
    start_dispatcher(threads=1)
    assert wait_for_result(job).check(ConflictError)
    assert jobfuncs.calls["never"] == 1


def test_application_errors_are_not_retried_by_default(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.fail_times, "once", 1))
    commit()
    start_dispatcher()
    assert wait_for_result(job).check(ValueError)
    assert jobfuncs.calls["once"] == 1


def test_retry_with_delay_reschedules_with_the_delay(queue, start_dispatcher):
    job = Job(jobfuncs.fail_times, "twice", 2)
    job.retry_policy_factory = RetryWithDelay.configure(max_errors=2, error_delay=0.1)
    job = queue.put(job)
    commit()
    start_dispatcher()
    started = time.monotonic()
    assert wait_for_result(job, 10) == "finally"
    assert jobfuncs.calls["twice"] == 3
    assert time.monotonic() - started >= 0.1 + 0.2  # the delay, then doubled
    assert job.attempts == 3
    assert not job.failed


def test_retry_with_delay_gives_up_after_max_errors(queue, start_dispatcher):
    job = Job(jobfuncs.fail_times, "always", 100)
    job.retry_policy_factory = RetryWithDelay.configure(max_errors=2, error_delay=0.05)
    job = queue.put(job)
    commit()
    start_dispatcher()
    failure = wait_for_result(job, 10)
    assert failure.getErrorMessage() == "failure 3 of 100"
    assert jobfuncs.calls["always"] == 3


def test_retry_at_once_is_bounded(queue, start_dispatcher):
    """error_delay=0: retried in the same transaction, still max_errors."""
    job = Job(jobfuncs.fail_times, "fast", 100)
    job.retry_policy_factory = RetryWithDelay.configure(max_errors=3, error_delay=0)
    job = queue.put(job)
    commit()
    start_dispatcher()
    assert wait_for_result(job, 10).check(ValueError)
    assert jobfuncs.calls["fast"] == 4
