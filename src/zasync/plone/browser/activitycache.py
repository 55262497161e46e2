"""The charts' figures (:func:`zasync.activity.activity`), reused for a few
seconds: the overview refreshes every two seconds, and reading the last
hour's finished jobs loads each of them, so each database and scope reads
them at most once every :data:`TTL` seconds, whatever the number of open
pages.

Kept per database object (weakly: a closed database's figures go with it)
in this process; nothing is written to the database.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from zasync.activity import Activity, activity
from zasync.job import Job

#: seconds the figures are reused (the last minute's bar may lag so much)
TTL = 10.0

_lock = threading.Lock()
_figures: weakref.WeakKeyDictionary[Any, dict[Hashable, tuple[float, Activity]]]
_figures = weakref.WeakKeyDictionary()


def recent_activity(
    queues: Any,
    *,
    scope: Hashable,
    clock: float,
    match: Callable[[Job], bool] | None,
) -> Activity:
    """The activity of ``queues`` for ``scope`` (what ``match`` selects) up
    to ``clock``: read again when the figures kept are older than TTL
    seconds (or ahead of ``clock``)."""
    db = queues._p_jar.db()
    with _lock:
        kept = _figures.setdefault(db, {})
        hit = kept.get(scope)
    if hit is not None and 0 <= clock - hit[0] < TTL:
        return hit[1]
    found = activity(queues, clock=clock, match=match)
    with _lock:
        kept[scope] = (clock, found)
    return found
