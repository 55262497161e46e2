"""What kind of storage a database has, seen through storage wrappers.

Dispatchers ask it to choose how they learn of other processes' commits
(ZEO pushes them, RelStorage must be polled), and :mod:`zasync.wakeup` to
find a RelStorage adapter. Nothing here opens or changes a storage.
"""

from __future__ import annotations

from typing import Any, Literal

import ZODB

StorageKind = Literal["file", "zeo", "relstorage", "other"]

#: how many wrappers deep :func:`base_storage` looks
_MAX_WRAPPERS = 10


def base_storage(storage: Any) -> Any:
    """The storage ``storage`` wraps, if it is a wrapper that keeps its
    inner storage in ``base`` (zc.zlibstorage, zasync's NotifyingStorage)
    or ``_storage``; else ``storage`` itself. Never raises."""
    for _ in range(_MAX_WRAPPERS):
        if _kind_of(storage) != "other":
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
    return _kind_of(base_storage(getattr(db, "storage", None)))


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
