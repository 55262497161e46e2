"""A worker's state as people read it: alive, stopped (it stopped cleanly)
or dead (found dead, or not seen for three heartbeats). Its label (its
name, else ``hostname:pid``) is ``WorkerRecord.label``.

Read from its record (zasync.workers.WorkerRecord); writes nothing. A clean
stop sets ``stopped`` and gives up the lease (``lease_until`` 0) within a
heartbeat of the worker's last one; maintenance marks a dead worker
``stopped`` too, but with its lease left as it ran out, or long after it was
last seen. Records of workers stopped cleanly go after a while
(zasync.workers.STOPPED_RECORD_SECONDS); dead ones stay until maintenance
has recovered their jobs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class WorkerState(StrEnum):
    """What ``zasync status``, the control panel and ``@async-workers`` show."""

    ALIVE = "alive"
    STOPPED = "stopped"
    DEAD = "dead"


def state_of(record: Any, clock: float, heartbeat_interval: float) -> WorkerState:
    """The state of the worker ``record`` at ``clock``; ``heartbeat_interval``
    as for :meth:`~zasync.workers.WorkerRecord.is_alive`."""
    if record.is_alive(clock, heartbeat_interval):
        return WorkerState.ALIVE
    if record.stopped_cleanly():
        return WorkerState.STOPPED
    return WorkerState.DEAD
