"""Per-job timeouts for cooperative jobs (issue #21): queue.put(...,
timeout=) checked where it enters; local.check() and progress() raise
JobTimeout once the job ran past it; the retry policy decides whether it
runs again."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
import transaction

import coop_jobs
from zasync.interfaces import JobTimeout, TimeoutError
from zasync.job import Job
from zasync.retry import RetryPolicy
from zasync.testing import wait_for_result


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    coop_jobs.reset()
    yield
    coop_jobs.reset()


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, "5", True])
def test_put_refuses_a_timeout_that_cannot_work(queue, bad):
    with pytest.raises(ValueError, match=r"timeout=.*a finite number > 0"):
        queue.put(Job(coop_jobs.sleeper, "t", 0.1), timeout=bad)


def test_the_timeout_is_stored_on_the_job(queue):
    job = queue.put(Job(coop_jobs.sleeper, "t", 0.1), timeout=2)
    assert job.timeout == 2.0
    assert Job(coop_jobs.sleeper, "t", 0.1).timeout is None


def seconds_past_expiry(job: Job) -> float:
    deadline = job.active_start.timestamp() + job.timeout
    return job.active_end.timestamp() - deadline


@pytest.mark.parametrize("how", ["check", "progress"])
def test_a_job_past_its_timeout_stops_at_its_next_check(queue, start_dispatcher, how):
    job = queue.put(
        Job(coop_jobs.cooperative, how, how),
        timeout=0.5,
        # Timeouts are not among the errors retried by default.
        retry_policy_factory=RetryPolicy.configure(max_errors=3, base_delay=0.01),
    )
    transaction.commit()
    start_dispatcher()
    failure = wait_for_result(job, 10)
    assert failure.check(JobTimeout) and failure.check(TimeoutError)
    assert "ran past its timeout of 0.5 s" in failure.getErrorMessage()
    assert 0 <= seconds_past_expiry(job) < 2.0
    assert job._annotations is None  # its writes were rolled back
    assert coop_jobs.calls[how] == 1


def test_retry_on_job_timeout_runs_it_again(queue, start_dispatcher):
    job = queue.put(
        Job(coop_jobs.cooperative, "again", "check"),
        timeout=0.3,
        retry_policy_factory=RetryPolicy.configure(
            max_errors=1, base_delay=0.01, retry_on=(JobTimeout,)
        ),
    )
    transaction.commit()
    start_dispatcher()
    assert wait_for_result(job, 10).check(JobTimeout)
    assert coop_jobs.calls["again"] == 2
    assert job.attempts == 2


def test_a_retry_at_once_gets_its_own_time(queue, start_dispatcher):
    """base_delay=0: run again at once, in the same turn; each run may
    take its timeout."""
    job = queue.put(
        Job(coop_jobs.cooperative, "at once", "check"),
        timeout=0.3,
        retry_policy_factory=RetryPolicy.configure(
            max_errors=1, base_delay=0, retry_on=(JobTimeout,)
        ),
    )
    transaction.commit()
    started = time.monotonic()
    start_dispatcher()
    assert wait_for_result(job, 10).check(JobTimeout)
    assert coop_jobs.calls["at once"] == 2
    assert time.monotonic() - started >= 0.6


def test_a_job_within_its_timeout_completes(queue, start_dispatcher):
    job = queue.put(Job(coop_jobs.cooperative, "quick", "check", 0.1), timeout=5)
    transaction.commit()
    start_dispatcher()
    assert wait_for_result(job, 10) == "ran to its end"


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, "5", True])
def test_a_queue_refuses_a_default_timeout_that_cannot_work(queue, bad):
    with pytest.raises(ValueError, match=r"queue '': default_timeout=.*> 0"):
        queue.default_timeout = bad
    assert queue.default_timeout is None


def test_the_queue_default_applies_to_jobs_put_without_a_timeout(
    queue, start_dispatcher
):
    plain = queue.put(Job(coop_jobs.cooperative, "plain", "check"))
    own = queue.put(Job(coop_jobs.cooperative, "own", "check", 0.8), timeout=5)
    # Read when the job starts: it applies to jobs already queued.
    queue.default_timeout = 0.4
    transaction.commit()
    start_dispatcher()
    failure = wait_for_result(plain, 10)
    assert failure.check(JobTimeout)
    assert "ran past its timeout of 0.4 s" in failure.getErrorMessage()
    assert plain.timeout is None
    assert wait_for_result(own, 10) == "ran to its end"  # its own wins
    queue.default_timeout = None
    transaction.commit()
    assert queue.default_timeout is None
