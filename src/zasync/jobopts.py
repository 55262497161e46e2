"""A job's place in the line and what it must not run beside: its
priority, its unique key and its lock, and the checks of their values.

- ``priority``: an int, higher runs first (run order is priority, then
  due time, then order queued);
- ``unique_key``: while a job holds its key in a queue (pending or
  scheduled; with ``unique_until="finished"`` until it completes), putting
  another job with that key returns the first one instead;
- ``lock``: jobs of one queue with the same lock never run at the same
  time, and start in the order queued.

They are set while a job is new (``queue.put(job, priority=...)``, or
``job.priority = ...`` before it is put); zasync.lanes keeps the indexes
that honour them.
"""

from __future__ import annotations

from typing import Any

from zasync.interfaces import NEW, BadStatusError

#: the range of priorities (keys stay small integers)
MAX_PRIORITY = 1_000_000
#: the longest unique key or lock name
MAX_KEY_LENGTH = 200
#: when a unique key is given back: when its job starts, or completes
UNIQUE_UNTIL = ("started", "finished")


def check_priority(value: Any) -> int:
    """``value`` when it is a whole number within +-MAX_PRIORITY."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"priority={value!r} must be a whole number (higher runs first), "
            f"e.g. priority=10"
        )
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"priority={value} is out of range: use a whole number from "
            f"{-MAX_PRIORITY} to {MAX_PRIORITY}"
        )
    return value


def check_key(option: str, value: Any) -> str | None:
    """``value`` (a unique key or a lock name) when it is None or a
    non-empty string of at most MAX_KEY_LENGTH characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"{option}={value!r} must be a string, e.g. {option}='order:42'"
        )
    if not value.strip():
        raise ValueError(
            f"{option}={value!r} is empty: give a name such as "
            f"{option}='order:42', or None for none"
        )
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(
            f"{option} is {len(value)} characters long: at most "
            f"{MAX_KEY_LENGTH} (use a short name, e.g. an id or a hash)"
        )
    if value[0] == "\U0010ffff":
        raise ValueError(f"{option}={value!r} may not start with U+10FFFF")
    return value


def check_unique_until(value: Any) -> str:
    if value not in UNIQUE_UNTIL:
        raise ValueError(
            f"unique_until={value!r}: use 'started' (the key is free again "
            f"once the job starts) or 'finished' (once it completes)"
        )
    return str(value)


def _settable(job: Any, option: str) -> None:
    if job._status != NEW:
        raise BadStatusError(
            f"{job!r} is {job._status}: {option} is set while a job is new "
            f"(queue.put(job, {option}=...))"
        )


class JobOptions:
    """The priority, unique key and lock of a Job (a mixin of
    zasync.job.Job); stored as plain attributes, defaults on the class."""

    _status: str = NEW
    _priority: int = 0
    _unique_key: str | None = None
    _unique_until: str = "started"
    _lock: str | None = None

    @property
    def priority(self) -> int:
        """Higher runs first; 0 by default."""
        value = self._priority  # first: it loads a ghost's state
        return self.__dict__.get("priority", value)

    @priority.setter
    def priority(self, value: Any) -> None:
        _settable(self, "priority")
        self.__dict__.pop("priority", None)
        self._priority = check_priority(value)

    @property
    def unique_key(self) -> str | None:
        """The key no other job of its queue holds while this one does."""
        return self._unique_key

    @unique_key.setter
    def unique_key(self, value: Any) -> None:
        _settable(self, "unique_key")
        self._unique_key = check_key("unique_key", value)

    @property
    def unique_until(self) -> str:
        """``"started"`` or ``"finished"``: when the unique key is free again."""
        return self._unique_until

    @unique_until.setter
    def unique_until(self, value: Any) -> None:
        _settable(self, "unique_until")
        self._unique_until = check_unique_until(value)

    @property
    def lock(self) -> str | None:
        """Jobs of a queue with the same lock never run at the same time."""
        return self._lock

    @lock.setter
    def lock(self, value: Any) -> None:
        _settable(self, "lock")
        self._lock = check_key("lock", value)
