"""Jobs whose worker thread got stuck in them: what the watchdog
(zasync.watchdog) records on a job it abandoned, for status displays.

A job is *stuck* when it ran past its timeout (or was cancelled), did not
stop within the interrupt grace, and still had not returned after the
stuck delay: its thread was abandoned and replaced, and the job completed
with JobTimeout or JobCancelled. ``stuck_since`` is when the job was
interrupted without effect.
"""

from __future__ import annotations

import datetime
from typing import Any

#: the job annotation that holds when its thread was found stuck (epoch
#: seconds)
STUCK_SINCE = "zasync.stuck_since"


def stuck_since(job: Any) -> datetime.datetime | None:
    """When ``job``'s thread got stuck in it (UTC), or None when it never
    did."""
    annotations = job._annotations
    value = annotations.get(STUCK_SINCE) if annotations is not None else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return datetime.datetime.fromtimestamp(value, datetime.UTC)


def stuck_since_iso(job: Any) -> str | None:
    """``stuck_since(job)`` as an ISO 8601 string, or None."""
    since = stuck_since(job)
    return None if since is None else since.isoformat()
