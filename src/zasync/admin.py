"""Finding, listing and acting on jobs: the library under the command
line, the control panel and the REST API.

Every function here works inside the caller's transaction and never
commits.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

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

#: the statuses people filter by (a failed job is COMPLETED with a Failure)
FILTERS = ("pending", "scheduled", "active", "completed", "failed")


class JobNotFoundError(ZasyncError, LookupError):
    """No job has that id."""


def get_queues(conn):
    queues = conn.root().get(KEY)
    if queues is None:
        raise ZasyncError(
            "this database has no zasync queues: run a worker on it, or call "
            "zasync.install(db) once"
        )
    return queues


def find_job(conn, job_id: str) -> Job:
    """The job with ``job_id`` (hex, as ``job.id`` shows it)."""
    from ZODB.POSException import POSKeyError

    try:
        oid = int(str(job_id).strip().removeprefix("0x"), 16).to_bytes(8, "big")
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
    status = job._status
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


def iter_pending(queues, queue_names=None) -> Iterator[Job]:
    for name, queue in queues.items():
        if queue_names and name not in queue_names:
            continue
        yield from queue


def iter_active(queues) -> Iterator[Job]:
    for record in queues.workers.values():
        for _slot, job in record.iter_active():
            yield job


def iter_done(queues, *, since_us: int | None = None) -> Iterator[tuple[int, Job]]:
    """(end time in microseconds, job) of finished jobs, newest first."""
    import heapq

    trees = [
        slot.done
        for record in queues.workers.values()
        for slot in record.slots
        if len(slot.done)
    ]

    def newest_first(tree):
        keys = tree.keys(min=since_us) if since_us is not None else tree.keys()
        for index in range(len(keys) - 1, -1, -1):
            key = keys[index]
            yield -key, tree[key]

    for negative, job in heapq.merge(
        *(newest_first(t) for t in trees), key=lambda t: t[0]
    ):
        yield -negative, job


def list_jobs(
    queues,
    *,
    status: tuple[str, ...] = (),
    queue_names: tuple[str, ...] = (),
    limit: int = 50,
    callable_contains: str | None = None,
) -> list[Job]:
    """Jobs matching the filters: active first, then pending and scheduled
    in run order, then finished ones newest first."""
    unknown = set(status) - set(FILTERS)
    if unknown:
        raise ValueError(
            f"unknown status {sorted(unknown)}: use one of {', '.join(FILTERS)}"
        )
    wanted = set(status or FILTERS)
    clock = time.time()
    found: list[Job] = []

    def keep(job):
        if queue_names and (job._queue is None or job._queue.name not in queue_names):
            return False
        if callable_contains and callable_contains not in job.callable_name:
            return False
        return kind(job, clock) in wanted or (
            "active" in wanted and job._status == CALLBACKS
        )

    sources = []
    if "active" in wanted:
        sources.append(iter_active(queues))
    if wanted & {"pending", "scheduled"}:
        sources.append(iter_pending(queues, queue_names))
    if wanted & {"completed", "failed"}:
        sources.append(job for _key, job in iter_done(queues))
    for source in sources:
        for job in source:
            if keep(job):
                found.append(job)
                if len(found) >= limit:
                    return found
    return found


def cancel(job: Job) -> None:
    """Cancel a pending or scheduled job: it completes with a Failure of
    CancelledError (its callbacks still run)."""
    if job._status != PENDING:
        raise BadStatusError(
            f"job {job.id} is {kind(job)}: only pending or scheduled jobs can "
            f"be cancelled"
        )
    job.fail(CancelledError(f"job {job.id} ({job.callable_name}) was cancelled"))


def retry(job: Job, *, begin_after: datetime.datetime | None = None) -> Job:
    """Queue a failed job again in its queue (the same job, its result
    cleared); return it."""
    if job._status != COMPLETED or not isinstance(job._result, Failure):
        raise BadStatusError(
            f"job {job.id} is {kind(job)}: only failed jobs can be retried"
        )
    queue = job._queue
    if queue is None:
        raise BadStatusError(f"job {job.id} was never queued: it cannot be retried")
    _forget_done(job)
    job._result = None
    job.active_start = job.active_end = None
    job._conflicts = job._errors = job._interruptions = 0
    job._status = "new-status"
    job.begin_after = None
    queue.put(job, begin_after=begin_after)
    return job


def remove(job: Job) -> None:
    """Remove a finished job from the records (the object itself goes at
    the next pack, when nothing else refers to it)."""
    if job._status != COMPLETED:
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
    start = int(job.active_end.timestamp() * 1_000_000) - 5
    for record in queues.workers.values():
        for slot in record.slots:
            for key in list(slot.done.keys(min=start, max=start + 10_000)):
                if slot.done[key] is job:
                    del slot.done[key]
                    return True
    return False


def prune(queues, *, older_than: datetime.timedelta, limit: int | None = None) -> int:
    """Remove finished jobs that ended more than ``older_than`` ago; return
    how many (at most ``limit``)."""
    cutoff = int((time.time() - older_than.total_seconds()) * 1_000_000)
    removed = 0
    for record in queues.workers.values():
        for slot in record.slots:
            keys = list(slot.done.keys(max=cutoff, excludemax=True))
            if limit is not None:
                keys = keys[: limit - removed]
            for key in keys:
                del slot.done[key]
            removed += len(keys)
            if limit is not None and removed >= limit:
                return removed
    return removed


def describe(job: Job) -> dict[str, Any]:
    """A JSON-ready description of a job."""

    def iso(value):
        return value.isoformat() if isinstance(value, datetime.datetime) else None

    result = job._result
    data = {
        "id": job.id,
        "callable": job.callable_name,
        "status": job._status,
        "kind": kind(job),
        "queue": job._queue.name if job._queue is not None else None,
        "quota_names": list(job.quota_names),
        "args": [_short(a) for a in job.args],
        "kwargs": {k: _short(v) for k, v in job.kwargs.items()},
        "begin_after": iso(job.begin_after),
        "begin_by": job.begin_by.total_seconds() if job.begin_by else None,
        "active_start": iso(job.active_start),
        "active_end": iso(job.active_end),
        "attempts": job._attempts,
        "worker": job._worker,
        "failed": job.failed,
    }
    if isinstance(result, Failure):
        data["error"] = f"{result.type_name}: {result.getErrorMessage()}"
        data["traceback"] = result.getTraceback()
    elif job._status == COMPLETED:
        data["result"] = _short(result)
    return data


def _short(value: Any, width: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(queues, *, heartbeat_interval: float = 60.0) -> dict[str, Any]:
    """Counts per queue and status, quotas, workers, and throughput."""
    clock = time.time()
    data: dict[str, Any] = {"queues": {}, "workers": [], "throughput": {}}
    for name, queue in queues.items():
        counts = dict.fromkeys(FILTERS, 0)
        for job in queue:
            counts[kind(job, clock)] += 1
        data["queues"][name] = {
            "counts": counts,
            "quotas": {
                q: {"size": quota.size, "used": len(quota)}
                for q, quota in ((n, queue.quotas[n]) for n in queue.quotas)
            },
        }
    for record in queues.workers.values():
        alive = record.is_alive(clock, heartbeat_interval)
        running = [job for _slot, job in record.iter_active()]
        for job in running:
            if job._queue is not None and job._queue.name in data["queues"]:
                data["queues"][job._queue.name]["counts"]["active"] += 1
        data["workers"].append(
            {
                "uuid": record.uuid,
                "host": record.hostname,
                "pid": record.pid,
                "threads": record.threads,
                "alive": alive,
                "last_seen": record.heartbeat.last_seen,
                "running": [job.id for job in running],
            }
        )
    for minutes in (1, 5, 15):
        since = int((clock - minutes * 60) * 1_000_000)
        done = failed = 0
        for _key, job in iter_done(queues, since_us=since):
            done += 1
            failed += isinstance(job._result, Failure)
        data["throughput"][f"{minutes}m"] = {
            "completed": done - failed,
            "failed": failed,
        }
    return data
