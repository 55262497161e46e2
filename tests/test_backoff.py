"""Backoff for application errors (issue #21): RetryPolicy.configure's
delays, retry_on, max_errors, the job's begin_after and ``retry_at`` after
a failure, and a real dispatcher running the retries."""

from __future__ import annotations

import datetime
import pickle
from collections.abc import Iterator

import pytest
import transaction

import coop_jobs
from zasync import admin
from zasync.failure import Failure
from zasync.interfaces import PENDING, JobCancelled, JobTimeout
from zasync.job import Job
from zasync.recovery import at_most_once
from zasync.retry import NeverRetry, RetryPolicy, RetryWithDelay, ZcAsyncPolicy
from zasync.testing import wait_for_result, wait_until


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    coop_jobs.reset()
    yield
    coop_jobs.reset()


def failure(error: BaseException) -> Failure:
    return Failure(error)


def decisions(factory, error: BaseException, count: int) -> list:
    job = Job(coop_jobs.raise_each_time, "k", "os")
    found = []
    for errors in range(count):
        job._errors = errors  # the errors before this one
        decision = factory(job).job_error(failure(error))
        found.append(decision.delay if decision.retry else None)
    return found


# -- delays ---------------------------------------------------------------------


def test_delays_grow_by_backoff_up_to_the_cap_without_jitter():
    factory = RetryPolicy.configure(
        max_errors=5, backoff=2.0, base_delay=1.0, max_delay=5.0
    )
    assert decisions(factory, OSError("x"), 6) == [1.0, 2.0, 4.0, 5.0, 5.0, None]


def test_backoff_one_keeps_the_delay():
    factory = RetryPolicy.configure(max_errors=3, backoff=1, base_delay=0.5)
    assert decisions(factory, OSError("x"), 4) == [0.5, 0.5, 0.5, None]


def test_jitter_stays_between_half_the_delay_and_the_delay():
    factory = RetryPolicy.configure(
        max_errors=8, backoff=3.0, base_delay=1.0, max_delay=20.0, jitter=True
    )
    runs = [decisions(factory, OSError("x"), 8) for _ in range(20)]
    for delays in runs:
        for errors, delay in enumerate(delays):
            full = min(20.0, 3.0**errors)
            assert full / 2 <= delay <= full
    assert len({tuple(d) for d in runs}) > 1  # random, not fixed


def test_a_huge_backoff_does_not_overflow():
    factory = RetryPolicy.configure(max_errors=5000, backoff=10.0, base_delay=1.0)
    job = Job(coop_jobs.raise_each_time, "k", "os")
    job._errors = 4000
    assert factory(job).job_error(failure(OSError())).delay > 0


def test_retry_with_delay_keeps_its_behaviour():
    assert decisions(RetryWithDelay, ValueError("x"), 4) == [30.0, 60.0, 120.0, None]
    factory = RetryWithDelay.configure(max_errors=2, error_delay=1.5)
    assert decisions(factory, ValueError("x"), 3) == [1.5, 3.0, None]


# -- which errors ---------------------------------------------------------------


def test_retry_on_names_the_errors_that_retry():
    factory = RetryPolicy.configure(
        max_errors=3, base_delay=1.0, retry_on=(OSError, TimeoutError)
    )
    assert decisions(factory, OSError("x"), 1) == [1.0]
    assert decisions(factory, TimeoutError("x"), 1) == [1.0]
    assert decisions(factory, ConnectionError("x"), 1) == [1.0]  # an OSError
    assert decisions(factory, KeyError("x"), 1) == [None]
    assert decisions(factory, coop_jobs.Flaky("x"), 1) == [None]


def test_without_retry_on_every_error_but_timeouts_retries():
    factory = RetryPolicy.configure(max_errors=2, base_delay=1.0)
    assert decisions(factory, KeyError("x"), 1) == [1.0]
    assert decisions(factory, JobTimeout("x"), 1) == [None]
    with_timeouts = RetryPolicy.configure(
        max_errors=2, base_delay=1.0, retry_on=(JobTimeout,)
    )
    assert decisions(with_timeouts, JobTimeout("x"), 1) == [1.0]


def test_a_cancelled_job_is_never_retried():
    error = JobCancelled("cancelled")
    retry_all = RetryPolicy.configure(max_errors=5, retry_on=(Exception,))
    assert decisions(retry_all, error, 1) == [None]
    assert decisions(RetryWithDelay, error, 1) == [None]

    class Always:
        def jobError(self, failure, data_cache):  # noqa: N802 - zc.async's
            return True

    job = Job(coop_jobs.raise_each_time, "k", "os")
    policy = ZcAsyncPolicy(Always(), job)
    assert not policy.job_error(failure(error)).retry


# -- configure -----------------------------------------------------------------


def test_configure_returns_a_picklable_factory():
    factory = RetryPolicy.configure(
        max_errors=5,
        backoff=2.0,
        base_delay=1.0,
        max_delay=300.0,
        jitter=True,
        retry_on=(IOError, TimeoutError),
    )
    copy = pickle.loads(pickle.dumps(factory))
    assert copy == factory
    policy = copy(Job(coop_jobs.raise_each_time, "k", "os"))
    assert isinstance(policy, RetryPolicy)
    assert policy.retry_on == (OSError, TimeoutError)
    assert (policy.error_delay, policy.max_delay, policy.jitter) == (1.0, 300.0, True)
    assert repr(factory) == (
        "RetryPolicy.configure(backoff=2.0, error_delay=1.0, jitter=True, "
        "max_delay=300.0, max_errors=5, retry_on=(OSError, TimeoutError))"
    )
    one = RetryPolicy.configure(retry_on=KeyError)
    assert one(Job(coop_jobs.raise_each_time, "k", "os")).retry_on == (KeyError,)


def test_a_configured_never_retry_still_starts_once_at_most():
    job = Job(coop_jobs.raise_each_time, "k", "os")
    job.retry_policy_factory = NeverRetry.configure(max_interruptions=0)
    assert at_most_once(job)
    job.retry_policy_factory = RetryPolicy.configure(max_errors=1)
    assert not at_most_once(job)


def test_configure_refuses_what_cannot_work():
    with pytest.raises(TypeError, match="ValueError.*not an exception class"):
        RetryPolicy.configure(retry_on=(OSError, "ValueError"))
    with pytest.raises(TypeError, match="int.*not an exception class"):
        RetryPolicy.configure(retry_on=int)

    class Local(Exception):
        pass

    with pytest.raises(TypeError, match="Local cannot be stored.*module level"):
        RetryPolicy.configure(retry_on=(Local,))
    with pytest.raises(ValueError, match=r"backoff=0.5\): use a number >= 1"):
        RetryPolicy.configure(backoff=0.5)
    with pytest.raises(ValueError, match="max_delay=-1"):
        RetryPolicy.configure(max_delay=-1)
    with pytest.raises(ValueError, match="error_delay=inf"):
        RetryPolicy.configure(base_delay=float("inf"))
    with pytest.raises(ValueError, match="jitter='yes'.*True or False"):
        RetryPolicy.configure(jitter="yes")
    with pytest.raises(TypeError, match="two names of one setting"):
        RetryPolicy.configure(base_delay=1, error_delay=1)
    with pytest.raises(TypeError, match=r"RetryPolicy.configure\(\) got unknown"):
        RetryPolicy.configure(retries=3)


# -- with a dispatcher ------------------------------------------------------------


def test_a_failed_job_waits_in_its_queue_until_its_retry_time(queue, start_dispatcher):
    job = queue.put(
        Job(coop_jobs.fail_then_succeed, "later", 1),
        retry_policy_factory=RetryPolicy.configure(max_errors=2, base_delay=60.0),
    )
    transaction.commit()
    failed_at = datetime.datetime.now(datetime.UTC)
    start_dispatcher()

    def rescheduled() -> bool:
        transaction.begin()
        return job.attempts == 1 and job.status == PENDING

    wait_until(rescheduled, timeout=10, message="the job was not rescheduled")
    delay = (job.begin_after - failed_at).total_seconds()
    assert 59.0 <= delay <= 61.0 + 10
    data = admin.describe(job)
    assert data["kind"] == "scheduled"
    assert data["retry_at"] == job.begin_after.isoformat()
    assert coop_jobs.calls["later"] == 1


def test_retries_with_backoff_end_to_end(queue, start_dispatcher):
    job = queue.put(
        Job(coop_jobs.fail_then_succeed, "twice", 2),
        retry_policy_factory=RetryPolicy.configure(
            max_errors=3, base_delay=0.05, backoff=2.0, jitter=True
        ),
    )
    transaction.commit()
    start_dispatcher()
    assert wait_for_result(job, 10) == "done after 3"
    assert job.attempts == 3
    assert "retry_at" not in admin.describe(job)


def test_errors_retry_on_does_not_name_fail_at_once(queue, start_dispatcher):
    factory = RetryPolicy.configure(max_errors=5, base_delay=0.01, retry_on=(OSError,))
    other = queue.put(
        Job(coop_jobs.raise_each_time, "key", "key"), retry_policy_factory=factory
    )
    named = queue.put(
        Job(coop_jobs.raise_each_time, "os", "os"), retry_policy_factory=factory
    )
    transaction.commit()
    start_dispatcher()
    assert wait_for_result(other, 10).check(KeyError)
    assert coop_jobs.calls["key"] == 1
    assert wait_for_result(named, 10).check(OSError)
    assert coop_jobs.calls["os"] == 6  # one run, then max_errors retries
    assert named.attempts == 6
