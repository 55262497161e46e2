"""Worker roles of a Zope process, and the dispatcher a worker runs.

One of four ZCML files gives the process its role (as in plone.app.async):

==========================  ============================  ==================
file                        queues live in                starts a dispatcher
==========================  ============================  ==================
single_db_instance.zcml     the main database             no
single_db_worker.zcml       the main database             yes
multi_db_instance.zcml      the database named ``async``  no
multi_db_worker.zcml        the database named ``async``  yes
==========================  ============================  ==================

Start-up goes through Zope's own events, no patching:

- ``IDatabaseOpenedWithRoot`` (the databases are open): a multi-db role
  opens the ``async`` database if Zope has not; a worker makes sure the
  queues exist (queue ``''`` with quota ``default`` of size 1, as
  plone.app.async did) and resolves its settings: the UUID from the file
  named by ``ZASYNC_UUID`` (or ``ZC_ASYNC_UUID``), created on first start,
  the number of threads from ``ZASYNC_THREADS`` (default 2), its name
  from ``ZASYNC_WORKER_NAME`` (default: host:pid), and the seconds before a
  job that does not stop is interrupted and abandoned from
  ``ZASYNC_INTERRUPT_GRACE`` (5) and ``ZASYNC_STUCK_DELAY`` (30), and the
  seconds between its hand-backs of freed memory from
  ``ZASYNC_MEMORY_TRIM_INTERVAL`` (10; 0: never);
- ``IProcessStarting`` (the server is about to serve): the worker starts
  its dispatcher. ``zasync worker --zope-conf`` starts Zope this way
  without serving HTTP. Zope's scripts (``zconsole run``) go through the
  same start-up, so a script run with a worker's zope.conf starts a
  dispatcher too: run scripts with the instance's zope.conf.

The dispatcher stops when the process exits, letting running jobs finish
for up to ``ZASYNC_STOP_TIMEOUT`` seconds (default 10). With
``ZASYNC_METRICS_PORT`` set (zope.conf's ``<environment>`` or the
environment), the worker serves Prometheus metrics on that port
(zasync.metrics, the ``ops`` extra), as ``zasync worker --metrics-port``.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import transaction
from App.config import getConfiguration
from zope.component import queryUtility
from zope.interface import implementer

from zasync import identity
from zasync.cli.processes import MAX_NAME
from zasync.dispatcher import Dispatcher
from zasync.interfaces import ConfigurationError
from zasync.plone.interfaces import IWorkerRole
from zasync.plone.location import ASYNC_DATABASE, queues_database_name
from zasync.plone.settings import DEFAULT_QUEUES, DEFAULT_QUOTAS
from zasync.queue import install
from zasync.settings import INTERRUPT_GRACE, MEMORY_TRIM_INTERVAL, STUCK_DELAY

log = logging.getLogger(__name__)

DEFAULT_THREADS = 2
DEFAULT_STOP_TIMEOUT = 10.0


@implementer(IWorkerRole)
class WorkerRole:
    def __init__(self, name: str, *, multi_db: bool, worker: bool):
        self.name = name
        self.multi_db = multi_db
        self.worker = worker

    def __repr__(self) -> str:
        return f"<WorkerRole {self.name}>"


SINGLE_DB_INSTANCE = WorkerRole("single_db_instance", multi_db=False, worker=False)
SINGLE_DB_WORKER = WorkerRole("single_db_worker", multi_db=False, worker=True)
MULTI_DB_INSTANCE = WorkerRole("multi_db_instance", multi_db=True, worker=False)
MULTI_DB_WORKER = WorkerRole("multi_db_worker", multi_db=True, worker=True)


class WorkerSettings:
    """The settings of this process's worker, resolved once at start-up
    from the environment."""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        path = identity.uuid_file_from_env(environ)
        if not path:
            log.warning(
                "ZASYNC_UUID is not set: this worker gets a new UUID at every "
                "start, so it cannot recover its own unfinished jobs at once "
                "(other workers rescue them when their lease expires)"
            )
        self.uuid_file = path
        self.uuid = identity.worker_uuid(path, environ)
        self.threads = _number(
            environ, "ZASYNC_THREADS", default=DEFAULT_THREADS, kind=int
        )
        self.stop_timeout = _number(
            environ, "ZASYNC_STOP_TIMEOUT", default=DEFAULT_STOP_TIMEOUT, kind=float
        )
        port = environ.get("ZASYNC_METRICS_PORT") or None
        if port is not None and not (port.isdigit() and int(port) < 65536):
            raise ConfigurationError(
                f"ZASYNC_METRICS_PORT={port!r}: use a port number (1-65535)"
            )
        self.metrics_port = int(port) if port is not None else None
        self.interrupt_grace = _number(
            environ, "ZASYNC_INTERRUPT_GRACE", default=INTERRUPT_GRACE, kind=float
        )
        self.stuck_delay = _number(
            environ, "ZASYNC_STUCK_DELAY", default=STUCK_DELAY, kind=float
        )
        self.memory_trim_interval = _number(
            environ,
            "ZASYNC_MEMORY_TRIM_INTERVAL",
            default=MEMORY_TRIM_INTERVAL,
            kind=float,
            zero=True,
        )
        #: shown in ``zasync status`` and the control panel (else host:pid)
        self.name = environ.get("ZASYNC_WORKER_NAME", "").strip() or None
        if self.name is not None and (
            len(self.name) > MAX_NAME or not self.name.isprintable()
        ):
            raise ConfigurationError(
                f"ZASYNC_WORKER_NAME={self.name!r}: use 1 to {MAX_NAME} "
                f"printable characters, e.g. reports or host-a"
            )


def _number(
    environ: Mapping[str, str],
    name: str,
    *,
    default: float,
    kind: Callable[[str], float],
    zero: bool = False,
) -> Any:
    """The number the variable ``name`` holds: more than 0 (or 0 too, with
    ``zero``), finite; ``default`` when it is unset or empty."""
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if (
        value is None
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        wanted = "a finite number, 0 or more" if zero else "a positive number"
        raise ConfigurationError(f"{name}={raw!r}: use {wanted} (default {default})")
    return value


class _State:
    """What the start-up events handed over to each other."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.db: Any = None
        self.settings: WorkerSettings | None = None
        self.dispatcher: Dispatcher | None = None
        self.metrics: Any = None
        self.atexit = False


_state = _State()


def open_queues_database(db: Any) -> Any:
    """The database that holds the queues for the main database ``db``,
    opened through Zope's database table when the role needs ``async`` and
    Zope has not opened it (a ``<zodb_db async>`` without mount point)."""
    role = queryUtility(IWorkerRole)
    if (
        role is not None
        and role.multi_db
        and ASYNC_DATABASE not in getattr(db, "databases", {})
    ):
        dbtab = getattr(getConfiguration(), "dbtab", None)
        if dbtab is not None and ASYNC_DATABASE in dbtab.listDatabaseNames():
            dbtab.getDatabase(name=ASYNC_DATABASE)
    name = queues_database_name(db)
    return db.databases[name] if name != db.database_name else db


def database_opened(event: Any) -> None:
    """IDatabaseOpenedWithRoot: open the queues' database; a worker installs
    the queues and resolves its settings."""
    role = queryUtility(IWorkerRole)
    queues_db = open_queues_database(event.database)
    if role is None or not role.worker:
        return
    _install(queues_db)
    with _state.lock:
        _state.db = queues_db
        _state.settings = WorkerSettings()
    log.info(
        "zasync worker (%s) will serve database %r as %s",
        role.name,
        queues_db.database_name,
        _state.settings.uuid,
    )


def _install(db: Any) -> None:
    """Make sure the default queue and its ``default`` quota exist; leave
    what exists as it is (sizes set through a site's registry stay)."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(5):
            with attempt:
                queues = install(conn, DEFAULT_QUEUES)
                for name in DEFAULT_QUEUES:
                    quotas = queues[name].quotas
                    for quota, size in DEFAULT_QUOTAS.items():
                        if quota not in quotas:
                            quotas.create(quota, size=size)
    finally:
        conn.close()


def process_starting(event: Any = None) -> Any:
    """IProcessStarting: start the dispatcher (once); return it."""
    with _state.lock:
        settings = _state.settings
        if _state.dispatcher is not None or _state.db is None or settings is None:
            return _state.dispatcher
        dispatcher = Dispatcher(
            _state.db,
            uuid=settings.uuid,
            threads=settings.threads,
            name=settings.name,
            interrupt_grace=settings.interrupt_grace,
            stuck_delay=settings.stuck_delay,
            memory_trim_interval=settings.memory_trim_interval,
        )
        dispatcher.start()
        _state.dispatcher = dispatcher
        if settings.metrics_port is not None:
            _state.metrics = start_metrics(dispatcher, settings.metrics_port)
        if not _state.atexit:
            atexit.register(stop)
            _state.atexit = True
    log.info(
        "zasync dispatcher %s started with %d threads",
        settings.uuid,
        settings.threads,
    )
    return dispatcher


def start_metrics(dispatcher: Dispatcher, port: int) -> Any:
    """Serve ``dispatcher``'s Prometheus metrics on ``port``; log an error
    (the worker runs on without them) when they cannot be served."""
    try:
        from zasync.metrics import Metrics  # noqa: PLC0415 - optional: zasync[ops]
    except ImportError as e:
        log.error("ZASYNC_METRICS_PORT needs prometheus-client (%s): %s", e, _OPS)
        return None
    metrics = Metrics()
    metrics.watch(dispatcher)
    try:
        metrics.serve(port)
    except OSError as e:
        log.error(
            "ZASYNC_METRICS_PORT=%d: cannot listen (%s); choose a free port", port, e
        )
        return None
    log.info("zasync metrics on http://0.0.0.0:%d/metrics", port)
    return metrics.subscribe()


_OPS = "pip install 'zasync[ops]'"


def get_dispatcher() -> Any:
    """The dispatcher this process's worker runs, or None."""
    return _state.dispatcher


def stop(timeout: float | None = None) -> bool:
    """Stop the worker's dispatcher (if any), letting running jobs finish
    for up to ``timeout`` seconds (default: ZASYNC_STOP_TIMEOUT); forget
    the database. Returns True when every thread finished."""
    with _state.lock:
        dispatcher, settings = _state.dispatcher, _state.settings
        _state.dispatcher = _state.db = _state.settings = None
        if _state.metrics is not None:
            _state.metrics.close()
            _state.metrics = None
    if dispatcher is None:
        return True
    if timeout is None:
        timeout = settings.stop_timeout if settings else DEFAULT_STOP_TIMEOUT
    return dispatcher.stop(timeout)
