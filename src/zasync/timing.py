"""When a job may start: the checks of ``begin_after`` and ``begin_by``,
made where they enter (``Queue.put``)."""

from __future__ import annotations

import datetime
from typing import Any


def check_begin_after(begin_after: Any) -> datetime.datetime | None:
    """Return ``begin_after`` if it is None or timezone-aware; raise
    ValueError naming the problem otherwise."""
    if begin_after is None:
        return None
    if not isinstance(begin_after, datetime.datetime):
        raise TypeError(
            f"begin_after must be a timezone-aware datetime, got {begin_after!r}"
        )
    if begin_after.tzinfo is None or begin_after.utcoffset() is None:
        raise ValueError(
            f"begin_after={begin_after!r} is naive: give it a timezone, for "
            f"example datetime.datetime.now(datetime.timezone.utc) + delay"
        )
    return begin_after


def check_begin_by(begin_by: Any) -> datetime.timedelta | None:
    if begin_by is None:
        return None
    if not isinstance(begin_by, datetime.timedelta):
        raise TypeError(f"begin_by must be a datetime.timedelta, got {begin_by!r}")
    if begin_by <= datetime.timedelta(0):
        raise ValueError(f"begin_by={begin_by!r} must be positive")
    return begin_by
