"""Open a ZODB database named by a path, a ZConfig file or a zodburi URI.

Names (see :func:`open_db` and :mod:`zasync.uri`)::

    /var/zasync/Data.fs                       FileStorage (a bare path)
    file:///var/zasync/Data.fs?blobstorage_dir=/var/zasync/blobs
    zeo://127.0.0.1:8100?wait_timeout=10      ZEO client (TCP)
    zeo:///var/run/zeo.sock                   ZEO client (unix socket)
    memory://                                 MappingStorage, in this process
    postgresql://user:pass@host:5432/dbname?keep_history=false
    /etc/zasync/zodb.conf                     a ZConfig file with a <zodb> section
    zconfig:///etc/zasync/zodb.conf

Every failure to open is reported as one :class:`StorageError` whose message
is a single line naming the database (password hidden) and what to do.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ZODB
from ZODB.POSException import ConflictError

from zasync.storagekind import is_relstorage, pushes_invalidations, storage_kind
from zasync.uri import (
    _RELSTORAGE_EXTRA,
    _ZEO_EXTRA,
    DEFAULT_PG_CONNECT_TIMEOUT,
    DEFAULT_ZEO_WAIT_TIMEOUT,
    SUPPORTED,
    ZODBURI_DOCS,
    StorageError,
    StorageURI,
    _error,
    describe_uri,
    parse_uri,
)
from zasync.wakeup import NotifyingStorage, register_dsn

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PG_CONNECT_TIMEOUT",
    "DEFAULT_ZEO_WAIT_TIMEOUT",
    "SUPPORTED",
    "ZODBURI_DOCS",
    "StorageError",
    "StorageURI",
    "describe_uri",
    "is_relstorage",
    "open_db",
    "parse_uri",
    "pushes_invalidations",
    "storage_kind",
]


def open_db(uri_or_path: str, **kw: Any) -> ZODB.DB:
    """Open and return the database named by ``uri_or_path``.

    ``uri_or_path`` is any URI zodburi resolves (``file://``, ``zeo://``,
    ``memory://``, ``zconfig://``, ``demo:``, ``postgres://``), zasync's
    ``postgresql://``, a path to a FileStorage (its parent directories are
    created), or a path to a ZConfig ``.conf`` file. Storage options go in
    the URI's query (zodburi's docs list them, :data:`ZODBURI_DOCS`); ``kw``
    goes to :class:`ZODB.DB` (``pool_size``, ``cache_size``,
    ``database_name``...), over what the URI sets.

    Guarantees: a ZEO server that does not answer makes this fail after its
    ``wait_timeout`` (default 10 s), PostgreSQL after ``connect_timeout``
    (default 10 s); a RelStorage database is history-free unless the URI says
    ``keep_history=true``; on failure nothing stays open. Raises
    :class:`StorageError` (one line, password hidden, with the fix) for any
    failure: unknown scheme or option, missing extra, unreachable server,
    missing database, locked FileStorage, invalid ZConfig file. Processes
    that open a new, empty database at the same time (workers started
    together) all succeed: the ones that lose the race to create its root
    object (RelStorage: its tables) open it again.
    """
    spec = parse_uri(uri_or_path)
    attempt = 1
    while True:
        try:
            db = _open(spec, kw)
            break
        except StorageError:
            raise
        except Exception as exc:
            if attempt < OPEN_ATTEMPTS and _lost_creation_race(exc):
                logger.info(
                    "%s: another process created the new database at the same "
                    "time; opening it again (%s)",
                    spec.display,
                    type(exc).__name__,
                )
                time.sleep(random.uniform(0.05, 0.2) * attempt)
                attempt += 1
                continue
            # The boundary between user input and storage internals:
            # whatever a storage raises while opening becomes one clear
            # StorageError. Even ZEO's ClientDisconnected (a TransientError)
            # is final here: no transaction is running that a retry loop
            # could repeat.
            logger.debug("opening %s failed", spec.display, exc_info=True)
            raise _translate(spec, exc) from exc
    logger.info("opened %s (%s)", spec.display, storage_kind(db))
    return db


#: times :func:`open_db` tries when it loses the race to create a new
#: database (see :func:`_lost_creation_race`)
OPEN_ATTEMPTS = 5

#: PostgreSQL's codes for creating what another session created meanwhile:
#: unique_violation (in its catalogue), duplicate_table, duplicate_object
_PG_CREATED_MEANWHILE = {"23505", "42P07", "42710"}


def _lost_creation_race(exc: BaseException) -> bool:
    """Whether opening failed because another process was creating the
    same new database: ZODB.DB's first transaction (the root object)
    conflicted with theirs, or RelStorage's schema with theirs. Opening
    again finds what they made."""
    return isinstance(exc, ConflictError) or (
        getattr(exc, "pgcode", None) in _PG_CREATED_MEANWHILE
    )


def _open(spec: StorageURI, kw: dict[str, Any]) -> ZODB.DB:
    if spec.kind == "file" and spec.path is not None:
        if os.path.isdir(spec.path):
            raise _error(
                spec.display,
                "this is a directory",
                "name the FileStorage file inside it, e.g. .../Data.fs",
            )
        os.makedirs(os.path.dirname(spec.path), exist_ok=True)
    if spec.dsn is not None:
        _check_relstorage_schema(spec)
    storage = spec.factory()
    if type(storage).__name__ == "ClientStorage":
        # Reports the server's invalidations so that dispatchers wake at once.
        storage = NotifyingStorage(storage)
    try:
        db = ZODB.DB(storage, **{**spec.dbkw, **kw})
    except BaseException:
        storage.close()
        raise
    if spec.dsn is not None:
        register_dsn(db, spec.dsn)  # for LISTEN/NOTIFY wake-ups
    return db


def _check_relstorage_schema(spec: StorageURI) -> None:
    """Fail clearly when the schema's history mode differs from the URI's.

    RelStorage finds this out only after trying to create the other mode's
    tables, with an obscure SQL error.
    """
    try:
        import psycopg2  # noqa: PLC0415 - optional: zasync[relstorage]
    except ImportError as exc:
        raise _error(spec.display, f"a driver is missing ({exc})", _RELSTORAGE_EXTRA)
    conn = psycopg2.connect(spec.dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
            tables = {row[0] for row in cursor.fetchall()}
    finally:
        conn.close()
    if "object_state" not in tables:
        return  # empty database: RelStorage creates the schema
    history_preserving = "transaction" in tables and "current_object" in tables
    wanted = re.search(
        r"(^|&)keep_history=(1|true|yes|on)\b", spec.uri.split("?")[-1], re.I
    )
    if history_preserving and not wanted:
        raise _error(
            spec.display,
            "the database holds a history-preserving RelStorage schema",
            "add ?keep_history=true to the URI (or convert it with zodbconvert)",
        )
    if wanted and not history_preserving:
        raise _error(
            spec.display,
            "the database holds a history-free RelStorage schema",
            "drop keep_history=true from the URI (or convert it with zodbconvert)",
        )


def _translate(spec: StorageURI, exc: BaseException) -> StorageError:
    """Turn what a storage raised while opening into a StorageError."""
    display = spec.display
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    message = str(exc) or name
    if spec.password:
        message = message.replace(spec.password, "***")
    known = _KNOWN_ERRORS.get(name)
    if known is not None:
        return known(spec, message)
    if isinstance(exc, ImportError):
        return _missing_driver(display, message)
    if name.startswith(("psycopg2", "relstorage")):
        return _postgres_error(display, message)
    if isinstance(exc, PermissionError):
        return _error(display, message, "fix the permissions or choose another path")
    if isinstance(exc, OSError):
        return _error(display, message, "check the path and the disk")
    if name.startswith("ZODB.FileStorage"):
        return _error(
            display,
            f"not a usable FileStorage ({message})",
            "check that the path names a Data.fs file",
        )
    return _error(display, f"{type(exc).__name__}: {message}", "see the debug log")


def _locked(spec: StorageURI, message: str) -> StorageError:
    return _error(
        spec.display,
        f"the FileStorage is locked ({message}): another process, or another"
        " DB in this one, has it open",
        "stop that process, or share the database through a ZEO server "
        "(zeo://host:port)",
    )


def _no_zeo_server(spec: StorageURI, message: str) -> StorageError:
    # ZEO keeps retrying until wait_timeout whatever went wrong: nothing
    # listening, or a server without the storage asked for (logged by
    # ZEO as "unknown storage").
    options = dict(parse_qsl(urlsplit(spec.uri.replace("zeo:", "http:", 1)).query))
    wait = float(options.get("wait_timeout") or 0)
    problem = "no ZEO server answered"
    if wait:
        problem += f" within {wait:g}s"
    if "storage" in options:
        problem += f" with a storage named {options['storage']!r}"
    return _error(
        spec.display,
        f"{problem} ({message})",
        "start the server (runzeo) or fix the address"
        + (" or the storage name" if "storage" in options else "")
        + "; a slow server may need a larger ?wait_timeout=",
    )


def _read_only_and_empty(spec: StorageURI, message: str) -> StorageError:
    return _error(
        spec.display,
        "the storage is read-only and the database has no root object yet",
        "open it writable once, or drop read_only",
    )


#: errors recognised by their class's dotted name (their packages are
#: optional, or their class is not public)
_KNOWN_ERRORS: dict[str, Callable[[StorageURI, str], StorageError]] = {
    "zc.lockfile.LockError": _locked,
    "ZEO.Exceptions.ClientDisconnected": _no_zeo_server,
    "ZODB.POSException.ReadOnlyError": _read_only_and_empty,
}


def _missing_driver(display: str, message: str) -> StorageError:
    lowered = message.lower()
    if "relstorage" in lowered or "psycopg" in lowered:
        return _error(display, f"a driver is missing ({message})", _RELSTORAGE_EXTRA)
    if "zeo" in lowered:
        return _error(display, f"a driver is missing ({message})", _ZEO_EXTRA)
    return _error(display, message, "install the missing package")


def _postgres_error(display: str, message: str) -> StorageError:
    lowered = message.lower()
    match = re.search(r'database "([^"]+)" does not exist', message)
    if match:
        return _error(
            display,
            f"database {match.group(1)!r} does not exist",
            f"create it (createdb {match.group(1)}) or fix the name in the URI",
        )
    if "password authentication failed" in lowered or re.search(
        r'role "[^"]+" does not exist', message
    ):
        return _error(
            display,
            message.split("FATAL:")[-1].strip(),
            "fix the user or password in the URI",
        )
    unreachable = (
        "connection refused",
        "could not connect",
        "timeout expired",
        "could not translate host name",
        "no such file or directory",
        "no route to host",
    )
    if any(text in lowered for text in unreachable):
        return _error(
            display,
            f"PostgreSQL is unreachable ({message})",
            "start PostgreSQL or fix host and port in the URI",
        )
    return _error(display, f"PostgreSQL said: {message}", "check the server log")
