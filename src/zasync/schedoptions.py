"""The options of a new schedule, checked where they enter
(``Schedules.add``): each bad one raises ScheduleError (or TypeError for a
callable or argument that cannot be stored) naming the schedule, the
value and what to give instead."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from zasync.callables import check_picklable
from zasync.job import Job
from zasync.jobfields import check_timeout
from zasync.schedtiming import (
    ScheduleError,
    check_cron,
    check_every,
    check_timezone,
    describe_cron,
    describe_every,
)

if TYPE_CHECKING:
    from zasync.queue import Queue
    from zasync.schedules import Schedule


def set_timing(schedule: Schedule, cron: Any, every: Any, timezone: Any) -> None:
    """Its slots: ``cron`` in ``timezone``, or ``every``."""
    name = schedule.name
    if (cron is None) == (every is None):
        raise ScheduleError(
            f"schedule {name!r}: give exactly one of cron= (a cron expression "
            f"such as '*/5 * * * *') and every= (a timedelta or seconds)"
        )
    schedule.timezone = check_timezone(name, timezone)
    if cron is not None:
        schedule.cron = check_cron(name, cron)
    else:
        schedule._every_us = check_every(name, every)


def set_job(schedule: Schedule, func: Any, args: tuple, kwargs: dict) -> None:
    """What its jobs call, as a job stores it."""
    try:
        probe = Job(func, *args, **kwargs)
    except TypeError as e:
        raise TypeError(f"schedule {schedule.name!r}: {e}") from e
    schedule.func = probe.callable
    schedule._args = tuple(probe._args or ())
    schedule._kwargs = dict(probe._kwargs or {})


def set_options(
    schedule: Schedule,
    queue: Queue,
    quota_names: Iterable[str],
    retry_policy_factory: Any,
    timeout: Any,
) -> None:
    """The options of its jobs, as ``Queue.put`` takes them."""
    name = schedule.name
    if isinstance(quota_names, str):
        raise ScheduleError(
            f"schedule {name!r}: quota_names must be a sequence of names, "
            f"e.g. ({quota_names!r},)"
        )
    schedule.quota_names = tuple(quota_names)
    for quota in schedule.quota_names:
        if quota not in queue.quotas:
            raise ScheduleError(
                f"schedule {name!r} names quota {quota!r}, which queue "
                f"{queue.name!r} does not have; create it with "
                f"queue.quotas.create({quota!r}, size=1)"
            )
    if retry_policy_factory is not None:
        check_picklable(retry_policy_factory, f"schedule {name!r}'s retry policy")
        schedule.retry_policy_factory = retry_policy_factory
    if timeout is not None:
        try:
            schedule.timeout = check_timeout(timeout)
        except ValueError as e:
            raise ScheduleError(f"schedule {name!r}: {e}") from None


def describe(schedule: Schedule) -> str:
    """Its slots in words."""
    if schedule.cron is not None:
        return describe_cron(schedule.cron)
    assert schedule._every_us is not None
    return describe_every(schedule._every_us)
