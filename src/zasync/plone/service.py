"""The async service: ``getUtility(IAsyncService)``, with the methods and
argument orders of plone.app.async.

Each job it queues calls :func:`zasync.plone.runner.run_as_user` with the
job's origin (site, context and user, by path and id) and the function;
the worker runs it in the site, as the user who queued it, and commits the
function's writes, the result and the status in one transaction.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from zope.component.hooks import getSite
from zope.interface import implementer

from zasync.composite import parallel as make_parallel
from zasync.composite import serial as make_serial
from zasync.job import Job, check_callable
from zasync.jobfields import check_timeout
from zasync.plone.events import notify_finished
from zasync.plone.interfaces import IAsyncService
from zasync.plone.location import get_queues
from zasync.plone.runner import JobOrigin, find_site, make_origin, run_as_user
from zasync.plone.settings import DEFAULT_QUOTA, read
from zasync.queue import Queue

#: what makeJob returns: ``(func, context, args, kwargs)``
JobInfo = tuple[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]]
#: a queue by name, or the queue itself
QueueName = str | Queue


def makeJob(  # noqa: N802 - compat name
    func: Callable[..., Any], context: Any, /, *args: Any, **kwargs: Any
) -> JobInfo:
    """A job description for ``queueSerialJobs`` and its kin: the tuple
    ``(func, context, args, kwargs)``, as in plone.app.async."""
    return (func, context, args, kwargs)


def wrap_job(job_info: tuple) -> Job:
    """A new (unqueued) Job that runs ``func(context, *args, **kwargs)`` as
    the current user, from a ``makeJob`` tuple. Raises TypeError for a
    function that cannot be stored by reference or a context that is not a
    Zope object, ValueError for a context outside a site."""
    try:
        func, context, args, kwargs = job_info
    except (TypeError, ValueError):
        raise TypeError(
            f"a job description must be makeJob(func, context, *args, "
            f"**kwargs), got {job_info!r}"
        ) from None
    check_callable(func)
    origin = make_origin(context)
    return Job(run_as_user, origin, func, *args, **kwargs)


def _quota_names(quota_names: Any) -> tuple[str, ...]:
    if quota_names is None:
        return (DEFAULT_QUOTA,)
    if isinstance(quota_names, str):
        raise TypeError(
            f"quota_names must be a sequence of names, e.g. ({quota_names!r},)"
        )
    return tuple(quota_names)


def default_timeout() -> float | None:
    """The registry record ``zasync.plone.default_timeout``: seconds the
    jobs the service queues may run (None: no limit). Raises ValueError
    naming the record for a value that cannot work."""
    value = read("default_timeout")
    if value is None:
        return None
    try:
        return check_timeout(value)
    except ValueError as e:
        raise ValueError(
            f"registry record zasync.plone.default_timeout: {e}; set it in "
            f"Site Setup > Configuration Registry"
        ) from None


def _site_origin(site: Any) -> JobOrigin:
    """The origin event handlers run in: the site, as anonymous."""
    origin = make_origin(site, as_user=False)
    origin.context_path = origin.site_path
    return origin


def add_event_callback(job: Job, site: Any) -> None:
    job.addCallback(Job(notify_finished, _site_origin(site), job))


@implementer(IAsyncService)
class AsyncService:
    """The global utility providing IAsyncService. Stateless: every call
    works in the caller's connection and transaction."""

    # -- queues -------------------------------------------------------------

    def getQueues(self, context: Any = None) -> Any:  # noqa: N802 - compat name
        """The Queues of the database of ``context`` (default: the current
        site)."""
        site = getSite() if context is None else context
        jar = getattr(site, "_p_jar", None)
        if jar is None:
            raise ValueError(
                "getQueues() needs a current site (zope.component.hooks."
                "setSite) or a context object stored in the database"
            )
        return get_queues(jar)

    def _queue(self, queue: Any, context: Any) -> Queue:
        if isinstance(queue, Queue):
            return queue
        if not isinstance(queue, str):
            raise TypeError(
                f"queue must be a queue name or a zasync.queue.Queue, got {queue!r}"
            )
        queues = self.getQueues(find_site(context))
        found = queues.get(queue)
        if found is None:
            raise ValueError(
                f"there is no queue named {queue!r} (queues: {sorted(queues)}); "
                f"add it to the registry record zasync.plone.queues"
            )
        return found

    # -- single jobs --------------------------------------------------------

    def queueJob(  # noqa: N802 - compat name
        self, func: Callable[..., Any], context: Any, /, *args: Any, **kwargs: Any
    ) -> Job:
        return self.queueJobInQueueWithDelay(
            None, None, "", (DEFAULT_QUOTA,), func, context, *args, **kwargs
        )

    def queueJobWithDelay(  # noqa: N802 - compat name
        self,
        begin_by: datetime.timedelta | None,
        begin_after: datetime.datetime | None,
        func: Callable[..., Any],
        context: Any,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Job:
        return self.queueJobInQueueWithDelay(
            begin_by, begin_after, "", (DEFAULT_QUOTA,), func, context, *args, **kwargs
        )

    def queueJobInQueue(  # noqa: N802 - compat name
        self,
        queue: QueueName,
        quota_names: Iterable[str] | None,
        func: Callable[..., Any],
        context: Any,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Job:
        return self.queueJobInQueueWithDelay(
            None, None, queue, quota_names, func, context, *args, **kwargs
        )

    def queueJobInQueueWithDelay(  # noqa: N802 - compat name
        self,
        begin_by: datetime.timedelta | None,
        begin_after: datetime.datetime | None,
        queue: QueueName,
        quota_names: Iterable[str] | None,
        func: Callable[..., Any],
        context: Any,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Job:
        target = self._queue(queue, context)
        job = wrap_job(makeJob(func, context, *args, **kwargs))
        job = target.put(
            job,
            begin_after=begin_after,
            begin_by=begin_by,
            quota_names=_quota_names(quota_names),
            timeout=default_timeout(),
        )
        add_event_callback(job, find_site(context))
        return job

    # -- batches ------------------------------------------------------------

    def queueSerialJobs(self, *job_infos: JobInfo) -> Job:  # noqa: N802 - compat name
        return self.queueSerialJobsInQueue("", (DEFAULT_QUOTA,), *job_infos)

    def queueParallelJobs(self, *job_infos: JobInfo) -> Job:  # noqa: N802 - compat name
        return self.queueParallelJobsInQueue("", (DEFAULT_QUOTA,), *job_infos)

    def queueSerialJobsInQueue(  # noqa: N802 - compat name
        self,
        queue: QueueName,
        quota_names: Iterable[str] | None,
        /,
        *job_infos: JobInfo,
    ) -> Job:
        return self._queue_batch(queue, quota_names, job_infos, parallel=False)

    def queueParallelJobsInQueue(  # noqa: N802 - compat name
        self,
        queue: QueueName,
        quota_names: Iterable[str] | None,
        /,
        *job_infos: JobInfo,
    ) -> Job:
        return self._queue_batch(queue, quota_names, job_infos, parallel=True)

    def _queue_batch(
        self, queue: Any, quota_names: Any, job_infos: tuple, *, parallel: bool
    ) -> Job:
        if not job_infos:
            raise ValueError("a batch needs at least one job made with makeJob()")
        members = [wrap_job(info) for info in job_infos]
        site = find_site(job_infos[0][1])
        target = self._queue(queue, site)
        names = _quota_names(quota_names)
        missing = [name for name in names if name not in target.quotas]
        if missing:
            raise ValueError(
                f"queue {target.name!r} has no quota {missing[0]!r}; add it to "
                f"the registry record zasync.plone.quotas"
            )
        # The members hold the quota; the batch holds it only while it queues
        # them (zasync.composite), so that they keep the batch's place in the
        # line: a job queued after the batch runs after its members.
        timeout = default_timeout()
        for member in members:
            member.quota_names = names
            member.timeout = timeout
        batch = (make_parallel if parallel else make_serial)(*members)
        batch = target.put(batch)
        add_event_callback(batch, site)
        return batch
