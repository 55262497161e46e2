"""Jobs running now: how long each has run, and which run longer than a
limit (a job that never ends holds its thread with no other sign)."""

from __future__ import annotations

import math
from typing import Any

from zasync.interfaces import ACTIVE

#: seconds after which a running job is flagged as running long (default
#: of ``zasync status --long-after`` and the Plone registry record
#: ``zasync.plone.long_running_seconds``)
LONG_RUNNING_SECONDS = 3600.0


def running_seconds(job: Any, clock: float) -> float | None:
    """Seconds ``job`` has run at epoch time ``clock``, or None when it is
    not running."""
    if job.status != ACTIVE or job.active_start is None:
        return None
    return max(0.0, clock - job.active_start.timestamp())


def describe_running(
    job: Any, clock: float, long_after: float | None = LONG_RUNNING_SECONDS
) -> dict[str, Any]:
    """``running_seconds`` and ``long`` (it has run longer than
    ``long_after`` seconds; None: never flagged) of a job a worker holds."""
    seconds = running_seconds(job, clock)
    return {
        "running_seconds": None if seconds is None else round(seconds, 1),
        "long": seconds is not None and long_after is not None and seconds > long_after,
    }


def human_duration(seconds: float | None, *, tenths: bool = False) -> str:
    """``seconds`` as people read it: 45 s, 12 min 5 s, 2 h 3 min, 3 d 4 h;
    with ``tenths``, under ten seconds to the tenth: 2.4 s."""
    if seconds is None:
        return ""
    if tenths and seconds < 10:
        return f"{math.floor(max(seconds, 0.0) * 10) / 10:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
