"""Open a ZODB database named by a URI, a path or a ZConfig file.

Supported names (see :func:`open_db`)::

    /var/zasync/Data.fs                       FileStorage (a bare path)
    file:///var/zasync/Data.fs?blobs=/var/zasync/blobs
    zeo://127.0.0.1:8100?wait_timeout=10      ZEO client (TCP)
    zeo:///var/run/zeo.sock                   ZEO client (unix socket)
    postgresql://user:pass@host:5432/dbname?keep_history=false
    /etc/zasync/zodb.conf                     a ZConfig file with a <zodb> section
    zconfig:///etc/zasync/zodb.conf

Every failure to open is reported as one :class:`StorageError` whose message
is a single line naming the database (password hidden) and what to do.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import ZODB

from zasync.interfaces import ZasyncError

logger = logging.getLogger(__name__)

__all__ = [
    "StorageError",
    "StorageURI",
    "describe_uri",
    "is_relstorage",
    "open_db",
    "parse_uri",
    "pushes_invalidations",
    "storage_kind",
]

#: How long a ZEO client waits for its server when the URI does not say.
DEFAULT_ZEO_WAIT_TIMEOUT = 10.0
#: How long libpq waits for PostgreSQL when the URI does not say (seconds).
DEFAULT_PG_CONNECT_TIMEOUT = 10

SUPPORTED = (
    "file:///path/Data.fs, a bare path to a FileStorage, zeo://host:port, "
    "zeo:///path/to/socket, postgresql://user@host:port/dbname, "
    "or a ZConfig file (*.conf, zconfig:///path.conf)"
)

_ZEO_EXTRA = "pip install 'zasync[zeo]'"
_RELSTORAGE_EXTRA = "pip install 'zasync[relstorage]'"

StorageKind = Literal["file", "zeo", "relstorage", "other"]


class StorageError(ZasyncError):
    """The database named by a URI could not be opened.

    The message is one line: ``cannot open <uri, password hidden>: <what went
    wrong>; <what to do>``. ``uri`` holds the URI with its password hidden.
    """

    def __init__(self, message: str, *, uri: str = "") -> None:
        super().__init__(message)
        self.uri = uri


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageURI:
    """A validated storage name: what :func:`open_db` will open.

    ``kind`` is ``'file'``, ``'zeo'``, ``'relstorage'`` or ``'zconfig'``;
    ``display`` is the URI with its password hidden; ``path`` is set for
    ``file`` and ``zconfig``; ``address`` for ``zeo`` (a ``(host, port)``
    tuple or a socket path, or a list of them); ``dsn`` (a libpq keyword
    DSN, password included, so left out of the repr) for ``relstorage``;
    ``options`` are the keyword arguments for the storage.
    """

    kind: Literal["file", "zeo", "relstorage", "zconfig"]
    display: str
    path: str | None = None
    address: Any = None
    dsn: str | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict)
    password: str | None = field(default=None, repr=False, compare=False)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)


def _size(value: str) -> int:
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (use e.g. 200MB or 1048576)")
    number, unit = match.groups()
    return int(number) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit.lower()]


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"{value!r} is not a positive number of seconds")
    return number


def _path(value: str) -> str:
    if not value:
        raise ValueError("an empty path")
    return os.path.abspath(os.path.expanduser(value))


def _cache_servers(value: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[,\s]+", value) if part)


# Query parameters accepted per scheme, with their converters. Tables rather
# than introspection, so a typo is refused with the list of what is valid.
_FILE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "blobs": _path,  # alias of blob_dir
    "blob_dir": _path,
    "read_only": _bool,
    "pack_gc": _bool,
}

_ZEO_OPTIONS: dict[str, Callable[[str], Any]] = {
    "storage": str,
    "wait_timeout": _positive_float,
    "cache_size": _size,
    "blob_dir": _path,
    "shared_blob_dir": _bool,
    "blob_cache_size": _size,
    "read_only": _bool,
    "read_only_fallback": _bool,
    "client": str,  # name of a persistent client cache file
    "var": _path,  # directory of the persistent client cache
    "client_label": str,
    "server_sync": _bool,
}

# RelStorage's own options (relstorage.options.Options) that make sense in
# a URI. ``poll_interval`` is accepted for old configurations and ignored:
# RelStorage >= 3 polls for invalidations at the start of every transaction.
_RELSTORAGE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "keep_history": _bool,
    "poll_interval": float,
    "cache_local_mb": int,
    "cache_local_object_max": _size,
    "cache_local_compression": str,
    "cache_local_dir": _path,
    "cache_delta_size_limit": int,
    "cache_prefix": str,
    "cache_servers": _cache_servers,
    "commit_lock_timeout": int,
    "blob_dir": _path,
    "shared_blob_dir": _bool,
    "blob_cache_size": _size,
    "blob_cache_size_check": int,
    "blob_chunk_size": _size,
    "read_only": _bool,
    "create_schema": _bool,
    "driver": str,
    "name": str,
    "pack_gc": _bool,
    "pack_prepack_only": _bool,
    "pack_skip_prepack": _bool,
    "pack_batch_timeout": float,
    "replica_conf": _path,
    "ro_replica_conf": _path,
    "replica_timeout": float,
    "revert_when_stale": _bool,
}

# libpq connection parameters passed through to the DSN.
_LIBPQ_PARAMS = frozenset(
    """
    host hostaddr port user password passfile
    connect_timeout options application_name sslmode sslcert sslkey
    sslrootcert sslcrl sslpassword gssencmode target_session_attrs keepalives
    keepalives_idle keepalives_interval keepalives_count service
    """.split()
)

_PG_SCHEMES = ("postgresql", "postgres")
_SECRET_QUERY = re.compile(r"((?:^|[?&;\s])(?:password|sslpassword)=)([^&;\s]*)")


def describe_uri(uri: str) -> str:
    """Return ``uri`` with any password replaced by ``***``, for logs.

    Never raises: a string that is not a URI comes back unchanged except
    for ``password=...`` parameters, which are hidden too.
    """
    text = str(uri)
    scheme, sep, rest = text.partition("://")
    if sep:
        netloc, slash, tail = _split_netloc(rest)
        userinfo, at, hostport = netloc.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
        text = f"{scheme}://{netloc}{slash}{tail}"
    return _SECRET_QUERY.sub(r"\1***", text)


def _split_netloc(rest: str) -> tuple[str, str, str]:
    """Split what follows ``scheme://`` into netloc, the separator, the tail."""
    for index, char in enumerate(rest):
        if char in "/?#":
            return rest[:index], char, rest[index + 1 :]
    return rest, "", ""


def _split_uri(text: str) -> tuple[str, str, str]:
    """Split ``scheme://netloc/path?query#fragment`` into netloc, path
    (with its leading slash) and query; the netloc is left undecoded."""
    netloc, sep, tail = _split_netloc(text.partition("://")[2])
    tail = (sep + tail).split("#", 1)[0]
    path, _, query = tail.partition("?")
    return netloc, path, query


def _error(display: str, problem: str, fix: str) -> StorageError:
    problem = " ".join(str(problem).split())  # one line, whatever came in
    return StorageError(f"cannot open {display}: {problem}; {fix}", uri=display)


def _options(
    display: str,
    query: str,
    table: Mapping[str, Callable[[str], Any]],
    *,
    extra: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, str]]:
    """Convert ``query`` with ``table``; names in ``extra`` are kept as text."""
    converted: dict[str, Any] = {}
    passthrough: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in seen:
            raise _error(display, f"option {name!r} is given twice", "keep one")
        seen.add(name)
        if name in table:
            try:
                converted[name] = table[name](value)
            except ValueError as exc:
                raise _error(
                    display, f"bad value for {name}: {exc}", "fix it in the URI"
                ) from None
        elif name in extra:
            passthrough[name] = value
        else:
            valid = ", ".join(sorted(set(table) | extra))
            raise _error(display, f"unknown option {name!r}", f"valid options: {valid}")
    return converted, passthrough


def parse_uri(uri: str) -> StorageURI:
    """Validate ``uri`` (or a path) and say what it names, opening nothing.

    Guarantees: the returned options are converted to their types and every
    one is known for its scheme. Raises :class:`StorageError` for an unknown
    scheme, an unknown or malformed option, or a URI missing a required part
    (ZEO port, PostgreSQL database name).
    """
    if not isinstance(uri, str | os.PathLike):
        raise StorageError(
            f"cannot open {uri!r}: a storage must be named by a string; "
            f"use one of {SUPPORTED}"
        )
    text = os.fspath(uri).strip()
    display = describe_uri(text)
    if not text:
        raise StorageError(f"cannot open an empty name; use one of {SUPPORTED}")
    scheme, sep, _ = text.partition("://")
    if not sep:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:[^/\\]", text) and not os.path.exists(
            text
        ):
            # 'zeo:host:8100' and friends: a scheme without '//'.
            raise _error(
                display,
                f"unsupported name {display!r}",
                f"use one of {SUPPORTED}",
            )
        path = _path(text)
        if path.endswith(".conf"):
            return StorageURI(kind="zconfig", display=display, path=path)
        return StorageURI(kind="file", display=display, path=path)

    scheme = scheme.lower()
    if scheme == "file":
        return _parse_file(text, display)
    if scheme == "zconfig":
        return _parse_zconfig(text, display)
    if scheme == "zeo":
        return _parse_zeo(text, display)
    if scheme in _PG_SCHEMES:
        return _parse_postgresql(text, display)
    raise _error(display, f"unsupported scheme {scheme + '://'!r}", f"use {SUPPORTED}")


def _local_path(text: str, display: str, example: str) -> tuple[str, str]:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise _error(
            display,
            f"{parts.netloc!r} is read as a host, not a directory",
            f"use an absolute path with three slashes: {example}",
        )
    path = unquote(parts.path)
    if not path or path == "/":
        raise _error(display, "no path given", f"use {example}")
    return _path(path), parts.query


def _parse_file(text: str, display: str) -> StorageURI:
    path, query = _local_path(text, display, "file:///abs/path/Data.fs")
    options, _ = _options(display, query, _FILE_OPTIONS)
    if "blobs" in options:
        if "blob_dir" in options:
            raise _error(display, "both blobs and blob_dir given", "keep one")
        options["blob_dir"] = options.pop("blobs")
    return StorageURI(kind="file", display=display, path=path, options=options)


def _parse_zconfig(text: str, display: str) -> StorageURI:
    path, query = _local_path(text, display, "zconfig:///abs/path/zodb.conf")
    if query:
        raise _error(display, "a ZConfig file takes no options", "put them in the file")
    return StorageURI(kind="zconfig", display=display, path=path)


def _parse_zeo(text: str, display: str) -> StorageURI:
    netloc, path, query = _split_uri(text)
    if "@" in netloc:
        raise _error(
            display,
            "ZEO has no user or password",
            "remove 'user:password@' from the URI",
        )
    addresses: list[tuple[str, int] | str] = []
    if netloc:
        if path not in ("", "/"):
            raise _error(
                display,
                f"a ZEO address takes no path ({path!r})",
                "use zeo://host:port or zeo:///path/to/socket",
            )
        for part in netloc.split(","):
            addresses.append(_host_port(part, display))
    else:
        socket_path = unquote(path)
        if not socket_path or socket_path == "/":
            raise _error(
                display,
                "no server address",
                "use zeo://host:port or zeo:///path/to/socket",
            )
        addresses.append(_path(socket_path))
    options, _ = _options(display, query, _ZEO_OPTIONS)
    options.setdefault("wait_timeout", DEFAULT_ZEO_WAIT_TIMEOUT)
    address: Any = addresses[0] if len(addresses) == 1 else addresses
    return StorageURI(kind="zeo", display=display, address=address, options=options)


def _host_port(part: str, display: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", part)
    if not match:
        raise _error(
            display,
            f"{part!r} is not host:port",
            "name the port, e.g. zeo://127.0.0.1:8100",
        )
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise _error(display, f"port {port} is out of range", "use 1-65535")
    return host, port


def _parse_postgresql(text: str, display: str) -> StorageURI:
    netloc, path, query = _split_uri(text)
    dbname = unquote(path.lstrip("/"))
    params: dict[str, str] = {}
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon:
            params["password"] = unquote(password)
    if hostport:
        match = re.fullmatch(r"\[([^\]]+)\](?::(\d*))?|([^:]*)(?::(\d*))?", hostport)
        if not match:
            raise _error(display, f"{hostport!r} is not host:port", "fix the URI")
        host = unquote(match.group(1) or match.group(3) or "")
        port = match.group(2) or match.group(4)
        if host:
            params["host"] = host
        if port:
            params["port"] = port
    options, libpq = _options(display, query, _RELSTORAGE_OPTIONS, extra=_LIBPQ_PARAMS)
    params.update(libpq)
    if not dbname:
        raise _error(
            display,
            "no database name",
            "name it in the path: postgresql://user@host:5432/dbname",
        )
    params["dbname"] = dbname
    params.setdefault("connect_timeout", str(DEFAULT_PG_CONNECT_TIMEOUT))
    if "poll_interval" in options:
        options.pop("poll_interval")
        logger.warning(
            "%s: poll_interval is ignored; RelStorage polls for changes at "
            "the start of every transaction",
            display,
        )
    options.setdefault("keep_history", False)
    dsn = " ".join(f"{key}={_libpq_quote(value)}" for key, value in params.items())
    return StorageURI(
        kind="relstorage",
        display=display,
        dsn=dsn,
        options=options,
        password=params.get("password"),
    )


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------


def open_db(uri_or_path: str, **kw: Any) -> ZODB.DB:
    """Open and return the database named by ``uri_or_path``.

    ``uri_or_path`` is a URI (``file://``, ``zeo://``, ``postgresql://``,
    ``zconfig://``), a path to a FileStorage (its parent directories are
    created), or a path to a ZConfig ``.conf`` file with a ``<zodb>``
    section. Storage options go in the URI's query; ``kw`` goes to
    :class:`ZODB.DB` (``pool_size``, ``cache_size``, ``database_name``...)
    and cannot be combined with a ZConfig file, whose ``<zodb>`` section
    holds them.

    Guarantees: a ZEO server that does not answer makes this fail after its
    ``wait_timeout`` (default 10 s), PostgreSQL after ``connect_timeout``
    (default 10 s); a RelStorage database is history-free unless the URI says
    ``keep_history=true``; on failure nothing stays open. Raises
    :class:`StorageError` (one line, password hidden, with the fix) for any
    failure: unknown scheme, missing extra, unreachable server, missing
    database, locked FileStorage, invalid ZConfig file.
    """
    spec = parse_uri(uri_or_path)
    opener = {
        "file": _open_file,
        "zeo": _open_zeo,
        "relstorage": _open_relstorage,
        "zconfig": _open_zconfig,
    }[spec.kind]
    try:
        db = opener(spec, kw)
    except StorageError:
        raise
    except Exception as exc:
        # The boundary between user input and storage internals: whatever a
        # storage raises while opening becomes one clear StorageError. Even
        # ZEO's ClientDisconnected (a TransientError) is final here: no
        # transaction is running that a retry loop could repeat.
        logger.debug("opening %s failed", spec.display, exc_info=True)
        raise _translate(spec, exc) from exc
    logger.info("opened %s (%s)", spec.display, storage_kind(db))
    return db


def _db(storage: Any, kw: Mapping[str, Any]) -> ZODB.DB:
    try:
        return ZODB.DB(storage, **kw)
    except BaseException:
        storage.close()
        raise


def _open_file(spec: StorageURI, kw: Mapping[str, Any]) -> ZODB.DB:
    import ZODB.FileStorage

    assert spec.path is not None
    options = dict(spec.options)
    if not options.get("read_only"):
        os.makedirs(os.path.dirname(spec.path), exist_ok=True)
        if options.get("blob_dir"):
            os.makedirs(options["blob_dir"], exist_ok=True)
    if os.path.isdir(spec.path):
        raise _error(
            spec.display,
            "this is a directory",
            "name the FileStorage file inside it, e.g. .../Data.fs",
        )
    storage = ZODB.FileStorage.FileStorage(spec.path, **options)
    return _db(storage, kw)


def _open_zeo(spec: StorageURI, kw: Mapping[str, Any]) -> ZODB.DB:
    try:
        import ZEO.ClientStorage
    except ImportError as exc:
        raise _error(spec.display, f"ZEO is not installed ({exc})", _ZEO_EXTRA)
    from zasync.wakeup import NotifyingStorage

    storage = ZEO.ClientStorage.ClientStorage(spec.address, **spec.options)
    # Reports the server's invalidations so that dispatchers wake at once.
    return _db(NotifyingStorage(storage), kw)


def _open_relstorage(spec: StorageURI, kw: Mapping[str, Any]) -> ZODB.DB:
    try:
        import psycopg2
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.options import Options
        from relstorage.storage import RelStorage
    except ImportError as exc:
        raise _error(
            spec.display,
            f"RelStorage for PostgreSQL is not installed ({exc})",
            _RELSTORAGE_EXTRA,
        )
    assert spec.dsn is not None
    _check_relstorage_schema(spec, psycopg2)
    options = Options(**spec.options)
    adapter = PostgreSQLAdapter(dsn=spec.dsn, options=options)
    storage = RelStorage(adapter, options=options)
    db = _db(storage, kw)
    from zasync.wakeup import register_dsn

    register_dsn(db, spec.dsn)  # for LISTEN/NOTIFY wake-ups
    return db


def _check_relstorage_schema(spec: StorageURI, psycopg2: Any) -> None:
    """Fail clearly when the schema's history mode differs from the URI's.

    RelStorage finds this out only after trying to create the other mode's
    tables, with an obscure SQL error.
    """
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
    wanted = spec.options.get("keep_history", False)
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


def _open_zconfig(spec: StorageURI, kw: Mapping[str, Any]) -> ZODB.DB:
    import ZConfig
    import ZODB.config

    assert spec.path is not None
    if kw:
        raise _error(
            spec.display,
            f"database options {sorted(kw)} cannot be combined with a ZConfig file",
            "set them in its <zodb> section",
        )
    if not os.path.isfile(spec.path):
        raise _error(spec.display, "no such file", "check the path")
    try:
        db = ZODB.config.databaseFromURL(spec.path)
    except ZConfig.ConfigurationError as exc:
        if "'zodb.database'; 0 found" in str(exc):
            raise _error(
                spec.display,
                "the file has no <zodb> section",
                "wrap the storage section in <zodb> ... </zodb>",
            ) from exc
        problem = f"invalid ZConfig file: {exc}"
        if "relstorage" in str(exc).lower():
            raise _error(spec.display, problem, _RELSTORAGE_EXTRA) from exc
        if "zeo" in str(exc).lower():
            raise _error(spec.display, problem, _ZEO_EXTRA) from exc
        raise _error(spec.display, problem, "fix the file") from exc
    if db is None:
        raise _error(
            spec.display,
            "the file has no <zodb> section",
            "wrap the storage section in <zodb> ... </zodb>",
        )
    return db


def _translate(spec: StorageURI, exc: BaseException) -> StorageError:
    """Turn what a storage raised while opening into a StorageError."""
    display = spec.display
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    message = str(exc) or name
    if spec.password:
        message = message.replace(spec.password, "***")
    lowered = message.lower()

    if name == "zc.lockfile.LockError":
        return _error(
            display,
            f"the FileStorage is locked ({message}): another process, or another"
            " DB in this one, has it open",
            "stop that process, or share the database through a ZEO server "
            "(zeo://host:port)",
        )
    if name == "ZEO.Exceptions.ClientDisconnected":
        # ZEO keeps retrying until wait_timeout whatever went wrong: nothing
        # listening, or a server without the storage asked for (logged by
        # ZEO as "unknown storage").
        wait = spec.options.get("wait_timeout")
        problem = "no ZEO server answered"
        if wait:
            problem += f" within {wait:g}s"
        if "storage" in spec.options:
            problem += f" with a storage named {spec.options['storage']!r}"
        return _error(
            display,
            f"{problem} ({message})",
            "start the server (runzeo) or fix the address"
            + (" or the storage name" if "storage" in spec.options else "")
            + "; a slow server may need a larger ?wait_timeout=",
        )
    if name == "ZODB.POSException.ReadOnlyError":
        return _error(
            display,
            "the storage is read-only and the database has no root object yet",
            "open it writable once, or drop read_only",
        )
    if isinstance(exc, ImportError):
        if "relstorage" in lowered or "psycopg" in lowered:
            return _error(
                display, f"a driver is missing ({message})", _RELSTORAGE_EXTRA
            )
        if "zeo" in lowered:
            return _error(display, f"a driver is missing ({message})", _ZEO_EXTRA)
        return _error(display, message, "install the missing package")
    if name.startswith("psycopg2") or name.startswith("relstorage"):
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


# --------------------------------------------------------------------------
# What kind of storage a DB has
# --------------------------------------------------------------------------


def _base_storage(storage: Any) -> Any:
    """Unwrap storage wrappers (zc.zlibstorage style ``base`` attributes)."""
    for _ in range(10):
        kind = _kind_of(storage)
        if kind != "other":
            return storage
        inner = getattr(storage, "base", None) or getattr(storage, "_storage", None)
        if inner is None or inner is storage:
            return storage
        storage = inner
    return storage


def _kind_of(storage: Any) -> StorageKind:
    for cls in type(storage).__mro__:
        module = cls.__module__
        if module.startswith("relstorage."):
            return "relstorage"
        if module == "ZEO.ClientStorage" and cls.__name__ == "ClientStorage":
            return "zeo"
        if module == "ZODB.FileStorage.FileStorage" and cls.__name__ == "FileStorage":
            return "file"
    return "other"


def storage_kind(db: ZODB.DB) -> StorageKind:
    """Say what kind of storage ``db`` uses: 'file', 'zeo', 'relstorage' or
    'other', looking through storage wrappers that keep their inner storage
    in ``base`` (zc.zlibstorage, zasync's own wrappers). Never raises.
    """
    return _kind_of(_base_storage(getattr(db, "storage", None)))


def is_relstorage(db: ZODB.DB) -> bool:
    """True if ``db`` stores in RelStorage, which learns of other processes'
    commits only by polling."""
    return storage_kind(db) == "relstorage"


def pushes_invalidations(db: ZODB.DB) -> bool:
    """True if commits by other connections reach ``db`` without polling.

    A ZEO server pushes them; a storage open in one process (FileStorage,
    MappingStorage, DemoStorage) has no other writer. Only RelStorage needs
    polling.
    """
    return storage_kind(db) != "relstorage"
