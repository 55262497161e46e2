"""``zasync.plone.api``: queue Plone jobs with keyword options, in the
style of plone.api.

``queue(func, context, *args, ...)`` queues what
``IAsyncService.queueJob`` queues (a job that calls ``func(context, *args,
**kwargs)`` in the site, as the current user, notifying IJobSuccess or
IJobFailure when it ends), with every option of ``Queue.put`` as a
keyword: priority, unique key, lock, delays, queue, quota, retry policy,
timeout. The job's own keyword arguments go in ``kwargs=``, so that they
never collide with an option. ``queue_many`` queues several such jobs with
the same options.

Every argument is checked before anything is queued: a mistake raises
TypeError or ValueError saying what to write instead, and leaves the queue
and the transaction as they were.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from zope.component import getUtility

from zasync.job import Job
from zasync.plone.interfaces import IAsyncService
from zasync.plone.runner import find_site
from zasync.plone.service import (
    JobInfo,
    add_event_callback,
    default_timeout,
    makeJob,
    wrap_job,
)
from zasync.plone.settings import DEFAULT_QUOTA, record_name
from zasync.queue import Queue

__all__ = ["queue", "queue_many"]

#: a quota by name, several names, or None for no quota
QuotaOption = str | Iterable[str] | None


def queue(
    func: Callable[..., Any],
    context: Any,
    /,
    *args: Any,
    kwargs: Mapping[str, Any] | None = None,
    priority: int = 0,
    unique_key: str | None = None,
    unique_until: str = "started",
    replace: bool = False,
    lock: str | None = None,
    begin_after: datetime.datetime | None = None,
    begin_by: datetime.timedelta | None = None,
    queue: str | Queue = "",
    quota: QuotaOption = DEFAULT_QUOTA,
    retry_policy_factory: Any = None,
    timeout: float | None = None,
) -> Job:
    """Queue ``func(context, *args, **kwargs)`` in the caller's transaction
    and return the job. The worker calls it in the site of ``context``, as
    the current user (with the roles that user has then), and commits its
    writes, its result and its status in one transaction.

    - ``kwargs``: the function's keyword arguments (a dict).
    - ``priority``: higher runs first (default 0, from -1,000,000 to
      1,000,000); among equal priorities, the job due first runs first.
    - ``unique_key``: while a job queued with this key is held in the
      queue, queuing another returns that job and queues nothing. It is
      held until the job starts (``unique_until="started"``) or until it
      completes (``"finished"``). ``replace=True`` replaces a held job that
      has not started yet with the new one.
    - ``lock``: jobs of the queue with the same lock never run at the same
      time, on any worker, and start in the order queued.
    - ``begin_after`` (a timezone-aware datetime), ``begin_by`` (a
      timedelta): start after that time; fail if it could not start
      within ``begin_by`` of it.
    - ``queue``: a queue's name (see the registry record
      ``zasync.plone.queues``) or a Queue.
    - ``quota``: the quota the job holds while it runs (default
      ``"default"``, of size 1: the service's jobs run one at a time),
      several names in a tuple, or None for none.
    - ``retry_policy_factory``: e.g. ``zasync.NeverRetry``.
    - ``timeout``: seconds the job may run; default: the registry record
      ``zasync.plone.default_timeout``.

    Raises TypeError or ValueError, naming the argument and the fix, for a
    function that cannot be stored, a context outside a site, a queue or
    quota that does not exist, or an option out of range; nothing is
    queued then.
    """
    _check_order(func, context)
    job = wrap_job(makeJob(func, context, *args, **_job_kwargs(kwargs)))
    site = find_site(context)
    target = _target(queue, site)
    unique: dict[str, Any] = {}
    if unique_key is not None or replace or unique_until != "started":
        # Given without a key, put() refuses them and says why.
        unique = {"unique_until": unique_until, "replace": replace}
    queued = target.put(
        job,
        begin_after=begin_after,
        begin_by=begin_by,
        quota_names=_quota_names(target, quota),
        retry_policy_factory=retry_policy_factory,
        timeout=default_timeout() if timeout is None else timeout,
        priority=priority,
        unique_key=unique_key,
        lock=lock,
        **unique,
    )
    if queued is job:
        # A job found by its unique key already has its callback.
        add_event_callback(job, site)
    return queued


def queue_many(
    jobs: Iterable[JobInfo],
    /,
    *,
    priority: int = 0,
    lock: str | None = None,
    begin_after: datetime.datetime | None = None,
    begin_by: datetime.timedelta | None = None,
    queue: str | Queue = "",
    quota: QuotaOption = DEFAULT_QUOTA,
    retry_policy_factory: Any = None,
    timeout: float | None = None,
) -> list[Job]:
    """Queue each of ``jobs``, descriptions made with
    ``zasync.plone.service.makeJob(func, context, *args, **kwargs)``, as
    :func:`queue` would, with the same options, in their order; return the
    jobs. Each is a job of its own (unlike a batch of the service): with a
    ``lock``, they run one at a time, in this order.

    All or nothing: every description is checked before any job is
    queued; a bad one raises :func:`queue`'s error, naming its index.
    """
    if isinstance(jobs, tuple) and jobs and callable(jobs[0]):
        raise TypeError(
            "queue_many takes a list of makeJob(func, context, ...) "
            "descriptions, e.g. queue_many([makeJob(func, context, 1)]); "
            "for one job, use queue(func, context, ...)"
        )
    wrapped: list[tuple[Job, Any]] = []
    for index, info in enumerate(jobs):
        try:
            if isinstance(info, tuple) and len(info) == 4:
                _check_order(info[0], info[1])
            job = wrap_job(info)
            wrapped.append((job, find_site(info[1])))
        except (TypeError, ValueError) as error:
            raise type(error)(f"jobs[{index}]: {error}") from error
    if not wrapped:
        return []
    target = _target(queue, wrapped[0][1])
    queued = target.put_many(
        [job for job, _ in wrapped],
        begin_after=begin_after,
        begin_by=begin_by,
        quota_names=_quota_names(target, quota),
        retry_policy_factory=retry_policy_factory,
        timeout=default_timeout() if timeout is None else timeout,
        priority=priority,
        lock=lock,
    )
    for (job, site), result in zip(wrapped, queued, strict=True):
        if result is job:
            add_event_callback(job, site)
    return queued


# -- the checks ---------------------------------------------------------------


def _check_order(func: Any, context: Any) -> None:
    """TypeError for a context given where the function belongs."""
    if hasattr(func, "getPhysicalPath") and callable(context):
        raise TypeError(
            f"the function comes first, then its context: "
            f"queue({getattr(context, '__name__', context)!r}, {func!r}, ...)"
        )


def _job_kwargs(kwargs: Any) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(
            f"kwargs={kwargs!r}: give the function's keyword arguments as a "
            f"dict, e.g. kwargs={{'title': 'Report'}}"
        )
    return dict(kwargs)


def _target(name: Any, site: Any) -> Queue:
    """The queue named ``name`` in the database of ``site``."""
    if isinstance(name, Queue):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"queue={name!r}: give a queue's name (a str, '' for the default "
            f"queue) or a zasync.queue.Queue"
        )
    queues = getUtility(IAsyncService).getQueues(site)
    found = queues.get(name)
    if found is None:
        raise ValueError(
            f"queue={name!r}: there is no such queue{_did_you_mean(name, queues)} "
            f"(queues: {sorted(queues)}); add it to the registry record "
            f"{record_name('queues')} (Site Setup > Configuration Registry)"
        )
    return found


def _quota_names(target: Queue, quota: Any) -> tuple[str, ...]:
    """The quota names ``quota`` stands for, each one of ``target``'s."""
    if quota is None:
        return ()
    if isinstance(quota, str):
        names: tuple[str, ...] = (quota,)
    else:
        try:
            names = tuple(quota)
        except TypeError:
            names = (quota,)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"quota={quota!r}: give a quota's name (e.g. "
                f"quota={DEFAULT_QUOTA!r}), a tuple of names, or None for no quota"
            )
    for name in names:
        if name not in target.quotas:
            raise ValueError(
                f"quota={quota!r}: queue {target.name!r} has no quota "
                f"{name!r}{_did_you_mean(name, target.quotas)} (quotas: "
                f"{sorted(target.quotas)}); add it with its size to the "
                f"registry record {record_name('quotas')} (Site Setup > "
                f"Configuration Registry), or give quota=None for no quota"
            )
    return names


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
