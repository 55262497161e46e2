"""Waking dispatchers when another process queues a job.

- ZEO pushes other clients' commits to each client as invalidations, which
  the client storage hands to the object its ``registerDB()`` was given.
  :class:`NotifyingStorage` is a thin wrapper (the pattern of zc.zlibstorage)
  that sits in between and tells listeners which objects changed, so a
  dispatcher wakes within milliseconds of the commit that queued a job.
  ``zasync.storage.open_db`` wraps ZEO storages with it; in a ZConfig file
  (zope.conf) wrap the storage section in ``<zasyncnotify>`` after
  ``%import zasync``.
- RelStorage learns of commits only when it polls. Producers send a
  PostgreSQL NOTIFY after their commit, from a thread of their own (the
  commit does not wait for it), and dispatchers LISTEN
  (:class:`PostgresListener`); polling stays as the fallback.
"""

from __future__ import annotations

import atexit
import logging
import os
import select
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import ZODB
import zope.interface
from ZODB.utils import p64, u64

from zasync.storagekind import base_storage

log = logging.getLogger(__name__)

CHANNEL = "zasync_queued"


#: what a listener gets: the oids invalidated, or None for the whole cache
Listener = Callable[[Iterable[bytes] | None], None]
#: what a listener added with ``add_tid_listener`` gets: the transaction
#: that changed the oids, and the oids (not called when the whole cache is
#: invalidated)
TidListener = Callable[[bytes, Iterable[bytes]], None]


class NotifyingStorage:
    """Wraps a storage and reports the object ids its invalidations name.

    Everything else is delegated to the wrapped storage (``base``).
    """

    def __init__(self, base: Any):
        self.base = base
        self._db: Any = None  # the DB, once registerDB() gave it
        self._listeners: list[Listener] = []
        self._tid_listeners: list[TidListener] = []
        zope.interface.directlyProvides(self, zope.interface.providedBy(base))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(oids)`` on every invalidation (``None``: the whole
        cache was invalidated, after a reconnection)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (if it was added)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_tid_listener(self, listener: TidListener) -> None:
        """Call ``listener(tid, oids)`` on every invalidation of objects,
        with the transaction that changed them (before the listeners of
        add_listener)."""
        self._tid_listeners.append(listener)

    def remove_tid_listener(self, listener: TidListener) -> None:
        """Stop calling ``listener`` (if it was added)."""
        if listener in self._tid_listeners:
            self._tid_listeners.remove(listener)

    @property
    def can_prefetch(self) -> bool:
        """Whether the wrapped storage loads in the background (a ZEO
        client), for :meth:`prefetch_as_of`."""
        return hasattr(self.base, "prefetch")

    def prefetch_as_of(self, tid: bytes, oids: list[bytes]) -> bool:
        """Ask the server, without waiting, for ``oids`` as commit ``tid``
        left them, into the client cache (from a tid listener: ZEO's network
        thread); False when nothing was asked (disconnected, or closed
        meanwhile: the next load asks)."""
        base = self.base
        if not base.is_connected():
            return False
        try:
            base.prefetch(oids, p64(u64(tid) + 1))  # a load before the next tid
        except Exception as error:
            log.debug("not prefetching %d objects: %r", len(oids), error)
            return False
        return True

    def registerDB(self, db: Any) -> None:  # noqa: N802 - storage API
        self._db = db
        self.base.registerDB(self)

    def invalidate(
        self, transaction_id: bytes, oids: Iterable[bytes], *args: Any
    ) -> None:
        self._db.invalidate(transaction_id, oids, *args)
        for listener in list(self._tid_listeners):
            try:
                listener(transaction_id, oids)
            except Exception:  # a listener must never break the storage
                log.exception("an invalidation listener failed")
        self._tell(oids)

    def invalidateCache(self) -> None:  # noqa: N802 - storage API
        self._db.invalidateCache()
        self._tell(None)

    # The wrapped storage sees this wrapper as its database: record data
    # passes through unchanged to the real one.
    def transform_record_data(self, data: bytes) -> bytes:
        return self._db.transform_record_data(data) if self._db is not None else data

    def untransform_record_data(self, data: bytes) -> bytes:
        return self._db.untransform_record_data(data) if self._db is not None else data

    def _tell(self, oids: Iterable[bytes] | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(oids)
            except Exception:  # a listener must never break the storage
                log.exception("an invalidation listener failed")

    def references(self, record: bytes, oids: list[bytes] | None = None) -> Any:
        return self.base.references(record, oids)

    def __repr__(self) -> str:
        return f"<zasync.NotifyingStorage around {self.base!r}>"


class NotifyingStorageConfig:
    """ZConfig datatype of ``<zasyncnotify>`` (see component.xml)."""

    def __init__(self, config: Any):
        self.config = config
        self.name = config.getSectionName()

    def open(self) -> NotifyingStorage:
        return NotifyingStorage(self.config.base.open())


def find_notifying(storage: Any) -> NotifyingStorage | None:
    """The NotifyingStorage ``storage`` is or wraps, if any."""
    for _ in range(10):
        if isinstance(storage, NotifyingStorage):
            return storage
        storage = getattr(storage, "base", None) or getattr(storage, "_storage", None)
        if storage is None:
            return None
    return None


# -- PostgreSQL (RelStorage) -------------------------------------------------

_dsns: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_senders: dict[str, Any] = {}
_senders_lock = threading.Lock()


def register_dsn(db: ZODB.DB, dsn: str) -> None:
    """Remember the libpq DSN of a RelStorage database (open_db does it)."""
    _dsns[db] = dsn


def dsn_of(db: ZODB.DB) -> str | None:
    """The libpq DSN of ``db`` when it is RelStorage on PostgreSQL: the one
    open_db registered, or else its adapter's (a database opened from a
    ZConfig file, as zope.conf does); None for other storages."""
    try:
        dsn = _dsns[db]
    except KeyError:
        dsn = _dsns[db] = _adapter_dsn(db.storage) or ""
    except TypeError:  # not weakly referenceable
        return None
    return dsn or None


def _adapter_dsn(storage: Any) -> str | None:
    adapter = getattr(base_storage(storage), "_adapter", None)
    if not type(adapter).__module__.startswith("relstorage.adapters.postgresql"):
        return None
    dsn = getattr(adapter, "_dsn", None)
    return dsn if isinstance(dsn, str) and dsn else None


def notify_postgres(db: ZODB.DB) -> None:
    """Have a NOTIFY sent for ``db``'s listeners (after a commit that
    queued), by this process's sender thread: the producer does not wait
    for it, and the NOTIFYs asked for while one is sent go as one."""
    dsn = dsn_of(db)
    if dsn is not None:
        _sender.request(dsn)


class _Sender:
    """The thread that sends this process's NOTIFYs, started at the first
    one; what is still to send at the interpreter's exit is sent then."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pending: set[str] = set()
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def request(self, dsn: str) -> None:
        with self._cond:
            self._pending.add(dsn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="zasync-notify", daemon=True
                )
                self._thread.start()
                atexit.register(self.flush)
            self._cond.notify()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every NOTIFY asked for was sent; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and not self._busy, timeout
            )

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                dsns, self._pending = self._pending, set()
                self._busy = True
            for dsn in dsns:
                _send_notify(dsn)
            with self._cond:
                self._busy = False
                self._cond.notify_all()


_sender = _Sender()
# A child forked from a process that notified has no sender thread yet.
os.register_at_fork(after_in_child=lambda: _sender.reset())


def _send_notify(dsn: str) -> None:
    try:
        import psycopg2  # noqa: PLC0415 - optional: zasync[relstorage]

        with _senders_lock:
            conn = _senders.get(dsn)
            if conn is None or conn.closed:
                conn = _senders[dsn] = psycopg2.connect(dsn)
                conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"NOTIFY {CHANNEL}")
    except Exception:
        # Waking is an optimisation: dispatchers still poll.
        log.debug("NOTIFY failed", exc_info=True)
        with _senders_lock:
            _senders.pop(dsn, None)


class PostgresListener:
    """LISTENs on the zasync channel in a thread and calls ``wake()``."""

    def __init__(self, dsn: str, wake: Callable[[], None]):
        self.dsn = dsn
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="zasync-listen", daemon=True
        )

    def start(self) -> PostgresListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        import psycopg2  # noqa: PLC0415 - optional: zasync[relstorage]

        while not self._stop.is_set():
            conn = None
            try:
                conn = psycopg2.connect(self.dsn)
                conn.autocommit = True
                with conn.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
                # Commits made while we were not listening: look once.
                self.wake()
                while not self._stop.is_set():
                    ready, _, _ = select.select([conn], [], [], 0.5)
                    if ready:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self.wake()
            except Exception:
                log.warning("LISTEN connection lost; retrying", exc_info=True)
                self._stop.wait(1.0)
            finally:
                if conn is not None and not conn.closed:
                    conn.close()
