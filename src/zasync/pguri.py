"""``postgresql://`` and ``postgres://`` URIs through RelStorage's own
zodburi resolver, registered as zodburi's ``postgresql`` scheme.

RelStorage's PostgreSQL helper writes every part of the URI into the libpq
DSN, absent ones as the text ``'None'`` (``user='None'``), and refuses
libpq's other parameters. This helper leaves absent parts to libpq's
defaults (``PGHOST``, ``PGUSER``, ``~/.pgpass``...), quotes values, and
passes libpq's connection parameters from the query (``?host=/run/postgresql``,
``sslmode``, ``application_name``...). RelStorage's options
(``keep_history``, ``cache_local_mb``, ``blob_dir``...) are read by
RelStorage's resolver itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.zodburi_resolver import PostgreSQLAdapterHelper, RelStorageURIResolver

#: libpq connection parameters a URI's query may carry
LIBPQ_PARAMS = frozenset(
    """
    host hostaddr port user password passfile connect_timeout options
    application_name sslmode sslcert sslkey sslrootcert sslcrl sslpassword
    gssencmode target_session_attrs keepalives keepalives_idle
    keepalives_interval keepalives_count service
    """.split()
)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dsn_parts(parsed: SplitResult, query: dict[str, str]) -> dict[str, str]:
    """The libpq parameters of a parsed URI; removes them from ``query``."""
    parts = {
        "dbname": unquote(parsed.path.lstrip("/")),
        "user": unquote(parsed.username or ""),
        "password": unquote(parsed.password or ""),
        "host": unquote(parsed.hostname or ""),
        "port": str(parsed.port or ""),
    }
    for name in LIBPQ_PARAMS & set(query):
        parts[name] = query.pop(name)
    return {name: value for name, value in parts.items() if value}


def dsn_of_uri(uri: str) -> str:
    """The libpq DSN (password included) of a ``postgresql://`` URI."""
    parsed = urlsplit(uri)
    parts = dsn_parts(parsed, dict(parse_qsl(parsed.query)))
    return " ".join(f"{name}={_quote(value)}" for name, value in parts.items())


class _Helper(PostgreSQLAdapterHelper):
    def __call__(self, parsed_uri: SplitResult, kw: dict[str, str]) -> Any:
        parts = dsn_parts(parsed_uri, kw)
        dsn = " ".join(f"{name}={_quote(value)}" for name, value in parts.items())

        def factory(options: Any) -> Any:
            return PostgreSQLAdapter(dsn=dsn, options=options)

        return factory, kw


#: the zodburi resolver of ``postgresql://`` (entry point zodburi.resolvers)
resolver = RelStorageURIResolver(_Helper())
