"""Schedules: periodic jobs, kept in the database beside their queue.

``queue.schedules`` maps names to :class:`Schedule`\\ s. A schedule starts
one job per *slot* (zasync.schedtiming: every N seconds, or the times of
a cron expression in a timezone), whatever the number of workers: the
workers arbitrate through the database, there is no process to run alone.
A slot is fired in one transaction that moves the schedule's ``next_run``
on and queues the slot's job, so two workers firing the same slot write
the same Schedule: one commits, the other gets a ConflictError, aborts
and, trying again, finds the slot taken. A Schedule resolves no
conflicts, on purpose: merging two fires would start two jobs. (Schedules
lets changes to different schedules commit together, see
``Schedules._p_resolveConflict``.)

Workers find due schedules with one read per queue: Schedules keeps the
earliest ``next_run`` of its schedules that are not paused. Reading
``queue.schedules`` writes nothing; the first schedule added stores them.
This module imports nothing of the runtime (zasync.scheduler fires slots
in the workers).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import persistent
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

from zasync.interfaces import ZasyncError
from zasync.job import Job, now
from zasync.keys import from_us, to_us
from zasync.schedoptions import describe, set_job, set_options, set_timing
from zasync.schedtiming import Cron, Every, ScheduleError, Timing, check_policy, plan

if TYPE_CHECKING:
    from zasync.queue import Queue

__all__ = [
    "Schedule",
    "ScheduleError",
    "ScheduleNotFoundError",
    "Schedules",
    "schedule_slot",
    "schedules_of",
]

log = logging.getLogger(__name__)

#: the job annotations naming a schedule's job's schedule and slot
SCHEDULE_KEY = "zasync.schedule"
SLOT_KEY = "zasync.schedule_slot"


class ScheduleNotFoundError(ZasyncError, KeyError):
    """No schedule of that name; the message says which there are."""

    def __str__(self) -> str:
        return str(self.args[0])


def schedule_slot(job: Job) -> tuple[str, datetime.datetime | None] | None:
    """``(schedule name, slot time)`` of a job a schedule started (slot
    None for ``run_now()``), or None for any other job. Reads, writes
    nothing."""
    notes = job._annotations
    if notes is None or SCHEDULE_KEY not in notes:
        return None
    return notes[SCHEDULE_KEY], notes.get(SLOT_KEY)


class Schedule(persistent.Persistent):
    """Runs ``func(*args, **kwargs)`` as a job of its queue at each slot.
    Made by ``queue.schedules.add()``; ``pause()``, ``resume()`` and
    ``run_now()`` join the caller's transaction."""

    name: str = ""
    #: the cron expression, or None for an interval schedule
    cron: str | None = None
    _every_us: int | None = None
    #: the IANA timezone of the cron expression's times
    timezone: str = "UTC"
    #: what missed slots start: "once", "skip" or "each" (zasync.schedtiming)
    missed: str = "once"
    paused: bool = False
    description: str = ""
    func: Any = None
    _args: tuple = ()
    _kwargs: dict | None = None
    quota_names: tuple[str, ...] = ()
    retry_policy_factory: Any = None
    timeout: float | None = None
    _next_us: int = 0
    _last_us: int | None = None
    #: the job of the last slot, or None
    last_job: Job | None = None
    #: why a slot started no job (a quota removed since, say), or None
    last_error: str | None = None
    _schedules: Schedules | None = None

    def __repr__(self) -> str:
        when = self.cron or self.description
        state = " paused" if self.paused else ""
        return f"<zasync.Schedule {self.name!r} {when!r}{state}>"

    @property
    def every(self) -> datetime.timedelta | None:
        if self._every_us is None:
            return None
        return datetime.timedelta(microseconds=self._every_us)

    @property
    def args(self) -> tuple:
        return tuple(self._args)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self._kwargs or {})

    @property
    def next_run(self) -> datetime.datetime:
        """The next slot (UTC); while paused, the one it would have run."""
        return from_us(self._next_us)

    @property
    def last_run(self) -> datetime.datetime | None:
        """The slot of the last job it started (UTC), or None."""
        return None if self._last_us is None else from_us(self._last_us)

    @property
    def queue(self) -> Queue:
        assert self._schedules is not None
        return self._schedules.queue

    def timing(self) -> Timing:
        """Its slots (zasync.schedtiming)."""
        if self._every_us is not None:
            return Every(self._every_us)
        assert self.cron is not None
        return Cron(self.cron, self.timezone)

    def pause(self) -> None:
        """Start no job until ``resume()``."""
        self.paused = True
        self._changed()

    def resume(self, *, now: datetime.datetime | None = None) -> None:
        """Start jobs again from the first slot after ``now`` (default: the
        current time): the slots passed while paused start none."""
        if self.paused:
            self.paused = False
            self._next_us = to_us(self.timing().after(_aware(now)))
            self._changed()

    def run_now(self) -> Job:
        """Queue one job now, apart from the slots (``next_run``,
        ``last_run`` and ``last_job`` stay as they are)."""
        return self._start(None)

    def _changed(self) -> None:
        if self._schedules is not None:
            self._schedules._reckon()

    def _start(self, slot: datetime.datetime | None) -> Job:
        job = Job(self.func, *self._args, **(self._kwargs or {}))
        job.annotations[SCHEDULE_KEY] = self.name
        if slot is not None:
            job.annotations[SLOT_KEY] = slot
        return self.queue.put(
            job,
            quota_names=self.quota_names,
            retry_policy_factory=self.retry_policy_factory,
            timeout=self.timeout,
        )

    def _fire(self, at: datetime.datetime) -> list[Job]:
        """Start the jobs of the slots due at ``at`` as the policy says and
        move ``next_run`` on (in the caller's transaction)."""
        if self.paused or self._next_us > to_us(at):
            return []
        try:
            decided = plan(self.timing(), self.next_run, at, self.missed)
        except ScheduleError as e:
            self.last_error = f"{e}: paused"
            self.pause()
            log.error("schedule %r: %s", self.name, self.last_error)
            return []
        if decided.skipped:
            log.warning(
                "schedule %r: %d or more missed slot(s) start no job (missed=%r); "
                "next run %s",
                self.name,
                decided.skipped,
                self.missed,
                decided.next_run.isoformat(),
                extra={"action": "schedule", "schedule": self.name},
            )
        jobs = []
        for slot in decided.run:
            try:
                job = self._start(slot)
            except ValueError as e:
                self.last_error = f"slot {slot.isoformat()}: {e}"
                log.error("schedule %r: %s", self.name, self.last_error)
                continue
            jobs.append(job)
            self._last_us = to_us(slot)
            self.last_job = job
            self.last_error = None
        self._next_us = to_us(decided.next_run)
        self._changed()
        return jobs


def _aware(moment: datetime.datetime | None) -> datetime.datetime:
    if moment is None:
        return now()
    if moment.tzinfo is None:
        raise ScheduleError(
            f"{moment!r} is naive: give a timezone-aware datetime, e.g. "
            f"datetime.datetime.now(datetime.UTC)"
        )
    return moment


class Schedules(persistent.Persistent):
    """The schedules of one queue, by name: ``add()``, ``remove(name)``,
    ``[name]``, ``get(name)``, iteration over names, ``values()``."""

    _data: Any = None
    _queue: Any = None
    #: the earliest next run (microseconds) of the schedules not paused
    _earliest_us: int | None = None

    def __init__(self, queue: Queue):
        self._data = OOBTree()
        self._queue = queue

    @property
    def queue(self) -> Queue:
        queue: Queue = self._queue
        return queue

    @property
    def earliest(self) -> datetime.datetime | None:
        """The earliest ``next_run`` of the schedules not paused, or None."""
        return None if self._earliest_us is None else from_us(self._earliest_us)

    def due(self, at: datetime.datetime) -> bool:
        """True when a schedule has a slot due at ``at``."""
        return self._earliest_us is not None and self._earliest_us <= to_us(at)

    def add(
        self,
        name: str,
        func: Any,
        *args: Any,
        cron: str | None = None,
        every: datetime.timedelta | float | None = None,
        timezone: str = "UTC",
        missed: str = "once",
        description: str | None = None,
        paused: bool = False,
        quota_names: Iterable[str] = (),
        retry_policy_factory: Any = None,
        timeout: float | None = None,
        start: datetime.datetime | None = None,
        **kwargs: Any,
    ) -> Schedule:
        """Add a schedule calling ``func(*args, **kwargs)`` at each slot of
        ``cron`` (a cron expression in ``timezone``) or ``every`` (a
        timedelta or seconds), from the first slot after ``start``
        (default: now), in the caller's transaction. The job options are
        those of ``Queue.put``. Raises ScheduleError (a ValueError) for a
        bad option or a name in use, TypeError for a callable or argument
        that cannot be stored."""
        if not isinstance(name, str) or not name.strip():
            raise ScheduleError(
                f"a schedule needs a name (a non-empty string), got {name!r}"
            )
        if name in self._data or name in _stored(self):
            raise ScheduleError(
                f"schedule {name!r} exists already in queue {self.queue.name!r}: "
                f"choose another name, or remove it first "
                f"(queue.schedules.remove({name!r}))"
            )
        schedule = Schedule()
        schedule.name = name
        set_timing(schedule, cron, every, timezone)
        schedule.missed = check_policy(name, missed)
        set_job(schedule, func, args, kwargs)
        set_options(schedule, self.queue, quota_names, retry_policy_factory, timeout)
        if description is not None and not isinstance(description, str):
            raise ScheduleError(
                f"schedule {name!r}: description={description!r} must be text"
            )
        schedule.description = description or describe(schedule)
        schedule.paused = bool(paused)
        schedule._next_us = to_us(schedule.timing().after(_aware(start)))
        home = self._home()
        schedule._schedules = home
        home._data[name] = schedule
        home._reckon()
        return schedule

    def _home(self) -> Schedules:
        """The Schedules stored in the queue, storing this one if none is."""
        queue = self.queue
        stored = queue._schedules
        if stored is not None:
            return stored
        jar = queue._p_jar
        if jar is None:
            raise ScheduleError(
                f"queue {queue.name!r} is not in a database: get it from "
                f"zasync.install(db) or root['zasync'] to add schedules"
            )
        queue._schedules = self
        jar.add(self)
        return self

    def remove(self, name: str) -> None:
        """Remove the schedule ``name`` (its jobs stay)."""
        self._lookup(name)
        home = self._home()
        del home._data[name]
        home._reckon()

    def _lookup(self, name: str) -> Schedule:
        found = _stored(self).get(name)
        if found is None:
            names = ", ".join(map(repr, _stored(self).keys())) or "none"
            raise ScheduleNotFoundError(
                f"no schedule {name!r} in queue {self.queue.name!r} (its "
                f"schedules: {names})"
            )
        return found

    def __getitem__(self, name: str) -> Schedule:
        return self._lookup(name)

    def get(self, name: str, default: Any = None) -> Schedule | None:
        return _stored(self).get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in _stored(self)

    def __iter__(self) -> Iterator[str]:
        return iter(_stored(self).keys())

    def __len__(self) -> int:
        return len(_stored(self))

    def keys(self) -> Iterable[str]:
        return _stored(self).keys()

    def values(self) -> Iterable[Schedule]:
        return _stored(self).values()

    def items(self) -> Iterable[tuple[str, Schedule]]:
        return _stored(self).items()

    def _reckon(self) -> None:
        times = [s._next_us for s in self._data.values() if not s.paused]
        self._earliest_us = min(times) if times else None

    def _p_resolveConflict(self, old: dict, committed: dict, new: dict) -> dict:  # noqa: N802 - ZODB's API
        """Let two transactions that changed different schedules of the
        queue (a worker firing one, an application adding another) both
        commit. Each reckoned the earliest next run in its own view; the
        lower of the two is never later than the true one (a schedule only
        moves on when fired, and a fire or a change of the same schedule
        conflicts on the Schedule itself): a worker that looks too early
        finds nothing due and reckons it again. Any other change
        conflicts."""
        for key in set(old) | set(committed) | set(new):
            if key != "_earliest_us" and not (
                old.get(key) == committed.get(key) == new.get(key)
            ):
                raise ConflictError(f"schedules of a queue: {key} changed twice")
        times = [
            t
            for t in (committed.get("_earliest_us"), new.get("_earliest_us"))
            if t is not None
        ]
        return {**new, "_earliest_us": min(times) if times else None}

    def _fire(self, at: datetime.datetime) -> list[Job]:
        """Start the jobs of every slot due at ``at`` (in the caller's
        transaction, which writes each schedule fired and this)."""
        jobs = []
        for schedule in self._data.values():
            jobs.extend(schedule._fire(at))
        self._reckon()
        return jobs


def _stored(schedules: Schedules) -> Any:
    """The BTree of the schedules stored in the queue (this one's, empty,
    before the first is added)."""
    stored = schedules.queue._schedules
    return (stored if stored is not None else schedules)._data


def schedules_of(queue: Queue) -> Schedules:
    """``queue.schedules``: the stored Schedules, or a new one that stores
    itself when a schedule is added (reading writes nothing)."""
    stored: Schedules | None = queue._schedules
    return stored if stored is not None else Schedules(queue)
