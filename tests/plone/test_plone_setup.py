"""Installing and uninstalling the add-on, the registry settings, and the
service's API (plone.app.async's)."""

from __future__ import annotations

import datetime
import inspect

import pytest
import transaction
from plone.base.utils import get_installer
from tests.plone.helpers import service

from plone import api
from zasync.interfaces import PENDING, ConfigurationError
from zasync.plone import location
from zasync.plone.interfaces import IZasyncPloneLayer
from zasync.plone.runner import JobOrigin, run_as_user
from zasync.plone.service import AsyncService, makeJob
from zasync.plone.setuphandlers import HiddenProfiles
from zasync.plone.tests import funcs

PRODUCT = "zasync.plone"


def test_plone_autoinclude_finds_the_package():
    from plone.autoinclude.loader import get_zcml_file, load_packages

    assert PRODUCT in load_packages(target="plone")
    assert get_zcml_file(PRODUCT).endswith("zasync/plone/configure.zcml")


def test_the_addons_control_panel_lists_it_installed(integration):
    installer = get_installer(integration["portal"], integration["request"])
    assert installer.is_product_installable(PRODUCT)
    assert installer.is_product_installed(PRODUCT)
    assert installer.get_uninstall_profile(PRODUCT)["id"] == "zasync.plone:uninstall"
    assert installer.get_install_profile(PRODUCT)["id"] == "zasync.plone:default"
    hidden = HiddenProfiles().getNonInstallableProfiles()
    assert hidden == ["zasync.plone:uninstall"]


def test_install_creates_the_default_queue_and_quota(integration):
    queues = service().getQueues()
    assert list(queues) == [""]
    assert queues[""].quotas["default"].size == 1
    assert api.portal.get_registry_record("zasync.plone.queues") == [""]
    assert api.portal.get_registry_record("zasync.plone.quotas") == {"default": 1}
    assert IZasyncPloneLayer in _browser_layers()


def _browser_layers():
    from plone.browserlayer.utils import registered_layers

    return registered_layers()


def test_queues_and_quotas_follow_the_registry(integration):
    api.portal.set_registry_record("zasync.plone.queues", ["", "bulk"])
    queues = service().getQueues()
    assert sorted(queues) == ["", "bulk"]
    assert queues["bulk"].quotas["default"].size == 1
    api.portal.set_registry_record("zasync.plone.quotas", {"default": 2, "mail": 1})
    for name in ("", "bulk"):
        assert queues[name].quotas["default"].size == 2
        assert queues[name].quotas["mail"].size == 1
    # Removed from the records: left in place (jobs may wait there).
    api.portal.set_registry_record("zasync.plone.queues", [""])
    assert "bulk" in queues


def test_uninstall_removes_records_and_layer_and_keeps_the_jobs(integration):
    folder = integration["test-folder"]
    job = service().queueJob(funcs.addNumbers, folder, 1, 2)
    installer = get_installer(integration["portal"], integration["request"])
    installer.uninstall_product(PRODUCT)
    assert not installer.is_product_installed(PRODUCT)
    with pytest.raises(api.exc.InvalidParameterError):
        api.portal.get_registry_record("zasync.plone.queues")
    assert IZasyncPloneLayer not in _browser_layers()
    queue = service().getQueues()[""]
    assert list(queue) == [job] and job.status == PENDING
    assert job.args[0].context_path == ("", "plone", "test-folder")
    installer.install_product(PRODUCT)
    assert installer.is_product_installed(PRODUCT)
    assert list(queue) == [job]


def test_the_service_has_plone_app_async_methods_and_argument_orders():
    expected = {
        "getQueues": [],
        "queueJob": ["func", "context"],
        "queueJobWithDelay": ["begin_by", "begin_after", "func", "context"],
        "queueJobInQueue": ["queue", "quota_names", "func", "context"],
        "queueJobInQueueWithDelay": [
            "begin_by",
            "begin_after",
            "queue",
            "quota_names",
            "func",
            "context",
        ],
        "queueSerialJobs": [],
        "queueParallelJobs": [],
        "queueSerialJobsInQueue": ["queue", "quota_names"],
        "queueParallelJobsInQueue": ["queue", "quota_names"],
    }
    for name, positional in expected.items():
        params = list(inspect.signature(getattr(AsyncService, name)).parameters)
        named = [
            p
            for p in params[1:]
            if inspect.signature(getattr(AsyncService, name)).parameters[p].kind
            in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            )
        ]
        if name == "getQueues":
            named = []  # an optional context, ours
        assert named == positional, name
    assert makeJob(funcs.addNumbers, "ctx", 1, x=2) == (
        funcs.addNumbers,
        "ctx",
        (1,),
        {"x": 2},
    )


def test_the_queued_job_holds_the_origin_by_path_and_id(integration):
    folder = integration["test-folder"]
    job = service().queueJob(funcs.addNumbers, folder, 40, x2=2)
    origin, func, *args = job.args
    assert job.callable is run_as_user and func is funcs.addNumbers
    assert args == [40] and job.kwargs == {"x2": 2}
    assert origin == JobOrigin(
        database=folder._p_jar.db().database_name,
        site_path=("", "plone"),
        context_path=("", "plone", "test-folder"),
        user_folder_path=("", "plone", "acl_users"),
        user_id="test_user_1_",
        site_url="http://nohost/plone",
    )
    assert repr(origin) == "<JobOrigin /plone/test-folder as 'test_user_1_'>"
    assert job.quota_names == ("default",)
    assert job.status == PENDING


def test_queue_by_name_or_object_and_quota_names(integration):
    folder = integration["test-folder"]
    queue = service().getQueues()[""]
    by_object = service().queueJobInQueue(queue, None, funcs.addNumbers, folder, 1, 1)
    by_name = service().queueJobInQueue("", (), funcs.addNumbers, folder, 1, 1)
    assert by_object.quota_names == ("default",)
    assert by_name.quota_names == ()
    assert list(queue) == [by_object, by_name]
    # Function keyword arguments may use the service's own parameter names.
    job = service().queueJob(funcs.addNumbers, folder, 1, func=1, context=2)
    assert job.kwargs == {"func": 1, "context": 2}


def test_mistakes_are_refused_at_once_saying_what_to_do(integration):
    folder = integration["test-folder"]
    with pytest.raises(ValueError, match="no queue named 'nope'.*zasync.plone.queues"):
        service().queueJobInQueue("nope", None, funcs.addNumbers, folder, 1, 1)
    with pytest.raises(ValueError, match="quota 'mail'"):
        service().queueJobInQueue("", ("mail",), funcs.addNumbers, folder, 1, 1)
    with pytest.raises(ValueError, match="quota 'mail'.*zasync.plone.quotas"):
        service().queueSerialJobsInQueue(
            "", ("mail",), makeJob(funcs.addNumbers, folder, 1, 1)
        )
    with pytest.raises(TypeError, match="lambda"):
        service().queueJob(lambda context: None, folder)
    with pytest.raises(TypeError, match="physical path"):
        service().queueJob(funcs.addNumbers, object(), 1, 1)
    with pytest.raises(ValueError, match="naive"):
        service().queueJobWithDelay(
            None, datetime.datetime.now(), funcs.addNumbers, folder, 1, 1
        )
    assert len(service().getQueues()[""]) == 0


def test_an_aborted_transaction_queues_nothing(integration):
    folder = integration["test-folder"]
    job = service().queueJob(funcs.addNumbers, folder, 1, 1)
    transaction.abort()
    assert len(service().getQueues()[""]) == 0
    assert job._p_jar is None  # never stored


def test_a_multi_db_role_without_async_database_says_what_to_add(integration):
    from zope.component import getGlobalSiteManager

    from zasync.plone.interfaces import IWorkerRole
    from zasync.plone.worker import MULTI_DB_INSTANCE

    gsm = getGlobalSiteManager()
    gsm.registerUtility(MULTI_DB_INSTANCE, IWorkerRole)
    try:
        with pytest.raises(ConfigurationError, match="<zodb_db async>"):
            service().getQueues()
        with pytest.raises(ConfigurationError, match="single_db_instance.zcml"):
            location.queues_connection(integration["portal"]._p_jar)
    finally:
        gsm.unregisterUtility(MULTI_DB_INSTANCE, IWorkerRole)
