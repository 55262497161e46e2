"""Keys: object ids as integers and times as whole microseconds.

Every tree zasync keeps is keyed by one of these (a queue shard by
``(priority rank, due microseconds, oid int)``, a slot's finished jobs by
end microseconds, an inbox by oid int), so the conversions live here
once, in integer arithmetic: two spellings of one time always give the
same key.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = datetime.timedelta(microseconds=1)


def oid_int(obj: Any) -> int:
    """The object id of a stored persistent object, as an integer."""
    oid: bytes = obj._p_oid
    return int.from_bytes(oid, "big")


def oid_bytes(number: int) -> bytes:
    """The 8-byte object id of an integer from :func:`oid_int`."""
    return number.to_bytes(8, "big")


def hex_id(oid: bytes) -> str:
    """A job's id as users see it: the hex of its object id."""
    return format(int.from_bytes(oid, "big"), "x")


def parse_hex_id(text: str) -> bytes:
    """The object id of a job id from :func:`hex_id` (``0x`` allowed);
    raises ValueError for text that is no such id."""
    return int(str(text).strip().removeprefix("0x"), 16).to_bytes(8, "big")


def to_us(when: datetime.datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime."""
    return (when - EPOCH) // MICROSECOND


def from_us(us: int) -> datetime.datetime:
    """The UTC datetime of microseconds since the epoch."""
    return EPOCH + datetime.timedelta(microseconds=us)


def seconds_to_us(seconds: float) -> int:
    """Microseconds of a time in epoch seconds (``time.time()``)."""
    return int(seconds * 1_000_000)


def now_us() -> int:
    """The current time in microseconds since the epoch."""
    return time.time_ns() // 1000
