"""Worker roles: the four ZCML files, start-up through Zope's
IDatabaseOpenedWithRoot and IProcessStarting events, the worker's UUID
file, and the multi-database set-up (queues in the ``async`` database)."""

from __future__ import annotations

import pytest
import transaction
from plone.app.testing import TEST_USER_ID
from plone.app.testing.helpers import popGlobalRegistry, pushGlobalRegistry
from plone.testing import zca
from tests.plone.helpers import WAIT, service
from zope.component import getUtility
from zope.configuration import xmlconfig
from zope.event import notify
from zope.processlifetime import DatabaseOpenedWithRoot, ProcessStarting

import zasync.dispatcher
import zasync.plone
from plone import api
from zasync.interfaces import KEY, ConfigurationError
from zasync.plone import worker
from zasync.plone.interfaces import IWorkerRole
from zasync.plone.service import makeJob
from zasync.plone.tests import funcs, jobs
from zasync.testing import wait_for_result

ZC_ASYNC_FILE = """\
0f6c1e0a1b2c4d5e8f9a0b1c2d3e4f50
------------------------------------------------------------------------
The value above (and this file) is created and used by the zc.async
package. It is intended to uniquely identify this software instance when
it is used to start a zc.async dispatcher.
"""


@pytest.fixture
def role(request, tmp_path, monkeypatch):
    """``role(layer, 'single_db_worker')`` loads that ZCML file into a
    component registry of this test (as zcml-additional would), with the
    worker's UUID file in tmp_path; the layer's own dispatcher is stopped,
    so that jobs run only if the role's worker runs them."""
    monkeypatch.setenv("ZASYNC_UUID", str(tmp_path / "var" / "worker-uuid.txt"))
    monkeypatch.setenv("ZASYNC_THREADS", "2")
    pushed = []

    def load(layer, name):
        layer["dispatcher"].stop(10)
        pushGlobalRegistry(layer["portal"])
        pushed.append(layer["portal"])
        context = zca.stackConfigurationContext(layer["configurationContext"])
        xmlconfig.file(f"{name}.zcml", package=zasync.plone, context=context)
        return getUtility(IWorkerRole)

    yield load
    worker.stop(10)
    for portal in pushed:
        popGlobalRegistry(portal)


def start_zope(db):
    """What Zope's start-up notifies, in its order."""
    notify(DatabaseOpenedWithRoot(db))
    notify(ProcessStarting())


def test_a_single_db_worker_starts_a_dispatcher_when_the_server_starts(
    functional, role, tmp_path
):
    assert role(functional, "single_db_worker").name == "single_db_worker"
    notify(DatabaseOpenedWithRoot(functional["zodbDB"]))
    assert worker.get_dispatcher() is None  # scripts stop here: no worker
    notify(ProcessStarting())
    dispatcher = worker.get_dispatcher()
    uuid = (tmp_path / "var" / "worker-uuid.txt").read_text().strip()
    assert dispatcher.uuid == uuid and zasync.dispatcher.get(uuid) is dispatcher
    assert dispatcher.threads == 2 and dispatcher.db is functional["zodbDB"]
    job = service().queueJob(jobs.create_document, functional["test-folder"], "W")
    transaction.commit()
    assert wait_for_result(job, WAIT) == "w"
    assert dispatcher.jobs_run >= 1
    assert worker.stop(10) and dispatcher.dead


def test_an_instance_only_queues(functional, role):
    role(functional, "single_db_instance")
    start_zope(functional["zodbDB"])
    assert worker.get_dispatcher() is None
    job = service().queueJob(funcs.addNumbers, functional["test-folder"], 1, 1)
    assert job._p_jar.db() is functional["zodbDB"]


def test_a_worker_installs_the_queues_when_the_database_opens(functional, role):
    role(functional, "single_db_worker")
    db = functional["zodbDB"]
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        with tm:
            del conn.root()[KEY]
    finally:
        conn.close()
    start_zope(db)
    transaction.begin()
    queues = service().getQueues()
    assert list(queues) == [""] and queues[""].quotas["default"].size == 1


def test_a_multi_db_worker_serves_the_async_database(multidb, role):
    assert role(multidb, "multi_db_worker").multi_db
    start_zope(multidb["zodbDB"])
    dispatcher = worker.get_dispatcher()
    assert dispatcher.db.database_name == "async"
    folder = multidb["test-folder"]
    job = service().queueJob(jobs.create_document, folder, "Multi")
    assert job._p_jar.db().database_name == "async"
    transaction.commit()
    assert wait_for_result(job, WAIT) == "multi"
    assert folder["multi"].getOwner().getId() == TEST_USER_ID


def test_multi_db_keeps_the_queues_beside_the_main_database(multidb):
    """Without a role, the service uses the ``async`` database when one is
    mounted; jobs there reach content in the main database."""
    folder = multidb["test-folder"]
    queues = service().getQueues()
    assert queues._p_jar.db().database_name == "async"
    batch = service().queueSerialJobs(
        makeJob(funcs.createDocument, folder, "m", "M", "", "body"),
        makeJob(funcs.submitObject, folder, "m"),
    )
    assert batch._p_jar.db().database_name == "async"
    main_queue = folder._p_jar.root()[KEY][""]  # the fixture's, unused here
    assert len(main_queue) == 0
    transaction.commit()
    created, submitted = wait_for_result(batch, WAIT)
    assert created.result == "m" and not submitted.failed
    assert api.content.get_state(folder["m"]) == "pending"


def test_the_worker_uuid_file_is_created_once_and_read_after(tmp_path):
    path = tmp_path / "uuid.txt"
    first = worker.WorkerSettings({"ZASYNC_UUID": str(path)})
    again = worker.WorkerSettings({"ZC_ASYNC_UUID": str(path)})
    assert first.uuid == again.uuid == path.read_text().strip()
    assert first.threads == worker.DEFAULT_THREADS


def test_the_worker_name_comes_from_the_environment(tmp_path):
    environ = {"ZASYNC_UUID": str(tmp_path / "u")}
    assert worker.WorkerSettings(environ).name is None
    named = worker.WorkerSettings({**environ, "ZASYNC_WORKER_NAME": " reports "})
    assert named.name == "reports"
    with pytest.raises(ConfigurationError, match="ZASYNC_WORKER_NAME='x{101}'"):
        worker.WorkerSettings({**environ, "ZASYNC_WORKER_NAME": "x" * 101})


def test_interrupt_grace_and_stuck_delay_come_from_the_environment(tmp_path):
    environ = {"ZASYNC_UUID": str(tmp_path / "u")}
    default = worker.WorkerSettings(environ)
    assert (default.interrupt_grace, default.stuck_delay) == (5.0, 30.0)
    environ |= {"ZASYNC_INTERRUPT_GRACE": "1.5", "ZASYNC_STUCK_DELAY": "10"}
    assert worker.WorkerSettings(environ).interrupt_grace == 1.5
    assert worker.WorkerSettings(environ).stuck_delay == 10.0
    with pytest.raises(ConfigurationError, match="ZASYNC_STUCK_DELAY='soon'"):
        worker.WorkerSettings({**environ, "ZASYNC_STUCK_DELAY": "soon"})


def test_the_memory_trim_interval_comes_from_the_environment(tmp_path):
    environ = {"ZASYNC_UUID": str(tmp_path / "u")}
    assert worker.WorkerSettings(environ).memory_trim_interval == 10.0
    for raw, value in (("2.5", 2.5), ("0", 0.0)):
        environ["ZASYNC_MEMORY_TRIM_INTERVAL"] = raw
        assert worker.WorkerSettings(environ).memory_trim_interval == value
    for raw in ("-1", "nan", "inf", "often"):
        environ["ZASYNC_MEMORY_TRIM_INTERVAL"] = raw
        wanted = f"ZASYNC_MEMORY_TRIM_INTERVAL='{raw}': use a finite number, 0 or"
        with pytest.raises(ConfigurationError, match=wanted):
            worker.WorkerSettings(environ)


def test_a_bad_number_is_refused_where_it_is_read(tmp_path):
    environ = {"ZASYNC_UUID": str(tmp_path / "u")}
    for raw in ("inf", "nan", "0", "-2"):
        with pytest.raises(
            ConfigurationError, match=f"ZASYNC_STUCK_DELAY='{raw}': use a positive"
        ):
            worker.WorkerSettings({**environ, "ZASYNC_STUCK_DELAY": raw})


def test_a_zc_async_uuid_file_is_read(tmp_path):
    path = tmp_path / "instance-uuid.txt"
    path.write_text(ZC_ASYNC_FILE)
    settings = worker.WorkerSettings({"ZC_ASYNC_UUID": str(path)})
    assert settings.uuid == "0f6c1e0a-1b2c-4d5e-8f9a-0b1c2d3e4f50"


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_a_bad_thread_count_is_refused_naming_the_variable(tmp_path, value):
    environ = {"ZASYNC_UUID": str(tmp_path / "u"), "ZASYNC_THREADS": value}
    with pytest.raises(ConfigurationError, match=f"ZASYNC_THREADS={value!r}"):
        worker.WorkerSettings(environ)
