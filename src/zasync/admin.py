"""Finding, listing and acting on jobs: the library under the command
line, the control panel and the REST API.

Every function here works inside the caller's transaction and never
commits.
"""

from __future__ import annotations

import datetime
import heapq
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from ZODB.POSException import POSKeyError

from zasync.cancel_requests import CancelRequests
from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE,
    ASSIGNED,
    CALLBACKS,
    COMPLETED,
    KEY,
    PENDING,
    BadStatusError,
    CancelledError,
    ZasyncError,
)
from zasync.job import Job
from zasync.jobfilters import option_matcher
from zasync.keys import oid_int, parse_hex_id, to_us

if TYPE_CHECKING:
    from zasync.queue import Queues

#: the statuses people filter by (a failed job is COMPLETED with a Failure)
FILTERS = ("pending", "scheduled", "active", "completed", "failed")


class JobNotFoundError(ZasyncError, LookupError):
    """No job has that id."""


def get_queues(conn: Any) -> Queues:
    queues = conn.root().get(KEY)
    if queues is None:
        raise ZasyncError(
            "this database has no zasync queues: run a worker on it, or call "
            "zasync.install(db) once"
        )
    return queues


def find_job(conn: Any, job_id: str) -> Job:
    """The job with ``job_id`` (hex, as ``job.id`` shows it)."""
    try:
        oid = parse_hex_id(job_id)
    except (ValueError, OverflowError):
        raise JobNotFoundError(
            f"{job_id!r} is not a job id: ids are hexadecimal, as `zasync jobs` "
            f"shows them"
        ) from None
    try:
        obj = conn.get(oid)
        obj._p_activate()
    except POSKeyError:
        obj = None
    if not isinstance(obj, Job):
        raise JobNotFoundError(f"no job has id {job_id}: list them with `zasync jobs`")
    return obj


def kind(job: Job, clock: float | None = None) -> str:
    """One of FILTERS (or 'callbacks'), for display."""
    status = job.status
    if status == PENDING:
        clock = time.time() if clock is None else clock
        if job.begin_after is not None and job.begin_after.timestamp() > clock:
            return "scheduled"
        return "pending"
    if status in (ASSIGNED, ACTIVE):
        return "active"
    if status == CALLBACKS:
        return "callbacks"
    if status == COMPLETED:
        return "failed" if job.failed else "completed"
    return status.replace("-status", "")


def iter_pending(
    queues: Queues, queue_names: Collection[str] | None = None
) -> Iterator[Job]:
    for name, queue in queues.items():
        if queue_names and name not in queue_names:
            continue
        yield from queue


def iter_active(queues: Queues) -> Iterator[Job]:
    for record in queues.workers.values():
        for _slot, job in record.iter_active():
            yield job


def done_trees(queues: Queues) -> Iterator[Any]:
    """The trees of finished jobs (end time in microseconds -> job): each
    worker thread's, and each queue's for jobs finished outside a worker
    (cancelled, or failed before they started)."""
    for record in queues.workers.values():
        for slot in record.slots:
            yield slot.done
    for queue in queues.values():
        if queue.finished is not None:
            yield queue.finished


def iter_done(
    queues: Queues, *, since_us: int | None = None
) -> Iterator[tuple[int, Job]]:
    """(end time in microseconds, job) of finished jobs, newest first."""
    trees = list(done_trees(queues))

    def newest_first(tree: Any) -> Iterator[tuple[int, Job]]:
        # maxKey() walks down from the newest end, loading only the buckets
        # it reads: the first page does not load the whole tree.
        lowest = since_us if since_us is not None else -(2**63)
        try:
            key = tree.maxKey()
            while key >= lowest:
                yield -key, tree[key]
                key = tree.maxKey(key - 1)
        except ValueError:  # no key left
            return

    for negative, job in heapq.merge(
        *(newest_first(t) for t in trees), key=lambda t: t[0]
    ):
        yield -negative, job


class JobList(list):
    """A list of jobs; ``truncated`` is True when the search stopped at its
    ``scan_limit`` of finished jobs before it found ``limit`` jobs."""

    truncated: bool = False


def list_jobs(
    queues: Queues,
    *,
    status: tuple[str, ...] = (),
    queue_names: tuple[str, ...] = (),
    limit: int = 50,
    callable_contains: str | None = None,
    match: Callable[[Job], bool] | None = None,
    scan_limit: int | None = None,
    priority: int | None = None,
    min_priority: int | None = None,
    lock: str | None = None,
    unique_key: str | None = None,
) -> JobList:
    """Jobs matching the filters: active first, then pending and scheduled
    in run order, then finished ones newest first. ``priority`` keeps the
    jobs of exactly that priority, ``min_priority`` those of that priority
    or higher; ``lock`` and ``unique_key`` the jobs queued with that lock
    or unique key. ``match``, when given, must also return true for each
    job listed (applied last). With ``scan_limit``, at most that many
    finished jobs are read (newest first), so that a filter matching few
    jobs stays quick in a database of many; the result says whether it
    stopped there. Raises ValueError (or TypeError) naming a bad filter."""
    unknown = set(status) - set(FILTERS)
    if unknown:
        raise ValueError(
            f"unknown status {sorted(unknown)}: use one of {', '.join(FILTERS)}"
        )
    wanted = set(status or FILTERS)
    options = option_matcher(
        priority=priority, min_priority=min_priority, lock=lock, unique_key=unique_key
    )
    keep = _matcher(wanted, queue_names, callable_contains, options, match)
    found = JobList()
    for source in _sources(queues, wanted, queue_names, scan_limit, found):
        for job in source:
            if keep(job):
                found.append(job)
                if len(found) >= limit:
                    return found
    return found


def _matcher(
    wanted: set[str],
    queue_names: tuple[str, ...],
    callable_contains: str | None,
    options: Callable[[Job], bool] | None,
    match: Callable[[Job], bool] | None,
) -> Callable[[Job], bool]:
    """Whether a job passes list_jobs' filters."""
    clock = time.time()

    def keep(job: Job) -> bool:
        if queue_names and (job.queue is None or job.queue.name not in queue_names):
            return False
        if callable_contains and callable_contains not in job.callable_name:
            return False
        if not (
            kind(job, clock) in wanted
            or ("active" in wanted and job.status == CALLBACKS)
        ):
            return False
        if options is not None and not options(job):
            return False
        return match is None or match(job)

    return keep


def _sources(
    queues: Queues,
    wanted: set[str],
    queue_names: tuple[str, ...],
    scan_limit: int | None,
    found: JobList,
) -> list[Iterator[Job]]:
    """The jobs list_jobs reads, in its order; reading at most
    ``scan_limit`` finished jobs sets ``found.truncated``."""
    sources = []
    if "active" in wanted:
        sources.append(iter_active(queues))
    if wanted & {"pending", "scheduled"}:
        sources.append(iter_pending(queues, queue_names))
    if wanted & {"completed", "failed"}:

        def finished() -> Iterator[Job]:
            for scanned, (_key, job) in enumerate(iter_done(queues)):
                if scan_limit is not None and scanned >= scan_limit:
                    found.truncated = True
                    return
                yield job

        sources.append(finished())
    return sources


def cancel(job: Job) -> str:
    """Cancel a job; return ``"cancelled"`` or ``"requested"``.

    A pending or scheduled job is cancelled at once: it completes with a
    Failure of CancelledError (its callbacks still run). For a job a worker
    holds (assigned or running), a cancel is requested: the job stops at its
    next ``zasync.local.check()`` or ``progress()`` with JobCancelled, its
    work rolled back, and is never run again; a job that does not check is
    interrupted after its worker's ``interrupt_grace`` (zasync.watchdog).
    The request writes a small object of the worker's thread, not the job,
    so it does not conflict with the job's transaction.
    Raises BadStatusError for a job that finished or runs its callbacks."""
    status = job.status
    if status == PENDING:
        job.fail(CancelledError(f"job {job.id} ({job.callable_name}) was cancelled"))
        return "cancelled"
    slot = _holder(job) if status in (ASSIGNED, ACTIVE) else None
    if slot is None:
        raise BadStatusError(
            f"job {job.id} is {kind(job)}: only pending, scheduled or running "
            f"jobs can be cancelled"
        )
    requests = slot.cancel_requests
    if requests is None:  # a slot stored by an earlier version
        requests = slot.cancel_requests = CancelRequests()
    held = set(slot.active.keys())
    if slot.inbox:
        held.update(slot.inbox.jobs)
    requests.forget([oid for oid in requests.jobs if oid not in held])
    requests.add(oid_int(job), job._attempts)
    return "requested"


def _holder(job: Job) -> Any:
    """The worker thread's slot (zasync.workers.Slot) holding ``job``, or
    None."""
    jar = job._p_jar
    queues = jar.root().get(KEY) if jar is not None else None
    if queues is None or job.worker is None or job.slot is None:
        return None
    record = queues.workers.get(job.worker)
    if record is None or job.slot >= len(record.slots):
        return None
    return record.slots[job.slot]


def retry(job: Job, *, begin_after: datetime.datetime | None = None) -> Job:
    """Queue a failed job again in its queue (the same job, its result
    cleared); return it."""
    if job.status != COMPLETED or not isinstance(job.result, Failure):
        raise BadStatusError(
            f"job {job.id} is {kind(job)}: only failed jobs can be retried"
        )
    queue = job.queue
    if queue is None:
        raise BadStatusError(f"job {job.id} was never queued: it cannot be retried")
    _forget_done(job)
    for callback in job.callbacks:
        # Callbacks (and the events of Plone jobs, which are callbacks)
        # run again after the new attempt.
        callback._reset()
    job._reset()
    job.begin_after = None
    queue.put(job, begin_after=begin_after)
    return job


def remove(job: Job) -> None:
    """Remove a finished job from the records (the object itself goes at
    the next pack, when nothing else refers to it)."""
    if job.status != COMPLETED:
        raise BadStatusError(
            f"job {job.id} is {kind(job)}: only finished jobs can be removed"
        )
    if not _forget_done(job):
        raise JobNotFoundError(f"job {job.id} is not in the finished jobs any more")


def _forget_done(job: Job) -> bool:
    jar = job._p_jar
    queues = jar.root().get(KEY) if jar is not None else None
    if queues is None or job.active_end is None:
        return False
    start = to_us(job.active_end) - 5
    for tree in done_trees(queues):
        for key in list(tree.keys(min=start, max=start + 10_000)):
            if tree[key] is job:
                del tree[key]
                return True
    return False


def prune(
    queues: Queues,
    *,
    older_than: datetime.timedelta,
    limit: int | None = None,
    match: Callable[[Job], bool] | None = None,
) -> int:
    """Remove finished jobs that ended more than ``older_than`` ago (and,
    when ``match`` is given, for which it returns true); return how many
    (at most ``limit``)."""
    cutoff = int((time.time() - older_than.total_seconds()) * 1_000_000)
    removed = 0
    for tree in list(done_trees(queues)):
        keys = list(tree.keys(max=cutoff, excludemax=True))
        if match is not None:
            keys = [key for key in keys if match(tree[key])]
        if limit is not None:
            keys = keys[: limit - removed]
        for key in keys:
            del tree[key]
        removed += len(keys)
        if limit is not None and removed >= limit:
            return removed
    return removed


def describe(job: Job) -> dict[str, Any]:
    """A JSON-ready description of a job; ``priority``, ``unique_key``
    (with ``unique_until``: ``started`` or ``finished``) and ``lock`` are
    the options it was queued with (None: not given); ``retry_at`` (ISO
    time) for a job that ran and waits to run again later (its retry
    policy's delay)."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if isinstance(value, datetime.datetime) else None

    result = job.result
    data = {
        "id": job.id,
        "callable": job.callable_name,
        "status": job.status,
        "kind": kind(job),
        "queue": job.queue.name if job.queue is not None else None,
        "quota_names": list(job.quota_names),
        "priority": job.priority,
        "unique_key": job.unique_key,
        "unique_until": job.unique_until if job.unique_key else None,
        "lock": job.lock,
        "args": [_short(a) for a in job.args],
        "kwargs": {k: _short(v) for k, v in job.kwargs.items()},
        "begin_after": iso(job.begin_after),
        "begin_by": job.begin_by.total_seconds() if job.begin_by else None,
        "active_start": iso(job.active_start),
        "active_end": iso(job.active_end),
        "attempts": job.attempts,
        "worker": job.worker,
        "failed": job.failed,
    }
    retry_at = job.begin_after
    if job.status == PENDING and job.attempts and retry_at is not None:
        if retry_at.timestamp() > time.time():
            # Failed and rescheduled by its retry policy: the next attempt.
            data["retry_at"] = iso(retry_at)
    if isinstance(result, Failure):
        data["error"] = f"{result.type_name}: {result.getErrorMessage()}"
        data["traceback"] = result.getTraceback()
    elif job.status == COMPLETED:
        data["result"] = _short(result)
    return data


def _short(value: Any, width: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= width else text[: width - 1] + "…"
