"""Job lists filtered on the options jobs were queued with (priority,
unique key, lock; see zasync.jobopts): the checks of the filter values and
a test of a job.

A filter value is checked as ``Queue.put`` checks the option, so that a
list refuses a value no job can have, naming the option and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zasync.jobopts import check_key, check_priority

if TYPE_CHECKING:
    from zasync.job import Job


def option_matcher(
    *,
    priority: Any = None,
    min_priority: Any = None,
    lock: Any = None,
    unique_key: Any = None,
) -> Callable[[Job], bool] | None:
    """A test of whether a job has exactly ``priority``, at least
    ``min_priority``, the ``lock`` and the ``unique_key`` asked for (None
    asks nothing); None when nothing is asked. Raises TypeError or
    ValueError naming a value no job can have."""
    for option, value in (("priority", priority), ("min_priority", min_priority)):
        if value is not None:
            check_priority(value, option)
    check_key("lock", lock)
    check_key("unique_key", unique_key)
    if (priority, min_priority, lock, unique_key) == (None, None, None, None):
        return None

    def keep(job: Job) -> bool:
        return (
            (priority is None or job.priority == priority)
            and (min_priority is None or job.priority >= min_priority)
            and (lock is None or job.lock == lock)
            and (unique_key is None or job.unique_key == unique_key)
        )

    return keep
