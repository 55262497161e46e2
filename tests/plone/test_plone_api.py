"""zasync.plone.api: queue() and queue_many(), the keyword-only way to
queue Plone jobs with a priority, a unique key, a lock and the options of
Queue.put."""

from __future__ import annotations

import datetime
import uuid

import pytest
import transaction
from plone.app.testing import TEST_USER_ID
from tests.plone import apijobs
from tests.plone.helpers import WAIT, run, service
from zope.component import getGlobalSiteManager, provideHandler

from plone import api as plone_api
from zasync import NeverRetry
from zasync.interfaces import COMPLETED, NEW, PENDING
from zasync.plone import api
from zasync.plone.interfaces import IJobSuccess
from zasync.plone.service import makeJob
from zasync.plone.testing import start_dispatcher
from zasync.plone.tests import funcs, jobs
from zasync.testing import wait_for_result

UTC = datetime.UTC


def pending(queue_name: str = "") -> list:
    return list(service().getQueues()[queue_name])


@pytest.fixture
def worker(functional):
    """Start a worker of the given threads in place of the layer's (which
    is stopped first: jobs queued meanwhile wait for the new one)."""
    functional["dispatcher"].stop(10)
    started = []

    def start(threads: int = 1):
        started.append(start_dispatcher(functional["zodbDB"], threads=threads))
        return started[-1]

    yield start
    for dispatcher in started:
        dispatcher.stop(10)


# -- running ------------------------------------------------------------------


def test_a_job_runs_in_the_site_as_the_user_with_its_own_keyword_arguments(
    functional,
):
    seen = []

    def on_success(event):
        seen.append(event.job.id)  # in the worker's connection

    provideHandler(on_success, [IJobSuccess])
    try:
        job = api.queue(
            apijobs.report,
            functional["test-folder"],
            "hello",
            kwargs={"priority": "urgent", "queue": "outbox"},
            priority=5,
        )
        assert run(job) == {
            "user_id": TEST_USER_ID,
            "context": "/plone/test-folder",
            "text": "hello",
            "priority": "urgent",
            "queue": "outbox",
        }
    finally:
        getGlobalSiteManager().unregisterHandler(on_success, [IJobSuccess])
    # as a job of the service, it notifies IJobSuccess or IJobFailure
    assert seen == [job.id]


def test_in_the_multi_database_set_up_jobs_are_kept_in_the_async_database(multidb):
    folder = multidb["test-folder"]
    job = api.queue(jobs.create_document, folder, "Multi", lock="multi")
    assert job._p_jar.db().database_name == "async"
    assert job.queue is service().getQueues()[""]
    assert run(job) == "multi"
    assert folder["multi"].getOwner().getId() == TEST_USER_ID


def test_the_defaults_are_those_of_the_service(integration):
    job = api.queue(funcs.addNumbers, integration["test-folder"], 1, 2)
    same = service().queueJob(funcs.addNumbers, integration["test-folder"], 1, 2)
    assert job.status == PENDING
    assert job.quota_names == same.quota_names == ("default",)
    assert job.timeout is same.timeout is None
    assert job.args == same.args and job.kwargs == same.kwargs == {}
    assert len(job.callbacks) == len(same.callbacks) == 1
    assert job.priority == 0 and job.unique_key is None and job.lock is None
    assert job.queue is service().getQueues()[""]


def test_the_options_are_set_on_the_job(integration):
    plone_api.portal.set_registry_record("zasync.plone.queues", ["", "mail"])
    plone_api.portal.set_registry_record(
        "zasync.plone.quotas", {"default": 1, "smtp": 2}
    )
    begin_after = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    job = api.queue(
        funcs.addNumbers,
        integration["test-folder"],
        1,
        2,
        priority=-3,
        unique_key="sum:1+2",
        unique_until="finished",
        lock="sums",
        begin_after=begin_after,
        begin_by=datetime.timedelta(minutes=5),
        queue="mail",
        quota=("smtp", "default"),
        retry_policy_factory=NeverRetry,
        timeout=12.5,
    )
    mail = service().getQueues()["mail"]
    assert (job.priority, job.unique_key, job.unique_until, job.lock) == (
        -3,
        "sum:1+2",
        "finished",
        "sums",
    )
    assert job.begin_after == begin_after
    assert job.begin_by == datetime.timedelta(minutes=5)
    assert job.queue is mail and mail.unique_job("sum:1+2") is job
    assert job.quota_names == ("smtp", "default")
    assert job.retry_policy_factory is NeverRetry
    assert job.timeout == 12.5
    assert (
        api.queue(
            funcs.addNumbers, integration["test-folder"], 1, 2, quota=None
        ).quota_names
        == ()
    )
    # a Queue may be given instead of its name
    assert (
        api.queue(funcs.addNumbers, integration["test-folder"], 3, 4, queue=mail).queue
        is mail
    )


def test_the_timeout_defaults_to_the_registry_record(integration):
    plone_api.portal.set_registry_record("zasync.plone.default_timeout", 30.0)
    folder = integration["test-folder"]
    assert api.queue(funcs.addNumbers, folder, 1, 2).timeout == 30.0
    assert api.queue(funcs.addNumbers, folder, 1, 2, timeout=5).timeout == 5


# -- unique keys ----------------------------------------------------------------


def test_a_job_queued_under_a_held_unique_key_is_the_first_one(functional):
    folder = functional["test-folder"]
    first = api.queue(funcs.addNumbers, folder, 1, 2, unique_key="sum")
    again = api.queue(funcs.addNumbers, folder, 5, 5, unique_key="sum")
    assert again is first
    assert pending() == [first]
    assert len(first.callbacks) == 1  # its event callback, once
    assert run(first) == 3
    # the key was held until the job started: now it queues a new job
    later = api.queue(funcs.addNumbers, folder, 5, 5, unique_key="sum")
    assert later is not first
    assert run(later) == 10


def test_replace_queues_the_new_job_in_place_of_the_pending_one(functional):
    folder = functional["test-folder"]
    first = api.queue(funcs.addNumbers, folder, 1, 2, unique_key="sum")
    second = api.queue(funcs.addNumbers, folder, 5, 5, unique_key="sum", replace=True)
    assert second is not first
    assert first.status == NEW
    assert pending() == [second]
    assert service().getQueues()[""].unique_job("sum") is second
    assert len(second.callbacks) == 1
    assert run(second) == 10
    assert first.status == NEW


# -- priorities and locks ---------------------------------------------------------


def test_a_higher_priority_job_queued_later_runs_first(functional, worker):
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    low = api.queue(jobs.probe, folder, token, 0, 0.0, quota=None)
    transaction.commit()
    high = api.queue(jobs.probe, folder, token, 1, 0.0, quota=None, priority=10)
    transaction.commit()
    worker(threads=1)
    wait_for_result(low, WAIT)
    wait_for_result(high, WAIT)
    assert jobs.order[token] == [1, 0]


def test_jobs_with_one_lock_run_one_at_a_time_in_order(functional, worker):
    worker(threads=4)
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    locked = [
        api.queue(jobs.probe, folder, token, i, 1.0, quota=None, lock="report")
        for i in range(3)
    ]
    transaction.commit()
    for job in locked:
        wait_for_result(job, WAIT)
    assert jobs.most_running[token] == 1
    assert jobs.order[token] == [0, 1, 2]
    # and without the lock the same jobs run side by side
    free = uuid.uuid4().hex
    unlocked = [
        api.queue(jobs.probe, folder, free, i, 5.0, quota=None) for i in range(2)
    ]
    transaction.commit()
    for job in unlocked:
        wait_for_result(job, WAIT)
    assert jobs.most_running[free] == 2


# -- queue_many -------------------------------------------------------------------


def test_queue_many_queues_jobs_of_their_own_with_the_same_options(functional, worker):
    worker(threads=4)
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    queued = api.queue_many(
        [makeJob(jobs.probe, folder, token, i, seconds=1.0) for i in range(3)],
        lock="many",
        quota=None,
        priority=7,
    )
    assert [job.priority for job in queued] == [7, 7, 7]
    assert [job.lock for job in queued] == ["many"] * 3
    assert [len(job.callbacks) for job in queued] == [1, 1, 1]
    transaction.commit()
    assert [wait_for_result(job, WAIT) for job in queued] == [0, 1, 2]
    assert jobs.most_running[token] == 1
    assert all(job.status == COMPLETED for job in queued)
    assert api.queue_many([]) == []


def test_queue_many_refuses_a_bad_description_naming_it(integration):
    folder = integration["test-folder"]
    with pytest.raises(TypeError, match=r"jobs\[1\]: a lambda cannot be stored"):
        api.queue_many(
            [makeJob(funcs.addNumbers, folder, 1, 2), makeJob(lambda c: 0, folder)]
        )
    with pytest.raises(TypeError, match=r"jobs\[0\]: a job description must be"):
        api.queue_many([funcs.addNumbers])
    with pytest.raises(TypeError, match="for one job, use queue"):
        api.queue_many(makeJob(funcs.addNumbers, folder, 1, 2))
    assert pending() == []


# -- bad input --------------------------------------------------------------------

NAIVE = datetime.datetime(2030, 1, 1)

BAD = [
    # (the call's options, the error, what its message says)
    ({"queue": "mail"}, ValueError, r"queue='mail'.*zasync\.plone\.queues"),
    ({"queue": 3}, TypeError, "give a queue's name"),
    ({"quota": "smtp"}, ValueError, r"no quota 'smtp'.*zasync\.plone\.quotas"),
    ({"quota": "defualt"}, ValueError, "did you mean 'default'"),
    ({"quota": 1}, TypeError, "or None for no quota"),
    ({"quota": ""}, TypeError, "give a quota's name"),
    ({"kwargs": ["x"]}, TypeError, r"kwargs=\{'title': 'Report'\}"),
    ({"kwargs": {1: "x"}}, TypeError, "as a dict"),
    ({"priority": "high"}, TypeError, "priority"),
    ({"priority": 10**9}, ValueError, "priority"),
    ({"unique_key": ""}, (TypeError, ValueError), "unique_key"),
    ({"unique_key": "k" * 201}, ValueError, "unique_key"),
    ({"unique_key": "k", "unique_until": "done"}, ValueError, "unique_until"),
    ({"lock": 5}, TypeError, "lock"),
    ({"begin_after": NAIVE}, ValueError, "begin_after"),
    ({"timeout": 0}, ValueError, "timeout"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD)
def test_bad_options_are_refused_before_anything_is_queued(
    integration, options, error, message
):
    with pytest.raises(error, match=message):
        api.queue(funcs.addNumbers, integration["test-folder"], 1, 2, **options)
    assert pending() == []


def test_a_misspelt_queue_or_quota_gets_a_suggestion(integration):
    plone_api.portal.set_registry_record("zasync.plone.queues", ["", "mail"])
    plone_api.portal.set_registry_record(
        "zasync.plone.quotas", {"default": 1, "smtp": 2}
    )
    folder = integration["test-folder"]
    with pytest.raises(
        ValueError, match=r"did you mean 'mail'\?.*queues: \['', 'mail'\]"
    ):
        api.queue(funcs.addNumbers, folder, 1, 2, queue="mial")
    with pytest.raises(ValueError, match=r"did you mean 'smtp'\?.*or give quota=None"):
        api.queue(funcs.addNumbers, folder, 1, 2, queue="mail", quota="smpt")
    assert pending("mail") == []


def test_a_bad_function_or_context_is_refused(integration):
    folder = integration["test-folder"]
    with pytest.raises(TypeError, match="the function comes first"):
        api.queue(folder, funcs.addNumbers, 1, 2)
    with pytest.raises(TypeError, match="a lambda cannot be stored"):
        api.queue(lambda context: None, folder)
    with pytest.raises(TypeError, match="a Zope object with a physical path"):
        api.queue(funcs.addNumbers, object(), 1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'title'"):
        api.queue(funcs.addNumbers, folder, title="x")  # type: ignore[call-arg]
    assert pending() == []
