"""What code ported from plone.app.async meets (issue #20): the names it
imports (IAsyncDatabase, the package-level Job, queue and RetryWithDelay,
utils.wait_for_all_jobs), the public way to find a site's jobs, and a site
database that still holds zc.async's root object."""

from __future__ import annotations

import datetime
import gc
import sys
import types

import persistent
import pytest
import transaction
from plone.app.testing import SITE_OWNER_NAME, TEST_USER_ID
from plone.testing import zope as zope_testing
from tests.plone import porting_jobs
from tests.plone.helpers import WAIT, run, service
from ZODB.broken import Broken
from zope.component import getGlobalSiteManager, getUtility
from zope.processlifetime import DatabaseOpenedWithRoot, IDatabaseOpenedWithRoot

from zasync.plone import Job, RetryWithDelay, queue
from zasync.plone.asyncdb import provide_async_database
from zasync.plone.interfaces import IAsyncDatabase
from zasync.plone.lookup import find_jobs, plone_call
from zasync.plone.tests.funcs import addNumbers
from zasync.plone.utils import wait_for_all_jobs

# -- the package-level Job, queue and RetryWithDelay --------------------------


def test_job_runs_in_the_site_as_the_user_who_made_it(functional):
    job = queue(Job(porting_jobs.where_and_who))
    assert job.status == "pending-status" and job.quota_names == ()
    assert run(job) == ("plone", TEST_USER_ID, True)
    assert queue(Job(porting_jobs.add, 40, 2)).queue is service().getQueues()[""]


def test_job_of_a_method_of_a_zope_object_binds_it_again(functional):
    folder = functional["test-folder"]
    job = queue(Job(folder.invokeFactory, "Document", "anid", title="A title"))
    assert run(job) == "anid"
    transaction.begin()
    document = folder["anid"]
    assert document.Title() == "A title"
    assert document.Creator() == TEST_USER_ID


def test_retry_with_delay_retries_an_error_after_the_delay(functional):
    porting_jobs.calls.clear()
    job = queue(Job(porting_jobs.fail_once, "retry"))
    job.retry_policy_factory = RetryWithDelay(datetime.timedelta(seconds=0.3))
    assert run(job) >= 0.3
    assert job.attempts == 2
    assert RetryWithDelay().delay == datetime.timedelta(minutes=15)
    with pytest.raises(ValueError, match="use a datetime.timedelta"):
        RetryWithDelay(5)


def test_wait_for_all_jobs_waits_for_the_default_queue(functional):
    jobs = [queue(Job(porting_jobs.add, i, i)) for i in range(3)]
    transaction.commit()
    wait_for_all_jobs(WAIT)
    assert [job.result for job in jobs] == [0, 2, 4]
    failing = queue(Job(porting_jobs.boom))
    transaction.commit()
    with pytest.raises(AssertionError, match="FooBared"):
        wait_for_all_jobs(WAIT)
    assert failing.failed


# -- IAsyncDatabase -----------------------------------------------------------


@pytest.fixture
def async_database():
    yield
    getGlobalSiteManager().unregisterUtility(provided=IAsyncDatabase)


def test_async_database_is_registered_when_zope_opens_the_databases(
    functional, async_database
):
    # Through the registry's bases: a layer set up before this one may have
    # stacked another global registry on the one holding zasync's ZCML.
    handlers = getGlobalSiteManager().adapters.subscriptions(
        (IDatabaseOpenedWithRoot,), None
    )
    assert provide_async_database in handlers
    provide_async_database(DatabaseOpenedWithRoot(functional["zodbDB"]))
    assert getUtility(IAsyncDatabase) is functional["zodbDB"]


def test_async_database_is_the_async_database_when_one_is_mounted(
    multidb, async_database
):
    provide_async_database(DatabaseOpenedWithRoot(multidb["zodbDB"]))
    db = getUtility(IAsyncDatabase)
    assert db is multidb["queuesDB"] and db.database_name == "async"


# -- finding a site's jobs ----------------------------------------------------


def test_find_jobs_by_context_and_function(integration):
    folder = integration["test-folder"]
    portal = integration["portal"]
    pending = service().getQueues()[""]
    on_folder = service().queueJob(addNumbers, folder, 1, 2)
    on_portal = service().queueJob(addNumbers, portal, 3, 4)
    other = queue(Job(porting_jobs.add, 5, 6))
    method = queue(Job(folder.getId))
    assert find_jobs(pending, context=folder) == [on_folder, method]
    assert find_jobs(pending, context="/plone", func=addNumbers) == [on_portal]
    assert find_jobs(pending, func=porting_jobs.add) == [other]
    assert list(pending).index(on_portal) == 1
    call = plone_call(on_folder)
    assert call.func is addNumbers and call.args == (1, 2) and call.kwargs == {}
    assert call.context_path == ("", "plone", "test-folder")
    assert call.site_path == ("", "plone") and call.user_id == TEST_USER_ID
    assert plone_call(method).func == "getId"
    assert find_jobs(pending.quotas["default"]) == []  # nothing runs here
    transaction.abort()


# -- a site database that held zc.async --------------------------------------


def _write_zc_async_root(db, monkeypatch):
    """Store root['zc.async'] as a zc.async site's database has it: an
    object of a class Python 3 cannot import (zc.async.queue.Queues)."""
    module = types.ModuleType("zc.async.queue")

    class Queues(persistent.Persistent):
        pass

    Queues.__module__, Queues.__qualname__ = module.__name__, "Queues"
    module.Queues = Queues  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    conn.root()["zc.async"] = Queues()
    tm.commit()
    conn.cacheMinimize()  # no connection keeps the object with its class
    conn.close()
    monkeypatch.delitem(sys.modules, module.__name__)
    gc.collect()


def test_a_site_database_with_a_leftover_zc_async_root_still_works(
    functional, monkeypatch
):
    _write_zc_async_root(functional["zodbDB"], monkeypatch)
    app, portal = functional["app"], functional["portal"]
    transaction.begin()
    root = app._p_jar.root()
    assert isinstance(root["zc.async"], Broken)
    # Installing the add-on again, as on a site moved from plone.app.async.
    zope_testing.login(app["acl_users"], SITE_OWNER_NAME)
    try:
        portal.portal_setup.runAllImportStepsFromProfile("profile-zasync.plone:default")
    finally:
        zope_testing.logout()
    transaction.commit()
    job = service().queueJob(addNumbers, functional["test-folder"], 40, 2)
    assert run(job) == 42
    # Removing the leftover is an ordinary delete.
    del app._p_jar.root()["zc.async"]
    transaction.commit()
    assert "zc.async" not in app._p_jar.root()
