"""Database names: URIs, paths and ZConfig files, parsed and checked
without opening anything (:func:`parse_uri`), and shown with passwords
hidden (:func:`describe_uri`).

Every problem is reported as one :class:`StorageError` whose message is a
single line naming the database (password hidden) and what to do.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from zasync.interfaces import ZasyncError

logger = logging.getLogger(__name__)

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
