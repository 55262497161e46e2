"""A worker in a Zope process of its own, serving no HTTP: ``zasync worker
--zope-conf path/to/zope.conf``.

Zope starts as its WSGI server would start it (``Zope2.Startup.run.
make_wsgi_app``), without the server: the configuration from zope.conf
(its ``<environment>`` section included), the ZCML of the instance's
``etc/site.zcml``, the databases, then Zope's start-up events, on which
the worker role that site.zcml includes (``single_db_worker.zcml`` or
``multi_db_worker.zcml``) installs the queues and starts the dispatcher
(see :mod:`zasync.plone.worker`). The caller then waits for a signal and
calls :meth:`ZopeWorker.stop`.

The worker's UUID file and threads come from ``ZASYNC_UUID`` and
``ZASYNC_THREADS``: the command's ``--uuid-file`` and ``--threads`` when
given, else zope.conf's ``<environment>``, else the process's environment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

# Without Zope, importing this module raises ImportError, which the
# command reports in one line.
import ZConfig
import Zope2
from App.config import getConfiguration, setConfiguration
from zc.lockfile import LockError
from ZODB.POSException import StorageError as ZODBStorageError
from zope.component import queryUtility
from zope.configuration.exceptions import ConfigurationError as ZCMLError
from Zope2.Startup import get_wsgi_starter
from Zope2.Startup.handlers import handleWSGIConfig
from Zope2.Startup.options import ZopeWSGIOptions

from zasync.interfaces import ZasyncError
from zasync.plone import worker
from zasync.plone.interfaces import IWorkerRole
from zasync.storage import StorageError

log = logging.getLogger(__name__)

#: what Zope's WSGI starter logs (logger "Zope") once started: untrue in a
#: worker, which serves no HTTP (the command prints its own ready line)
ZOPE_READY_LINE = "Ready to handle requests"


def _not_zopes_ready_line(record: logging.LogRecord) -> bool:
    return record.getMessage() != ZOPE_READY_LINE


class ZopeConfigError(StorageError):
    """zope.conf could not be loaded, or the databases it names could not
    be opened."""


class ZopeStartError(ZasyncError):
    """Zope started from zope.conf, but not as a zasync worker (its ZCML
    failed, or gives the process no worker role)."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class ZopeWorker:
    """A started Zope worker: the dispatcher runs in background threads."""

    def __init__(self, *, config_path: Path, dispatcher: Any, role: Any):
        self.config_path = config_path
        self.dispatcher = dispatcher
        self.role = role

    @property
    def uuid(self) -> str:
        return self.dispatcher.uuid

    @property
    def threads(self) -> int:
        return self.dispatcher.threads

    @property
    def database_name(self) -> str:
        return self.dispatcher.db.database_name

    def stop(self, timeout: float) -> bool:
        """Stop the dispatcher, letting running jobs finish for up to
        ``timeout`` seconds, then close Zope's databases. True when every
        job finished."""
        clean = worker.stop(timeout)
        close_databases()
        return clean


def _check_path(zope_conf: str | os.PathLike[str]) -> Path:
    path = Path(zope_conf).absolute()
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "no such file"
        raise ZopeConfigError(
            f"cannot load {path}: {why}; --zope-conf names a zope.conf (the "
            f"worker's own, whose site.zcml includes zasync's worker ZCML)",
            uri=str(path),
        )
    return path


def load_configuration(path: Path) -> Any:
    """Load zope.conf into Zope's configuration (setting the environment
    of its ``<environment>`` section) and return Zope's WSGI starter, ready
    for ``prepare()``. Raises ZopeConfigError with ZConfig's message."""
    try:
        opts = ZopeWSGIOptions(configfile=str(path))()
    except (ZConfig.ConfigurationError, OSError) as e:
        raise ZopeConfigError(
            f"cannot load {path}: {_one_line(e)}", uri=str(path)
        ) from None
    handleWSGIConfig(opts.configroot, opts.confighandlers)
    setConfiguration(opts.configroot)
    starter = get_wsgi_starter()
    starter.setConfiguration(opts.configroot)
    return starter


def start(
    zope_conf: str | os.PathLike[str],
    *,
    uuid_file: str | None = None,
    threads: int | None = None,
    name: str | None = None,
) -> ZopeWorker:
    """Start Zope from ``zope_conf`` as a zasync worker and return it once
    its dispatcher runs. ``uuid_file`` and ``threads``, when given, win
    over ``ZASYNC_UUID`` and ``ZASYNC_THREADS`` (from zope.conf or the
    environment); so does ``name`` over ``ZASYNC_WORKER_NAME``.

    Raises ZopeConfigError (the file is missing or invalid, a database
    cannot be opened), ZopeStartError (the ZCML failed, or names no worker
    role) or zasync's ConfigurationError (a bad ZASYNC_* setting).
    """
    path = _check_path(zope_conf)
    starter = load_configuration(path)
    if uuid_file is not None:
        os.environ["ZASYNC_UUID"] = str(uuid_file)
    if threads is not None:
        os.environ["ZASYNC_THREADS"] = str(threads)
    if name is not None:
        os.environ["ZASYNC_WORKER_NAME"] = name
    zope_log = logging.getLogger("Zope")
    zope_log.addFilter(_not_zopes_ready_line)
    try:
        # Locale, security, ZCML, databases, IDatabaseOpenedWithRoot and
        # IProcessStarting: everything Zope's WSGI start-up does.
        starter.prepare()
    except ZCMLError as e:
        close_databases()
        raise ZopeStartError(
            f"the ZCML of {_site_zcml()} (loaded for {path}) failed: {_one_line(e)}"
        ) from None
    except (OSError, LockError, ZODBStorageError) as e:
        # a FileStorage locked by another process, an unreadable file...
        close_databases()
        raise ZopeConfigError(
            f"cannot open the databases of {path}: {_one_line(e)}", uri=str(path)
        ) from None
    finally:
        zope_log.removeFilter(_not_zopes_ready_line)
    dispatcher = worker.get_dispatcher()
    if dispatcher is None:
        close_databases()
        raise ZopeStartError(_no_worker_message(path))
    return ZopeWorker(
        config_path=path, dispatcher=dispatcher, role=queryUtility(IWorkerRole)
    )


def _site_zcml() -> str:
    return os.path.join(getConfiguration().instancehome, "etc", "site.zcml")


def _no_worker_message(path: Path) -> str:
    role = queryUtility(IWorkerRole)
    what = (
        "loads no zasync role"
        if role is None
        else f"gives the role {role.name}, which only queues"
    )
    return (
        f"{path} {what}: its site.zcml ({_site_zcml()}) must include "
        f'<include package="zasync.plone" file="single_db_worker.zcml" /> '
        f"(or multi_db_worker.zcml) to run jobs"
    )


def close_databases() -> None:
    """Close the databases Zope opened (as ``runwsgi`` does on exit)."""
    databases = list(getattr(Zope2, "opened", ()))
    dbtab = getattr(getConfiguration(), "dbtab", None)
    databases += list(getattr(dbtab, "databases", {}).values())
    seen = set()
    for db in databases:
        if id(db) in seen:
            continue
        seen.add(id(db))
        try:
            db.close()
        except Exception:  # closing at exit: report, go on with the others
            log.exception("closing database %r failed", db)
    if hasattr(Zope2, "opened"):
        del Zope2.opened[:]
