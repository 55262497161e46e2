"""Real servers for tests and benchmarks: a ZEO server in a subprocess and
fresh PostgreSQL databases on the local server.

Nothing here is mocked: :class:`ZEOServer` runs ZEO's own ``runzeo``, and the
PostgreSQL helpers create and drop real databases (server named by the
``ZASYNC_TEST_PG`` environment variable, a libpq URI or DSN; default
``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

from zasync.logformat import ZCONFIG_DATEFORMAT, ZCONFIG_FORMAT
from zasync.storage import describe_uri, parse_uri

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEST_PG",
    "ZEOServer",
    "ZEOServerError",
    "drop_postgres_database",
    "fresh_postgres_database",
    "postgres_available",
]

#: The PostgreSQL server used when ``ZASYNC_TEST_PG`` is not set.
DEFAULT_TEST_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

# Unix socket paths are limited to about 107 bytes (sun_path).
_MAX_SOCKET_PATH = 100

_running: set[ZEOServer] = set()
_running_lock = threading.Lock()


class ZEOServerError(RuntimeError):
    """A test ZEO server could not start; the message quotes its log."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ZEOServer:
    """A ZEO server (``python -m ZEO.runzeo``) serving one FileStorage.

    ``directory`` holds ``Data.fs``, the configuration ``zeo.conf`` and the
    log ``zeo.log`` (a temporary directory, removed when the context manager
    exits, if not given). It listens on a free port of 127.0.0.1, or on a
    unix socket with ``unix_socket=True``; ``blobs=True`` gives the storage a
    blob directory. The port and the file stay the same across
    :meth:`restart`. A server still running at interpreter exit is stopped.

    Not thread-safe: drive one server from one thread.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        unix_socket: bool = False,
        blobs: bool = False,
        host: str = "127.0.0.1",
        start_timeout: float = 30.0,
    ) -> None:
        self._owns_directory = directory is None
        if directory is None:
            directory = tempfile.mkdtemp(prefix="zasync-zeo-")
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_path = self.directory / "Data.fs"
        self.blob_dir = self.directory / "blobs" if blobs else None
        self.log_path = self.directory / "zeo.log"
        self.config_path = self.directory / "zeo.conf"
        self.host = host
        self.start_timeout = start_timeout
        self._unix_socket = unix_socket
        self._address: tuple[str, int] | str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- what clients need --------------------------------------------------

    @property
    def address(self) -> tuple[str, int] | str:
        """``(host, port)``, or the socket path; fixed once started."""
        if self._address is None:
            raise ZEOServerError("the ZEO server has not been started")
        return self._address

    @property
    def uri(self) -> str:
        """A ``zeo://`` URI for :func:`zasync.storage.open_db`."""
        address = self.address
        if isinstance(address, str):
            return f"zeo://{quote(address)}"
        host, port = address
        return f"zeo://{host}:{port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- life cycle ---------------------------------------------------------

    def start(self) -> ZEOServer:
        """Start the server and return once it accepts connections.

        Raises :class:`ZEOServerError` (quoting the log) if it exits or does
        not accept connections within ``start_timeout`` seconds.
        """
        if self.running:
            return self
        if self._address is not None:
            self._launch(self._address)
            return self
        if self._unix_socket:
            self._launch(self._socket_path())
            return self
        for attempt in range(5):
            # The port is free when chosen; another process may take it
            # before runzeo binds it, so try a few.
            address = (self.host, _free_port(self.host))
            try:
                self._launch(address)
                return self
            except ZEOServerError as exc:
                if "in use" not in str(exc) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _socket_path(self) -> str:
        path = str(self.directory / "zeo.sock")
        if len(path) > _MAX_SOCKET_PATH:
            path = os.path.join(tempfile.mkdtemp(prefix="zeo"), "zeo.sock")
        return path

    def _write_config(self, address: tuple[str, int] | str) -> None:
        listen = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        blob_line = f"  blob-dir {self.blob_dir}\n" if self.blob_dir else ""
        self.config_path.write_text(
            "<zeo>\n"
            f"  address {listen}\n"
            "</zeo>\n"
            "<filestorage 1>\n"
            f"  path {self.data_path}\n"
            f"{blob_line}"
            "</filestorage>\n"
            "<eventlog>\n"
            "  level INFO\n"
            "  <logfile>\n"
            f"    path {self.log_path}\n"
            f"    format {ZCONFIG_FORMAT}\n"
            f"    dateformat {ZCONFIG_DATEFORMAT}\n"
            "  </logfile>\n"
            "</eventlog>\n"
        )

    def _launch(self, address: tuple[str, int] | str) -> None:
        self._write_config(address)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "ZEO.runzeo", "-C", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.directory,
                start_new_session=True,  # a Ctrl-C of the tests is ours alone
            )
        self._process = process
        with _running_lock:
            _running.add(self)
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        while True:
            if process.poll() is not None:
                self._forget()
                raise ZEOServerError(
                    f"the ZEO server for {self.data_path} exited with code "
                    f"{process.returncode}: {self._log_tail(log_offset)}"
                )
            if _accepts(address):
                break
            if time.monotonic() > deadline:
                self.kill()
                raise ZEOServerError(
                    f"the ZEO server for {self.data_path} did not accept "
                    f"connections within {self.start_timeout:g}s: "
                    f"{self._log_tail(log_offset)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._address = address
        logger.debug("ZEO server pid %s listening on %s", process.pid, address)

    def _log_tail(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(no log: {exc})"
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-8:]) or "(empty log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Idempotent; returns once the process is gone (its port and file lock
        are free).
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("ZEO server pid %s ignored SIGTERM", process.pid)
                process.kill()
                process.wait()
        self._forget()

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash) and wait for it. Idempotent."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._forget()

    def restart(self, timeout: float = 10.0) -> ZEOServer:
        """Stop the server and start it again on the same address and file."""
        self.stop(timeout)
        return self.start()

    def _forget(self) -> None:
        self._process = None
        with _running_lock:
            _running.discard(self)

    def close(self) -> None:
        """Stop the server and remove its directory if this object made it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ZEOServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        where = self._address if self._address is not None else "no address"
        return f"<ZEOServer {where} {self.data_path} {state}>"


def _accepts(address: tuple[str, int] | str) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    if isinstance(address, tuple) and ":" in address[0]:
        family = socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


@atexit.register
def _stop_running_servers() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        server.stop(timeout=5.0)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_PROTECTED = frozenset({"postgres", "template0", "template1"})


def _server_dsn() -> str:
    return os.environ.get("ZASYNC_TEST_PG") or DEFAULT_TEST_PG


def _connect_server(**overrides: Any) -> Any:
    import psycopg2  # noqa: PLC0415 - optional: zasync[relstorage]

    params: dict[str, Any] = {"connect_timeout": 5}
    params.update(overrides)
    conn = psycopg2.connect(_server_dsn(), **params)
    conn.autocommit = True
    return conn


def postgres_available() -> str | None:
    """None if the test PostgreSQL server accepts connections, else a
    one-line message saying what is missing and how to fix it."""
    try:
        import psycopg2  # noqa: PLC0415 - optional: zasync[relstorage]
        import relstorage  # noqa: F401, PLC0415 - optional: only looked for
    except ImportError as exc:
        return f"PostgreSQL tests need {exc.name}: pip install 'zasync[relstorage]'"
    try:
        conn = _connect_server()
    except psycopg2.Error as exc:
        reason = " ".join(str(exc).split())
        return (
            f"no PostgreSQL server at {describe_uri(_server_dsn())} ({reason}); "
            "start one or point ZASYNC_TEST_PG at one"
        )
    conn.close()
    return None


def fresh_postgres_database(name_prefix: str = "zasync_test") -> str:
    """Create a new, empty database on the test server and return a
    ``postgresql://`` URI for :func:`zasync.storage.open_db`.

    The name is ``<name_prefix>_<pid>_<random>``; a database of that name is
    dropped first. Raises ``ValueError`` for a prefix that is not a lowercase
    SQL identifier, ``psycopg2.Error`` if the server refuses.
    """
    from psycopg2.extensions import parse_dsn  # noqa: PLC0415 - optional: zasync[relstorage]

    if not _DB_NAME.match(name_prefix):
        raise ValueError(
            f"name_prefix {name_prefix!r} must be lowercase letters, digits and _"
        )
    name = f"{name_prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    _drop_database(name, create=True)
    logger.debug("created PostgreSQL database %s", name)
    return _uri_for(parse_dsn(_server_dsn()), name)


def _uri_for(params: dict[str, str], dbname: str) -> str:
    params = dict(params)
    params.pop("dbname", None)
    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    userinfo = quote(user, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    if userinfo:
        userinfo += "@"
    query: dict[str, str] = {}
    if host.startswith("/") or "," in host:
        query["host"] = host
        host = ""
    elif ":" in host:
        host = f"[{host}]"
    hostport = host + (f":{port}" if port and host else "")
    if port and not host:
        query["port"] = port
    query.update(params)
    suffix = "?" + urlencode(query) if query else ""
    return f"postgresql://{userinfo}{hostport}/{quote(dbname, safe='')}{suffix}"


def drop_postgres_database(uri: str) -> None:
    """Drop the database named by ``uri`` (made by
    :func:`fresh_postgres_database`), closing its other connections first.

    Idempotent. Raises ``ValueError`` for the server's own maintenance
    databases, ``psycopg2.Error`` if the server refuses.
    """
    from psycopg2.extensions import parse_dsn  # noqa: PLC0415 - optional: zasync[relstorage]

    spec = parse_uri(uri)
    if spec.kind != "relstorage" or spec.dsn is None:
        raise ValueError(f"{spec.display} is not a postgresql:// URI")
    name = parse_dsn(spec.dsn)["dbname"]
    server_db = parse_dsn(_server_dsn()).get("dbname")
    if name in _PROTECTED or name == server_db:
        raise ValueError(f"refusing to drop the maintenance database {name!r}")
    _drop_database(name)
    logger.debug("dropped PostgreSQL database %s", name)


def _drop_database(name: str, *, create: bool = False) -> None:
    """Drop database ``name`` if it exists (and create it anew)."""
    from psycopg2 import sql  # noqa: PLC0415 - optional: zasync[relstorage]

    conn = _connect_server()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )
            if create:
                cursor.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                )
    finally:
        conn.close()
