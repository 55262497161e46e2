"""When a schedule's slots fall, and which of them to run after a delay.

A schedule's *slots* are the moments it starts a job: every ``every``
(whole multiples of the interval since the Unix epoch, so that every worker
reckons the same slots), or the times a cron expression names in the
schedule's timezone. Cron times are computed by cronsim (``pip install
'zasync[cron]'``), which follows Debian's cron across daylight-saving
changes: a time the clock skips runs once, right after the change; a time
the clock passes twice runs once, the first time (an expression whose hour
is ``*`` runs in both hours, as cron does).

:func:`plan` decides, at a given moment, which due slots start a job. A
slot is *on time* while its job can start no later than :data:`GRACE`
after it and before the next slot comes; the others were *missed* (the
workers were down, or all busy): the schedule's policy says what to do
with them. This module reads no clock: every function takes ``now``.
"""

from __future__ import annotations

import datetime
import difflib
import math
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from zasync.interfaces import ConfigurationError
from zasync.keys import MICROSECOND, UTC, from_us, to_us

#: a slot is missed when its job cannot start within this of its time
GRACE = datetime.timedelta(seconds=60)
#: missed="each" starts at most this many jobs for the slots missed in one
#: go (the most recent ones); the older ones are skipped
CATCH_UP_LIMIT = 100
#: what a schedule does with missed slots
POLICIES = ("once", "skip", "each")
#: how to install what cron schedules need
CRON_EXTRA = "pip install 'zasync[cron]'"


class ScheduleError(ConfigurationError, ValueError):
    """A schedule that cannot be made as asked: the message names the
    schedule, the value that is wrong and what to give instead."""


class Timing(Protocol):
    """The slots of a schedule, as timezone-aware UTC datetimes."""

    def after(self, moment: datetime.datetime) -> datetime.datetime:
        """The first slot later than ``moment``."""

    def backwards(self, moment: datetime.datetime) -> Iterator[datetime.datetime]:
        """The slots at or before ``moment``, latest first."""


class Every:
    """Slots every ``interval`` microseconds, at whole multiples of it
    since the epoch."""

    def __init__(self, interval_us: int):
        self.interval_us = interval_us

    def after(self, moment: datetime.datetime) -> datetime.datetime:
        step = self.interval_us
        return from_us((to_us(moment) // step + 1) * step)

    def backwards(self, moment: datetime.datetime) -> Iterator[datetime.datetime]:
        step = self.interval_us
        slot = to_us(moment) // step * step
        while True:
            yield from_us(slot)
            slot -= step


class Cron:
    """Slots at the times a cron expression names in ``timezone``."""

    def __init__(self, expression: str, timezone: str):
        self.expression = expression
        self.zone = zoneinfo.ZoneInfo(timezone)
        self._cronsim = cronsim_class()

    def after(self, moment: datetime.datetime) -> datetime.datetime:
        """ScheduleError when no time matches in the 50 years after
        ``moment`` (cronsim's horizon)."""
        try:
            found: datetime.datetime = next(
                self._cronsim(self.expression, moment.astimezone(self.zone))
            )
        except StopIteration:
            raise ScheduleError(
                f"cron={self.expression!r} names no time in the 50 years after "
                f"{moment.isoformat()}"
            ) from None
        return found.astimezone(UTC)

    def backwards(self, moment: datetime.datetime) -> Iterator[datetime.datetime]:
        # cronsim's reverse iteration starts before its start: start just
        # after ``moment`` so that a slot at ``moment`` itself is included.
        start = (moment + MICROSECOND).astimezone(self.zone)
        for found in self._cronsim(self.expression, start, reverse=True):
            yield found.astimezone(UTC)


def cronsim_class() -> Any:
    """cronsim's CronSim; ScheduleError, saying what to install, when
    cronsim is missing."""
    try:
        from cronsim import CronSim  # noqa: PLC0415 - optional: zasync[cron]
    except ImportError:
        raise ScheduleError(
            f"cron schedules need cronsim, which is not installed: {CRON_EXTRA} "
            f"(or give every= instead of cron=)"
        ) from None
    return CronSim


def check_cron(name: str, expression: Any) -> str:
    """``expression`` when cronsim accepts it; ScheduleError naming the
    problem otherwise."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError(
            f"schedule {name!r}: cron={expression!r} must be a cron expression "
            f"(a string such as '*/5 * * * *')"
        )
    expression = " ".join(expression.split())
    cronsim = cronsim_class()
    from cronsim import CronSimError  # noqa: PLC0415 - optional: zasync[cron]

    try:
        cronsim(expression, datetime.datetime(2000, 1, 1))
    except CronSimError as e:
        raise ScheduleError(
            f"schedule {name!r}: cron={expression!r} is not a cron expression "
            f"({e}): give five fields, minute hour day-of-month month "
            f"day-of-week, e.g. '*/5 * * * *' (every 5 minutes) or "
            f"'0 2 * * *' (at 02:00)"
        ) from None
    return expression


def check_timezone(name: str, timezone: Any) -> str:
    """``timezone`` when it names an IANA timezone; ScheduleError with the
    closest names otherwise."""
    if isinstance(timezone, str) and timezone:
        try:
            zoneinfo.ZoneInfo(timezone)
            return timezone
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    close = difflib.get_close_matches(str(timezone), _timezones(), n=3, cutoff=0.85)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise ScheduleError(
        f"schedule {name!r}: timezone={timezone!r} is not a known timezone; "
        f"{hint}give an IANA name such as 'Europe/Amsterdam' or 'UTC'"
    )


@lru_cache(maxsize=1)
def _timezones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def check_every(name: str, every: Any) -> int:
    """``every`` (a timedelta, or seconds) in whole microseconds;
    ScheduleError unless it is more than 0."""
    if isinstance(every, datetime.timedelta):
        interval = every // MICROSECOND
    elif isinstance(every, int | float) and not isinstance(every, bool):
        interval = round(every * 1_000_000) if math.isfinite(every) else 0
    else:
        raise ScheduleError(
            f"schedule {name!r}: every={every!r} must be a datetime.timedelta "
            f"or a number of seconds"
        )
    if interval <= 0 or interval > 100 * 366 * 86_400 * 1_000_000:
        raise ScheduleError(
            f"schedule {name!r}: every={every!r} must be more than 0 (and at "
            f"most a century), e.g. every=datetime.timedelta(minutes=5) or "
            f"every=30 (seconds)"
        )
    return interval


def check_policy(name: str, missed: Any) -> str:
    if missed not in POLICIES:
        raise ScheduleError(
            f"schedule {name!r}: missed={missed!r} is not a policy: give "
            f"'once' (the missed slots start one job), 'skip' (none) or "
            f"'each' (one job per missed slot, at most {CATCH_UP_LIMIT})"
        )
    return str(missed)


def describe_cron(expression: str) -> str:
    """``expression`` in words ("Every 5 minutes"), by cron-descriptor."""
    try:
        import cron_descriptor  # type: ignore[import-untyped]  # noqa: PLC0415 - optional: zasync[cron]
    except ImportError:
        raise ScheduleError(
            f"describing cron schedules needs cron-descriptor, which is not "
            f"installed: {CRON_EXTRA} (or give description=)"
        ) from None
    text: str = cron_descriptor.get_description(expression)
    return text


_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


def describe_every(interval_us: int) -> str:
    """An interval in words: "Every 30 seconds", "Every hour"."""
    seconds = interval_us / 1_000_000
    for unit, size in _UNITS:
        if interval_us % (size * 1_000_000) == 0:
            count = interval_us // (size * 1_000_000)
            return f"Every {unit}" if count == 1 else f"Every {count} {unit}s"
    return f"Every {seconds:g} seconds"


@dataclass(frozen=True)
class Plan:
    """What to do at one moment: start a job for each slot of ``run``
    (oldest first), and wait for ``next_run``. ``skipped`` counts the
    missed slots that start no job, up to one more than the policy starts
    (a lower bound: the slots are not counted further)."""

    run: tuple[datetime.datetime, ...]
    skipped: int
    next_run: datetime.datetime


def plan(
    timing: Timing, next_run: datetime.datetime, now: datetime.datetime, missed: str
) -> Plan:
    """The plan at ``now`` of a schedule whose next slot is ``next_run``
    (due: ``next_run <= now``) and whose policy for missed slots is
    ``missed``: an on-time slot always starts a job; the missed ones start
    one job together ("once", for the latest of them), none ("skip"), or
    one each ("each", the :data:`CATCH_UP_LIMIT` latest)."""
    latest = next(timing.backwards(now), next_run)
    if latest < next_run:  # a slot that no longer matches: run it anyway
        latest = next_run
    on_time = latest if now - latest <= GRACE else None
    later = timing.after(now)
    start = latest if on_time is None else latest - MICROSECOND
    limit = CATCH_UP_LIMIT if missed == "each" else 1
    lost: list[datetime.datetime] = []
    if start >= next_run:
        for slot in timing.backwards(start):
            if slot < next_run or len(lost) > limit:
                break
            lost.append(slot)
    run = [] if missed == "skip" else lost[:limit]
    # "once": the one job stands for every missed slot
    skipped = 0 if missed == "once" else len(lost) - len(run)
    run.reverse()
    if on_time is not None:
        run.append(on_time)
    return Plan(tuple(run), skipped, later)
