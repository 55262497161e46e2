"""zope.event notifications of a running dispatcher: JobStarted,
JobSucceeded and JobFailed, each with the job."""

from __future__ import annotations

import pytest
import transaction
import zope.event

import jobfuncs
import zasync
from zasync.interfaces import (
    IJobFailed,
    IJobStarted,
    IJobSucceeded,
    JobFailed,
    JobStarted,
    JobSucceeded,
)
from zasync.job import Job
from zasync.testing import wait_for_result, wait_until


def commit():
    transaction.commit()


def events_of(events, oid, count, timeout=10.0):
    """The events about ``oid``, once there are ``count`` of them (events
    of finished jobs are notified just after the commit)."""

    def found():
        return [(name, payload) for name, o, payload in events if o == oid]

    return wait_until(
        lambda: len(found()) >= count and found(),
        timeout=timeout,
        message=lambda: f"{count} events for {oid!r}, not only {found()}",
    )


def test_started_then_succeeded_with_the_result(queue, start_dispatcher, zasync_events):
    job = queue.put(Job(jobfuncs.add, 2, 3))
    commit()
    start_dispatcher()
    wait_for_result(job)
    assert events_of(zasync_events, job._p_oid, 2) == [
        ("JobStarted", None),
        ("JobSucceeded", 5),
    ]


def test_started_then_failed_with_the_failure(queue, start_dispatcher, zasync_events):
    job = queue.put(Job(jobfuncs.boom))
    commit()
    start_dispatcher()
    wait_for_result(job)
    (started, _), (failed, failure) = events_of(zasync_events, job._p_oid, 2)
    assert (started, failed) == ("JobStarted", "JobFailed")
    assert isinstance(failure, zasync.Failure) and failure.check(RuntimeError)


def test_callbacks_and_composites_notify_too(queue, start_dispatcher, zasync_events):
    job = queue.put(Job(jobfuncs.add, 1, 1))
    callback = job.addCallback(jobfuncs.describe)
    composite = queue.put(zasync.serial(Job(jobfuncs.noop)))
    commit()
    start_dispatcher()
    wait_for_result(job)
    wait_for_result(composite, 10)
    assert events_of(zasync_events, callback._p_oid, 2)[-1] == (
        "JobSucceeded",
        ("value", 2),
    )
    (started, _), (succeeded, result) = events_of(zasync_events, composite._p_oid, 2)
    assert (started, succeeded) == ("JobStarted", "JobSucceeded")
    assert [job._p_oid for job in result] == [job._p_oid for job in composite.jobs]


def test_an_empty_composite_notifies(queue, start_dispatcher, zasync_events):
    composite = queue.put(zasync.parallel())
    commit()
    start_dispatcher()
    wait_for_result(composite, 10)
    assert events_of(zasync_events, composite._p_oid, 2) == [
        ("JobStarted", None),
        ("JobSucceeded", []),
    ]


def test_the_events_provide_their_interfaces():
    job = Job(jobfuncs.noop)
    failure = zasync.Failure(RuntimeError("x"))
    assert IJobStarted.providedBy(JobStarted(job))
    assert IJobSucceeded.providedBy(JobSucceeded(job, 1))
    assert IJobFailed.providedBy(JobFailed(job, failure))
    assert JobFailed(job, failure).failure is failure
    assert JobSucceeded(job, 1).result == 1
    assert "JobStarted" in repr(JobStarted(job))


@pytest.fixture
def subscriber():
    """``subscriber(func)``: subscribe ``func`` to zope.event for the test."""
    added = []

    def add(func):
        zope.event.subscribers.append(func)
        added.append(func)

    yield add
    for func in added:
        zope.event.subscribers.remove(func)


def test_a_handler_of_finished_jobs_may_write(queue, start_dispatcher, subscriber):
    def note(event):
        if isinstance(event, JobSucceeded):
            event.job.annotations["noted"] = event.result

    subscriber(note)
    job = queue.put(Job(jobfuncs.add, 2, 2))
    commit()
    start_dispatcher()
    wait_for_result(job)

    def noted():
        transaction.begin()  # see the handler's commit
        return "noted" in job.annotations

    wait_until(noted, message="the handler's note in the job's annotations")
    assert job.annotations["noted"] == 4


def test_a_broken_handler_of_finished_jobs_breaks_nothing(
    queue, start_dispatcher, subscriber, caplog
):
    def broken(event):
        if isinstance(event, JobSucceeded):
            raise RuntimeError("broken handler")

    subscriber(broken)
    first = queue.put(Job(jobfuncs.add, 1, 1))
    commit()
    start_dispatcher(threads=1)
    assert wait_for_result(first) == 2
    second = queue.put(Job(jobfuncs.add, 2, 2))
    commit()
    assert wait_for_result(second) == 4
    assert not first.failed
