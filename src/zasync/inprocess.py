"""The dispatchers running in this process, by UUID.

Producers in this process reach them through here (to wake them after a
commit, or to hand a job to an idle thread) without importing the
dispatcher; ``zasync.dispatcher.get()`` reads it too.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from zasync.interfaces import WorkerError


class Running(Protocol):
    """What this registry needs of a dispatcher."""

    uuid: str
    db: Any

    def wake(self) -> None: ...


_dispatchers: dict[str, Any] = {}
_lock = threading.Lock()
#: notified after every commit of finished jobs in this process
completed = threading.Condition()


def register(dispatcher: Running) -> None:
    """Add a starting dispatcher; raise WorkerError when one with the same
    UUID runs in this process already."""
    with _lock:
        if dispatcher.uuid in _dispatchers:
            raise WorkerError(
                f"a dispatcher with UUID {dispatcher.uuid} already runs in this "
                f"process; stop it first or use another UUID"
            )
        _dispatchers[dispatcher.uuid] = dispatcher


def unregister(dispatcher: Running) -> None:
    """Remove a dispatcher that stopped (or failed to start)."""
    with _lock:
        if _dispatchers.get(dispatcher.uuid) is dispatcher:
            del _dispatchers[dispatcher.uuid]


def get(uuid: str | None = None) -> Any:
    """The running dispatcher with ``uuid`` (or the only one, without it),
    or None."""
    with _lock:
        if uuid is not None:
            return _dispatchers.get(str(uuid))
        if len(_dispatchers) == 1:
            return next(iter(_dispatchers.values()))
        return None


def serving(db: Any) -> list[Any]:
    """The running dispatchers of this process that serve ``db``."""
    if not _dispatchers:
        return []
    with _lock:
        dispatchers = list(_dispatchers.values())
    return [d for d in dispatchers if d.db is db]


def wake(db: Any) -> None:
    """Wake the dispatchers of this process that serve ``db``."""
    for dispatcher in serving(db):
        dispatcher.wake()


def job_finished() -> None:
    """Tell waiters (zasync.testing) that jobs finished in this process."""
    with completed:
        completed.notify_all()
