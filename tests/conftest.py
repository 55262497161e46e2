"""Shared pytest fixtures. Each section belongs to one concern; add yours
under a section comment of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# --- servers ---
# Real servers (no mocks): a ZEO server per test, a fresh PostgreSQL database
# per test. A missing service skips the test, except under CI (``CI`` set in
# the environment), where it fails: CI must run everything.


def missing_service(message: str) -> None:
    """Skip the running test because ``message`` names a missing service, or
    fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def zeo_server(tmp_path: Path) -> Iterator[object]:
    """A running :class:`zasync.testservers.ZEOServer` with its Data.fs in
    ``tmp_path / 'zeo'``; stopped after the test."""
    try:
        import ZEO  # noqa: F401
    except ImportError:
        missing_service("ZEO is not installed: pip install 'zasync[zeo]'")
    from zasync.testservers import ZEOServer

    with ZEOServer(tmp_path / "zeo") as server:
        yield server


@pytest.fixture
def worker_and_producer(zeo_server) -> Iterator[tuple[object, object]]:
    """(a started Dispatcher of two threads, the producer's database): two
    ZEO clients of ``zeo_server``, as two processes are; the producer's is
    opened after the queues were installed."""
    import jobfuncs
    import zasync
    from zasync.dispatcher import Dispatcher
    from zasync.storage import open_db

    worker_db = open_db(zeo_server.uri)
    zasync.install(worker_db)
    producer_db = open_db(zeo_server.uri)
    dispatcher = Dispatcher(worker_db, threads=2, poll_interval=0.2).start()
    try:
        yield dispatcher, producer_db
    finally:
        jobfuncs.open_all_gates()
        dispatcher.stop(10)
        producer_db.close()
        worker_db.close()


@pytest.fixture
def pg_uri() -> Iterator[str]:
    """The ``postgresql://`` URI of a fresh, empty database on the test
    server (``ZASYNC_TEST_PG``); dropped after the test."""
    from zasync.testservers import (
        drop_postgres_database,
        fresh_postgres_database,
        postgres_available,
    )

    problem = postgres_available()
    if problem is not None:
        missing_service(problem)
    uri = fresh_postgres_database()
    try:
        yield uri
    finally:
        drop_postgres_database(uri)


# --- core engine ---
# A FileStorage database in tmp_path (``zasync_db``, from the zasync.testing
# plugin), a connection on the thread's default transaction manager (as an
# application uses it), dispatchers that are stopped after the test, and a
# recorder of zasync events.

pytest_plugins = ["zasync.testing"]


@pytest.fixture(autouse=True)
def _jobfuncs_state() -> Iterator[None]:
    """Clear the registries of tests/jobfuncs.py around each test, and open
    every gate at the end so no worker thread stays blocked."""
    import jobfuncs

    jobfuncs.reset()
    yield
    jobfuncs.reset()


@pytest.fixture
def conn(zasync_db) -> Iterator[object]:
    """A connection to ``zasync_db`` on the default transaction manager."""
    import transaction

    connection = zasync_db.open()
    yield connection
    transaction.abort()
    connection.close()


@pytest.fixture
def queue(conn) -> object:
    """The default queue, loaded in ``conn``."""
    return conn.root()["zasync"][""]


@pytest.fixture
def start_dispatcher(zasync_db) -> Iterator[object]:
    """``start_dispatcher(db=None, **settings)``: start a Dispatcher (on
    ``zasync_db`` by default, polling every 0.2 s unless told otherwise);
    every one still running is stopped after the test."""
    import jobfuncs
    from zasync.dispatcher import Dispatcher

    started: list[Dispatcher] = []

    def start(db=None, **settings) -> Dispatcher:
        settings.setdefault("poll_interval", 0.2)
        settings.setdefault("threads", 2)
        dispatcher = Dispatcher(db if db is not None else zasync_db, **settings)
        dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    jobfuncs.open_all_gates()
    for dispatcher in started:
        if not dispatcher.dead:
            dispatcher.stop(10)
        # Threads a stop(timeout) gave up on finish before the database
        # closes.
        for thread in dispatcher.pool.threads:
            thread.join(10)


@pytest.fixture
def zasync_events() -> Iterator[list]:
    """The zasync events notified during the test, in order, as
    (event class name, job oid, result or failure)."""
    import threading

    import zope.event

    from zasync.interfaces import JobEvent, JobFailed, JobSucceeded

    seen: list = []
    lock = threading.Lock()

    def subscriber(event) -> None:
        if not isinstance(event, JobEvent):
            return
        if isinstance(event, JobSucceeded):
            payload = event.result
        elif isinstance(event, JobFailed):
            payload = event.failure
        else:
            payload = None
        with lock:
            seen.append((type(event).__name__, event.job._p_oid, payload))

    zope.event.subscribers.append(subscriber)
    yield seen
    zope.event.subscribers.remove(subscriber)


# --- storages for the conformance suite ---


@pytest.fixture(
    params=[
        "file",
        pytest.param("zeo", marks=pytest.mark.zeo),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def storage_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URI of an empty database on each kind of storage in turn: a
    FileStorage in ``tmp_path``, a ZEO server, a fresh PostgreSQL database
    (RelStorage)."""
    if request.param == "zeo":
        return request.getfixturevalue("zeo_server").uri
    if request.param == "postgres":
        return request.getfixturevalue("pg_uri")
    return f"file://{tmp_path / 'Data.fs'}"


@pytest.fixture
def storage_db(storage_uri: str) -> Iterator[object]:
    """A ZODB.DB opened with ``zasync.storage.open_db`` on each kind of
    storage in turn (see ``storage_uri``), with zasync installed."""
    from zasync.queue import install
    from zasync.storage import open_db

    db = open_db(storage_uri)
    try:
        install(db)
        yield db
    finally:
        db.close()


# --- worker processes ---


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[object]:
    """A factory of ``zasync worker`` subprocesses
    (:class:`tests.processes.WorkerProcess`, not started): ``workers(uri,
    name, threads=2, args=[...])``. Every one still running after the test
    is killed."""
    from tests.processes import WorkerProcess

    made: list[WorkerProcess] = []

    def make(uri: str, name: str = "", **kw) -> WorkerProcess:
        worker = WorkerProcess(
            uri, tmp_path / "workers", name or f"w{len(made) + 1}", **kw
        )
        made.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in made:
            worker.kill()


# --- markers by module ---
# What ``make test-fast`` leaves out (``-m "not slow and not plone and not
# multiprocess and not browser"``), marked here for whole modules; the
# Plone modules get ``plone`` from tests/plone/conftest.py.

#: modules whose tests start other processes: zasync workers, one-shot CLI
#: runs, a ZEO server with a Plone instance and workers
MULTIPROCESS_MODULES = {
    "test_multiprocess.py",
    "test_cli.py",
    "test_cluster.py",
    "test_bad_input.py",
    "test_cancel_cli.py",
    "test_cli_pipe.py",
    "test_demo.py",
    "test_health.py",
    "test_logformat.py",
    "test_metrics.py",
    "test_packaging.py",
    "test_supervisor.py",
    "test_schedules_cli.py",
    "test_schedules_multiprocess.py",
}
#: single tests that start several Python processes, as module::function
MULTIPROCESS_TESTS = {
    "test_storage.py::test_zeo_processes_opening_a_new_database_at_once",
    "test_storage.py::test_postgresql_processes_opening_a_new_database_at_once",
    "test_running.py::test_status_lists_running_jobs_and_flags_long_ones",
    "test_running.py::test_status_refuses_a_limit_that_is_no_duration",
    "test_notify_sender.py::test_a_process_that_queues_and_exits_at_once_still_notifies",
}
#: modules that drive a real browser (Playwright's Chromium)
BROWSER_MODULES = {
    "test_browser.py",
    "test_browser_cancel.py",
    "test_browser_schedules.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if item.path.name in MULTIPROCESS_MODULES or name in MULTIPROCESS_TESTS:
            item.add_marker(pytest.mark.multiprocess)
        if item.path.name in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
            # CPython 3.11.7 (this machine's) can fail to compile a page
            # template while another thread compiles ("SystemError: AST
            # constructor recursion depth mismatch", fixed in 3.11.8): the
            # page is Plone's error page. A browser test runs once more then;
            # failing twice fails it.
            item.add_marker(pytest.mark.flaky(reruns=1))
