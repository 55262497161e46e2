"""A queue's default timeout: how long its jobs put without a ``timeout``
may run (see ``zasync.local.check`` and zasync.watchdog).

It is read when a job starts, so a change applies to the jobs already
waiting too; a job's own ``timeout`` always wins.
"""

from __future__ import annotations

import math
from typing import Any


def _get(queue: Any) -> float | None:
    value: float | None = queue._default_timeout
    return value


def _set(queue: Any, seconds: Any) -> None:
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds < math.inf
    ):
        raise ValueError(
            f"queue {queue.name!r}: default_timeout={seconds!r}: give the seconds "
            f"its jobs may run, a finite number > 0 (or None: no timeout)"
        )
    queue._default_timeout = None if seconds is None else float(seconds)


#: ``Queue.default_timeout``: seconds, or None (no timeout, the default);
#: ValueError for anything but a finite number > 0 or None
default_timeout = property(_get, _set, doc=__doc__)


def timeout_of(job: Any) -> float | None:
    """The seconds ``job`` may run: its own ``timeout``, else its queue's
    ``default_timeout``; None when neither is set."""
    if job.timeout is not None:
        return float(job.timeout)
    queue = job.queue
    return None if queue is None else queue.default_timeout
