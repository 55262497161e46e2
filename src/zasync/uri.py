"""Database names: zodburi URIs, paths and ZConfig files, resolved without
opening anything (:func:`parse_uri`), and shown with passwords hidden
(:func:`describe_uri`).

Every URI zodburi resolves is accepted, with its query options
(https://docs.pylonsproject.org/projects/zodburi/en/latest/): ``file://``,
``zeo://``, ``memory://``, ``zconfig://``, ``demo:`` and RelStorage's
``postgres://``. zasync adds: ``postgresql://`` (RelStorage's resolver with
libpq's defaults and parameters, :mod:`zasync.pguri`), a bare path (a
FileStorage, or a ZConfig file if it ends in ``.conf``), a ZEO
``wait_timeout`` and a PostgreSQL ``connect_timeout`` of 10 s and a
history-free RelStorage unless the URI says otherwise, and one
:class:`StorageError` for every problem: a single line naming the database
(password hidden) and what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import zodburi
from zodburi.resolvers import ClientStorageURIResolver

from zasync.interfaces import ZasyncError

#: How long a ZEO client waits for its server when the URI does not say.
DEFAULT_ZEO_WAIT_TIMEOUT = 10
#: The ZEO client cache's size when the URI does not say ``cache_size=``.
#: ZEO's own 20 MB keeps an index entry in memory for every record it holds
#: (about 200 bytes each); a worker reads most jobs once, so a full 20 MB
#: cache is mostly finished jobs, and filling it grows a worker by several
#: MB over its first minutes. 4 MB still holds thousands of records, more
#: than the queue's objects that every claim reads again.
DEFAULT_ZEO_CACHE_SIZE = "4MB"
#: How long libpq waits for PostgreSQL when the URI does not say (seconds).
DEFAULT_PG_CONNECT_TIMEOUT = 10
#: zodburi's documentation: the schemes and their query options
ZODBURI_DOCS = "https://docs.pylonsproject.org/projects/zodburi/en/latest/"

SUPPORTED = (
    "a path to a Data.fs or a *.conf file, or a zodburi URI: file://, zeo://, "
    "memory://, zconfig://, demo:, postgresql:// (postgres://)"
)

_ZEO_EXTRA = "pip install 'zasync[zeo]'"
_RELSTORAGE_EXTRA = "pip install 'zasync[relstorage]'"
_RELSTORAGE_SCHEMES = ("postgresql", "postgres", "mysql", "oracle", "sqlite")

Kind = Literal["file", "zeo", "relstorage", "zconfig", "memory", "other"]


class StorageError(ZasyncError):
    """The database named by a URI could not be opened.

    The message is one line: ``cannot open <uri, password hidden>: <what went
    wrong>; <what to do>``. ``uri`` holds the URI with its password hidden.
    """

    def __init__(self, message: str, *, uri: str = "") -> None:
        super().__init__(message)
        self.uri = uri


@dataclass(frozen=True)
class StorageURI:
    """A resolved storage name: what :func:`zasync.storage.open_db` opens.

    ``display`` is the name with its password hidden; ``uri`` the zodburi
    URI it became; ``path`` is set for ``file`` and ``zconfig``; ``dsn`` (a
    libpq DSN, password included) for ``postgresql``; ``factory()`` opens
    the storage and ``dbkw`` are the :class:`ZODB.DB` arguments the URI set.
    """

    kind: Kind
    display: str
    uri: str = field(repr=False)
    factory: Callable[[], Any] = field(repr=False, compare=False)
    dbkw: dict[str, Any] = field(default_factory=dict, compare=False)
    path: str | None = None
    dsn: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False, compare=False)


_SECRET_QUERY = re.compile(r"((?:^|[?&;\s])(?:password|sslpassword)=)([^&;\s]*)")


def describe_uri(uri: str) -> str:
    """Return ``uri`` with any password replaced by ``***``, for logs.

    Never raises: a string that is not a URI comes back unchanged except
    for ``password=...`` parameters, which are hidden too.
    """
    text = str(uri)
    scheme, sep, rest = text.partition("://")
    if sep:
        end = min([rest.index(c) for c in "/?#" if c in rest] or [len(rest)])
        userinfo, at, hostport = rest[:end].rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{hostport}{rest[end:]}"
        text = f"{scheme}://{rest}"
    return _SECRET_QUERY.sub(r"\1***", text)


def _error(display: str, problem: str, fix: str) -> StorageError:
    problem = " ".join(str(problem).split())  # one line, whatever came in
    return StorageError(f"cannot open {display}: {problem}; {fix}", uri=display)


def _with_default(uri: str, name: str, value: object) -> str:
    query = urlsplit(uri).query
    if re.search(rf"(^|&){name}=", query):
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}{name}={value}"


def _normalize(text: str, display: str) -> tuple[str, str]:
    """The zodburi URI for ``text`` and its scheme, zasync's defaults added."""
    scheme, sep, _ = text.partition("://")
    if not sep and not text.startswith("demo:("):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:[^/\\]", text) and not os.path.exists(
            text
        ):  # 'zeo:host:8100' and friends: a scheme without '//'
            raise _error(display, f"unsupported name {display!r}", f"use {SUPPORTED}")
        path = os.path.abspath(os.path.expanduser(text))
        scheme = "zconfig" if path.endswith(".conf") else "file"
        return f"{scheme}://{path}", scheme
    scheme = "demo" if not sep else scheme.lower()
    if scheme == "zeo":
        netloc = urlsplit(text.replace("zeo:", "http:", 1)).netloc
        for part in filter(None, netloc.split(",")):
            if not re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]*):\d+", part):
                fix = "name the port, e.g. zeo://127.0.0.1:8100"
                raise _error(display, f"{part!r} is not host:port", fix)
        text = _with_default(text, "wait_timeout", DEFAULT_ZEO_WAIT_TIMEOUT)
        text = _with_default(text, "cache_size", DEFAULT_ZEO_CACHE_SIZE)
    elif scheme in ("postgresql", "postgres"):
        scheme = "postgresql"
        text = "postgresql" + text[text.index("://") :]
        text = _with_default(text, "connect_timeout", DEFAULT_PG_CONNECT_TIMEOUT)
        text = _with_default(text, "keep_history", "false")
    return text, scheme


def parse_uri(uri: str) -> StorageURI:
    """Resolve ``uri`` (or a path) with zodburi, opening nothing.

    Raises :class:`StorageError` (one line) for an unknown scheme, an
    unknown or malformed option, a missing extra or an unreadable ZConfig
    file.
    """
    if not isinstance(uri, str | os.PathLike):
        raise StorageError(f"cannot open {uri!r}: name it by a string; use {SUPPORTED}")
    text = os.fspath(uri).strip()
    display = describe_uri(text)
    if not text:
        raise StorageError(f"cannot open an empty name; use {SUPPORTED}")
    normalized, scheme = _normalize(text, display)
    path = urlsplit(normalized).path
    if scheme == "zconfig" and not os.path.isfile(path):
        raise _error(display, "no such file", "check the path")
    if scheme == "postgresql" and not path.strip("/"):
        raise _error(display, "no database name", "name it: postgresql://host/dbname")
    try:
        if scheme == "zeo":
            factory, raw = _ZEOResolver()(normalized)
            dbkw = zodburi._get_dbkw(raw)  # resolve_uri's own conversion
        else:
            factory, dbkw = zodburi.resolve_uri(normalized)
    except zodburi.NoResolverForScheme:
        fix = _RELSTORAGE_EXTRA if scheme in _RELSTORAGE_SCHEMES else f"use {SUPPORTED}"
        problem = f"unsupported scheme {scheme + '://'!r} (zodburi has no resolver)"
        raise _error(display, problem, fix) from None
    except zodburi.UnknownDatabaseKeywords as exc:
        names = ", ".join(sorted(exc.kw))
        fix = f"see the scheme's options in zodburi's docs, {ZODBURI_DOCS}"
        raise _error(display, f"unknown option(s) {names}", fix) from None
    except ImportError as exc:
        fix = _ZEO_EXTRA if scheme == "zeo" else _RELSTORAGE_EXTRA
        raise _error(display, f"a driver is missing ({exc})", fix) from None
    except OSError as exc:
        raise _error(display, str(exc), "check the path") from None
    except Exception as exc:  # ValueError, ZConfig's errors, KeyError (#frag)
        raise _resolve_error(display, scheme, exc) from None
    _default_cache_size(scheme, normalized, dbkw)
    kind: Kind = "relstorage" if scheme in _RELSTORAGE_SCHEMES else "other"
    if scheme in ("file", "zeo", "zconfig", "memory"):
        kind = scheme  # type: ignore[assignment]
    return StorageURI(
        kind=kind,
        display=display,
        uri=normalized,
        factory=factory,
        dbkw=dbkw,
        path=path if kind in ("file", "zconfig") else None,
        dsn=_dsn(normalized) if scheme == "postgresql" else None,
        password=_password(normalized) if kind == "relstorage" else None,
    )


#: objects a connection's cache keeps, unless the URI says
#: ``connection_cache_size=``
DEFAULT_CACHE_SIZE = 400


def _default_cache_size(scheme: str, uri: str, dbkw: dict[str, Any]) -> None:
    """ZODB.DB's own cache size unless the URI (or its ZConfig file) sets
    one, not zodburi's 10,000 objects a connection: a worker holds a
    connection per thread, whose caches would fill with finished jobs."""
    if scheme != "zconfig" and "connection_cache_size" not in urlsplit(uri).query:
        dbkw["cache_size"] = DEFAULT_CACHE_SIZE


class _ZEOResolver(ClientStorageURIResolver):
    """zodburi's, but for a ``wait_timeout`` that may be a fraction."""

    _int_args = tuple(
        a for a in ClientStorageURIResolver._int_args if a != "wait_timeout"
    )
    _float_args = ("wait_timeout",)


def _password(uri: str) -> str | None:
    try:
        password = urlsplit(uri).password
        return unquote(password) if password else None
    except ValueError:
        return None


def _resolve_error(display: str, scheme: str, exc: Exception) -> StorageError:
    if scheme != "zconfig":
        problem = f"bad option value ({type(exc).__name__}: {exc})"
        return _error(display, problem, "fix it in the URI")
    if isinstance(exc, KeyError) and "named  found" in str(exc):
        problem = "the file has no <zodb> or storage section"
        return _error(display, problem, "wrap the storage in <zodb> ... </zodb>")
    hint = _RELSTORAGE_EXTRA if "relstorage" in str(exc).lower() else "fix the file"
    return _error(display, f"invalid ZConfig file: {exc}", hint)


def _dsn(uri: str) -> str:
    from zasync.pguri import dsn_of_uri  # noqa: PLC0415 - optional: zasync[relstorage]

    return dsn_of_uri(uri)
