"""Job lists filtered on the options jobs were queued with (priority,
unique key, lock; see zasync.jobopts): the checks of the filter values and
a test of a job.

A filter value is checked as ``Queue.put`` checks the option, so that a
list refuses a value no job can have, naming the option and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zasync.jobopts import MAX_PRIORITY, check_key

if TYPE_CHECKING:
    from zasync.job import Job


def check_priority(option: str, value: Any) -> int | None:
    """``value`` when it is None or a priority a job may have (a whole
    number within +-MAX_PRIORITY); TypeError or ValueError naming
    ``option`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{option}={value!r} must be a whole number from {-MAX_PRIORITY} "
            f"to {MAX_PRIORITY}, e.g. {option}=10"
        )
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{option}={value} is out of range: no job has a priority outside "
            f"{-MAX_PRIORITY} to {MAX_PRIORITY}"
        )
    return value


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
    check_priority("priority", priority)
    check_priority("min_priority", min_priority)
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
