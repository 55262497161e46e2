"""What enters a queue: ``Queue.put`` and ``Queue.put_many`` (the
Producing base of zasync.queue.Queue), their checks and the fields they
set on a job before the queue inserts it.

Everything is checked before anything is changed: a bad option, or a bad
item among many, leaves the jobs, the queue and the transaction as they
were. Putting a job tells the runtime through zasync.hooks; nothing of the
runtime is imported.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable
from typing import Any

from zasync import hooks
from zasync.interfaces import KEY, NEW, PENDING, BadStatusError, ConfigurationError
from zasync.job import Job, now
from zasync.jobfields import check_quota_names, check_timeout
from zasync.jobopts import check_key, check_priority, check_unique_until
from zasync.keyed import hold_key, touch_key, unique_holder
from zasync.keys import to_us
from zasync.timing import check_begin_after, check_begin_by


@dataclasses.dataclass(frozen=True)
class Options:
    """The options of a put, checked once for all its jobs."""

    begin_after: datetime.datetime | None = None
    begin_by: datetime.timedelta | None = None
    quota_names: tuple[str, ...] | None = None
    retry_policy_factory: Any = None
    timeout: float | None = None
    priority: int | None = None
    lock: str | None = None
    unique_key: str | None = None
    unique_until: str | None = None
    replace: bool = False


def check_options(
    *,
    begin_after: Any = None,
    begin_by: Any = None,
    quota_names: Any = None,
    retry_policy_factory: Any = None,
    timeout: Any = None,
    priority: Any = None,
    lock: Any = None,
    unique_key: Any = None,
    unique_until: Any = None,
    replace: Any = False,
) -> Options:
    """The options, checked: TypeError or ValueError naming the one that is
    wrong (a naive ``begin_after``, a ``timeout`` that is not > 0, ...)."""
    if not isinstance(replace, bool):
        raise TypeError(f"replace={replace!r} must be True or False")
    if (replace or unique_until is not None) and unique_key is None:
        raise ValueError(
            "replace and unique_until go with a unique_key: "
            "put(job, unique_key='...', replace=True)"
        )
    return Options(
        begin_after=check_begin_after(begin_after),
        begin_by=check_begin_by(begin_by),
        quota_names=None if quota_names is None else check_quota_names(quota_names),
        retry_policy_factory=retry_policy_factory,
        timeout=None if timeout is None else check_timeout(timeout),
        priority=None if priority is None else check_priority(priority),
        lock=check_key("lock", lock),
        unique_key=check_key("unique_key", unique_key),
        unique_until=None if unique_until is None else check_unique_until(unique_until),
        replace=replace,
    )


def jar_of(queue: Any) -> Any:
    """The connection of ``queue``; ConfigurationError when it is not in a
    database."""
    jar = queue._p_jar
    if jar is None:
        raise ConfigurationError(
            f"queue {queue.name!r} is not in a database: get it from "
            f"zasync.install(db) or root['{KEY}'], not a new Queue()"
        )
    return jar


def check_item(queue: Any, item: Any, options: Options, where: str = "") -> Job:
    """The job ``item`` stands for (itself, or a new Job calling it),
    unchanged: TypeError for a callable that cannot be stored, ValueError
    for a quota ``queue`` does not have, BadStatusError for a job that is
    not new. ``where`` (e.g. ``"items[3]: "``) starts the messages."""
    try:
        job = item if isinstance(item, Job) else Job(item)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}{error}") from error
    if job._status != NEW:
        raise BadStatusError(
            f"{where}{job!r} is {job._status}: only a new job can be put in "
            f"queue {queue.name!r}; queue a new Job instead"
        )
    names = options.quota_names if options.quota_names is not None else job.quota_names
    for name in names:
        if name not in queue.quotas:
            raise ValueError(
                f"{where}{job!r} names quota {name!r}, which queue "
                f"{queue.name!r} does not have; create it with "
                f"queue.quotas.create({name!r}, size=1)"
            )
    return job


def check_items(queue: Any, items: Iterable[Any], options: Options) -> list[Job]:
    """The jobs ``items`` stand for, each checked as :func:`check_item`
    does, the messages naming its index; ValueError for a job given twice."""
    if isinstance(items, Job) or callable(items):
        raise TypeError(
            f"put_many takes a sequence of jobs or callables, got {items!r}: "
            f"use put() for one job, or put_many([job])"
        )
    jobs: list[Job] = []
    seen: dict[int, int] = {}
    for index, item in enumerate(items):
        where = f"items[{index}]: "
        job = check_item(queue, item, options, where)
        first = seen.setdefault(id(job), index)
        if first != index:
            raise ValueError(
                f"{where}{job!r} is items[{first}] too: a job can be queued "
                f"once; give each its own Job"
            )
        jobs.append(job)
    return jobs


#: the options prepare() sets on a job when they are given (not None)
_SET_WHEN_GIVEN = (
    "retry_policy_factory",
    "timeout",
    "priority",
    "lock",
    "unique_key",
    "unique_until",
)


def prepare(jar: Any, queue: Any, job: Job, options: Options) -> int:
    """Set the fields ``options`` give ``job`` (checked), add it to ``jar``
    and return its due time in microseconds, for the queue to insert it."""
    if options.quota_names is not None:
        job.quota_names = options.quota_names
    elif not job.quota_names and hasattr(job, "_member_quotas"):
        job.quota_names = job._member_quotas()  # a batch: see zasync.composite
    for name in _SET_WHEN_GIVEN:
        value = getattr(options, name)
        if value is not None:
            setattr(job, name, value)
    if job._p_jar is None:
        jar.add(job)
    moment = now()
    if options.begin_after is not None:
        job.begin_after = options.begin_after
    elif job.begin_after is None or job.begin_after < moment:
        # Due from now, behind the jobs queued before it (also a job
        # pulled out and put back); a later schedule is kept.
        job.begin_after = moment
    if options.begin_by is not None:
        job.begin_by = options.begin_by
    job._queue = queue
    # A due time in the past counts as "queued now": it does not jump
    # ahead of the jobs queued before it.
    return max(to_us(job.begin_after), to_us(moment))


class Producing:
    """``put()`` and ``put_many()`` of zasync.queue.Queue, which inserts
    the jobs (``_insert``) and removes them (``remove``)."""

    name: str = ""
    quotas: Any = None

    def _insert(self, job: Job, due_us: int, *, in_place: bool = False) -> None:
        raise NotImplementedError

    def remove(self, job: Job) -> None:
        raise NotImplementedError

    def put(
        self,
        item: Any,
        begin_after: datetime.datetime | None = None,
        begin_by: datetime.timedelta | None = None,
        *,
        quota_names: tuple[str, ...] | None = None,
        retry_policy_factory: Any = None,
        timeout: float | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        unique_until: str | None = None,
        replace: bool = False,
        lock: str | None = None,
    ) -> Job:
        """Queue ``item`` (a Job, or a callable wrapped in a new Job) in the
        caller's transaction and return the job.

        ``priority``: higher runs first (default 0). ``lock``: jobs of this
        queue with the same lock never run at the same time, and start in
        the order queued. ``unique_key``: when a job holding that key is in
        this queue (pending or scheduled; with ``unique_until="finished"``,
        until it completes), that job is returned and nothing is queued;
        with ``replace=True`` a pending one is removed (NEW again) and
        ``item`` is queued instead.

        Raises TypeError for a callable that cannot be stored, ValueError for
        a naive ``begin_after``, a quota this queue does not have or a
        ``timeout`` (seconds, see zasync.local.check) that is not > 0, and
        for a bad priority, key or lock; BadStatusError for a job that is
        not new.
        """
        options = check_options(
            begin_after=begin_after,
            begin_by=begin_by,
            quota_names=quota_names,
            retry_policy_factory=retry_policy_factory,
            timeout=timeout,
            priority=priority,
            lock=lock,
            unique_key=unique_key,
            unique_until=unique_until,
            replace=replace,
        )
        job = check_item(self, item, options)
        return self._enter(jar_of(self), [job], options)[0]

    def put_many(
        self,
        items: Iterable[Any],
        *,
        begin_after: datetime.datetime | None = None,
        begin_by: datetime.timedelta | None = None,
        quota_names: tuple[str, ...] | None = None,
        retry_policy_factory: Any = None,
        timeout: float | None = None,
        priority: int | None = None,
        lock: str | None = None,
    ) -> list[Job]:
        """Queue each of ``items`` (Jobs, or callables wrapped in new Jobs)
        in the caller's transaction, in their order, with the same options
        as put(); return the jobs. All or nothing: every item is checked
        before any is queued, and a bad one raises put()'s error with its
        index (``items[3]: ...``), leaving the queue and the jobs as they
        were; ValueError for a job given twice. A job whose ``unique_key``
        is set and held already gives, at its place in the result, the job
        holding it."""
        options = check_options(
            begin_after=begin_after,
            begin_by=begin_by,
            quota_names=quota_names,
            retry_policy_factory=retry_policy_factory,
            timeout=timeout,
            priority=priority,
            lock=lock,
        )
        jar = jar_of(self)
        jobs = check_items(self, items, options)
        return self._enter(jar, jobs, options)

    def _put_in_place(self, job: Job, like: Job) -> Job:
        """Queue ``job`` where ``like`` (the composite it is part of) was
        queued: ahead of the jobs queued after ``like``, in its lane too."""
        when = like.begin_after
        due_us = None if when is None else to_us(when)
        return self._enter(jar_of(self), [job], Options(), due_us)[0]

    def _enter(
        self, jar: Any, jobs: list[Job], options: Options, due_us: int | None = None
    ) -> list[Job]:
        result: list[Job] = []
        entered: list[Job] = []
        for job in jobs:
            held = self._unique_held(job, options)
            if held is not None:
                result.append(held)
                continue
            due = prepare(jar, self, job, options)
            if due_us is not None:
                due = min(due, due_us)
            self._insert(job, due, in_place=due_us is not None)
            job._queued()
            if job.unique_key:
                hold_key(self, job)
            entered.append(job)
            result.append(job)
        if entered:
            hooks.queues_changed(jar)
        for job in entered:
            hooks.job_queued(self, job)
        return result

    def _unique_held(self, job: Job, options: Options) -> Job | None:
        """The job holding ``job``'s unique key in this queue (its entry
        rewritten: see zasync.lanes), or None when ``job`` may be queued
        (a pending holder is removed first with ``replace``)."""
        key = options.unique_key or job.unique_key
        held = unique_holder(self, key) if key else None
        if key is None or held is None or held is job:
            return None
        if options.replace and held._status == PENDING:
            self.remove(held)
            return None
        touch_key(self, key)
        return held
