"""IJobSuccess / IJobFailure after every job the service queues, with the
result (or Failure) as ``event.object`` and the job as ``event.job``."""

from __future__ import annotations

import contextlib

import transaction
from tests.plone.helpers import WAIT, service
from zope.component import getGlobalSiteManager
from zope.component.hooks import getSite

from zasync.failure import Failure
from zasync.interfaces import COMPLETED
from zasync.plone.interfaces import IJobFailure, IJobSuccess
from zasync.plone.service import makeJob
from zasync.plone.tests import funcs, jobs
from zasync.testing import wait_for_result


@contextlib.contextmanager
def handlers(*pairs):
    gsm = getGlobalSiteManager()
    for handler, iface in pairs:
        gsm.registerHandler(handler, (iface,))
    try:
        yield
    finally:
        for handler, iface in pairs:
            gsm.unregisterHandler(handler, (iface,))


def test_events_carry_the_result_or_failure_and_the_job(functional):
    folder = functional["test-folder"]
    seen = []

    def record(event):
        seen.append(
            (
                type(event).__name__,
                event.object,
                event.job._p_oid,
                event.job.callable_name,
                getSite().getId(),
            )
        )

    with handlers((record, IJobSuccess), (record, IJobFailure)):
        good = service().queueJob(funcs.addNumbers, folder, 40, 2)
        bad = service().queueJob(funcs.failingJob, folder)
        transaction.commit()
        wait_for_result(bad, WAIT)
    assert good.status == bad.status == COMPLETED
    (kind1, obj1, oid1, name1, site1), (kind2, obj2, oid2, name2, site2) = seen
    assert (kind1, obj1, oid1, site1) == ("JobSuccess", 42, good._p_oid, "plone")
    assert name1 == "zasync.plone.tests.funcs.addNumbers"
    assert (kind2, oid2, site2) == ("JobFailure", bad._p_oid, "plone")
    assert isinstance(obj2, Failure) and obj2.check(RuntimeError)
    assert obj2.getErrorMessage() == "FooBared"


def test_a_batch_notifies_once_with_the_list_of_its_jobs(functional):
    folder = functional["test-folder"]
    seen = []

    def record(event):  # read here: the objects belong to the worker
        seen.append((event.job._p_oid, [job.result for job in event.object]))

    with handlers((record, IJobSuccess)):
        batch = service().queueSerialJobs(
            makeJob(funcs.addNumbers, folder, 1, 2),
            makeJob(funcs.addNumbers, folder, 3, 4),
        )
        transaction.commit()
        wait_for_result(batch, WAIT)
    assert seen == [(batch._p_oid, [3, 7])]


def test_a_failing_handler_neither_undoes_nor_repeats_the_job(functional):
    """The handlers run after the job's transaction committed, in the
    callback's own: their failure is the callback's, not the job's."""
    folder = functional["test-folder"]

    def broken(event):
        raise RuntimeError("handler broke")

    with handlers((broken, IJobSuccess)):
        job = service().queueJob(jobs.create_document, folder, "Kept")
        transaction.commit()
        assert wait_for_result(job, WAIT) == "kept"
    assert "kept" in folder.objectIds()
    (callback,) = job.callbacks
    assert callback.failed and callback.result.check(RuntimeError)
