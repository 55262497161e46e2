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
from zasync.interfaces import KEY, NEW, BadStatusError, ConfigurationError
from zasync.job import Job, now
from zasync.jobfields import check_quota_names, check_timeout
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


def check_options(
    *,
    begin_after: Any = None,
    begin_by: Any = None,
    quota_names: Any = None,
    retry_policy_factory: Any = None,
    timeout: Any = None,
) -> Options:
    """The options, checked: TypeError or ValueError naming the one that is
    wrong (a naive ``begin_after``, a ``timeout`` that is not > 0, ...)."""
    return Options(
        begin_after=check_begin_after(begin_after),
        begin_by=check_begin_by(begin_by),
        quota_names=None if quota_names is None else check_quota_names(quota_names),
        retry_policy_factory=retry_policy_factory,
        timeout=None if timeout is None else check_timeout(timeout),
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


def prepare(jar: Any, queue: Any, job: Job, options: Options) -> int:
    """Set the fields ``options`` give ``job`` (checked), add it to ``jar``
    and return its due time in microseconds, for the queue to insert it."""
    if options.quota_names is not None:
        job.quota_names = options.quota_names
    if options.retry_policy_factory is not None:
        job.retry_policy_factory = options.retry_policy_factory
    if options.timeout is not None:
        job.timeout = options.timeout
    if job._p_jar is None:
        jar.add(job)
    if options.begin_after is not None:
        job.begin_after = options.begin_after
    elif job.begin_after is None or job.begin_after < now():
        # Due from now, behind the jobs queued before it (also a job
        # pulled out and put back); a later schedule is kept.
        job.begin_after = now()
    if options.begin_by is not None:
        job.begin_by = options.begin_by
    job._queue = queue
    return to_us(job.begin_after)


class Producing:
    """``put()`` and ``put_many()`` of zasync.queue.Queue, which inserts
    the jobs (``_insert``)."""

    name: str = ""
    quotas: Any = None

    def _insert(self, job: Job, due_us: int) -> None:
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
    ) -> Job:
        """Queue ``item`` (a Job, or a callable wrapped in a new Job) in the
        caller's transaction and return the job.

        Raises TypeError for a callable that cannot be stored, ValueError for
        a naive ``begin_after``, a quota this queue does not have or a
        ``timeout`` (seconds, see zasync.local.check) that is not > 0,
        BadStatusError for a job that is not new.
        """
        options = check_options(
            begin_after=begin_after,
            begin_by=begin_by,
            quota_names=quota_names,
            retry_policy_factory=retry_policy_factory,
            timeout=timeout,
        )
        job = check_item(self, item, options)
        self._enter(jar_of(self), [job], options)
        return job

    def put_many(
        self,
        items: Iterable[Any],
        *,
        begin_after: datetime.datetime | None = None,
        begin_by: datetime.timedelta | None = None,
        quota_names: tuple[str, ...] | None = None,
        retry_policy_factory: Any = None,
        timeout: float | None = None,
    ) -> list[Job]:
        """Queue each of ``items`` (Jobs, or callables wrapped in new Jobs)
        in the caller's transaction, in their order, with the same options
        as put(); return the jobs. All or nothing: every item is checked
        before any is queued, and a bad one raises put()'s error with its
        index (``items[3]: ...``), leaving the queue and the jobs as they
        were; ValueError for a job given twice."""
        options = check_options(
            begin_after=begin_after,
            begin_by=begin_by,
            quota_names=quota_names,
            retry_policy_factory=retry_policy_factory,
            timeout=timeout,
        )
        jar = jar_of(self)
        jobs = check_items(self, items, options)
        self._enter(jar, jobs, options)
        return jobs

    def _enter(self, jar: Any, jobs: list[Job], options: Options) -> None:
        for job in jobs:
            self._insert(job, prepare(jar, self, job, options))
            job._queued()
        if jobs:
            hooks.queues_changed(jar)
        for job in jobs:
            hooks.job_queued(self, job)
